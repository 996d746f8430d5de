//! Discovery: `/version`, `/api`, `/apis`, per-group and per-version lists, in the aggregated
//! (`apidiscovery.k8s.io/v2`) and the legacy form.

use serde_json::{Value, json};
use shoal_api::ResourceInfo;
use shoal_api::resources::{self, RESOURCES, verbs};

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

fn group_item(group: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(aggregated_resource)
        .collect();
    let mut item = json!({
        "metadata": {"creationTimestamp": null},
        "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
    });
    if !group.is_empty() {
        item["metadata"]["name"] = json!(group);
    }
    item
}

/// `/api` (core) or `/apis` (named groups), aggregated.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|g| g.is_empty() == core)
        .map(group_item)
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

fn api_group(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({"name": group, "versions": [{"groupVersion": gv, "version": "v1"}], "preferredVersion": {"groupVersion": gv, "version": "v1"}})
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(api_group)
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(group: &str) -> Option<Value> {
    resources::groups().contains(&group).then(|| {
        let mut g = api_group(group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

/// `APIResourceList` for one group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&ResourceInfo> = RESOURCES
        .iter()
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
