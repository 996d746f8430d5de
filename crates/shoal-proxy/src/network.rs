//! The node's pod network for the runtime ([`shoal_runtime::network::PodNetwork`]): the
//! proxy's frontends (shared with its listeners, so round-robin and session affinity are one),
//! the cluster's names and the NetworkPolicies, swapped as a whole on every change.

use crate::forward::Forwarder;
use crate::names::Zone;
use crate::policy::{PodInfo, Policies};
use crate::table::{Frontend, Protocol as FrontProtocol};
use shoal_runtime::network::{Lookup, PodNetwork, Protocol, Refusal};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

/// Everything a routing decision reads, replaced whole.
#[derive(Default)]
pub struct Snapshot {
    pub frontends: HashMap<Frontend, Arc<Forwarder>>,
    /// Every ClusterIP, with or without endpoints.
    pub service_ips: HashSet<IpAddr>,
    pub zone: Zone,
    pub policies: Arc<Policies>,
}

/// See the module documentation.
#[derive(Clone, Default)]
pub struct NodeNetwork {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    /// This node's pods as the runtime started them (their identity is known here before
    /// their address reaches the API server and comes back through the watch).
    local: Arc<RwLock<HashMap<IpAddr, Arc<PodInfo>>>>,
    /// Leave Service addresses to the proxy's listeners instead of picking the endpoint in
    /// the runtime (to compare the two paths).
    via_proxy: Arc<std::sync::atomic::AtomicBool>,
}

fn front_protocol(p: Protocol) -> FrontProtocol {
    match p {
        Protocol::Tcp => FrontProtocol::Tcp,
        Protocol::Udp => FrontProtocol::Udp,
    }
}

impl NodeNetwork {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends pods' connections to Service addresses through the proxy's listeners (`true`)
    /// or straight to an endpoint chosen in the runtime (`false`, the default).
    pub fn route_via_proxy(&self, yes: bool) {
        self.via_proxy
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn replace(&self, s: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }

    /// Replaces the policy part only (pods, namespaces or policies changed).
    pub fn replace_policies(&self, policies: Arc<Policies>) {
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        let old = guard.clone();
        *guard = Arc::new(Snapshot {
            frontends: old.frontends.clone(),
            service_ips: old.service_ips.clone(),
            zone: old.zone.clone(),
            policies,
        });
    }
}

impl NodeNetwork {
    /// The pod at `ip`: as the cluster reports it, else as this node started it.
    fn pod(&self, snap: &Snapshot, ip: IpAddr) -> Option<Arc<PodInfo>> {
        snap.policies.pod(ip).cloned().or_else(|| {
            self.local
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ip)
                .cloned()
        })
    }

    /// Whether the pod at `from` may open a TCP connection to `to` (both ends' policies);
    /// `true` if `from` is no pod (the node, a client outside the cluster).
    pub fn pod_may_connect(&self, from: IpAddr, to: SocketAddr) -> bool {
        let snap = self.snapshot();
        self.pod(&snap, from).is_none() || self.allows(&snap, from, to, Protocol::Tcp)
    }

    fn allows(&self, snap: &Snapshot, from: IpAddr, to: SocketAddr, protocol: Protocol) -> bool {
        let src = self.pod(snap, from);
        let dst = self.pod(snap, to.ip());
        snap.policies
            .allows_pods(from, src.as_ref(), to, dst.as_ref(), protocol)
    }
}

impl PodNetwork for NodeNetwork {
    fn attach(
        &self,
        ip: IpAddr,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) {
        let info = PodInfo {
            namespace: namespace.to_owned(),
            labels: labels.clone(),
            ports: HashMap::new(),
        };
        self.local
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ip, Arc::new(info));
    }

    fn detach(&self, ip: IpAddr) {
        self.local
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }

    fn route(
        &self,
        from: IpAddr,
        to: SocketAddr,
        protocol: Protocol,
    ) -> Result<SocketAddr, Refusal> {
        let snap = self.snapshot();
        let frontend = Frontend {
            addr: to,
            protocol: front_protocol(protocol),
        };
        if let Some(fwd) = snap.frontends.get(&frontend) {
            let allowed = fwd
                .candidates(from)
                .into_iter()
                .find(|e| self.allows(&snap, from, *e, protocol));
            // A Deployment that wakes from zero stands behind it: through the proxy, which
            // counts the connection as its activity and, at zero, holds it while it wakes.
            let wakes = protocol == Protocol::Tcp && fwd.route().wakes.is_some();
            return match (allowed, protocol) {
                (None, Protocol::Tcp) if wakes && fwd.route().backends.is_empty() => Ok(to),
                (Some(_), Protocol::Tcp) if wakes => Ok(to),
                // UDP is forwarded by the proxy listening on the Service address.
                (Some(_), Protocol::Udp) => Ok(to),
                (Some(_), Protocol::Tcp)
                    if self.via_proxy.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    Ok(to)
                }
                (Some(endpoint), Protocol::Tcp) => Ok(endpoint),
                (None, _) if fwd.route().backends.is_empty() => Err(Refusal::NoEndpoints),
                (None, _) => Err(Refusal::Denied),
            };
        }
        if snap.service_ips.contains(&to.ip()) {
            return Err(Refusal::NoEndpoints);
        }
        let is_pod = self.pod(&snap, to.ip()).is_some();
        if !is_pod && (to.ip().is_loopback() || to.ip().is_unspecified()) {
            return Err(Refusal::Host);
        }
        if self.allows(&snap, from, to, protocol) {
            Ok(to)
        } else {
            Err(Refusal::Denied)
        }
    }

    fn lookup(&self, fqdn: &str) -> Lookup {
        self.snapshot().zone.lookup(fqdn)
    }
}
