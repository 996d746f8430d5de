//! Services: defaults, validation, the ClusterIP that may not change, and the allocation of a
//! ClusterIP and node ports on create.

use super::defaulting::{child, each, obj, set_default};
use super::validation::{items, port_ok, s};
use super::{AllocContext, Claim, Strategy};
use crate::error::ApiResult;
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo, StatusError};
use std::collections::HashSet;

pub(super) struct ServiceStrategy;
pub(super) static SERVICE: ServiceStrategy = ServiceStrategy;

fn validate_service(o: &Value, out: &mut Vec<Cause>) {
    let spec = o.get("spec").cloned().unwrap_or(Value::Null);
    let ty = s(&spec, "type").unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        out.push(Cause::not_supported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = items(&spec, "ports");
    let headless = s(&spec, "clusterIP") == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        out.push(Cause::required("spec.ports"));
    }
    if ty == "ExternalName" && s(&spec, "externalName").is_none_or(str::is_empty) {
        out.push(Cause::required("spec.externalName"));
    }
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").cloned().unwrap_or(Value::Null);
        if port.is_null() {
            out.push(Cause::required(format!("spec.ports[{i}].port")));
        } else if !port_ok(&port) {
            out.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = s(p, "name").unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            out.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        if !name.is_empty() {
            if names.contains(&name) {
                out.push(Cause::duplicate(format!("spec.ports[{i}].name"), name));
            }
            names.push(name);
        }
        if let Some(np) = p.get("nodePort")
            && !np.is_null()
            && !np.as_i64().is_some_and(|n| (30000..=32767).contains(&n))
        {
            out.push(Cause::invalid(
                format!("spec.ports[{i}].nodePort"),
                np,
                "provided port is not in the valid range. The range of valid ports is 30000-32767",
            ));
        }
    }
}

impl Strategy for ServiceStrategy {
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::Dns1035
    }

    fn default(&self, o: &mut Value) {
        let Some(root) = obj(o) else { return };
        let spec = child(root, "spec");
        if let Some(s) = obj(spec) {
            set_default(s, "type", json!("ClusterIP"));
            set_default(s, "sessionAffinity", json!("None"));
            let ty = s
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_owned();
            if ty != "ExternalName" {
                set_default(s, "internalTrafficPolicy", json!("Cluster"));
                set_default(s, "ipFamilyPolicy", json!("SingleStack"));
                set_default(s, "ipFamilies", json!(["IPv4"]));
            }
            each(s.get_mut("ports"), |p| {
                set_default(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    set_default(p, "targetPort", port);
                }
            });
        }
    }

    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        validate_service(o, out);
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        let old_ip = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        let new_ip = o
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
            out.push(Cause::invalid(
                "spec.clusterIPs[0]",
                new_ip,
                "may not change once set",
            ));
        }
    }

    /// A ClusterIP (unless headless or ExternalName) and node ports for NodePort and
    /// LoadBalancer services, each claimed in the store.
    fn allocate(&self, ctx: &AllocContext<'_>, o: &mut Value) -> ApiResult<Vec<Claim>> {
        allocate_service(ctx, o)
    }

    fn claim_prefixes(&self) -> &'static [&'static str] {
        &[IP_CLAIMS, PORT_CLAIMS]
    }

    fn claims(&self, o: &Value) -> Vec<String> {
        let mut keys: Vec<String> = cluster_ips(o).map(|ip| ip_claim_key(&ip)).collect();
        keys.extend(node_ports(o).map(port_claim_key));
        keys
    }
}

/// Where the claim of each Service address and node port lives.
const IP_CLAIMS: &str = "/registry/shoal.dev/serviceips/";
const PORT_CLAIMS: &str = "/registry/shoal.dev/servicenodeports/";

fn ip_claim_key(ip: &str) -> String {
    format!("{IP_CLAIMS}{ip}")
}

fn port_claim_key(port: i64) -> String {
    format!("{PORT_CLAIMS}{port}")
}

fn cluster_ips(o: &Value) -> impl Iterator<Item = String> + '_ {
    o.pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(o.pointer("/spec/clusterIP"))
        .filter_map(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
}

fn node_ports(o: &Value) -> impl Iterator<Item = i64> + '_ {
    o.pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
}

fn allocate_service(ctx: &AllocContext<'_>, o: &mut Value) -> ApiResult<Vec<Claim>> {
    let ty = o
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    let existing = ctx.cache.list(&ctx.info.storage_prefix(), None);
    let mut used: HashSet<String> = ctx.taken.clone();
    for svc in &existing {
        used.extend(cluster_ips(svc.value()).map(|ip| ip_claim_key(&ip)));
        used.extend(node_ports(svc.value()).map(port_claim_key));
    }
    let net = ctx.network;
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(Vec::new());
    };
    let mut claims = Vec::new();
    let requested_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned);
    match requested_ip.as_deref() {
        _ if ty == "ExternalName" => {}
        Some("None") => {}
        Some(ip) => {
            let parsed: Option<std::net::Ipv4Addr> = ip.parse().ok();
            if !parsed.is_some_and(|a| net.cidr.is_host(a)) {
                return Err(StatusError::invalid(
                    "Service",
                    "",
                    "",
                    vec![Cause::invalid(
                        "spec.clusterIPs",
                        ip,
                        &format!(
                            "failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {}",
                            net.cidr
                        ),
                    )],
                )
                .into());
            }
            claims.push(Claim {
                key: ip_claim_key(ip),
                value: ip.to_owned(),
                field: "spec.clusterIPs".into(),
                requested: true,
            });
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        None => {
            // As Kubernetes does: the lower band of the range is kept for addresses asked
            // for by name (`kubernetes` at the first, `kube-dns` at the tenth) and used
            // only when the upper band is full; within a band, a random start, then the
            // next free address.
            let size = net.cidr.size();
            let reserved = (size / 16).clamp(16, 256).min(size - 2);
            let bands = [(reserved, size - 1), (2, reserved)];
            let free = |(lo, hi): (u32, u32)| {
                let span = hi.saturating_sub(lo);
                let seed = if span == 0 {
                    0
                } else {
                    (uuid::Uuid::new_v4().as_u128() as u32) % span
                };
                (0..span)
                    .map(|i| net.cidr.nth(lo + (seed + i) % span).to_string())
                    .find(|ip| !used.contains(&ip_claim_key(ip)))
            };
            let ip = bands.into_iter().find_map(free).ok_or_else(|| {
                StatusError::internal(format!(
                    "failed to allocate a serviceIP: range {} is full",
                    net.cidr
                ))
            })?;
            claims.push(Claim {
                key: ip_claim_key(&ip),
                value: ip.clone(),
                field: "spec.clusterIPs".into(),
                requested: false,
            });
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
        && let Some(Value::Array(ports)) = spec.get_mut("ports")
    {
        let (lo, hi) = (
            i64::from(*net.node_ports.start()),
            i64::from(*net.node_ports.end()),
        );
        let span = hi - lo + 1;
        let mut next = lo + (uuid::Uuid::new_v4().as_u128() % span as u128) as i64;
        for (i, p) in ports.iter_mut().enumerate() {
            let field = format!("spec.ports[{i}].nodePort");
            if let Some(port) = p.get("nodePort").and_then(Value::as_i64) {
                claims.push(Claim {
                    key: port_claim_key(port),
                    value: port.to_string(),
                    field,
                    requested: true,
                });
                used.insert(port_claim_key(port));
                continue;
            }
            let mut tries = 0;
            while used.contains(&port_claim_key(next)) {
                tries += 1;
                if tries > span {
                    return Err(StatusError::internal(format!(
                        "failed to allocate a nodePort: range {lo}-{hi} is full"
                    ))
                    .into());
                }
                next = if next >= hi { lo } else { next + 1 };
            }
            p["nodePort"] = json!(next);
            used.insert(port_claim_key(next));
            claims.push(Claim {
                key: port_claim_key(next),
                value: next.to_string(),
                field,
                requested: false,
            });
        }
    }
    Ok(claims)
}
