//! Routes between the nodes' container pod subnets, as flannel's host-gw backend programs
//! them: every node that runs containers publishes its container subnet on its Node
//! ([`CONTAINER_POD_CIDR`]); every other node routes that subnet through the node's address
//! (`ip route replace SUBNET via NODE-IP`), so pod traffic crosses machines unencapsulated and
//! unNATed. Nodes must share a link (the next hop must be directly reachable), as host-gw
//! requires. A node whose address is on loopback (nodes side by side on one machine) is not
//! routed to: its pods are this machine's already.

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use shoal_api::net::Cidr;
use shoal_api::node::CONTAINER_POD_CIDR;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The routes this node wants: each other node's container subnet through its InternalIP.
/// Subnets that overlap `own` (this node's) are never routed away.
pub fn wanted(nodes: &[Arc<Node>], me: &str, own: Option<Cidr>) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(me) {
            continue;
        }
        let Some(cidr) = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONTAINER_POD_CIDR))
            .and_then(|c| c.parse::<Cidr>().ok())
        else {
            continue;
        };
        let via = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .and_then(|a| a.address.parse::<IpAddr>().ok());
        let Some(via) = via.filter(|ip| ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified())
        else {
            continue;
        };
        if own.is_some_and(|o| overlaps(o, cidr)) {
            tracing::warn!(node = ?node.metadata.name, %cidr, "a node's container subnet overlaps this node's; not routed");
            continue;
        }
        out.insert(cidr.to_string(), via);
    }
    out
}

fn overlaps(a: Cidr, b: Cidr) -> bool {
    a.contains(IpAddr::V4(b.nth(0))) || b.contains(IpAddr::V4(a.nth(0)))
}

/// Runs `ip route ARGS`, saying what failed.
async fn ip_route(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .arg("route")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The InternalIPs of the cluster's nodes, as [`run`] last saw them.
pub type NodeAddresses = Arc<std::sync::RwLock<Vec<IpAddr>>>;

/// Every node's InternalIP.
fn addresses(nodes: &[Arc<Node>]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Keeps this node's routes to the other nodes' container subnets in step with the Nodes
/// (and `addresses` with their addresses) until `stop`, then takes the routes away.
pub async fn run(
    client: kube::Client,
    me: String,
    own: Option<Cidr>,
    addresses_out: NodeAddresses,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let poke = changed.clone();
    let (nodes, _watch) =
        shoal_client::watch_store(Api::<Node>::all(client), move || poke.notify_one());
    let mut installed: BTreeMap<String, IpAddr> = BTreeMap::new();
    // Routes the kernel refused, with why (said once each).
    let mut refused: BTreeMap<(String, IpAddr), String> = BTreeMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = changed.notified() => {}
        }
        let state = nodes.state();
        *addresses_out.write().unwrap_or_else(|p| p.into_inner()) = addresses(&state);
        let want = wanted(&state, &me, own);
        for (cidr, via) in &installed.clone() {
            if want.get(cidr) != Some(via) {
                if let Err(e) = ip_route(&["del", cidr, "via", &via.to_string()]).await {
                    tracing::debug!(%cidr, %via, error = %e, "route already gone");
                }
                installed.remove(cidr);
            }
        }
        for (cidr, via) in want {
            if installed.get(&cidr) == Some(&via) {
                continue;
            }
            match ip_route(&["replace", &cidr, "via", &via.to_string()]).await {
                Ok(()) => {
                    tracing::info!(%cidr, %via, "routing a node's container pods");
                    installed.insert(cidr, via);
                }
                Err(e) => {
                    if refused.insert((cidr.clone(), via), e.clone()).is_none() {
                        tracing::warn!(%cidr, %via, error = %e, "cannot route to a node's container pods (host-gw needs the nodes on one link)");
                    }
                }
            }
        }
    }
    for (cidr, via) in installed {
        let _ = ip_route(&["del", &cidr, "via", &via.to_string()]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str, cidr: Option<&str>) -> Arc<Node> {
        let mut annotations = serde_json::Map::new();
        if let Some(c) = cidr {
            annotations.insert(CONTAINER_POD_CIDR.into(), json!(c));
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": annotations},
                "status": {"addresses": [
                    {"type": "Hostname", "address": name},
                    {"type": "InternalIP", "address": ip},
                ]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn other_nodes_container_subnets_are_routed_through_their_addresses() {
        let own: Cidr = "198.18.1.0/24".parse().unwrap();
        let nodes = [
            node("a", "198.19.0.1", Some("198.18.1.0/24")),
            node("b", "198.19.0.2", Some("198.18.2.0/24")),
            // Side by side on this machine: nothing to route.
            node("c", "127.0.3.1", Some("198.18.3.0/24")),
            // No containers.
            node("d", "198.19.0.4", None),
            // Overlapping this node's own subnet: never routed away.
            node("e", "198.19.0.5", Some("198.18.0.0/16")),
            node("f", "198.19.0.6", Some("not a cidr")),
        ];
        let want = wanted(&nodes, "a", Some(own));
        assert_eq!(
            want.into_iter().collect::<Vec<_>>(),
            vec![("198.18.2.0/24".to_owned(), "198.19.0.2".parse().unwrap())]
        );
    }
}
