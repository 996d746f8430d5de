//! The pod network as a runtime sees it: where a pod's connection goes ([`PodNetwork::route`]:
//! straight to a pod, to an endpoint behind a Service address, refused by policy), and what a
//! name means ([`resolve`]: the pod's DNS settings applied to the cluster's names, as a pod's
//! resolver does on Kubernetes with `ndots` and the search path).
//!
//! The node provides the [`PodNetwork`] (the service proxy knows Services, endpoints and
//! NetworkPolicies); a runtime without one lets pods reach nothing but their own address.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A Service address whose Service has no usable endpoint (or no such port).
    #[error("the Service has no ready endpoints")]
    NoEndpoints,
    /// A NetworkPolicy does not allow it.
    #[error("denied by NetworkPolicy")]
    Denied,
    /// An address of the node itself (its loopback services: the API server, the kubelet,
    /// etcd...), never reachable from a pod except through a Service.
    #[error("host addresses are not reachable from pods")]
    Host,
}

/// What the cluster says about a fully-qualified name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Its addresses (CNAMEs already followed inside the cluster).
    Addresses(Vec<IpAddr>),
    /// An alias to a name outside the cluster (an `ExternalName` Service).
    Alias(String),
    /// A name in the cluster's domain that does not exist (NXDOMAIN).
    NotFound,
    /// Not a cluster name: ask upstream.
    NotCluster,
}

/// The node's view of the pod network.
pub trait PodNetwork: Send + Sync + 'static {
    /// Where a connection (or datagram) from the pod at `from` to `to` goes.
    fn route(
        &self,
        from: IpAddr,
        to: SocketAddr,
        protocol: Protocol,
    ) -> Result<SocketAddr, Refusal>;

    /// The cluster's records of `fqdn` (lower case, no trailing dot).
    fn lookup(&self, fqdn: &str) -> Lookup;

    /// A pod of this node got `ip`: its identity counts for policies at once, before the
    /// API server has told the node of its address.
    fn attach(
        &self,
        _ip: IpAddr,
        _namespace: &str,
        _labels: &std::collections::BTreeMap<String, String>,
    ) {
    }

    /// The pod at `ip` is gone.
    fn detach(&self, _ip: IpAddr) {}
}

/// `dnsPolicy`, as it applies to a Wasm pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsPolicy {
    /// Cluster names first, then upstream (`ClusterFirst`, and `ClusterFirstWithHostNet`).
    #[default]
    ClusterFirst,
    /// The node's resolver only (`Default`).
    Node,
    /// Only what `dnsConfig` says (`None`): its searches; cluster names are still answered
    /// when its nameservers include the cluster DNS.
    None,
}

/// A pod's resolver settings, from its spec (`dnsPolicy`, `dnsConfig`, `hostAliases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDns {
    pub policy: DnsPolicy,
    /// Search domains, in order (`ns.svc.cluster.local svc.cluster.local cluster.local` plus
    /// `dnsConfig.searches`).
    pub search: Vec<String>,
    /// Names with fewer dots than this are tried with each search domain first.
    pub ndots: usize,
    /// `/etc/hosts` entries: the pod's own name and `hostAliases`.
    pub hosts: Vec<(IpAddr, Vec<String>)>,
    /// Whether cluster names are answered (the pod's nameservers include the cluster DNS).
    pub cluster: bool,
    /// The nameservers a resolver in the pod asks (its `resolv.conf`): the cluster DNS for
    /// `ClusterFirst`, `dnsConfig`'s own after it; empty: the node's. A Wasm pod resolves in
    /// its runtime instead; a container's resolver asks these.
    pub nameservers: Vec<IpAddr>,
}

impl Default for PodDns {
    fn default() -> Self {
        PodDns {
            policy: DnsPolicy::ClusterFirst,
            search: Vec::new(),
            ndots: 5,
            hosts: Vec::new(),
            cluster: true,
            nameservers: Vec::new(),
        }
    }
}

/// What resolving a name gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Addresses(Vec<IpAddr>),
    /// Ask the node's resolver for this name.
    Upstream(String),
    NotFound,
}

/// Resolves `name` for a pod with settings `dns` on `net`: IP literals, `/etc/hosts`
/// entries, then the search path as glibc applies it (a name with at least `ndots` dots, or
/// ending in a dot, is tried as is first; otherwise after the search domains).
pub fn resolve(dns: &PodDns, net: Option<&dyn PodNetwork>, name: &str) -> Resolution {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Resolution::Addresses(vec![ip]);
    }
    let name = name.to_ascii_lowercase();
    let hosts: Vec<IpAddr> = dns
        .hosts
        .iter()
        .filter(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(&name)))
        .map(|(ip, _)| *ip)
        .collect();
    if !hosts.is_empty() {
        return Resolution::Addresses(hosts);
    }
    let absolute = name.ends_with('.');
    let bare = name.trim_end_matches('.');
    if bare.is_empty() {
        return Resolution::NotFound;
    }
    let cluster = match (dns.policy, net) {
        (DnsPolicy::Node, _) | (_, None) => None,
        (_, Some(_)) if !dns.cluster => None,
        (_, Some(n)) => Some(n),
    };
    let Some(net) = cluster else {
        return Resolution::Upstream(bare.to_owned());
    };
    let mut candidates = Vec::new();
    let dots = bare.matches('.').count();
    if absolute || dots >= dns.ndots {
        candidates.push(bare.to_owned());
    }
    if !absolute {
        candidates.extend(dns.search.iter().map(|d| format!("{bare}.{d}")));
        if dots < dns.ndots {
            candidates.push(bare.to_owned());
        }
    }
    for c in &candidates {
        match net.lookup(c) {
            Lookup::Addresses(a) if !a.is_empty() => return Resolution::Addresses(a),
            Lookup::Alias(target) => return Resolution::Upstream(target),
            // Single-label names are not forwarded (as CoreDNS's default Corefile does not
            // resolve them upstream either).
            Lookup::NotCluster if *c == bare && bare.contains('.') => {
                return Resolution::Upstream(bare.to_owned());
            }
            _ => {}
        }
    }
    Resolution::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Names(HashMap<&'static str, Lookup>);

    impl PodNetwork for Names {
        fn route(&self, _: IpAddr, to: SocketAddr, _: Protocol) -> Result<SocketAddr, Refusal> {
            Ok(to)
        }
        fn lookup(&self, fqdn: &str) -> Lookup {
            self.0
                .get(fqdn)
                .cloned()
                .unwrap_or(if fqdn.ends_with("cluster.local") {
                    Lookup::NotFound
                } else {
                    Lookup::NotCluster
                })
        }
    }

    fn dns() -> PodDns {
        PodDns {
            search: vec![
                "shop.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            hosts: vec![("127.64.0.9".parse().unwrap(), vec!["me".into()])],
            ..PodDns::default()
        }
    }

    fn names() -> Names {
        let ip = |s: &str| Lookup::Addresses(vec![s.parse().unwrap()]);
        Names(HashMap::from([
            ("web.shop.svc.cluster.local", ip("127.96.0.20")),
            ("db.other.svc.cluster.local", ip("127.96.0.30")),
            (
                "ext.shop.svc.cluster.local",
                Lookup::Alias("example.org".into()),
            ),
        ]))
    }

    #[test]
    fn short_names_go_through_the_search_path_and_long_ones_first_as_is() {
        let n = names();
        let r = |name: &str| resolve(&dns(), Some(&n), name);
        let one = |s: &str| Resolution::Addresses(vec![s.parse().unwrap()]);
        assert_eq!(r("web"), one("127.96.0.20"));
        assert_eq!(r("db.other"), one("127.96.0.30"));
        assert_eq!(r("db.other.svc"), one("127.96.0.30"));
        assert_eq!(r("WEB.shop.svc.cluster.local."), one("127.96.0.20"));
        assert_eq!(r("me"), one("127.64.0.9"));
        assert_eq!(r("127.1.2.3"), one("127.1.2.3"));
        assert_eq!(r("ext"), Resolution::Upstream("example.org".into()));
        assert_eq!(r("nosuch"), Resolution::NotFound);
        assert_eq!(r("nosuch.svc.cluster.local"), Resolution::NotFound);
        assert_eq!(r("example.org"), Resolution::Upstream("example.org".into()));
    }

    #[test]
    fn the_node_policy_and_no_network_ask_upstream() {
        let n = names();
        let node = PodDns {
            policy: DnsPolicy::Node,
            ..dns()
        };
        assert_eq!(
            resolve(&node, Some(&n), "web"),
            Resolution::Upstream("web".into())
        );
        assert_eq!(
            resolve(&dns(), None, "web"),
            Resolution::Upstream("web".into())
        );
    }
}
