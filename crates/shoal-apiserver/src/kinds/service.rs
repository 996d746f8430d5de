//! Services: defaults, validation, the ClusterIP that may not change, and the allocation of a
//! ClusterIP and node ports on create.

use super::Strategy;
use super::defaulting::{child, each, obj, set_default};
use super::validation::{items, port_ok, s};
use crate::cache::ResourceCache;
use crate::error::ApiResult;
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo, StatusError};

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
    /// LoadBalancer services, avoiding those in use.
    fn allocate(&self, info: &ResourceInfo, cache: &ResourceCache, o: &mut Value) -> ApiResult<()> {
        let ty = o
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned();
        let existing = cache.list(&info.storage_prefix(), None);
        let used_ips: std::collections::HashSet<String> = existing
            .iter()
            .filter_map(|s| {
                s.value()
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let used_ports: std::collections::HashSet<i64> = existing
            .iter()
            .flat_map(|s| {
                s.value()
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        if ty != "ExternalName"
            && spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            // 10.96.0.0/16, skipping .0.0 and .0.1 (the `kubernetes` service's address).
            let seed = uuid::Uuid::new_v4().as_u128() as u32;
            let ip = (0..65534u32)
                .map(|i| (seed.wrapping_add(i) % 65534) + 2)
                .map(|n| format!("10.96.{}.{}", n >> 8, n & 0xff))
                .find(|ip| !used_ips.contains(ip))
                .ok_or_else(|| {
                    StatusError::internal("failed to allocate a serviceIP: range is full")
                })?;
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
            && let Some(Value::Array(ports)) = spec.get_mut("ports")
        {
            let mut next = 30000 + (uuid::Uuid::new_v4().as_u128() % 2768) as i64;
            for p in ports {
                if p.get("nodePort").is_none_or(Value::is_null) {
                    let mut tries = 0;
                    while used_ports.contains(&next) && tries < 2768 {
                        next = if next >= 32767 { 30000 } else { next + 1 };
                        tries += 1;
                    }
                    p["nodePort"] = json!(next);
                    next = if next >= 32767 { 30000 } else { next + 1 };
                }
            }
        }
        Ok(())
    }
}
