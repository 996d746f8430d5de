//! Ingresses and IngressClasses (`networking.k8s.io/v1`): Kubernetes' validation of rules,
//! paths and backends, a new Ingress without a class given the default class (the
//! DefaultIngressClass admission plugin), and an IngressClass's controller that never changes.

use super::Strategy;
use super::validation::{items, s};
use crate::cache::WatchCache;
use crate::error::ApiResult;
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo};

pub(super) struct IngressStrategy;
pub(super) static INGRESS: IngressStrategy = IngressStrategy;
pub(super) struct IngressClassStrategy;
pub(super) static INGRESS_CLASS: IngressClassStrategy = IngressClassStrategy;

/// The `shoal` IngressClass every cluster starts with, the default.
pub(crate) fn shoal_class() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": shoal_api::net::INGRESS_CLASS,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": shoal_api::net::INGRESS_CONTROLLER}})
}

/// The annotation that marks the default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation of Ingresses written before `ingressClassName` existed.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

fn classes() -> &'static ResourceInfo {
    shoal_api::resources::find("networking.k8s.io", "v1", "ingressclasses")
        .expect("ingressclasses are served")
}

impl Strategy for IngressStrategy {
    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }

    fn admit(
        &self,
        cache: &WatchCache,
        _info: &ResourceInfo,
        o: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        if old.is_some() {
            return Ok(());
        }
        let named = o
            .pointer("/spec/ingressClassName")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty());
        let annotated = o
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
            .is_some();
        if !named && !annotated {
            super::give_default_class(
                cache,
                classes(),
                DEFAULT_CLASS_ANNOTATION,
                o,
                "ingressClassName",
            );
        }
        Ok(())
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        if let Some(class) = s(spec, "ingressClassName")
            && !shoal_api::resources::is_dns1123_subdomain(class)
        {
            out.push(Cause::invalid(
                "spec.ingressClassName",
                class,
                super::validation::DNS1123_SUBDOMAIN_MSG,
            ));
        }
        let rules = items(spec, "rules");
        let default = spec.get("defaultBackend").filter(|b| !b.is_null());
        if rules.is_empty() && default.is_none() {
            out.push(Cause::invalid(
                "spec",
                "[]",
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        if let Some(b) = default {
            backend(b, "spec.defaultBackend", out);
        }
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            if let Some(host) = s(rule, "host").filter(|h| !h.is_empty()) {
                host_name(host, &format!("{at}.host"), out);
            }
            let Some(http) = rule.get("http").filter(|h| !h.is_null()) else {
                continue;
            };
            let paths = items(http, "paths");
            if paths.is_empty() {
                out.push(Cause::required(format!("{at}.http.paths")));
            }
            for (j, p) in paths.iter().enumerate() {
                let pat = format!("{at}.http.paths[{j}]");
                path(p, &pat, out);
                backend(
                    p.get("backend").unwrap_or(&Value::Null),
                    &format!("{pat}.backend"),
                    out,
                );
            }
        }
        for (i, tls) in items(spec, "tls").iter().enumerate() {
            for (j, h) in items(tls, "hosts").iter().enumerate() {
                if let Some(h) = h.as_str() {
                    host_name(h, &format!("spec.tls[{i}].hosts[{j}]"), out);
                }
            }
        }
    }
}

/// A rule's or a TLS entry's host: a DNS name, `*.` wildcards allowed, never an IP.
fn host_name(host: &str, at: &str, out: &mut Vec<Cause>) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        out.push(Cause::invalid(
            at,
            host,
            "must be a DNS name, not an IP address",
        ));
        return;
    }
    let (name, msg) = match host.strip_prefix("*.") {
        Some(rest) => (
            rest,
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
        None => (host, super::validation::DNS1123_SUBDOMAIN_MSG),
    };
    if !shoal_api::resources::is_dns1123_subdomain(name) {
        out.push(Cause::invalid(at, host, msg));
    }
}

fn path(p: &Value, at: &str, out: &mut Vec<Cause>) {
    let path = s(p, "path").unwrap_or("");
    let Some(ty) = s(p, "pathType") else {
        out.push(
            Cause::required(format!("{at}.pathType"))
                .with_message("Required value: pathType must be specified"),
        );
        return;
    };
    match ty {
        "Exact" | "Prefix" => {
            if !path.starts_with('/') {
                out.push(Cause::invalid(
                    format!("{at}.path"),
                    path,
                    "must be an absolute path",
                ));
                return;
            }
            for bad in ["//", "/./", "/../", "%2f", "%2F"] {
                if path.contains(bad) {
                    out.push(Cause::invalid(
                        format!("{at}.path"),
                        path,
                        &format!("must not contain '{bad}'"),
                    ));
                }
            }
            for bad in ["/..", "/."] {
                if path.ends_with(bad) {
                    out.push(Cause::invalid(
                        format!("{at}.path"),
                        path,
                        &format!("cannot end with '{bad}'"),
                    ));
                }
            }
        }
        "ImplementationSpecific" => {
            if !path.is_empty() && !path.starts_with('/') {
                out.push(Cause::invalid(
                    format!("{at}.path"),
                    path,
                    "must be an absolute path",
                ));
            }
        }
        other => out.push(Cause::not_supported(
            format!("{at}.pathType"),
            other,
            PATH_TYPES,
        )),
    }
}

fn backend(b: &Value, at: &str, out: &mut Vec<Cause>) {
    let service = b.get("service").filter(|v| !v.is_null());
    let resource = b.get("resource").filter(|v| !v.is_null());
    match (service, resource) {
        (Some(_), Some(_)) => out.push(Cause::invalid(
            at,
            "",
            "cannot set both resource and service backends",
        )),
        (None, Some(r)) => {
            for key in ["kind", "name"] {
                if s(r, key).unwrap_or("").is_empty() {
                    out.push(Cause::required(format!("{at}.resource.{key}")));
                }
            }
        }
        (Some(svc), None) => {
            match s(svc, "name").unwrap_or("") {
                "" => out.push(Cause::required(format!("{at}.service.name"))),
                n if !shoal_api::resources::is_dns1035_label(n) => out.push(Cause::invalid(
                    format!("{at}.service.name"),
                    n,
                    super::validation::DNS1035_MSG,
                )),
                _ => {}
            }
            let port = svc.get("port").unwrap_or(&Value::Null);
            let name = s(port, "name").unwrap_or("");
            let number = port.get("number").and_then(Value::as_i64).unwrap_or(0);
            match (name.is_empty(), number) {
                (false, n) if n != 0 => out.push(Cause::invalid(
                    at,
                    "",
                    "cannot set both port name & port number",
                )),
                (false, _) => {
                    if !port_name_ok(name) {
                        out.push(Cause::invalid(
                            format!("{at}.service.port.name"),
                            name,
                            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                        ));
                    }
                }
                (true, 0) => out.push(
                    Cause::required(at)
                        .with_message("Required value: port name or number is required"),
                ),
                (true, n) => {
                    if !(1..=65535).contains(&n) {
                        out.push(Cause::invalid(
                            format!("{at}.service.port.number"),
                            n,
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
            }
        }
        (None, None) => out.push(Cause::invalid(
            at,
            "",
            "resource or service backend is required",
        )),
    }
}

/// An IANA service name (a port name): at most 15 lowercase alphanumerics and '-', with a
/// letter, no '--', not starting or ending with '-'.
fn port_name_ok(n: &str) -> bool {
    n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.contains("--")
        && !n.starts_with('-')
        && !n.ends_with('-')
}

impl Strategy for IngressClassStrategy {
    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let spec = o.get("spec").unwrap_or(&Value::Null);
        match s(spec, "controller").unwrap_or("") {
            "" => out.push(Cause::required("spec.controller")),
            c if c.len() > 250 => out.push(Cause::invalid(
                "spec.controller",
                c,
                "must be no more than 250 characters",
            )),
            _ => {}
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        let now = o.pointer("/spec/controller");
        if now != old.pointer("/spec/controller") {
            out.push(Cause::invalid(
                "spec.controller",
                now.and_then(Value::as_str).unwrap_or(""),
                "field is immutable",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(o: Value) -> Vec<String> {
        let mut out = Vec::new();
        INGRESS.validate(&o, &mut out);
        out.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn ingress_validation_names_the_field() {
        let ok = json!({"spec": {"rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        assert!(fields(ok).is_empty());
        assert_eq!(fields(json!({"spec": {}})), ["spec"]);
        let bad = json!({"spec": {"rules": [{"host": "127.0.0.1", "http": {"paths": [
            {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}},
            {"path": "/x", "backend": {"service": {"name": "web", "port": {"name": "http", "number": 80}}}},
            {"path": "/y", "pathType": "Regex", "backend": {}}]}}]}});
        assert_eq!(
            fields(bad),
            [
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[0].backend",
                "spec.rules[0].http.paths[1].pathType",
                "spec.rules[0].http.paths[1].backend",
                "spec.rules[0].http.paths[2].pathType",
                "spec.rules[0].http.paths[2].backend",
            ]
        );
        assert!(fields(json!({"spec": {"rules": [{"host": "*.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Exact", "backend": {"service": {"name": "w", "port": {"name": "http"}}}}]}}]}})).is_empty());
    }

    #[test]
    fn an_ingress_class_keeps_its_controller() {
        let mut out = Vec::new();
        INGRESS_CLASS.validate_update(
            &json!({"spec": {"controller": "b"}}),
            &json!({"spec": {"controller": "a"}}),
            &mut out,
        );
        assert_eq!(out[0].field, "spec.controller");
    }
}
