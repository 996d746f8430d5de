//! The node's service proxy, in kube-proxy's role: it watches Services and EndpointSlices and
//! listens on every frontend that has endpoints — each ClusterIP:port (the Service range is
//! on loopback, so the node can bind it without root), each node port on the node's address,
//! each `LoadBalancer` port on the node's address (as k3s' ServiceLB does; the controller
//! manager's `servicelb` publishes the nodes' addresses in `status.loadBalancer.ingress`) —
//! and forwards TCP
//! connections and UDP datagrams to ready endpoints ([`forward`]). A frontend whose Service
//! has no usable endpoint is not listened on, so connecting to it is refused at once — unless
//! a Deployment that scales to zero stands behind it and the node has an activator
//! ([`Proxy::with_activator`]): then its connections count as the Deployment's activity and
//! one arriving at zero wakes it and waits.
//!
//! Start at [`Proxy::run`]; the rules are [`table::build`].

pub mod dns;
pub mod firewall;
pub mod forward;
pub mod ingress;
pub mod names;
pub mod network;
pub mod policy;
pub mod routes;
pub mod table;
pub mod wake;

use forward::Forwarder;
use ingress::activator::Activator;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::reflector::Store;
use names::Zone;
use network::{NodeNetwork, Snapshot};
use policy::Policies;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use table::{Frontend, Node, Protocol};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a frontend that could not be listened on waits before the next try.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// A listening frontend.
struct Listener {
    stop: CancellationToken,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Also when the proxy itself panics or is aborted: the next one must be able to bind.
        self.stop.cancel();
    }
}

/// The proxy of one node.
pub struct Proxy {
    client: kube::Client,
    node: Node,
    domain: String,
    /// Every frontend with endpoints, listened on or not (the runtime routes to them too).
    forwarders: HashMap<Frontend, Arc<Forwarder>>,
    listeners: HashMap<Frontend, Listener>,
    /// Frontends that could not be bound, with the error (reported once).
    failed: BTreeMap<Frontend, String>,
    network: NodeNetwork,
    activator: Option<Arc<Activator>>,
}

/// A store of `api` whose every event pokes `changed`, until the guard drops.
fn reflect<K>(api: Api<K>, changed: &Arc<Notify>) -> (Store<K>, shoal_supervisor::AbortOnDrop)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let changed = changed.clone();
    shoal_client::watch_store(api, move || changed.notify_one())
}

impl Proxy {
    /// A proxy for `node` in a cluster whose DNS domain is `domain`, keeping `network` (the
    /// runtime's view) up to date.
    pub fn new(client: kube::Client, node: Node, domain: &str, network: NodeNetwork) -> Self {
        Proxy {
            client,
            node,
            domain: domain.to_owned(),
            forwarders: HashMap::new(),
            listeners: HashMap::new(),
            failed: BTreeMap::new(),
            network,
            activator: None,
        }
    }

    /// Wakes Deployments at zero for connections to their Services, and reports those
    /// connections as their activity, through `activator` (whose client also watches the
    /// Deployments and autoscalers: a node's own identity may not).
    pub fn with_activator(mut self, activator: Arc<Activator>) -> Self {
        self.activator = Some(activator);
        self
    }

    /// Watches Services, EndpointSlices, pods, namespaces and NetworkPolicies and keeps the
    /// listeners and the network in step until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let routes = Arc::new(Notify::new());
        let policy = Arc::new(Notify::new());
        let c = &self.client;
        let (services, _w1) = reflect(Api::<Service>::all(c.clone()), &routes);
        let (slices, _w2) = reflect(Api::<EndpointSlice>::all(c.clone()), &routes);
        let (pods, _w3) = reflect(Api::<Pod>::all(c.clone()), &policy);
        let (namespaces, _w4) = reflect(Api::<Namespace>::all(c.clone()), &policy);
        let (policies, _w5) = reflect(Api::<NetworkPolicy>::all(c.clone()), &policy);
        let wakeable = self.activator.as_ref().map(|a| {
            let c = a.client();
            (
                reflect(Api::<Deployment>::all(c.clone()), &routes),
                reflect(Api::<HorizontalPodAutoscaler>::all(c.clone()), &routes),
            )
        });
        tracing::info!(node = %self.node.name, address = %self.node.ip, "service proxy running");
        let mut routes_dirty = true;
        let mut policy_dirty = true;
        loop {
            if policy_dirty {
                let (p, n, np) = (pods.state(), namespaces.state(), policies.state());
                let built = Policies::build(
                    &p.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                    &n.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                    &np.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                );
                tracing::debug!(
                    pods = p.len(),
                    namespaces = n.len(),
                    policies = np.len(),
                    "network policy view rebuilt"
                );
                self.network.replace_policies(Arc::new(built));
            }
            if routes_dirty {
                let (d, h) = wakeable
                    .as_ref()
                    .map_or_else(Default::default, |w| (w.0.0.state(), w.1.0.state()));
                let d: Vec<&Deployment> = d.iter().map(AsRef::as_ref).collect();
                let h: Vec<&HorizontalPodAutoscaler> = h.iter().map(AsRef::as_ref).collect();
                self.sync(&services, &slices, &wake::wakeable(&d, &h)).await;
            }
            let retry = if self.failed.is_empty() {
                Duration::from_secs(3600)
            } else {
                RETRY_BIND
            };
            (routes_dirty, policy_dirty) = tokio::select! {
                _ = stop.cancelled() => break,
                _ = routes.notified() => (true, false),
                _ = policy.notified() => (false, true),
                _ = tokio::time::sleep(retry) => (true, false),
            };
        }
    }

    /// Brings the forwarders, listeners and names in line with the current Services and
    /// EndpointSlices.
    async fn sync(
        &mut self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        wakeable: &[&Deployment],
    ) {
        let svcs = services.state();
        let sls = slices.state();
        let svc_refs: Vec<&Service> = svcs.iter().map(AsRef::as_ref).collect();
        let slice_refs: Vec<&EndpointSlice> = sls.iter().map(AsRef::as_ref).collect();
        let table = table::build(&self.node, &svc_refs, &slice_refs, wakeable);
        self.forwarders.retain(|f, _| table.contains_key(f));
        self.listeners.retain(|f, _| table.contains_key(f));
        self.failed.retain(|f, _| table.contains_key(f));
        for (f, route) in &table {
            let fwd = match self.forwarders.get(f) {
                Some(fwd) => {
                    if *fwd.route() != *route {
                        fwd.set_route(route.clone());
                    }
                    fwd.clone()
                }
                None => {
                    let fwd = Forwarder::new(route.clone());
                    self.forwarders.insert(*f, fwd.clone());
                    fwd
                }
            };
            if self.listeners.contains_key(f) {
                continue;
            }
            match listen(*f, fwd, self.network.clone(), self.activator.clone()).await {
                Ok(l) => {
                    self.failed.remove(f);
                    self.listeners.insert(*f, l);
                }
                Err(e) => {
                    if self.failed.insert(*f, e.clone()).is_none() {
                        tracing::warn!(frontend = %f.addr, service = %route.service, error = %e, "cannot listen for a Service (pods still reach it); retrying");
                    }
                }
            }
        }
        let service_ips = svc_refs
            .iter()
            .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok())
            .collect();
        let old = self.network.snapshot();
        self.network.replace(Snapshot {
            frontends: self.forwarders.clone(),
            service_ips,
            zone: Zone::build(&self.domain, &svc_refs, &slice_refs),
            policies: old.policies.clone(),
        });
    }
}

async fn listen(
    f: Frontend,
    fwd: Arc<Forwarder>,
    network: NodeNetwork,
    activator: Option<Arc<Activator>>,
) -> Result<Listener, String> {
    let stop = CancellationToken::new();
    match f.protocol {
        Protocol::Tcp => {
            let l = bind_tcp(f.addr).map_err(|e| e.to_string())?;
            tokio::spawn(forward::serve_tcp(
                l,
                fwd,
                Some(network),
                activator,
                stop.clone(),
            ));
        }
        Protocol::Udp => {
            let s = tokio::net::UdpSocket::bind(f.addr)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(forward::serve_udp(s, fwd, stop.clone()));
        }
    }
    Ok(Listener { stop })
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
