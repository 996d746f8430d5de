//! The cluster's names, as Kubernetes' DNS specification defines them: a Service's
//! `svc.ns.svc.<domain>` (its ClusterIP, or its ready endpoints when headless), per-endpoint
//! names of headless Services (`web-0.web.ns.svc.<domain>` for StatefulSet pods), SRV records
//! for named ports, `ExternalName` Services as CNAMEs, and pod names `a-b-c-d.ns.pod.<domain>`.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use shoal_runtime::network::Lookup;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How many CNAMEs inside the cluster a lookup follows.
const MAX_CNAMES: usize = 8;

/// One SRV record: priority 0, weight 100 / n, as CoreDNS answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub port: u16,
    pub target: String,
}

/// What a name holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Records {
    pub a: Vec<IpAddr>,
    pub cname: Option<String>,
    pub srv: Vec<Srv>,
}

/// Every name of the cluster, rebuilt when Services or EndpointSlices change.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    domain: String,
    names: HashMap<String, Records>,
}

/// `10.1.2.3` → `10-1-2-3`.
fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

impl Zone {
    pub fn build(domain: &str, services: &[&Service], slices: &[&EndpointSlice]) -> Zone {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            if let (Some(ns), Some(svc)) = (
                s.metadata.namespace.as_deref(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) {
                by_service.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        let mut names: HashMap<String, Records> = HashMap::new();
        for svc in services {
            let (Some(ns), Some(name), Some(spec)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
                svc.spec.as_ref(),
            ) else {
                continue;
            };
            let fqdn = format!("{name}.{ns}.svc.{domain}");
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref() {
                    names.entry(fqdn).or_default().cname =
                        Some(target.trim_end_matches('.').to_ascii_lowercase());
                }
                continue;
            }
            let headless = spec.cluster_ip.as_deref() == Some("None");
            let publish_all = spec.publish_not_ready_addresses == Some(true);
            let mut endpoints: Vec<(IpAddr, Option<String>)> = Vec::new();
            for sl in by_service.get(&(ns, name)).into_iter().flatten() {
                for e in &sl.endpoints {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                    if !ready && !publish_all {
                        continue;
                    }
                    for a in &e.addresses {
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            endpoints.push((ip, e.hostname.clone()));
                        }
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup();
            let ports: Vec<(String, String, u16)> = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let n = p.name.as_deref().filter(|n| !n.is_empty())?;
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    Some((n.to_ascii_lowercase(), proto, u16::try_from(p.port).ok()?))
                })
                .collect();
            if headless {
                let mut targets = Vec::new();
                for (ip, hostname) in &endpoints {
                    let host = hostname.clone().unwrap_or_else(|| dashed(ip));
                    let target = format!("{host}.{fqdn}");
                    names.entry(target.clone()).or_default().a.push(*ip);
                    targets.push(target);
                }
                names.entry(fqdn.clone()).or_default().a =
                    endpoints.iter().map(|(ip, _)| *ip).collect();
                for (pname, proto, _) in &ports {
                    // A headless Service's SRV records name each endpoint, on the port the
                    // endpoints serve (the slice's, which the Service port names).
                    let port = by_service
                        .get(&(ns, name))
                        .into_iter()
                        .flatten()
                        .flat_map(|sl| sl.ports.iter().flatten())
                        .find(|p| p.name.as_deref() == Some(pname.as_str()))
                        .and_then(|p| p.port)
                        .and_then(|p| u16::try_from(p).ok());
                    if let Some(port) = port {
                        names
                            .entry(format!("_{pname}._{proto}.{fqdn}"))
                            .or_default()
                            .srv = targets
                            .iter()
                            .map(|t| Srv {
                                port,
                                target: t.clone(),
                            })
                            .collect();
                    }
                }
            } else if let Some(ip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            {
                names.entry(fqdn.clone()).or_default().a = vec![ip];
                for (pname, proto, port) in &ports {
                    names
                        .entry(format!("_{pname}._{proto}.{fqdn}"))
                        .or_default()
                        .srv = vec![Srv {
                        port: *port,
                        target: fqdn.clone(),
                    }];
                }
            }
        }
        Zone { domain, names }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether `fqdn` is in the cluster's domain.
    pub fn is_cluster(&self, fqdn: &str) -> bool {
        fqdn == self.domain || fqdn.ends_with(&format!(".{}", self.domain))
    }

    /// The records of `fqdn` (lower case, no trailing dot), pod names included.
    pub fn records(&self, fqdn: &str) -> Option<Records> {
        if let Some(r) = self.names.get(fqdn) {
            return Some(r.clone());
        }
        // a-b-c-d.<ns>.pod.<domain>
        let rest = fqdn.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (host, _ns) = rest.split_once('.')?;
        let ip: Ipv4Addr = host.replace('-', ".").parse().ok()?;
        Some(Records {
            a: vec![IpAddr::V4(ip)],
            ..Records::default()
        })
    }

    /// What a pod's resolver gets for `fqdn`: addresses, with CNAMEs inside the cluster
    /// followed.
    pub fn lookup(&self, fqdn: &str) -> Lookup {
        let mut name = fqdn.trim_end_matches('.').to_ascii_lowercase();
        for _ in 0..MAX_CNAMES {
            if !self.is_cluster(&name) {
                return if name == fqdn {
                    Lookup::NotCluster
                } else {
                    Lookup::Alias(name)
                };
            }
            match self.records(&name) {
                Some(Records { cname: Some(t), .. }) => name = t,
                Some(r) if !r.a.is_empty() => return Lookup::Addresses(r.a),
                _ => return Lookup::NotFound,
            }
        }
        Lookup::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).unwrap() };
        let web = svc(json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "127.96.0.20", "ports": [{"name": "http", "port": 80}]}}));
        let db = svc(json!({"metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}));
        let alias = svc(json!({"metadata": {"name": "front", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"}}));
        let out = svc(json!({"metadata": {"name": "ext", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "example.org."}}));
        let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5433}],
        "endpoints": [
            {"addresses": ["127.64.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["127.64.0.6"], "hostname": "db-1", "conditions": {"ready": true}},
            {"addresses": ["127.64.0.7"], "hostname": "db-2", "conditions": {"ready": false}},
        ]}))
        .unwrap();
        Zone::build("cluster.local", &[&web, &db, &alias, &out], &[&slice])
    }

    fn ips(v: &[&str]) -> Lookup {
        Lookup::Addresses(v.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn services_headless_endpoints_aliases_and_pods_resolve() {
        let z = zone();
        assert_eq!(
            z.lookup("web.shop.svc.cluster.local"),
            ips(&["127.96.0.20"])
        );
        assert_eq!(
            z.lookup("db.shop.svc.cluster.local"),
            ips(&["127.64.0.5", "127.64.0.6"])
        );
        assert_eq!(
            z.lookup("db-1.db.shop.svc.cluster.local"),
            ips(&["127.64.0.6"])
        );
        assert_eq!(z.lookup("db-2.db.shop.svc.cluster.local"), Lookup::NotFound);
        assert_eq!(
            z.lookup("front.shop.svc.cluster.local"),
            ips(&["127.96.0.20"])
        );
        assert_eq!(
            z.lookup("ext.shop.svc.cluster.local"),
            Lookup::Alias("example.org".into())
        );
        assert_eq!(
            z.lookup("127-64-0-9.shop.pod.cluster.local"),
            ips(&["127.64.0.9"])
        );
        assert_eq!(z.lookup("nope.shop.svc.cluster.local"), Lookup::NotFound);
        assert_eq!(z.lookup("example.org"), Lookup::NotCluster);
    }

    #[test]
    fn srv_records_name_ports() {
        let z = zone();
        let web = z.records("_http._tcp.web.shop.svc.cluster.local").unwrap();
        assert_eq!(
            web.srv,
            [Srv {
                port: 80,
                target: "web.shop.svc.cluster.local".into()
            }]
        );
        let db = z.records("_pg._tcp.db.shop.svc.cluster.local").unwrap();
        assert_eq!(db.srv.len(), 2);
        assert_eq!(db.srv[0].port, 5433);
        assert_eq!(db.srv[0].target, "db-0.db.shop.svc.cluster.local");
    }
}
