//! Discovery: `/version`, `/api`, `/apis`, per-group and per-version lists, in the aggregated
//! (`apidiscovery.k8s.io/v2`) and the legacy form.

use crate::crd::Catalog;
use crate::resource_metrics as metrics;
use serde_json::{Value, json};
use shoal_api::ResourceInfo;
use shoal_api::resources::{RESOURCES, verbs};

pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub fn version() -> Value {
    json!({
        "major": shoal_api::version::MAJOR,
        "minor": shoal_api::version::MINOR,
        "gitVersion": shoal_api::version::GIT_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "2026-11-24T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// Whether the client asked for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        p.contains("as=APIGroupDiscoveryList")
            && p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2")
            && !p.contains("v=v2beta1")
    })
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (g, v, k) = s.response_kind().unwrap_or((r.group, r.version, r.kind));
            json!({"subresource": s.name(), "responseKind": {"group": g, "version": v, "kind": k}, "verbs": s.verbs()})
        })
        .collect();
    let mut out = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": verbs(),
    });
    if !r.short_names.is_empty() {
        out["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        out["categories"] = json!(r.categories);
    }
    if !subs.is_empty() {
        out["subresources"] = json!(subs);
    }
    out
}

/// Every resource served: the built-in kinds, then the custom resources.
pub fn served(catalog: &Catalog) -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .chain(catalog.all().into_iter().map(|c| &c.info))
        .collect()
}

/// The groups served, in discovery order (`metrics.k8s.io`, which is computed rather than
/// stored, last).
fn groups(catalog: &Catalog) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in served(catalog) {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out.push(metrics::GROUP);
    out
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// other names alphabetically.
fn version_rank(v: &str) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    use std::cmp::Reverse;
    let parse = |rest: &str| -> Option<(u8, u64, u64)> {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        let (level, minor) = if tail.is_empty() {
            (0, "0")
        } else if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (2, n)
        } else {
            return None;
        };
        Some((level, major, minor.parse().ok()?))
    };
    match v.strip_prefix('v').and_then(parse) {
        Some((level, major, minor)) => (level, Reverse(major), Reverse(minor), String::new()),
        None => (3, Reverse(0), Reverse(0), v.to_owned()),
    }
}

/// The versions of `group`, preferred first.
fn versions(catalog: &Catalog, group: &str) -> Vec<&'static str> {
    if group == metrics::GROUP {
        return vec![metrics::VERSION];
    }
    let mut out: Vec<&'static str> = Vec::new();
    for r in served(catalog).into_iter().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out.sort_by_key(|v| version_rank(v));
    out
}

fn group_item(catalog: &Catalog, group: &str) -> Value {
    if group == metrics::GROUP {
        return metrics::aggregated_group();
    }
    let all = served(catalog);
    let versions: Vec<Value> = versions(catalog, group)
        .into_iter()
        .map(|v| {
            let resources: Vec<Value> = all
                .iter()
                .filter(|r| r.group == group && r.version == v)
                .map(|r| aggregated_resource(r))
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut item = json!({
        "metadata": {"creationTimestamp": null},
        "versions": versions,
    });
    if !group.is_empty() {
        item["metadata"]["name"] = json!(group);
    }
    item
}

/// `/api` (core) or `/apis` (named groups), aggregated.
pub fn aggregated(catalog: &Catalog, core: bool) -> Value {
    let items: Vec<Value> = groups(catalog)
        .into_iter()
        .filter(|g| g.is_empty() == core)
        .map(|g| group_item(catalog, g))
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

fn api_group(catalog: &Catalog, group: &str) -> Value {
    let versions: Vec<Value> = versions(catalog, group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub fn api_group_list(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = groups(catalog)
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| api_group(catalog, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(catalog: &Catalog, group: &str) -> Option<Value> {
    groups(catalog).contains(&group).then(|| {
        let mut g = api_group(catalog, group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

/// `APIResourceList` for one group version.
pub fn resource_list(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    if (group, version) == (metrics::GROUP, metrics::VERSION) {
        return Some(metrics::resource_list());
    }
    let rs: Vec<&ResourceInfo> = served(catalog)
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in rs {
        let mut main = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs(),
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        resources.push(main);
        for s in r.subresources {
            let mut sub = json!({"name": format!("{}/{}", r.plural, s.name()), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": s.verbs()});
            if let Some((g, v, k)) = s.response_kind() {
                sub["kind"] = json!(k);
                if g != r.group {
                    sub["group"] = json!(g);
                    sub["version"] = json!(v);
                }
            }
            resources.push(sub);
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
