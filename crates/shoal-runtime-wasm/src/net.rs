//! A pod's network, mediated at the guest's own socket calls.
//!
//! - `wasi:sockets/tcp` `start-connect` is taken over: the socket is bound to the pod's address
//!   first (so the peer sees which pod calls), the destination is routed by the node's
//!   [`PodNetwork`] — a Service address becomes one of its ready endpoints right here, with no
//!   proxy hop; a Service without endpoints, a NetworkPolicy denial or a host address is
//!   refused at once (`connection-refused`) — and then the connection proceeds as WASI's own.
//! - `wasi:sockets/ip-name-lookup` answers from the cluster's names with the pod's resolver
//!   settings (search path, `ndots`, host aliases), falling back to the node's resolver for
//!   names outside the cluster.
//! - UDP and every other address use go through WASI's address check ([`PodNet::allows`]).
//! - `wasi:http` outgoing requests ([`PodNet::send_request`]) resolve and route the same way.

use crate::guest::Guest;
use shoal_runtime::network::{self, PodDns, PodNetwork, Protocol, Refusal, Resolution};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, Host as NetworkHost, IpAddress, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::{HostTcpSocket, TcpSocket};
use wasmtime_wasi::p2::bindings::sockets::udp::{HostUdpSocket, UdpSocket};
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsView};

/// The WASI version whose interfaces are taken over (the one wasmtime-wasi links; guests
/// importing older 0.2 versions are matched to it).
const WASI_SOCKETS: &str = "0.2.12";

/// Connections and datagrams refused for each reason, node-wide.
#[derive(Debug, Default)]
pub struct Counters {
    pub refused_no_endpoints: AtomicU64,
    pub refused_policy: AtomicU64,
    pub refused_host: AtomicU64,
    pub routed_in_runtime: AtomicU64,
}

impl Counters {
    fn count(&self, r: Refusal) {
        let c = match r {
            Refusal::NoEndpoints => &self.refused_no_endpoints,
            Refusal::Denied => &self.refused_policy,
            Refusal::Host => &self.refused_host,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One pod's network: its address, its resolver settings and the node's view.
pub struct PodNet {
    pub ip: IpAddr,
    pub dns: PodDns,
    pub network: Option<Arc<dyn PodNetwork>>,
    pub counters: Arc<Counters>,
    /// Destinations `start-connect` routed to and WASI's check has not seen yet (an
    /// endpoint behind a Service may be an address a pod could not name itself, such as the
    /// API server's behind `kubernetes`).
    pub routed: std::sync::Mutex<Vec<SocketAddr>>,
    /// The TLS client of outgoing `https` requests; `None`: they are refused.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl PodNet {
    /// Where a TCP connection to `to` goes, or why it may not.
    pub fn route_tcp(&self, to: SocketAddr) -> Result<SocketAddr, ErrorCode> {
        let Some(net) = &self.network else {
            // Without a node network a pod reaches nothing.
            self.counters.count(Refusal::Host);
            return Err(ErrorCode::ConnectionRefused);
        };
        match net.route(self.ip, to, Protocol::Tcp) {
            Ok(addr) => {
                if addr != to {
                    self.counters
                        .routed_in_runtime
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(addr)
            }
            Err(r) => {
                self.counters.count(r);
                tracing::debug!(pod = %self.ip, to = %to, reason = %r, "connection refused");
                Err(ErrorCode::ConnectionRefused)
            }
        }
    }

    /// `addr` with the wildcard address replaced by the pod's.
    fn own(&self, addr: SocketAddr) -> SocketAddr {
        if addr.ip().is_unspecified() && addr.is_ipv4() == self.ip.is_ipv4() {
            SocketAddr::new(self.ip, addr.port())
        } else {
            addr
        }
    }

    /// Remembers that the guest's next connect goes to `addr` (see [`PodNet::routed`]).
    fn expect_connect(&self, addr: SocketAddr) {
        let mut routed = self.routed.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a guest whose connects fail before the check cannot grow it.
        if routed.len() >= 64 {
            routed.remove(0);
        }
        routed.push(addr);
    }

    /// WASI's address check: binding only the pod's own address; connecting and sending
    /// where the node's network routes.
    pub fn allows(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        let ok = self.check(addr, usage);
        if !ok {
            tracing::debug!(pod = %self.ip, address = %addr, ?usage, "socket use refused");
        }
        ok
    }

    fn check(&self, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            // A connect to the node's container bridge is implicitly bound by the kernel (see
            // `start-connect`), which WASI checks as a bind of the unspecified address; a
            // socket so bound cannot listen (that needs the pod's address).
            SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => true,
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind | SocketAddrUse::TcpListen => {
                addr.ip() == self.ip
            }
            // Callers were checked on their side (their egress and this pod's ingress).
            SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => true,
            // `start-connect` routed it (the only way a guest connects).
            SocketAddrUse::TcpConnect => {
                let mut routed = self.routed.lock().unwrap_or_else(|p| p.into_inner());
                match routed.iter().position(|a| *a == addr) {
                    Some(i) => {
                        routed.remove(i);
                        true
                    }
                    None => false,
                }
            }
            SocketAddrUse::UdpSend => {
                match &self.network {
                    // A Service address is forwarded by the node's proxy.
                    Some(net) => match net.route(self.ip, addr, Protocol::Udp) {
                        Ok(_) => true,
                        Err(r) => {
                            self.counters.count(r);
                            false
                        }
                    },
                    None => false,
                }
            }
        }
    }

    /// The addresses of `name` for this pod.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ErrorCode> {
        match network::resolve(&self.dns, self.network.as_deref(), name) {
            Resolution::Addresses(a) => Ok(a),
            Resolution::NotFound => Err(ErrorCode::NameUnresolvable),
            Resolution::Upstream(name) => match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(addrs) => Ok(addrs.map(|a| a.ip().to_canonical()).collect()),
                Err(_) => Err(ErrorCode::NameUnresolvable),
            },
        }
    }
}

/// A finished name lookup, handed out address by address.
struct Resolved(std::vec::IntoIter<IpAddr>);

#[wasmtime_wasi::async_trait]
impl Pollable for Resolved {
    async fn ready(&mut self) {}
}

fn code(
    view: &mut wasmtime_wasi::sockets::WasiSocketsCtxView<'_>,
    e: wasmtime_wasi::p2::SocketError,
) -> wasmtime::Result<ErrorCode> {
    NetworkHost::convert_error_code(view, e)
}

/// Takes over `start-connect` and `ip-name-lookup` in `linker` (after WASI is added).
pub fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut tcp = linker.instance(&format!("wasi:sockets/tcp@{WASI_SOCKETS}"))?;
    tcp.func_wrap_async(
        "[method]tcp-socket.start-connect",
        |mut store: StoreContextMut<'_, Guest>,
         (this, network, remote): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let net = store.data().net.clone();
                let to = match net.route_tcp(remote.into()) {
                    Ok(to) => to,
                    Err(e) => return Ok((Err(e),)),
                };
                net.expect_connect(to);
                let mut view = store.data_mut().sockets();
                let borrow = || Resource::<TcpSocket>::new_borrow(this.rep());
                let network_borrow = || Resource::<Network>::new_borrow(network.rep());
                // Bind to the pod's own address, so the peer (and its policies) see the pod;
                // a loopback pod address cannot reach the node's container bridge, where the
                // node's own address on the bridge is the source.
                if HostTcpSocket::local_address(&mut view, borrow()).is_err()
                    && to.ip().is_loopback() == net.ip.is_loopback()
                {
                    let local = SocketAddr::new(net.ip, 0);
                    if let Err(e) =
                        HostTcpSocket::start_bind(&mut view, borrow(), network_borrow(), local.into())
                            .await
                    {
                        return Ok((Err(code(&mut view, e)?),));
                    }
                    if let Err(e) = HostTcpSocket::finish_bind(&mut view, borrow()) {
                        return Ok((Err(code(&mut view, e)?),));
                    }
                }
                match HostTcpSocket::start_connect(&mut view, this, network, to.into()) {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(code(&mut view, e)?),)),
                }
            })
        },
    )?;
    // Binding "any address" binds the pod's own: a pod has no other, and a socket bound to
    // the wildcard would show the node's address to its peers.
    tcp.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store: StoreContextMut<'_, Guest>,
         (this, network, local): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let local = store.data().net.own(local.into());
                let mut view = store.data_mut().sockets();
                match HostTcpSocket::start_bind(&mut view, this, network, local.into()).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(code(&mut view, e)?),)),
                }
            })
        },
    )?;
    let mut udp = linker.instance(&format!("wasi:sockets/udp@{WASI_SOCKETS}"))?;
    udp.func_wrap_async(
        "[method]udp-socket.start-bind",
        |mut store: StoreContextMut<'_, Guest>,
         (this, network, local): (Resource<UdpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let local = store.data().net.own(local.into());
                let mut view = store.data_mut().sockets();
                match HostUdpSocket::start_bind(&mut view, this, network, local.into()).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(code(&mut view, e)?),)),
                }
            })
        },
    )?;
    let mut lookup = linker.instance(&format!("wasi:sockets/ip-name-lookup@{WASI_SOCKETS}"))?;
    lookup.resource(
        "resolve-address-stream",
        ResourceType::host::<Resolved>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<Resolved>::new_own(rep))?;
            Ok(())
        },
    )?;
    lookup.func_wrap_async(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, Guest>, (network, name): (Resource<Network>, String)| {
            Box::new(async move {
                // The network handle is the capability; it must be a live one.
                store.data_mut().table.get(&network)?;
                let net = store.data().net.clone();
                match net.resolve(&name).await {
                    Ok(addrs) => {
                        let r = store.data_mut().table.push(Resolved(addrs.into_iter()))?;
                        Ok((Ok(r),))
                    }
                    Err(e) => Ok((Err(e),)),
                }
            })
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store: StoreContextMut<'_, Guest>, (this,): (Resource<Resolved>,)| {
            let next = store.data_mut().table.get_mut(&this)?.0.next();
            Ok((Ok::<Option<IpAddress>, ErrorCode>(
                next.map(IpAddress::from),
            ),))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store: StoreContextMut<'_, Guest>, (this,): (Resource<Resolved>,)| {
            let p: Resource<DynPollable> =
                wasmtime_wasi::p2::subscribe(&mut store.data_mut().table, this)?;
            Ok((p,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// An HTTP/1.1 client connection over `io`, its driver spawned.
async fn handshake<IO>(
    io: IO,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<wasmtime_wasi_http::WasiBody>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ),
    wasmtime_wasi_http::Error,
>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(io)).await?;
    Ok((sender, tokio::spawn(conn)))
}

/// A response and the future that finishes its connection, as `wasi:http` hooks return them.
type Sent = (
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
);

impl PodNet {
    /// Sends a guest's outgoing `wasi:http` request: the host resolved with the pod's resolver,
    /// routed like a socket connection (a Service address straight to an endpoint), from the
    /// pod's own address. HTTP/1.1, over TLS for `https` when the node trusts a CA
    /// ([`crate::WasmRuntime::trust_ca`]).
    pub async fn send_request(
        self: Arc<Self>,
        mut req: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
    ) -> Result<Sent, wasmtime_wasi_http::Error> {
        use http_body_util::BodyExt;
        use wasmtime_wasi_http::Error;
        let uri = req.uri().clone();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls = match (https, &self.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls.clone()),
            (true, None) => {
                // Say so rather than fail obscurely.
                return Err(Error::InternalError(Some(
                    "https requests from pods need the node to trust a CA".into(),
                )));
            }
        };
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip = match self.resolve(host).await {
            Ok(a) if !a.is_empty() => a[0],
            _ => {
                return Err(Error::DnsError {
                    rcode: Some("NXDOMAIN".into()),
                    info_code: None,
                });
            }
        };
        let to = self
            .route_tcp(SocketAddr::new(ip, port))
            .map_err(|_| Error::ConnectionRefused)?;
        let timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(std::time::Duration::from_secs(30));
        let socket = match to {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(Error::Connect)?;
        if to.ip().is_loopback() == self.ip.is_loopback() {
            socket
                .bind(SocketAddr::new(self.ip, 0))
                .map_err(Error::Connect)?;
        }
        let stream = tokio::time::timeout(timeout, socket.connect(to))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
                _ => Error::Connect(e),
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, driver) = match tls {
            None => handshake(stream).await?,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await
                    .map_err(|e| {
                        tracing::debug!(error = %e, "a pod's TLS handshake failed");
                        Error::TlsCertificateError
                    })?;
                handshake(stream).await?
            }
        };
        // On the wire the request line carries the path only.
        *req.uri_mut() = http::Uri::builder()
            .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        if !req.headers().contains_key(http::header::HOST)
            && let Ok(v) = http::HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
        let res = sender.send_request(req).await?;
        let res = res.map(|b| b.map_err(Error::from).boxed_unsync());
        let done: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
            match driver.await {
                Ok(Ok(())) | Err(_) => Ok(()),
                Ok(Err(e)) => Err(Error::from(e)),
            }
        });
        Ok((res, done))
    }
}
