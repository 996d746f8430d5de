//! Forwarding one frontend: a TCP listener or a UDP socket on the frontend's address, each
//! connection or client sent to an endpoint chosen round-robin (or by client address with
//! `sessionAffinity: ClientIP`).

use crate::ingress::activator::Activator;
use crate::ingress::forward::HOLD_TIMEOUT;
use crate::table::{Backend, Route};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// How long connecting to one endpoint may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A UDP client's session ends after this long without a datagram either way.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// A frontend's current route and its choosing state, shared with its listener task so a
/// change of endpoints takes effect without listening again.
pub struct Forwarder {
    route: RwLock<Arc<Route>>,
    next: AtomicUsize,
    affinity: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
    /// Told of every new route (connections held for a Deployment waking from zero wait).
    changed: tokio::sync::Notify,
    /// Connections (TCP) or datagrams (UDP) forwarded, and those that found no endpoint.
    pub forwarded: AtomicU64,
    pub failed: AtomicU64,
}

impl Forwarder {
    pub fn new(route: Route) -> Arc<Self> {
        Arc::new(Forwarder {
            route: RwLock::new(Arc::new(route)),
            next: AtomicUsize::new(0),
            affinity: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            forwarded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    pub fn route(&self) -> Arc<Route> {
        self.route.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_route(&self, route: Route) {
        *self.route.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(route);
        self.changed.notify_waiters();
    }

    /// Waits until the route has an endpoint, or `deadline`: whether it has one.
    pub async fn has_endpoints_by(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.route().backends.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// The endpoints to try for `client`, best first: its affinity endpoint if it still
    /// exists, then the others from the round-robin position.
    pub fn candidates(&self, client: IpAddr) -> Vec<SocketAddr> {
        let route = self.route();
        let n = route.backends.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut out: Vec<SocketAddr> = (0..n)
            .map(|i| route.backends[(start + i) % n].addr)
            .collect();
        if let Some(timeout) = route.affinity {
            let mut aff = self.affinity.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match aff.get(&client) {
                Some((addr, at)) if now.duration_since(*at) < timeout && out.contains(addr) => {
                    let addr = *addr;
                    out.retain(|a| *a != addr);
                    out.insert(0, addr);
                }
                _ => {}
            }
            aff.insert(client, (out[0], now));
        }
        out
    }

    /// Remembers that `client` now sticks to `addr` (after a failover).
    fn stick(&self, client: IpAddr, addr: SocketAddr) {
        if self.route().affinity.is_some() {
            self.affinity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(client, (addr, Instant::now()));
        }
    }
}

/// Serves TCP on `listener` until `stop`: each connection is spliced to an endpoint; an
/// endpoint that refuses is skipped for the next. With `network`, a connection from a pod
/// goes only to endpoints its NetworkPolicies and theirs allow. With `activator`, a route in
/// front of a Deployment that wakes from zero counts each connection as that Deployment's
/// activity while it lasts, and a connection finding no endpoint (at zero, or every endpoint
/// gone meanwhile) wakes it and waits up to [`HOLD_TIMEOUT`] for one.
pub async fn serve_tcp(
    listener: TcpListener,
    fwd: Arc<Forwarder>,
    network: Option<crate::network::NodeNetwork>,
    activator: Option<Arc<Activator>>,
    stop: CancellationToken,
) {
    loop {
        let (conn, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "proxy accept");
                    continue;
                }
            },
        };
        let (fwd, network, activator) = (fwd.clone(), network.clone(), activator.clone());
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            let allowed = |to: SocketAddr| {
                network
                    .as_ref()
                    .is_none_or(|n| n.pod_may_connect(peer.ip(), to))
            };
            let wakes = activator.zip(fwd.route().wakes.clone());
            let _in_flight = wakes.as_ref().map(|(a, w)| a.begin(w));
            let mut upstream = connect_any(&fwd, peer.ip(), &allowed).await;
            if upstream.is_none()
                && let Some((activator, wake)) = &wakes
            {
                let deadline = tokio::time::Instant::now() + HOLD_TIMEOUT;
                // Held: the first pod's endpoint appears when it is ready. Its listener may
                // lag the endpoint by a moment (a refused connect), so try until the deadline.
                loop {
                    if fwd.route().backends.is_empty() {
                        activator.wake(wake);
                    }
                    if !fwd.has_endpoints_by(deadline).await {
                        break;
                    }
                    // Endpoints its policies do not let it reach: refused, not held.
                    if !fwd.route().backends.iter().any(|b| allowed(b.addr)) {
                        break;
                    }
                    upstream = connect_any(&fwd, peer.ip(), &allowed).await;
                    if upstream.is_some() || tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            match upstream {
                Some(upstream) => {
                    fwd.forwarded.fetch_add(1, Ordering::Relaxed);
                    let (mut a, mut b) = (conn, upstream);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
                None => {
                    fwd.failed.fetch_add(1, Ordering::Relaxed);
                    drop(conn);
                }
            }
        });
    }
}

async fn connect_any(
    fwd: &Forwarder,
    client: IpAddr,
    allowed: &impl Fn(SocketAddr) -> bool,
) -> Option<TcpStream> {
    for addr in fwd.candidates(client).into_iter().filter(|a| allowed(*a)) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                fwd.stick(client, addr);
                return Some(s);
            }
            Ok(Err(e)) => tracing::debug!(endpoint = %addr, error = %e, "endpoint refused"),
            Err(_) => tracing::debug!(endpoint = %addr, "endpoint did not answer"),
        }
    }
    None
}

/// Serves UDP on `socket` until `stop`: each client gets a session socket connected to one
/// endpoint; replies come back from the frontend's address.
pub async fn serve_udp(socket: UdpSocket, fwd: Arc<Forwarder>, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "proxy udp receive");
                    continue;
                }
            },
        };
        let existing = sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client)
            .cloned();
        let session = match existing {
            Some(s) => s,
            None => {
                let Some(s) = udp_session(&fwd, client, &socket, &sessions, &stop).await else {
                    fwd.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                s
            }
        };
        fwd.forwarded.fetch_add(1, Ordering::Relaxed);
        let _ = session.send(&buf[..n]).await;
    }
}

async fn udp_session(
    fwd: &Forwarder,
    client: SocketAddr,
    front: &Arc<UdpSocket>,
    sessions: &Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    stop: &CancellationToken,
) -> Option<Arc<UdpSocket>> {
    let Backend { addr, .. } = fwd.candidates(client.ip()).first().map(|a| Backend {
        addr: *a,
        node: None,
    })?;
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let up = UdpSocket::bind(local).await.ok()?;
    up.connect(addr).await.ok()?;
    let up = Arc::new(up);
    sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(client, up.clone());
    let (front, sessions, stop, reader) =
        (front.clone(), sessions.clone(), stop.clone(), up.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = tokio::time::timeout(UDP_IDLE, reader.recv(&mut buf)) => match r {
                    Ok(Ok(n)) => { let _ = front.send_to(&buf[..n], client).await; }
                    // Idle, or the endpoint refused (ICMP): the session ends.
                    _ => break,
                },
            }
        }
        sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client);
    });
    Some(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(addrs: &[&str], affinity: Option<Duration>) -> Route {
        Route {
            service: "default/web:80".into(),
            backends: addrs
                .iter()
                .map(|a| Backend {
                    addr: a.parse().unwrap(),
                    node: None,
                })
                .collect(),
            affinity,
            wakes: None,
        }
    }

    #[test]
    fn round_robin_spreads_and_client_ip_affinity_sticks() {
        let f = Forwarder::new(route(&["127.64.0.2:80", "127.64.0.3:80"], None));
        let client: IpAddr = "127.64.0.9".parse().unwrap();
        let firsts: Vec<_> = (0..4).map(|_| f.candidates(client)[0]).collect();
        assert_ne!(firsts[0], firsts[1]);
        assert_eq!(firsts[0], firsts[2]);
        f.set_route(route(
            &["127.64.0.2:80", "127.64.0.3:80"],
            Some(Duration::from_secs(60)),
        ));
        let first = f.candidates(client)[0];
        for _ in 0..5 {
            assert_eq!(f.candidates(client)[0], first);
        }
        // The endpoint going away ends the affinity.
        let other = if first.port() == 80 && first.ip().to_string() == "127.64.0.2" {
            "127.64.0.3:80"
        } else {
            "127.64.0.2:80"
        };
        f.set_route(route(&[other], Some(Duration::from_secs(60))));
        assert_eq!(f.candidates(client)[0].to_string(), other);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_to_a_deployment_at_zero_is_held_until_an_endpoint_appears() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An endpoint echoing what it reads, not yet in the route.
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let wake = Arc::new(crate::wake::Wake {
            namespace: "default".into(),
            deployment: "fn".into(),
            uid: "u1".into(),
            standby: None,
        });
        let mut at_zero = route(&[], None);
        at_zero.wakes = Some(wake.clone());
        let fwd = Forwarder::new(at_zero.clone());
        // No API server: the scale-up it asks for fails (and is logged); the route is what
        // the test changes.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let activator = Activator::new(client, "n1");
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = front.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_tcp(
            front,
            fwd.clone(),
            None,
            Some(activator),
            stop.clone(),
        ));
        let mut c = TcpStream::connect(at).await.unwrap();
        c.write_all(b"held").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fwd.forwarded.load(Ordering::Relaxed), 0, "not held");
        let mut woken = route(&[&endpoint], None);
        woken.wakes = Some(wake);
        fwd.set_route(woken);
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut back))
            .await
            .expect("answered once the endpoint appeared")
            .unwrap();
        assert_eq!(&back, b"held");
        assert_eq!(fwd.forwarded.load(Ordering::Relaxed), 1);
        stop.cancel();
    }
}
