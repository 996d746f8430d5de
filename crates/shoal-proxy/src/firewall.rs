//! NetworkPolicy for container pods: each container pod's policies ([`PodFilter`]) as an
//! nftables table in the pod's own network namespace, as Calico or Cilium enforce at a pod's
//! interface. Wasm pods are policed in the node process (their connects and the proxy's);
//! container pods' packets never pass through it, so the kernel polices them:
//!
//! - **ingress**: only what the pod's ingress rules allow (pods picked by selectors, by their
//!   addresses; `ipBlock`s; ports resolved on the pod), plus the nodes' own addresses: a
//!   connection from a node is one its Wasm runtime or Service proxy made for a pod and
//!   policed on its side (both ends' policies), or a probe;
//! - **egress**: to a known pod, the ports its own egress and that pod's ingress both allow
//!   (so a Wasm pod's ingress covers containers calling it); this node's Wasm pods not so
//!   allowed are dropped; with egress rules, the rest of the node's loopback network
//!   (ClusterIPs, the cluster DNS: the proxy polices TCP there) is reachable, other known pods
//!   are not, and everything else follows the `ipBlock` and any-destination rules.
//!
//! Connections already established stay (conntrack), as Kubernetes implementations do.

use crate::policy::{Peer, PodFilter, Ports};
use shoal_runtime::network::Protocol;
use std::net::IpAddr;

/// The table's name in every pod's namespace.
const TABLE: &str = "shoal_policy";

/// `ip saddr …` / `ip daddr …` for `peer` (`dir` is `saddr` or `daddr`); `None` if it can
/// match nothing here (no pods, or an IPv6 block: pods are IPv4, and the final drop covers
/// the rest).
fn peer_clause(dir: &str, peer: &Peer) -> Option<String> {
    match peer {
        Peer::Any => Some(String::new()),
        Peer::Pods(ips) => {
            let v4: Vec<String> = ips
                .iter()
                .filter(|ip| ip.is_ipv4())
                .map(IpAddr::to_string)
                .collect();
            (!v4.is_empty()).then(|| format!("ip {dir} {{ {} }} ", v4.join(", ")))
        }
        Peer::Block { cidr, except } => {
            if cidr.contains(':') {
                return None;
            }
            let mut out = format!("ip {dir} {cidr} ");
            let except: Vec<&str> = except
                .iter()
                .filter(|e| !e.contains(':'))
                .map(String::as_str)
                .collect();
            if !except.is_empty() {
                out.push_str(&format!("ip {dir} != {{ {} }} ", except.join(", ")));
            }
            Some(out)
        }
    }
}

/// `tcp dport { … }` / `udp dport { … }` clauses for `ports` (one per protocol; one empty
/// clause for all ports; none for no port).
fn port_clauses(ports: &Ports) -> Vec<String> {
    let ranges = match ports {
        Ports::All => return vec![String::new()],
        Ports::Only(r) => r,
    };
    [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp")]
        .into_iter()
        .filter_map(|(proto, name)| {
            let list: Vec<String> = ranges
                .iter()
                .filter(|(p, _, _)| *p == proto)
                .map(|(_, lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect();
            (!list.is_empty()).then(|| format!("{name} dport {{ {} }} ", list.join(", ")))
        })
        .collect()
}

fn accept_rules(out: &mut String, dir: &str, rules: &[(Peer, Ports)]) {
    for (peer, ports) in rules {
        let Some(peer) = peer_clause(dir, peer) else {
            continue;
        };
        for ports in port_clauses(ports) {
            out.push_str(&format!("    {peer}{ports}accept\n"));
        }
    }
}

/// The nftables script that replaces the pod's table with `filter`: `nodes` are the nodes'
/// addresses (this node's on the bridge included), `wasm_pods` this node's Wasm pod range.
pub fn ruleset(filter: &PodFilter, nodes: &[IpAddr], wasm_pods: &str) -> String {
    let mut out =
        format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    out.push_str("  chain ingress {\n    type filter hook input priority 0; policy accept;\n");
    out.push_str("    ct state established,related accept\n    iifname \"lo\" accept\n");
    if let Some(rules) = &filter.ingress {
        let nodes = Peer::Pods(nodes.to_vec());
        if let Some(n) = peer_clause("saddr", &nodes) {
            out.push_str(&format!("    {n}accept\n"));
        }
        accept_rules(&mut out, "saddr", rules);
        out.push_str("    drop\n");
    }
    out.push_str("  }\n  chain egress {\n    type filter hook output priority 0; policy accept;\n");
    out.push_str("    ct state established,related accept\n    oifname \"lo\" accept\n");
    let wasm: Option<shoal_api::net::Cidr> = wasm_pods.parse().ok();
    match &filter.egress {
        // No egress rules: only this node's Wasm pods whose ingress does not admit this pod
        // everywhere need saying (a container pod's own table polices its ingress); the
        // script stays the same as unrestricted pods come and go.
        None => {
            for (ip, ports) in &filter.to_pods {
                if *ports == Ports::All || !wasm.is_some_and(|w| w.contains(*ip)) {
                    continue;
                }
                accept_rules(&mut out, "daddr", &[(Peer::Pods(vec![*ip]), ports.clone())]);
                if let Some(p) = peer_clause("daddr", &Peer::Pods(vec![*ip])) {
                    out.push_str(&format!("    {p}drop\n"));
                }
            }
        }
        Some(rules) => {
            let to_pods: Vec<(Peer, Ports)> = filter
                .to_pods
                .iter()
                .map(|(ip, ports)| (Peer::Pods(vec![*ip]), ports.clone()))
                .collect();
            accept_rules(&mut out, "daddr", &to_pods);
            // This node's Wasm pods not yet known, then every other known pod: dropped.
            if let Some(w) = wasm {
                out.push_str(&format!("    ip daddr {w} drop\n"));
            }
            // ClusterIPs and the cluster DNS, through the node (its proxy polices TCP).
            out.push_str("    ip daddr 127.0.0.0/8 accept\n");
            let others: Vec<IpAddr> = filter.to_pods.iter().map(|(ip, _)| *ip).collect();
            if let Some(p) = peer_clause("daddr", &Peer::Pods(others)) {
                out.push_str(&format!("    {p}drop\n"));
            }
            accept_rules(&mut out, "daddr", rules);
            out.push_str("    drop\n");
        }
    }
    out.push_str("  }\n}\n");
    out
}

/// Loads `script` into the network namespace at `netns` (`nft -f -` there).
pub async fn apply(netns: &str, script: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_open_pod_only_keeps_the_node_s_wasm_pods_ingress() {
        let f = PodFilter {
            ingress: None,
            egress: None,
            to_pods: vec![
                (ip("127.64.0.5"), Ports::Only(vec![])),
                (ip("127.64.0.6"), Ports::All),
                (ip("198.18.0.9"), Ports::Only(vec![])),
            ],
        };
        let s = ruleset(&f, &[ip("198.18.0.1")], "127.64.0.0/24");
        assert!(s.starts_with("table inet shoal_policy {}\ndelete table inet shoal_policy\n"));
        let egress = s.split("chain egress").nth(1).unwrap();
        // A Wasm pod open to it needs no rule; one that is not is dropped.
        assert!(!egress.contains("127.64.0.6"), "{s}");
        assert!(egress.contains("ip daddr { 127.64.0.5 } drop\n"), "{s}");
        // Container pods police their own ingress; no drop at the end.
        assert!(!egress.contains("198.18.0.9"), "{s}");
        assert!(
            !egress
                .trim_end()
                .trim_end_matches('}')
                .trim_end()
                .ends_with("drop"),
            "{s}"
        );
        let ingress = s
            .split("chain ingress")
            .nth(1)
            .unwrap()
            .split("chain egress")
            .next()
            .unwrap();
        assert!(!ingress.contains("drop"), "{s}");
    }

    #[test]
    fn a_selected_pod_admits_its_peers_and_the_nodes_then_drops() {
        let f = PodFilter {
            ingress: Some(vec![
                (
                    Peer::Pods(vec![ip("198.18.0.3"), ip("127.64.0.7")]),
                    Ports::Only(vec![(Protocol::Tcp, 8080, 8080), (Protocol::Udp, 53, 54)]),
                ),
                (
                    Peer::Block {
                        cidr: "192.0.2.0/24".into(),
                        except: vec!["192.0.2.7/32".into()],
                    },
                    Ports::All,
                ),
                (Peer::Pods(vec![]), Ports::All),
            ]),
            egress: Some(vec![(
                Peer::Any,
                Ports::Only(vec![(Protocol::Tcp, 443, 443)]),
            )]),
            to_pods: vec![(ip("198.18.0.3"), Ports::Only(vec![(Protocol::Tcp, 80, 80)]))],
        };
        let s = ruleset(&f, &[ip("198.19.0.1"), ip("198.18.0.1")], "127.64.0.0/24");
        for line in [
            "ip saddr { 198.19.0.1, 198.18.0.1 } accept\n",
            "ip saddr { 198.18.0.3, 127.64.0.7 } tcp dport { 8080 } accept\n",
            "ip saddr { 198.18.0.3, 127.64.0.7 } udp dport { 53-54 } accept\n",
            "ip saddr 192.0.2.0/24 ip saddr != { 192.0.2.7/32 } accept\n",
            "ip daddr { 198.18.0.3 } tcp dport { 80 } accept\n",
            "ip daddr 127.0.0.0/8 accept\n",
            "ip daddr { 198.18.0.3 } drop\n",
            "tcp dport { 443 } accept\n",
        ] {
            assert!(s.contains(line), "{line:?} in\n{s}");
        }
        assert_eq!(s.matches("    drop\n").count(), 2, "{s}");
        // The pod-specific accepts come before the drop of other pods.
        assert!(s.find("tcp dport { 80 } accept").unwrap() < s.find("198.18.0.3 } drop").unwrap());
    }
}
