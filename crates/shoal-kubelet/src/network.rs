//! What a pod learns about the cluster's network from the kubelet: its resolver settings
//! (`dnsPolicy`, `dnsConfig`, `hostAliases`, as Kubernetes writes a pod's `resolv.conf` and
//! `/etc/hosts`) and the Service environment variables (`FOO_SERVICE_HOST`, the docker-link
//! variables).

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use shoal_runtime::network::{DnsPolicy, PodDns};
use std::net::IpAddr;

/// The resolver settings of `pod` on a cluster with domain `domain` whose DNS Service is at
/// `cluster_dns`.
pub fn pod_dns(pod: &Pod, domain: &str, cluster_dns: Option<IpAddr>) -> PodDns {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let config = spec.and_then(|s| s.dns_config.as_ref());
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let policy = match spec.and_then(|s| s.dns_policy.as_deref()) {
        Some("Default") => DnsPolicy::Node,
        Some("None") => DnsPolicy::None,
        // ClusterFirst on the host network falls back to the node's resolver, as on
        // Kubernetes; ClusterFirstWithHostNet keeps the cluster's.
        Some("ClusterFirst") | None if host_network => DnsPolicy::Node,
        _ => DnsPolicy::ClusterFirst,
    };
    let mut search = Vec::new();
    if policy == DnsPolicy::ClusterFirst {
        search.extend([
            format!("{ns}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_owned(),
        ]);
    }
    for s in config
        .and_then(|c| c.searches.as_ref())
        .into_iter()
        .flatten()
    {
        if !search.contains(s) {
            search.push(s.clone());
        }
    }
    let ndots = config
        .and_then(|c| c.options.as_ref())
        .into_iter()
        .flatten()
        .find(|o| o.name.as_deref() == Some("ndots"))
        .and_then(|o| o.value.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let nameservers: Vec<IpAddr> = config
        .and_then(|c| c.nameservers.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|n| n.parse().ok())
        .collect();
    let cluster = match policy {
        DnsPolicy::ClusterFirst => true,
        DnsPolicy::Node => false,
        DnsPolicy::None => cluster_dns.is_some_and(|d| nameservers.contains(&d)),
    };
    let mut hosts = Vec::new();
    for a in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        if let Ok(ip) = a.ip.parse::<IpAddr>() {
            hosts.push((ip, a.hostnames.clone().unwrap_or_default()));
        }
    }
    let nameservers = match (policy, cluster_dns) {
        (DnsPolicy::ClusterFirst, Some(dns)) => std::iter::once(dns)
            .chain(nameservers.into_iter().filter(|n| *n != dns))
            .collect(),
        _ => nameservers,
    };
    PodDns {
        policy,
        search,
        ndots,
        hosts,
        cluster,
        nameservers,
    }
}

/// `my-svc` → `MY_SVC`.
fn env_name(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

/// The environment variables Kubernetes gives a container for `services` (those with a
/// ClusterIP), in the order of `services`.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in services {
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = env_name(s.metadata.name.as_deref().unwrap_or(""));
        out.push((format!("{name}_SERVICE_HOST"), ip.to_owned()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(pn)),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_owned()
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in ports {
            let (pr, port) = (proto(p), p.port);
            let prefix = format!("{name}_PORT_{port}_{}", pr.to_uppercase());
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{port}", pr.to_lowercase()),
            ));
            out.push((format!("{prefix}_PROTO"), pr.to_lowercase()));
            out.push((format!("{prefix}_PORT"), port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_owned()));
        }
    }
    out
}

/// The Services whose variables a container of `pod` gets: its namespace's (unless
/// `enableServiceLinks: false`) and always the `kubernetes` Service of `default`, sorted by
/// name as the kubelet does.
pub async fn services_for(client: &kube::Client, pod: &Pod) -> Result<Vec<Service>, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
    let mut out: Vec<Service> = Vec::new();
    if links {
        out = Api::<Service>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items;
    }
    if ns != "default" || !links {
        let master = Api::<Service>::namespaced(client.clone(), "default")
            .get_opt("kubernetes")
            .await?;
        out.extend(master);
    }
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_as_kubernetes_names_them() {
        let s: Service = serde_json::from_value(json!({
            "metadata": {"name": "redis-primary"},
            "spec": {"clusterIP": "127.96.0.11", "ports": [
                {"name": "db", "port": 6379, "protocol": "TCP"},
                {"name": "metrics", "port": 9121, "protocol": "UDP"}]},
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
        }))
        .unwrap();
        let env: std::collections::HashMap<_, _> =
            service_env(&[s, headless]).into_iter().collect();
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "127.96.0.11");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_METRICS"], "9121");
        assert_eq!(env["REDIS_PRIMARY_PORT"], "tcp://127.96.0.11:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_9121_UDP"], "udp://127.96.0.11:9121");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_PROTO"], "tcp");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "127.96.0.11");
        assert!(!env.keys().any(|k| k.starts_with("WEB_")));
    }

    #[test]
    fn dns_settings_follow_the_policy() {
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
            )
            .unwrap()
        };
        let d = pod_dns(&pod(json!({"containers": []})), "cluster.local", None);
        assert_eq!(d.search[0], "shop.svc.cluster.local");
        assert_eq!((d.ndots, d.cluster), (5, true));
        let dns: IpAddr = "127.96.0.10".parse().unwrap();
        let d = pod_dns(
            &pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["127.96.0.10"], "searches": ["corp.internal"],
                "options": [{"name": "ndots", "value": "2"}]},
                "hostAliases": [{"ip": "127.64.0.50", "hostnames": ["legacy"]}]})),
            "cluster.local",
            Some(dns),
        );
        assert_eq!(d.search, ["corp.internal"]);
        assert_eq!((d.ndots, d.cluster), (2, true));
        assert_eq!(d.nameservers, [dns]);
        assert_eq!(d.hosts[0].1, ["legacy"]);
        let d = pod_dns(
            &pod(json!({"containers": [], "dnsPolicy": "Default"})),
            "cluster.local",
            Some(dns),
        );
        assert_eq!((d.policy, d.cluster), (DnsPolicy::Node, false));
        assert!(d.nameservers.is_empty(), "the node's resolver");
        // ClusterFirst: the cluster DNS first, then dnsConfig's own.
        let d = pod_dns(
            &pod(json!({"containers": [], "dnsConfig": {"nameservers": ["127.0.0.53"]}})),
            "cluster.local",
            Some(dns),
        );
        assert_eq!(d.nameservers, [dns, "127.0.0.53".parse().unwrap()]);
    }
}
