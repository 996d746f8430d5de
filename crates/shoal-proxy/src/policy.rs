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
        let Some(policies) = self.policies.get(&pod.namespace) else {
            return true;
        };
        let mut selected = false;
        for (_, spec) in policies {
            let types = spec.policy_types.clone().unwrap_or_else(|| {
                let mut t = vec!["Ingress".to_owned()];
                if spec.egress.is_some() {
                    t.push("Egress".into());
                }
                t
            });
            let wanted = match dir {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            };
            if !types.iter().any(|t| t == wanted)
                || !spec
                    .pod_selector
                    .as_ref()
                    .is_none_or(|s| s.selects(Some(&pod.labels)))
            {
                continue;
            }
            selected = true;
            // Named ports resolve on the destination pod.
            let dest = match dir {
                Direction::Ingress => Some(pod),
                Direction::Egress => peer.map(AsRef::as_ref),
            };
            let allowed = match dir {
                Direction::Ingress => spec.ingress.iter().flatten().any(|r| {
                    self.peers_match(r.from.as_deref(), &pod.namespace, peer_ip, peer)
                        && ports_match(r.ports.as_deref(), port, proto, dest)
                }),
                Direction::Egress => spec.egress.iter().flatten().any(|r| {
                    self.peers_match(r.to.as_deref(), &pod.namespace, peer_ip, peer)
                        && ports_match(r.ports.as_deref(), port, proto, dest)
                }),
            };
            if allowed {
                return true;
            }
        }
        !selected
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
            let Some(pod) = pod else { return false };
            let ns_ok = match &peer.namespace_selector {
                None => pod.namespace == policy_ns,
                Some(sel) => sel.selects(self.namespaces.get(&pod.namespace)),
            };
            let pod_ok = peer
                .pod_selector
                .as_ref()
                .is_none_or(|sel| sel.selects(Some(&pod.labels)));
            (peer.namespace_selector.is_some() || peer.pod_selector.is_some()) && ns_ok && pod_ok
        })
    }
}

fn ports_match(
    ports: Option<&[NetworkPolicyPort]>,
    port: u16,
    proto: Protocol,
    dest: Option<&PodInfo>,
) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        if protocol(p.protocol.as_deref()) != proto {
            return false;
        }
        match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => {
                let end = p.end_port.unwrap_or(*n);
                (*n..=end).contains(&i32::from(port))
            }
            Some(IntOrString::String(name)) => dest
                .and_then(|d| d.ports.get(name))
                .is_some_and(|(n, pr)| *n == port && *pr == proto),
        }
    })
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
}
