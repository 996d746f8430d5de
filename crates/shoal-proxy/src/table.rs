//! The routing table: from the Services and EndpointSlices the node sees, every frontend
//! (a ClusterIP, node port or load-balancer port) and the endpoints behind it, as kube-proxy
//! computes its rules.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::wake::Wake;
use k8s_openapi::api::apps::v1::Deployment;

/// The label naming an EndpointSlice's Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Where traffic arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

/// One endpoint: its address and the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub node: Option<String>,
}

/// What a frontend forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name:port`, for logs.
    pub service: String,
    /// The endpoints to use: the ready ones, or if none is ready, the serving terminating
    /// ones (Kubernetes' ProxyTerminatingEndpoints).
    pub backends: Vec<Backend>,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
    /// The scale-to-zero Deployment behind the Service: its connections are counted as its
    /// activity, and one arriving while there is no endpoint wakes it and waits.
    pub wakes: Option<Arc<Wake>>,
}

/// Every frontend with at least one endpoint, and the TCP frontends of Services in front of a
/// Deployment that wakes from zero (see [`crate::wake`]). A frontend absent here is not
/// listened on, so a connection to it is refused at once, as Kubernetes' REJECT rule does for
/// a Service without endpoints.
pub type Table = BTreeMap<Frontend, Route>;

/// Where this node is: its name (for `Local` traffic policies) and the address its node ports
/// and load balancers listen on.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub ip: IpAddr,
}

pub(crate) fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None, // SCTP is not proxied
    }
}

/// The backends of `port_name`/`proto` in `slices`.
pub(crate) fn backends(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Protocol,
) -> Vec<Backend> {
    let (mut ready, mut terminating) = (Vec::new(), Vec::new());
    for s in slices {
        let Some(port) = s.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && protocol(p.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            for a in &e.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                let b = Backend {
                    addr: SocketAddr::new(ip, number),
                    node: e.node_name.clone(),
                };
                // A missing `ready` means ready (the API's documented default).
                if c.ready != Some(false) {
                    ready.push(b);
                } else if c.serving == Some(true) && c.terminating == Some(true) {
                    terminating.push(b);
                }
            }
        }
    }
    let mut out = if ready.is_empty() { terminating } else { ready };
    out.sort_by_key(|b| b.addr);
    out.dedup_by_key(|b| b.addr);
    out
}

/// EndpointSlices grouped by the `(namespace, name)` of their Service.
pub(crate) fn slices_by_service<'a>(
    slices: &[&'a EndpointSlice],
) -> HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>> {
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        let (Some(ns), Some(svc)) = (
            s.metadata.namespace.as_deref(),
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        by_service.entry((ns, svc.as_str())).or_default().push(s);
    }
    by_service
}

/// The table for `node` from everything it sees; `wakeable` are the Deployments a connection
/// may wake ([`crate::wake::wakeable`]; none when this node cannot wake them).
pub fn build(
    node: &Node,
    services: &[&Service],
    slices: &[&EndpointSlice],
    wakeable: &[&Deployment],
) -> Table {
    let by_service = slices_by_service(slices);
    let mut table = Table::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map_or(DEFAULT_AFFINITY, |s| Duration::from_secs(s.max(1) as u64))
        });
        let local = |b: &Backend| b.node.as_deref() == Some(node.name.as_str());
        let wakes = spec
            .selector
            .as_ref()
            .and_then(|sel| crate::wake::behind(wakeable, ns, sel));
        for sp in spec.ports.iter().flatten() {
            let Some(proto) = protocol(sp.protocol.as_deref()) else {
                continue;
            };
            let all = backends(slices, sp.name.as_deref().unwrap_or(""), proto);
            let route = |only_local: bool| Route {
                service: format!(
                    "{ns}/{name}:{}",
                    sp.name.as_deref().unwrap_or(&sp.port.to_string())
                ),
                backends: all
                    .iter()
                    .filter(|b| !only_local || local(b))
                    .cloned()
                    .collect(),
                affinity,
                wakes: wakes.clone().filter(|_| proto == Protocol::Tcp),
            };
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let mut add = |addr: SocketAddr, r: Route| {
                if !r.backends.is_empty() || r.wakes.is_some() {
                    table.insert(
                        Frontend {
                            addr,
                            protocol: proto,
                        },
                        r,
                    );
                }
            };
            if let Some(ip) = cluster_ip {
                let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
                add(SocketAddr::new(ip, port), route(internal_local));
            }
            let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
            if matches!(ty, "NodePort" | "LoadBalancer")
                && let Some(np) = sp.node_port.and_then(|n| u16::try_from(n).ok())
            {
                add(SocketAddr::new(node.ip, np), route(external_local));
            }
            if ty == "LoadBalancer" {
                // ServiceLB's way on one node: the service port on the node's address.
                add(SocketAddr::new(node.ip, port), route(external_local));
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Node {
        Node {
            name: "n1".into(),
            ip: "127.0.0.1".parse().unwrap(),
        }
    }

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn fe(addr: &str) -> Frontend {
        Frontend {
            addr: addr.parse().unwrap(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn cluster_ip_node_port_and_load_balancer_forward_to_ready_endpoints() {
        let s = svc(json!({"type": "LoadBalancer", "clusterIP": "127.96.0.5",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}));
        let sl = slice(json!([
            {"addresses": ["127.64.0.2"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["127.64.0.3"], "conditions": {"ready": false}, "nodeName": "n1"},
            {"addresses": ["127.64.1.2"], "conditions": {"ready": true}, "nodeName": "n2"},
        ]));
        let t = build(&node(), &[&s], &[&sl], &[]);
        let addrs = |f: &str| -> Vec<String> {
            t[&fe(f)]
                .backends
                .iter()
                .map(|b| b.addr.to_string())
                .collect()
        };
        assert_eq!(
            addrs("127.96.0.5:80"),
            ["127.64.0.2:8080", "127.64.1.2:8080"]
        );
        assert_eq!(
            addrs("127.0.0.1:30080"),
            ["127.64.0.2:8080", "127.64.1.2:8080"]
        );
        assert_eq!(
            addrs("127.0.0.1:80"),
            ["127.64.0.2:8080", "127.64.1.2:8080"]
        );
    }

    #[test]
    fn local_policies_keep_this_nodes_endpoints_and_no_endpoints_means_no_frontend() {
        let s = svc(json!({"type": "NodePort", "clusterIP": "127.96.0.5",
            "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        let sl = slice(json!([
            {"addresses": ["127.64.1.2"], "conditions": {"ready": true}, "nodeName": "n2"},
        ]));
        assert!(build(&node(), &[&s], &[&sl], &[]).is_empty());
        let sl = slice(json!([
            {"addresses": ["127.64.0.2"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["127.64.1.2"], "conditions": {"ready": true}, "nodeName": "n2"},
        ]));
        let t = build(&node(), &[&s], &[&sl], &[]);
        assert_eq!(t.len(), 2);
        assert!(t.values().all(|r| r.backends.len() == 1));
        assert!(build(&node(), &[&s], &[], &[]).is_empty());
    }

    #[test]
    fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
        let s = svc(
            json!({"clusterIP": "127.96.0.5", "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80}]}),
        );
        let sl = slice(json!([
            {"addresses": ["127.64.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        ]));
        let t = build(&node(), &[&s], &[&sl], &[]);
        let r = &t[&fe("127.96.0.5:80")];
        assert_eq!(r.backends.len(), 1);
        assert_eq!(r.affinity, Some(DEFAULT_AFFINITY));
        let headless = svc(json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}));
        assert!(build(&node(), &[&headless], &[&sl], &[]).is_empty());
    }

    #[test]
    fn a_service_of_a_deployment_that_wakes_keeps_its_tcp_frontends_without_endpoints() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "fn", "namespace": "default", "uid": "u1",
                "annotations": {shoal_api::serverless::SCALE_TO_ZERO_AFTER: "30s"}},
            "spec": {"selector": {"matchLabels": {"app": "fn"}},
                "template": {"metadata": {"labels": {"app": "fn"}}}},
        }))
        .unwrap();
        let s = svc(json!({"clusterIP": "127.96.0.7", "selector": {"app": "fn"},
            "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}));
        let t = build(&node(), &[&s], &[], &[&d]);
        assert_eq!(t.len(), 1, "{t:?}");
        let r = &t[&fe("127.96.0.7:80")];
        assert!(r.backends.is_empty());
        assert_eq!(r.wakes.as_ref().unwrap().deployment, "fn");
        // Without the Deployment (or another selector) nothing is listened on.
        assert!(build(&node(), &[&s], &[], &[]).is_empty());
    }
}
