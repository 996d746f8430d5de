//! NetworkPolicy (`networking.k8s.io/v1`) as Kubernetes defines it, evaluated for one
//! connection: a pod selected by no policy of a direction is open in that direction; a
//! selected pod accepts only what some rule of some selecting policy allows (policies add
//! up). A connection needs the caller's egress and the callee's ingress.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shoal_api::selector::LabelSelectorExt;
use shoal_runtime::network::Protocol;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What policies need to know of a pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Named container ports: name → (port, protocol).
    pub ports: HashMap<String, (u16, Protocol)>,
}

impl PodInfo {
    pub fn from_pod(p: &Pod) -> Option<(IpAddr, PodInfo)> {
        let status = p.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
        let mut ports = HashMap::new();
        for c in p.spec.iter().flat_map(|s| &s.containers) {
            for cp in c.ports.iter().flatten() {
                if let (Some(n), Ok(port)) = (&cp.name, u16::try_from(cp.container_port)) {
                    ports.insert(n.clone(), (port, protocol(cp.protocol.as_deref())));
                }
            }
        }
        Some((
            ip,
            PodInfo {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                labels: p.metadata.labels.clone().unwrap_or_default(),
                ports,
            },
        ))
    }
}

fn protocol(p: Option<&str>) -> Protocol {
    match p {
        Some("UDP") => Protocol::Udp,
        _ => Protocol::Tcp,
    }
}

/// An IPv4 or IPv6 CIDR of an `ipBlock`.
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let Some((addr, bits)) = cidr.split_once('/') else {
        return cidr.parse::<IpAddr>().is_ok_and(|a| a == ip);
    };
    let (Ok(addr), Ok(bits)) = (addr.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, addr) {
        (IpAddr::V4(a), IpAddr::V4(b)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Every pod, namespace and policy the node knows, indexed for evaluation.
#[derive(Default)]
pub struct Policies {
    pods: HashMap<IpAddr, Arc<PodInfo>>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    policies: HashMap<String, Vec<(String, NetworkPolicySpec)>>,
}

/// A rule of a policy: its peers and its ports (`None` or empty: any).
type Rule<'a> = (
    Option<&'a [NetworkPolicyPeer]>,
    Option<&'a [NetworkPolicyPort]>,
);

#[derive(Clone, Copy)]
enum Direction {
    Ingress,
    Egress,
}

impl Policies {
    pub fn build(pods: &[&Pod], namespaces: &[&Namespace], policies: &[&NetworkPolicy]) -> Self {
        let mut out = Policies::default();
        for p in pods {
            if let Some((ip, info)) = PodInfo::from_pod(p) {
                out.pods.insert(ip, Arc::new(info));
            }
        }
        for n in namespaces {
            if let Some(name) = &n.metadata.name {
                let mut labels = n.metadata.labels.clone().unwrap_or_default();
                // Kubernetes labels every namespace with its name.
                labels.insert("kubernetes.io/metadata.name".into(), name.clone());
                out.namespaces.insert(name.clone(), labels);
            }
        }
        for np in policies {
            if let (Some(ns), Some(spec)) = (&np.metadata.namespace, &np.spec) {
                out.policies
                    .entry(ns.clone())
                    .or_default()
                    .push((np.metadata.name.clone().unwrap_or_default(), spec.clone()));
            }
        }
        out
    }

    /// The pod at `ip`, if one is known.
    pub fn pod(&self, ip: IpAddr) -> Option<&Arc<PodInfo>> {
        self.pods.get(&ip)
    }

    /// Whether a connection from `from` to `to` is allowed: `from`'s egress (if it is a pod)
    /// and `to`'s ingress (if it is a pod).
    pub fn allows(&self, from: IpAddr, to: SocketAddr, proto: Protocol) -> bool {
        self.allows_pods(
            from,
            self.pods.get(&from),
            to,
            self.pods.get(&to.ip()),
            proto,
        )
    }

    /// As [`Policies::allows`], with the pods at either end given (the node may know a pod
    /// before the API server has told it the pod's address).
    pub fn allows_pods(
        &self,
        from: IpAddr,
        src: Option<&Arc<PodInfo>>,
        to: SocketAddr,
        dst: Option<&Arc<PodInfo>>,
        proto: Protocol,
    ) -> bool {
        if let Some(src) = src
            && !self.direction_allows(Direction::Egress, src, to.ip(), dst, to.port(), proto)
        {
            return false;
        }
        if let Some(dst) = dst
            && !self.direction_allows(Direction::Ingress, dst, from, src, to.port(), proto)
        {
            return false;
        }
        true
    }

    /// Whether `pod`'s policies of `dir` allow the peer at `peer_ip` (a pod if `peer`) on
    /// `port` (of the destination: `peer` for egress, `pod` for ingress).
    fn direction_allows(
        &self,
        dir: Direction,
        pod: &PodInfo,
        peer_ip: IpAddr,
        peer: Option<&Arc<PodInfo>>,
        port: u16,
        proto: Protocol,
    ) -> bool {
        self.ports_between(dir, pod, peer_ip, peer)
            .contains(port, proto)
    }

    /// The policies of `pod`'s namespace that select `pod` for `dir`; `None` if none does
    /// (the pod is open in that direction).
    fn selecting<'a>(
        &'a self,
        dir: Direction,
        pod: &PodInfo,
    ) -> Option<Vec<&'a NetworkPolicySpec>> {
        let wanted = match dir {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        };
        let specs: Vec<&NetworkPolicySpec> = self
            .policies
            .get(&pod.namespace)?
            .iter()
            .map(|(_, spec)| spec)
            .filter(|spec| {
                let types = spec.policy_types.clone().unwrap_or_else(|| {
                    let mut t = vec!["Ingress".to_owned()];
                    if spec.egress.is_some() {
                        t.push("Egress".into());
                    }
                    t
                });
                types.iter().any(|t| t == wanted)
                    && spec
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| s.selects(Some(&pod.labels)))
            })
            .collect();
        (!specs.is_empty()).then_some(specs)
    }

    /// The rules of `spec` for `dir`: (peers, ports).
    fn rules_of(dir: Direction, spec: &NetworkPolicySpec) -> Vec<Rule<'_>> {
        match dir {
            Direction::Ingress => spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_deref(), r.ports.as_deref()))
                .collect(),
            Direction::Egress => spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_deref(), r.ports.as_deref()))
                .collect(),
        }
    }

    /// The ports (of the destination) `pod`'s policies of `dir` open to the peer at
    /// `peer_ip` (a pod if `peer`): everything if no policy selects `pod` for `dir`.
    fn ports_between(
        &self,
        dir: Direction,
        pod: &PodInfo,
        peer_ip: IpAddr,
        peer: Option<&Arc<PodInfo>>,
    ) -> Ports {
        let Some(specs) = self.selecting(dir, pod) else {
            return Ports::All;
        };
        // Named ports resolve on the destination pod.
        let dest = match dir {
            Direction::Ingress => Some(pod),
            Direction::Egress => peer.map(AsRef::as_ref),
        };
        let mut open = Ports::none();
        for spec in specs {
            for (peers, ports) in Self::rules_of(dir, spec) {
                if self.peers_match(peers, &pod.namespace, peer_ip, peer) {
                    open.add(resolve_ports(ports, dest));
                }
            }
        }
        open
    }

    fn peers_match(
        &self,
        peers: Option<&[NetworkPolicyPeer]>,
        policy_ns: &str,
        ip: IpAddr,
        pod: Option<&Arc<PodInfo>>,
    ) -> bool {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            return true;
        };
        peers.iter().any(|peer| {
            if let Some(block) = &peer.ip_block {
                return in_cidr(ip, &block.cidr)
                    && !block.except.iter().flatten().any(|e| in_cidr(ip, e));
            }
            pod.is_some_and(|pod| self.selects_pod(peer, policy_ns, pod))
        })
    }

    /// Whether a pod or namespace selector `peer` of a policy in `policy_ns` picks `pod`.
    fn selects_pod(&self, peer: &NetworkPolicyPeer, policy_ns: &str, pod: &PodInfo) -> bool {
        let ns_ok = match &peer.namespace_selector {
            None => pod.namespace == policy_ns,
            Some(sel) => sel.selects(self.namespaces.get(&pod.namespace)),
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|sel| sel.selects(Some(&pod.labels)));
        (peer.namespace_selector.is_some() || peer.pod_selector.is_some()) && ns_ok && pod_ok
    }

    /// Every pod the node knows, with its address.
    pub fn pods(&self) -> impl Iterator<Item = (IpAddr, &Arc<PodInfo>)> {
        self.pods.iter().map(|(ip, p)| (*ip, p))
    }

    /// What a packet filter in the network namespace of the pod at `ip` (`pod`) enforces for
    /// it: see [`PodFilter`].
    pub fn filter_for(&self, ip: IpAddr, pod: &PodInfo) -> PodFilter {
        let ingress = self.selecting(Direction::Ingress, pod).map(|specs| {
            let mut rules = Vec::new();
            for spec in specs {
                for (peers, ports) in Self::rules_of(Direction::Ingress, spec) {
                    let ports = resolve_ports(ports, Some(pod));
                    let peers = match peers.filter(|p| !p.is_empty()) {
                        None => vec![Peer::Any],
                        Some(peers) => self.peer_addresses(peers, &pod.namespace),
                    };
                    rules.extend(peers.into_iter().map(|p| (p, ports.clone())));
                }
            }
            rules
        });
        let egress = self.selecting(Direction::Egress, pod).map(|specs| {
            let mut rules = Vec::new();
            for spec in specs {
                for (peers, ports) in Self::rules_of(Direction::Egress, spec) {
                    // Named ports mean the destination pod's: only pod destinations (below)
                    // can have them.
                    let ports = resolve_ports(ports, None);
                    match peers.filter(|p| !p.is_empty()) {
                        None => rules.push((Peer::Any, ports)),
                        Some(peers) => rules.extend(
                            peers
                                .iter()
                                .filter_map(|p| p.ip_block.as_ref())
                                .map(|b| (block(b), ports.clone())),
                        ),
                    }
                }
            }
            rules
        });
        let from = self.pods.get(&ip);
        let to_pods = self
            .pods
            .iter()
            .filter(|(other, _)| **other != ip)
            .map(|(other, dst)| {
                let out = self.ports_between(Direction::Egress, pod, *other, Some(dst));
                let back = self.ports_between(Direction::Ingress, dst, ip, from);
                (*other, out.intersect(&back))
            })
            .collect();
        PodFilter {
            ingress,
            egress,
            to_pods,
        }
    }

    /// The addresses the peers `peers` of a policy in `policy_ns` stand for.
    fn peer_addresses(&self, peers: &[NetworkPolicyPeer], policy_ns: &str) -> Vec<Peer> {
        let mut out = Vec::new();
        let mut ips = Vec::new();
        for peer in peers {
            match &peer.ip_block {
                Some(b) => out.push(block(b)),
                None => ips.extend(
                    self.pods
                        .iter()
                        .filter(|(_, p)| self.selects_pod(peer, policy_ns, p))
                        .map(|(ip, _)| *ip),
                ),
            }
        }
        ips.sort();
        ips.dedup();
        if !ips.is_empty() {
            out.push(Peer::Pods(ips));
        }
        out
    }
}

fn block(b: &k8s_openapi::api::networking::v1::IPBlock) -> Peer {
    Peer::Block {
        cidr: b.cidr.clone(),
        except: b.except.clone().unwrap_or_default(),
    }
}

/// Ports of one protocol, as inclusive ranges; or all of every protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    All,
    Only(Vec<(Protocol, u16, u16)>),
}

impl Ports {
    fn none() -> Self {
        Ports::Only(Vec::new())
    }

    fn add(&mut self, other: Ports) {
        match (&mut *self, other) {
            (Ports::All, _) => {}
            (_, Ports::All) => *self = Ports::All,
            (Ports::Only(a), Ports::Only(b)) => a.extend(b),
        }
    }

    fn contains(&self, port: u16, proto: Protocol) -> bool {
        match self {
            Ports::All => true,
            Ports::Only(v) => v
                .iter()
                .any(|(p, lo, hi)| *p == proto && (*lo..=*hi).contains(&port)),
        }
    }

    /// What both let through.
    pub fn intersect(&self, other: &Ports) -> Ports {
        match (self, other) {
            (Ports::All, x) | (x, Ports::All) => x.clone(),
            (Ports::Only(a), Ports::Only(b)) => {
                let mut out = Vec::new();
                for (pa, la, ha) in a {
                    for (pb, lb, hb) in b {
                        let (lo, hi) = ((*la).max(*lb), (*ha).min(*hb));
                        if pa == pb && lo <= hi {
                            out.push((*pa, lo, hi));
                        }
                    }
                }
                Ports::Only(out)
            }
        }
    }
}

/// Where a rule lets traffic come from or go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Any,
    /// The addresses of the pods its selectors pick.
    Pods(Vec<IpAddr>),
    Block {
        cidr: String,
        except: Vec<String>,
    },
}

/// A pod's NetworkPolicies, compiled for a packet filter in its own network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFilter {
    /// Who may connect to it, and to which of its ports; `None`: anyone (no policy selects
    /// it for ingress).
    pub ingress: Option<Vec<(Peer, Ports)>>,
    /// Where it may connect to that is not a known pod (`ipBlock` and any-destination
    /// rules); `None`: anywhere (no policy selects it for egress).
    pub egress: Option<Vec<(Peer, Ports)>>,
    /// Every other known pod, with the ports it may connect to there: its own egress and
    /// that pod's ingress both allowing (possibly none).
    pub to_pods: Vec<(IpAddr, Ports)>,
}

/// `ports` of a rule as ranges, named ports resolved on `dest` (dropped without one).
fn resolve_ports(ports: Option<&[NetworkPolicyPort]>, dest: Option<&PodInfo>) -> Ports {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return Ports::All;
    };
    let mut out = Vec::new();
    for p in ports {
        let proto = protocol(p.protocol.as_deref());
        match &p.port {
            None => out.push((proto, 1, u16::MAX)),
            Some(IntOrString::Int(n)) => {
                let end = p.end_port.unwrap_or(*n);
                if let (Ok(lo), Ok(hi)) = (u16::try_from(*n), u16::try_from(end)) {
                    out.push((proto, lo, hi));
                }
            }
            Some(IntOrString::String(name)) => {
                if let Some((n, pr)) = dest.and_then(|d| d.ports.get(name))
                    && *pr == proto
                {
                    out.push((proto, *n, *n));
                }
            }
        }
    }
    Ports::Only(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ns: &str, ip: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .unwrap()
    }

    fn policy(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn to(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_deny_then_an_allow_rule_by_labels_and_named_port() {
        let api = pod("api", "shop", "127.64.0.2", json!({"app": "api"}));
        let web = pod("web", "shop", "127.64.0.3", json!({"app": "web"}));
        let other = pod("x", "other", "127.64.0.4", json!({"app": "web"}));
        let namespaces = [ns("shop", json!({})), ns("other", json!({"team": "b"}))];
        let nss: Vec<&Namespace> = namespaces.iter().collect();
        let pods = [&api, &web, &other];
        let open = Policies::build(&pods, &nss, &[]);
        assert!(open.allows(ip("127.64.0.3"), to("127.64.0.2:8080"), Protocol::Tcp));
        let deny = policy("shop", json!({"podSelector": {}}));
        let p = Policies::build(&pods, &nss, &[&deny]);
        assert!(!p.allows(ip("127.64.0.3"), to("127.64.0.2:8080"), Protocol::Tcp));
        // Egress is not restricted by an ingress-only policy.
        assert!(p.allows(ip("127.64.0.2"), to("203.0.113.1:80"), Protocol::Tcp));
        let allow = policy(
            "shop",
            json!({"podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                         "ports": [{"port": "http"}]}]}),
        );
        let p = Policies::build(&pods, &nss, &[&deny, &allow]);
        assert!(p.allows(ip("127.64.0.3"), to("127.64.0.2:8080"), Protocol::Tcp));
        assert!(!p.allows(ip("127.64.0.3"), to("127.64.0.2:9090"), Protocol::Tcp));
        assert!(
            !p.allows(ip("127.64.0.4"), to("127.64.0.2:8080"), Protocol::Tcp),
            "other namespace"
        );
        let cross = policy(
            "shop",
            json!({"podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
        );
        let p = Policies::build(&pods, &nss, &[&deny, &cross]);
        assert!(p.allows(ip("127.64.0.4"), to("127.64.0.2:8080"), Protocol::Tcp));
    }

    #[test]
    fn egress_with_ip_blocks_except_and_port_ranges() {
        let web = pod("web", "shop", "127.64.0.3", json!({"app": "web"}));
        let np = policy(
            "shop",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
                        "ports": [{"port": 8000, "endPort": 8100, "protocol": "TCP"}]}]}),
        );
        let p = Policies::build(&[&web], &[], &[&np]);
        let from = ip("127.64.0.3");
        assert!(p.allows(from, to("192.0.2.10:8050"), Protocol::Tcp));
        assert!(!p.allows(from, to("192.0.2.200:8050"), Protocol::Tcp));
        assert!(!p.allows(from, to("192.0.2.10:8200"), Protocol::Tcp));
        assert!(!p.allows(from, to("192.0.2.10:8050"), Protocol::Udp));
        // Ingress stays open: the policy is egress only.
        assert!(p.allows(ip("127.64.0.9"), to("127.64.0.3:80"), Protocol::Tcp));
    }

    #[test]
    fn a_pod_filter_lists_peers_by_address_and_both_ends_ports_to_pods() {
        let web = pod("web", "shop", "198.18.0.2", json!({"app": "web"}));
        let friend = pod("friend", "shop", "198.18.0.3", json!({"role": "friend"}));
        let wasm = pod("wasm", "shop", "127.64.0.5", json!({"app": "wasm"}));
        let np = policy(
            "shop",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "friend"}}}],
                 "ports": [{"port": "http"}]},
                {"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.7/32"]}}]},
            ]}),
        );
        let wasm_only_friends = policy(
            "shop",
            json!({"podSelector": {"matchLabels": {"app": "wasm"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "friend"}}}],
                             "ports": [{"port": 9000}]}]}),
        );
        let nss = [ns("shop", json!({}))];
        let nss: Vec<&Namespace> = nss.iter().collect();
        let p = Policies::build(&[&web, &friend, &wasm], &nss, &[&np, &wasm_only_friends]);
        let info = |addr: &str| p.pod(ip(addr)).unwrap().clone();
        let f = p.filter_for(ip("198.18.0.2"), &info("198.18.0.2"));
        assert_eq!(
            f.ingress,
            Some(vec![
                (
                    Peer::Pods(vec![ip("198.18.0.3")]),
                    Ports::Only(vec![(Protocol::Tcp, 8080, 8080)])
                ),
                (
                    Peer::Block {
                        cidr: "192.0.2.0/24".into(),
                        except: vec!["192.0.2.7/32".into()]
                    },
                    Ports::All
                ),
            ])
        );
        assert_eq!(f.egress, None);
        // web may not reach the Wasm pod (its ingress wants friends); friend may, on 9000.
        let to = |f: &PodFilter, addr: &str| {
            f.to_pods
                .iter()
                .find(|(i, _)| *i == ip(addr))
                .map(|(_, p)| p.clone())
        };
        assert_eq!(to(&f, "127.64.0.5"), Some(Ports::Only(vec![])));
        let ff = p.filter_for(ip("198.18.0.3"), &info("198.18.0.3"));
        assert_eq!(
            to(&ff, "127.64.0.5"),
            Some(Ports::Only(vec![(Protocol::Tcp, 9000, 9000)]))
        );
        assert_eq!(
            to(&ff, "198.18.0.2"),
            Some(Ports::Only(vec![(Protocol::Tcp, 8080, 8080)]))
        );
    }

    #[test]
    fn port_sets_intersect_by_protocol_and_range() {
        let a = Ports::Only(vec![(Protocol::Tcp, 80, 90), (Protocol::Udp, 53, 53)]);
        let b = Ports::Only(vec![(Protocol::Tcp, 85, 100), (Protocol::Tcp, 53, 53)]);
        assert_eq!(a.intersect(&b), Ports::Only(vec![(Protocol::Tcp, 85, 90)]));
        assert_eq!(a.intersect(&Ports::All), a);
        assert_eq!(Ports::All.intersect(&Ports::All), Ports::All);
    }
}
