//! The node's service proxy, in kube-proxy's role: it watches Services and EndpointSlices and
//! listens on every frontend that has endpoints — each ClusterIP:port (the Service range is
//! on loopback, so the node can bind it without root), each node port on the node's address,
//! each `LoadBalancer` port on the node's address (as k3s' ServiceLB does on one node, with
//! the node's address written to `status.loadBalancer.ingress`) — and forwards TCP
//! connections and UDP datagrams to ready endpoints ([`forward`]). A frontend whose Service
//! has no usable endpoint is not listened on, so connecting to it is refused at once.
//!
//! Start at [`Proxy::run`]; the rules are [`table::build`].

pub mod forward;
pub mod table;

use forward::Forwarder;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use table::{Frontend, Node, Protocol, Route};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a frontend that could not be listened on waits before the next try.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// A listening frontend.
struct Listener {
    fwd: Arc<Forwarder>,
    stop: CancellationToken,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Also when the proxy itself panics or is aborted: the next one must be able to bind.
        self.stop.cancel();
    }
}

/// Aborts a watch task when the proxy's run ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The proxy of one node.
pub struct Proxy {
    client: kube::Client,
    node: Node,
    listeners: HashMap<Frontend, Listener>,
    /// Frontends that could not be bound, with the error (reported once).
    failed: BTreeMap<Frontend, String>,
    /// What the last sync saw, to publish per-frontend counters.
    table: Arc<std::sync::RwLock<table::Table>>,
}

/// A read-only view of the proxy's current rules and counters (for tests, benchmarks and
/// the runtime).
#[derive(Clone, Default)]
pub struct View {
    table: Arc<std::sync::RwLock<table::Table>>,
}

impl View {
    /// The endpoints of `frontend`, if it is being proxied.
    pub fn route(&self, frontend: &Frontend) -> Option<Route> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(frontend)
            .cloned()
    }

    /// How many frontends are proxied.
    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Proxy {
    pub fn new(client: kube::Client, node: Node) -> Self {
        Proxy {
            client,
            node,
            listeners: HashMap::new(),
            failed: BTreeMap::new(),
            table: Arc::default(),
        }
    }

    pub fn view(&self) -> View {
        View {
            table: self.table.clone(),
        }
    }

    /// Watches Services and EndpointSlices and keeps the listeners in step until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let (services, svc_writer) = reflector::store::<Service>();
        let (slices, slice_writer) = reflector::store::<EndpointSlice>();
        let changed = Arc::new(Notify::new());
        let watch = |stream: futures::stream::BoxStream<'static, ()>| {
            let changed = changed.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        next = stream.next() => match next {
                            Some(()) => changed.notify_one(),
                            None => break,
                        },
                    }
                }
            })
        };
        let svc_api: Api<Service> = Api::all(self.client.clone());
        let slice_api: Api<EndpointSlice> = Api::all(self.client.clone());
        let _w1 = AbortOnDrop(watch(
            watcher(svc_api, watcher::Config::default())
                .default_backoff()
                .reflect(svc_writer)
                .map(|_| ())
                .boxed(),
        ));
        let _w2 = AbortOnDrop(watch(
            watcher(slice_api, watcher::Config::default())
                .default_backoff()
                .reflect(slice_writer)
                .map(|_| ())
                .boxed(),
        ));
        tracing::info!(node = %self.node.name, address = %self.node.ip, "service proxy running");
        loop {
            self.sync(&services, &slices).await;
            let retry = if self.failed.is_empty() {
                Duration::from_secs(3600)
            } else {
                RETRY_BIND
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Brings the listeners in line with the current Services and EndpointSlices.
    async fn sync(&mut self, services: &Store<Service>, slices: &Store<EndpointSlice>) {
        let svcs = services.state();
        let sls = slices.state();
        let svc_refs: Vec<&Service> = svcs.iter().map(AsRef::as_ref).collect();
        let slice_refs: Vec<&EndpointSlice> = sls.iter().map(AsRef::as_ref).collect();
        let table = table::build(&self.node, &svc_refs, &slice_refs);
        self.listeners.retain(|f, _| table.contains_key(f));
        self.failed.retain(|f, _| table.contains_key(f));
        for (f, route) in &table {
            if let Some(l) = self.listeners.get(f) {
                if *l.fwd.route() != *route {
                    l.fwd.set_route(route.clone());
                }
                continue;
            }
            match listen(*f, route.clone()).await {
                Ok(l) => {
                    self.failed.remove(f);
                    self.listeners.insert(*f, l);
                }
                Err(e) => {
                    if self.failed.insert(*f, e.clone()).is_none() {
                        tracing::warn!(frontend = %f.addr, service = %route.service, error = %e, "cannot listen for a Service; retrying");
                    }
                }
            }
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
        self.publish_load_balancers(&svc_refs).await;
    }

    /// Writes the node's address into `status.loadBalancer.ingress` of LoadBalancer Services
    /// that lack it.
    async fn publish_load_balancers(&self, services: &[&Service]) {
        let ip = self.node.ip.to_string();
        for s in services {
            if s.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
                continue;
            }
            let has = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .is_some_and(|i| i.iter().any(|i| i.ip.as_deref() == Some(ip.as_str())));
            if has {
                continue;
            }
            let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) else {
                continue;
            };
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::debug!(service = %name, error = %e, "cannot publish the load balancer address");
            }
        }
    }
}

async fn listen(f: Frontend, route: Route) -> Result<Listener, String> {
    let fwd = Forwarder::new(route);
    let stop = CancellationToken::new();
    match f.protocol {
        Protocol::Tcp => {
            let l = bind_tcp(f.addr).map_err(|e| e.to_string())?;
            tokio::spawn(forward::serve_tcp(l, fwd.clone(), stop.clone()));
        }
        Protocol::Udp => {
            let s = tokio::net::UdpSocket::bind(f.addr)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(forward::serve_udp(s, fwd.clone(), stop.clone()));
        }
    }
    Ok(Listener { fwd, stop })
}

/// A listener with `SO_REUSEADDR`, so a frontend given up and taken again binds at once.
fn bind_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
