//! The ingress routing table: from the Ingresses of Shoal's classes and the Services and
//! EndpointSlices they name, which endpoints serve a request's host and path, and which
//! certificate a TLS client asking for a host gets.
//!
//! Matching follows the Ingress API's rules: a host is matched exactly or by a `*.` wildcard
//! covering one leading label; among a host's paths the longest match wins, `Exact` before
//! `Prefix` at equal length; `Prefix` (and `ImplementationSpecific`, which Shoal treats as
//! `Prefix`) matches whole path elements (`/foo` matches `/foo/bar`, not `/foobar`). Rules
//! without a host serve hosts that have no rules of their own; what matches nothing goes to
//! the default backend, else 404. When two Ingresses claim the same host and path, the older
//! one wins, as ingress-nginx decides.

use crate::table::{Protocol, backends, slices_by_service};
pub use crate::wake::Wake;
use crate::wake::{behind as scale_to_zero_behind, wakeable};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use rustls::sign::CertifiedKey;
use shoal_api::net::is_shoal_ingress;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use shoal_api::net::INGRESS_CONTROLLER as CONTROLLER;

/// Where requests for one backend go.
#[derive(Debug)]
pub struct Target {
    /// `namespace/service:port`, for logs and error pages.
    pub service: String,
    /// Ready endpoints (or, with none ready, serving terminating ones).
    pub backends: Vec<SocketAddr>,
    /// Why there is no endpoint, when there is none.
    pub problem: Option<String>,
    /// The scale-to-zero Deployment behind the Service, which a request wakes.
    pub wakes: Option<Arc<Wake>>,
    next: AtomicUsize,
}

impl Target {
    /// The endpoints to try, starting at the next one round-robin.
    pub fn candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.backends.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..self.backends.len()).map(move |i| self.backends[(start + i) % n])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Exact,
    Prefix,
}

#[derive(Debug)]
struct PathRule {
    path: String,
    kind: PathKind,
    target: Arc<Target>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::Prefix => {
                let prefix = self.path.trim_end_matches('/');
                prefix.is_empty()
                    || path == prefix
                    || path
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }
}

/// The routes and certificates of every Ingress of Shoal's classes.
#[derive(Debug, Default)]
pub struct Table {
    hosts: HashMap<String, Vec<PathRule>>,
    /// `*.example.com` rules, by `example.com`.
    wildcards: HashMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default: Option<Arc<Target>>,
    certs: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates, by `example.com`.
    wildcard_certs: HashMap<String, Arc<CertifiedKey>>,
    /// Ingresses served, as `namespace/name`.
    pub ingresses: Vec<String>,
    /// What could not be used (a missing or malformed TLS Secret), for the log.
    pub problems: Vec<String>,
}

/// A request's host without its port, lower-cased.
pub fn host_of(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority.split(']').next().map_or(authority, |h| &h[1..])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The parent domain a `*.` wildcard of `host` would be written with.
fn parent(host: &str) -> Option<&str> {
    host.split_once('.').map(|(_, rest)| rest)
}

impl Table {
    /// Where a request for `host` (no port) and `path` goes; `None` means 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Target>> {
        let rules = self
            .hosts
            .get(host)
            .or_else(|| parent(host).and_then(|p| self.wildcards.get(p)))
            .unwrap_or(&self.any_host);
        rules
            .iter()
            .find(|r| r.matches(path))
            .map(|r| &r.target)
            .or(self.default.as_ref())
    }

    /// The certificate for a TLS client asking for `host`.
    pub fn certificate(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.to_ascii_lowercase();
        self.certs
            .get(&host)
            .or_else(|| parent(&host).and_then(|p| self.wildcard_certs.get(p)))
            .cloned()
    }
}

/// Everything the routes are made of, as the controller's watches see it.
#[derive(Default)]
pub struct Objects<'a> {
    pub ingresses: Vec<&'a Ingress>,
    pub classes: Vec<&'a IngressClass>,
    pub services: Vec<&'a Service>,
    pub slices: Vec<&'a EndpointSlice>,
    pub secrets: Vec<&'a Secret>,
    pub deployments: Vec<&'a Deployment>,
    pub autoscalers: Vec<&'a HorizontalPodAutoscaler>,
}

struct Builder<'a> {
    wakeable: Vec<&'a Deployment>,
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// One target per `namespace/service:port`, shared by every rule naming it.
    targets: HashMap<String, Arc<Target>>,
}

impl Builder<'_> {
    fn target(&mut self, ns: &str, backend: &IngressBackend) -> Arc<Target> {
        let Some(svc) = &backend.service else {
            let what = backend
                .resource
                .as_ref()
                .map_or_else(String::new, |r| format!("{}/{}", r.kind, r.name));
            return Arc::new(Target {
                service: what.clone(),
                backends: Vec::new(),
                problem: Some(format!(
                    "resource backend {what} is not served by the shoal ingress controller"
                )),
                wakes: None,
                next: AtomicUsize::new(0),
            });
        };
        let port = svc.port.as_ref();
        let port_text = port
            .and_then(|p| p.name.clone().or_else(|| p.number.map(|n| n.to_string())))
            .unwrap_or_default();
        let key = format!("{ns}/{}:{port_text}", svc.name);
        if let Some(t) = self.targets.get(&key) {
            return t.clone();
        }
        let found = self.services.get(&(ns, svc.name.as_str())).copied();
        let wakes = found
            .and_then(|s| s.spec.as_ref()?.selector.as_ref())
            .and_then(|sel| scale_to_zero_behind(&self.wakeable, ns, sel));
        let (addrs, problem) = match found.and_then(|s| s.spec.as_ref()) {
            None => (
                Vec::new(),
                Some(format!("service {ns}/{} not found", svc.name)),
            ),
            Some(spec) if spec.type_.as_deref() == Some("ExternalName") => (
                Vec::new(),
                Some(format!(
                    "service {ns}/{} is an ExternalName service, which the shoal ingress controller does not forward to",
                    svc.name
                )),
            ),
            Some(spec) => {
                let sp = spec.ports.iter().flatten().find(|sp| match port {
                    Some(p) if p.name.is_some() => sp.name == p.name,
                    Some(p) => Some(sp.port) == p.number,
                    None => false,
                });
                match sp {
                    None => (
                        Vec::new(),
                        Some(format!("service {ns}/{} has no port {port_text}", svc.name)),
                    ),
                    Some(sp) => {
                        let slices = self
                            .slices
                            .get(&(ns, svc.name.as_str()))
                            .map(Vec::as_slice)
                            .unwrap_or(&[]);
                        let addrs: Vec<SocketAddr> =
                            backends(slices, sp.name.as_deref().unwrap_or(""), Protocol::Tcp)
                                .into_iter()
                                .map(|b| b.addr)
                                .collect();
                        let problem = addrs
                            .is_empty()
                            .then(|| format!("service {ns}/{} has no ready endpoints", svc.name));
                        (addrs, problem)
                    }
                }
            }
        };
        let t = Arc::new(Target {
            service: key.clone(),
            backends: addrs,
            problem,
            wakes,
            next: AtomicUsize::new(0),
        });
        self.targets.insert(key, t.clone());
        t
    }
}

/// Adds `rule` unless an older Ingress already claimed its path and kind.
fn add_rule(rules: &mut Vec<PathRule>, rule: PathRule) {
    if !rules
        .iter()
        .any(|r| r.path == rule.path && r.kind == rule.kind)
    {
        rules.push(rule);
    }
}

/// Longest path first, `Exact` before `Prefix` at equal length.
fn order(rules: &mut [PathRule]) {
    rules.sort_by(|a, b| {
        b.path
            .trim_end_matches('/')
            .len()
            .cmp(&a.path.trim_end_matches('/').len())
            .then_with(|| (a.kind == PathKind::Prefix).cmp(&(b.kind == PathKind::Prefix)))
    });
}

/// Parses a `kubernetes.io/tls` Secret's `tls.crt` and `tls.key`.
pub fn certified_key(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let data = secret.data.as_ref();
    let field = |k: &str| {
        data.and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| format!("has no {k}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(field("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(field("tls.key")?).map_err(|e| format!("tls.key: {e}"))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

/// The table from everything the controller sees.
pub fn build(objects: &Objects<'_>) -> Table {
    let mut mine: Vec<&Ingress> = objects
        .ingresses
        .iter()
        .copied()
        .filter(|i| {
            is_shoal_ingress(i, &objects.classes) && i.metadata.deletion_timestamp.is_none()
        })
        .collect();
    // Oldest first: it wins a contested host and path.
    mine.sort_by(|a, b| {
        let key = |i: &Ingress| {
            (
                i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut b = Builder {
        wakeable: wakeable(&objects.deployments, &objects.autoscalers),
        services: objects
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    *s,
                ))
            })
            .collect(),
        slices: slices_by_service(&objects.slices),
        targets: HashMap::new(),
    };
    let secrets: HashMap<(&str, &str), &Secret> = objects
        .secrets
        .iter()
        .filter_map(|s| {
            Some((
                (
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?,
                ),
                *s,
            ))
        })
        .collect();
    let mut table = Table::default();
    for ing in mine {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let name = ing.metadata.name.as_deref().unwrap_or("");
        table.ingresses.push(format!("{ns}/{name}"));
        let Some(spec) = &ing.spec else { continue };
        if let Some(d) = &spec.default_backend
            && table.default.is_none()
        {
            table.default = Some(b.target(ns, d));
        }
        let mut rule_hosts = Vec::new();
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.as_deref().map(str::to_ascii_lowercase);
            let rules = match host.as_deref() {
                None | Some("") => &mut table.any_host,
                Some(h) => {
                    rule_hosts.push(h.to_owned());
                    match h.strip_prefix("*.") {
                        Some(parent) => table.wildcards.entry(parent.to_owned()).or_default(),
                        None => table.hosts.entry(h.to_owned()).or_default(),
                    }
                }
            };
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let kind = if p.path_type == "Exact" {
                    PathKind::Exact
                } else {
                    PathKind::Prefix
                };
                let rule = PathRule {
                    path: p.path.clone().unwrap_or_else(|| "/".into()),
                    kind,
                    target: b.target(ns, &p.backend),
                };
                add_rule(rules, rule);
            }
        }
        for tls in spec.tls.iter().flatten() {
            let Some(secret_name) = tls.secret_name.as_deref() else {
                continue;
            };
            let key = match secrets.get(&(ns, secret_name)) {
                None => Err("not found".to_owned()),
                Some(s) => certified_key(s),
            };
            let key = match key {
                Ok(k) => k,
                Err(e) => {
                    table.problems.push(format!(
                        "ingress {ns}/{name}: TLS secret {ns}/{secret_name} {e}"
                    ));
                    continue;
                }
            };
            let hosts = match &tls.hosts {
                Some(h) if !h.is_empty() => h.clone(),
                _ => rule_hosts.clone(),
            };
            for h in hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(parent) => {
                        table
                            .wildcard_certs
                            .entry(parent.to_owned())
                            .or_insert_with(|| key.clone());
                    }
                    None => {
                        table.certs.entry(h).or_insert_with(|| key.clone());
                    }
                }
            }
        }
    }
    for rules in table
        .hosts
        .values_mut()
        .chain(table.wildcards.values_mut())
        .chain(std::iter::once(&mut table.any_host))
    {
        order(rules);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shoal_api::serverless::SCALE_TO_ZERO_AFTER;

    fn class(name: &str, controller: &str) -> IngressClass {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"controller": controller}}),
        )
        .unwrap()
    }

    fn ingress(name: &str, created: &str, spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn service(name: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))
        .unwrap()
    }

    fn slice(service: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        }))
        .unwrap()
    }

    fn path(p: &str, kind: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": kind,
            "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    }

    fn table(ingresses: &[Ingress]) -> Table {
        let classes = [
            class("shoal", CONTROLLER),
            class("nginx", "k8s.io/ingress-nginx"),
        ];
        let services = [service("a"), service("b"), service("c")];
        let slices = [
            slice("a", "127.64.0.2"),
            slice("b", "127.64.0.3"),
            slice("c", "127.64.0.4"),
        ];
        build(&Objects {
            ingresses: ingresses.iter().collect(),
            classes: classes.iter().collect(),
            services: services.iter().collect(),
            slices: slices.iter().collect(),
            ..Default::default()
        })
    }

    fn to(t: &Table, host: &str, path: &str) -> Option<String> {
        t.route(host, path).map(|t| t.service.clone())
    }

    #[test]
    fn hosts_and_paths_route_by_the_longest_match() {
        let t = table(&[ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!({"ingressClassName": "shoal", "rules": [
                {"host": "one.example", "http": {"paths": [
                    path("/", "Prefix", "a"),
                    path("/api", "Prefix", "b"),
                    path("/api/exact", "Exact", "c"),
                ]}},
                {"host": "*.two.example", "http": {"paths": [path("/", "Prefix", "c")]}},
            ]}),
        )]);
        assert_eq!(to(&t, "one.example", "/").as_deref(), Some("default/a:80"));
        assert_eq!(
            to(&t, "one.example", "/apix").as_deref(),
            Some("default/a:80")
        );
        assert_eq!(
            to(&t, "one.example", "/api").as_deref(),
            Some("default/b:80")
        );
        assert_eq!(
            to(&t, "one.example", "/api/").as_deref(),
            Some("default/b:80")
        );
        assert_eq!(
            to(&t, "one.example", "/api/v1").as_deref(),
            Some("default/b:80")
        );
        assert_eq!(
            to(&t, "one.example", "/api/exact").as_deref(),
            Some("default/c:80")
        );
        assert_eq!(
            to(&t, "one.example", "/api/exact/x").as_deref(),
            Some("default/b:80")
        );
        assert_eq!(
            to(&t, "x.two.example", "/").as_deref(),
            Some("default/c:80")
        );
        // A wildcard covers exactly one label.
        assert_eq!(to(&t, "two.example", "/"), None);
        assert_eq!(to(&t, "a.b.two.example", "/"), None);
        assert_eq!(to(&t, "other.example", "/"), None);
        let target = t.route("one.example", "/").unwrap();
        assert_eq!(target.backends, ["127.64.0.2:8080".parse().unwrap()]);
    }

    #[test]
    fn only_shoal_classes_count_and_the_older_ingress_wins_a_contested_path() {
        let t = table(&[
            ingress(
                "newer",
                "2026-02-01T00:00:00Z",
                json!({"ingressClassName": "shoal",
                "rules": [{"host": "h.example", "http": {"paths": [path("/", "Prefix", "b")]}}]}),
            ),
            ingress(
                "older",
                "2026-01-01T00:00:00Z",
                json!({"ingressClassName": "shoal",
                "rules": [{"host": "h.example", "http": {"paths": [path("/", "Prefix", "a")]}}]}),
            ),
            ingress(
                "nginx",
                "2025-01-01T00:00:00Z",
                json!({"ingressClassName": "nginx",
                "rules": [{"host": "h.example", "http": {"paths": [path("/", "Prefix", "c")]}}]}),
            ),
        ]);
        assert_eq!(to(&t, "h.example", "/").as_deref(), Some("default/a:80"));
        assert_eq!(t.ingresses, ["default/older", "default/newer"]);
    }

    #[test]
    fn hostless_rules_and_default_backend_catch_the_rest() {
        let t = table(&[ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!({"ingressClassName": "shoal",
            "defaultBackend": {"service": {"name": "c", "port": {"name": "http"}}},
            "rules": [
                {"host": "h.example", "http": {"paths": [path("/only", "Exact", "a")]}},
                {"http": {"paths": [path("/", "Prefix", "b")]}},
            ]}),
        )]);
        assert_eq!(
            to(&t, "h.example", "/only").as_deref(),
            Some("default/a:80")
        );
        // A host with rules of its own does not fall to the host-less rules.
        assert_eq!(to(&t, "h.example", "/x").as_deref(), Some("default/c:http"));
        assert_eq!(to(&t, "other", "/x").as_deref(), Some("default/b:80"));
        assert_eq!(
            t.route("other", "/").unwrap().backends,
            ["127.64.0.3:8080".parse().unwrap()]
        );
    }

    #[test]
    fn missing_services_and_ports_are_explained() {
        let t = table(&[ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!({"ingressClassName": "shoal", "rules": [{"http": {"paths": [
                path("/missing", "Prefix", "nope"),
                {"path": "/port", "pathType": "Prefix",
                    "backend": {"service": {"name": "a", "port": {"number": 81}}}},
            ]}}]}),
        )]);
        let problem = |p: &str| t.route("h", p).unwrap().problem.clone().unwrap();
        assert_eq!(problem("/missing"), "service default/nope not found");
        assert_eq!(problem("/port"), "service default/a has no port 81");
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        assert_eq!(host_of("Example.COM:8080"), "example.com");
        assert_eq!(host_of("example.com."), "example.com");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn a_service_in_front_of_a_scale_to_zero_deployment_wakes_it() {
        let deployment = |name: &str, app: &str, annotations: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                    "annotations": annotations},
                "spec": {"selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app, "tier": "x"}}}},
            }))
            .unwrap()
        };
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"minReplicas": 0, "maxReplicas": 3,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "db"}},
        }))
        .unwrap();
        let deployments = [
            deployment("da", "a", json!({SCALE_TO_ZERO_AFTER: "30s"})),
            deployment("db", "b", json!({})),
            deployment("dc", "c", json!({})),
        ];
        let classes = [class("shoal", CONTROLLER)];
        let services = [service("a"), service("b"), service("c")];
        let ing = ingress(
            "web",
            "2026-01-01T00:00:00Z",
            json!({"ingressClassName": "shoal", "rules": [{"http": {"paths": [
                path("/a", "Prefix", "a"), path("/b", "Prefix", "b"), path("/c", "Prefix", "c"),
            ]}}]}),
        );
        let t = build(&Objects {
            ingresses: vec![&ing],
            classes: classes.iter().collect(),
            services: services.iter().collect(),
            deployments: deployments.iter().collect(),
            autoscalers: vec![&hpa],
            ..Default::default()
        });
        let wakes = |p: &str| {
            t.route("h", p)
                .unwrap()
                .wakes
                .as_ref()
                .map(|w| w.deployment.clone())
        };
        assert_eq!(wakes("/a").as_deref(), Some("da"));
        assert_eq!(wakes("/b").as_deref(), Some("db"));
        assert_eq!(wakes("/c"), None);
        assert!(t.route("h", "/a").unwrap().backends.is_empty());
    }
}
