//! Custom resources: the kinds CustomResourceDefinitions add while the server runs.
//!
//! Each served version of an established definition becomes a [`CustomResource`]: a
//! [`ResourceInfo`] like the built-in kinds' (so routing, the registry, the watch cache,
//! discovery and OpenAPI treat it as one of them) and the [`Strategy`] its objects follow
//! (the compiled structural schema: pruning, defaults, validation; printer columns; the scale
//! subresource's paths). The watch cache keeps the [`Catalog`] of what is served, updated
//! from the definitions it sees in the store, so every API server over one store serves the
//! same kinds.
//!
//! The built-in kinds' tables are `'static`; a custom resource is made `'static` by leaking
//! it once per distinct definition (interned by content), so a definition created, deleted and
//! created again, or served by several API servers in one process, costs its memory once;
//! only a changed schema costs another copy.

pub mod cleanup;
pub mod jsonpath;
pub mod schema;

use crate::kinds::Strategy;
use jsonpath::JsonPath;
use schema::Schema;
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo, Subresource};
use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

pub const GROUP: &str = "apiextensions.k8s.io";
/// The finalizer that removes a definition's objects before the definition goes.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub path: JsonPath,
}

/// Where the scale subresource reads and writes.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: JsonPath,
    pub status_replicas: JsonPath,
    pub label_selector: Option<JsonPath>,
}

/// One served version of a custom resource.
#[derive(Debug)]
pub struct CustomResource {
    pub info: ResourceInfo,
    /// The definition's name (`widgets.example.com`).
    pub definition: String,
    /// The version objects are stored in.
    pub storage_version: &'static str,
    schema: Option<Schema>,
    pub columns: Vec<Column>,
    pub scale: Option<ScalePaths>,
    /// The version's `openAPIV3Schema`, as given (for the OpenAPI documents).
    pub openapi: Value,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// Interned custom resources, by content, and by the address of their `info`.
struct Interned {
    by_content: HashMap<String, &'static CustomResource>,
    by_info: HashMap<usize, &'static CustomResource>,
}

static INTERNED: LazyLock<RwLock<Interned>> = LazyLock::new(|| {
    RwLock::new(Interned {
        by_content: HashMap::new(),
        by_info: HashMap::new(),
    })
});

/// The custom resource `info` belongs to, if it is one.
pub fn custom(info: &ResourceInfo) -> Option<&'static CustomResource> {
    // A built-in kind (every GET, list item and watch event asks): no lock taken.
    if shoal_api::resources::RESOURCES
        .as_ptr_range()
        .contains(&(info as *const ResourceInfo))
    {
        return None;
    }
    let addr = info as *const ResourceInfo as usize;
    INTERNED
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .by_info
        .get(&addr)
        .copied()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strings_at(v: &Value, ptr: &str) -> Vec<String> {
    crate::meta::strings(v.pointer(ptr))
}

fn leak_list(items: Vec<String>) -> &'static [&'static str] {
    Box::leak(
        items
            .iter()
            .map(|s| leak(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// The served versions of a definition (a stored CustomResourceDefinition), each as the
/// custom resource it serves. A definition that does not compile serves nothing.
pub fn resources_of(crd: &Value) -> Vec<&'static CustomResource> {
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let storage_version = spec
        .get("versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .map(|v| str_at(v, "/name").to_owned())
        .unwrap_or_default();
    let Some(versions) = spec.get("versions").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for version in versions {
        if version.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let key = json!({
            "definition": crd.pointer("/metadata/name"),
            "group": spec.get("group"),
            "names": crd.pointer("/status/acceptedNames").or(spec.get("names")),
            "scope": spec.get("scope"),
            "version": version,
            "storage": storage_version,
        })
        .to_string();
        let mut interned = INTERNED.write().unwrap_or_else(|p| p.into_inner());
        if let Some(cr) = interned.by_content.get(&key) {
            out.push(*cr);
            continue;
        }
        let Some(cr) = compile_version(crd, &spec, version, &storage_version) else {
            continue;
        };
        let cr: &'static CustomResource = Box::leak(Box::new(cr));
        interned.by_content.insert(key, cr);
        interned
            .by_info
            .insert(&cr.info as *const ResourceInfo as usize, cr);
        out.push(cr);
    }
    out
}

fn compile_version(
    crd: &Value,
    spec: &Value,
    version: &Value,
    storage_version: &str,
) -> Option<CustomResource> {
    // The names the definition was accepted with; the requested ones until it has any.
    let names = crd
        .pointer("/status/acceptedNames")
        .filter(|n| !str_at(n, "/plural").is_empty())
        .or(spec.get("names"))?;
    let plural = str_at(names, "/plural");
    let kind = str_at(names, "/kind");
    if plural.is_empty() || kind.is_empty() {
        return None;
    }
    let singular = match str_at(names, "/singular") {
        "" => kind.to_lowercase(),
        s => s.to_owned(),
    };
    let mut subresources = Vec::new();
    if version.pointer("/subresources/status").is_some() {
        subresources.push(Subresource::Status);
    }
    let scale = version.pointer("/subresources/scale").and_then(|s| {
        Some(ScalePaths {
            spec_replicas: JsonPath::parse(str_at(s, "/specReplicasPath")).ok()?,
            status_replicas: JsonPath::parse(str_at(s, "/statusReplicasPath")).ok()?,
            label_selector: s
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .and_then(|p| JsonPath::parse(p).ok()),
        })
    });
    if scale.is_some() {
        subresources.push(Subresource::Scale);
    }
    let openapi = version
        .pointer("/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or(Value::Null);
    let schema = (!openapi.is_null()).then(|| Schema::compile(&openapi, "", &mut Vec::new()));
    let columns: Vec<Column> = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(|c| {
                    Some(Column {
                        name: str_at(c, "/name").to_owned(),
                        ty: str_at(c, "/type").to_owned(),
                        format: str_at(c, "/format").to_owned(),
                        description: str_at(c, "/description").to_owned(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        path: JsonPath::parse(str_at(c, "/jsonPath")).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    // Without columns of its own a custom resource prints its age, as in Kubernetes.
    let columns = if columns.is_empty() {
        vec![Column {
            name: "Age".into(),
            ty: "date".into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            path: JsonPath::parse(".metadata.creationTimestamp").ok()?,
        }]
    } else {
        columns
    };
    Some(CustomResource {
        info: ResourceInfo {
            group: leak(str_at(spec, "/group")),
            version: leak(str_at(version, "/name")),
            kind: leak(kind),
            plural: leak(plural),
            singular: leak(&singular),
            short_names: leak_list(strings_at(names, "/shortNames")),
            categories: leak_list(strings_at(names, "/categories")),
            namespaced: str_at(spec, "/scope") != "Cluster",
            subresources: Box::leak(subresources.into_boxed_slice()),
            selectable_fields: leak_list(
                version
                    .get("selectableFields")
                    .and_then(Value::as_array)
                    .map(|fs| {
                        fs.iter()
                            .map(|f| str_at(f, "/jsonPath").trim_start_matches('.').to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            has_spec: true,
        },
        definition: str_at(crd, "/metadata/name").to_owned(),
        storage_version: leak(storage_version),
        schema,
        columns,
        scale,
        openapi,
    })
}

impl CustomResource {
    /// `group/version` of the storage version.
    pub fn storage_api_version(&self) -> String {
        format!("{}/{}", self.info.group, self.storage_version)
    }

    /// How the list `field` of the object at `parent` (a `.`-joined path of field names,
    /// list indexes dropped) merges: by its `x-kubernetes-list-map-keys` (the first key) for a
    /// `map` list, as a set for a `set` list, whole otherwise (`atomic`, the default).
    pub fn list_strategy(&'static self, parent: &str, field: &str) -> crate::patch::ListStrategy {
        use crate::patch::ListStrategy;
        let Some(mut node) = self.schema.as_ref() else {
            return ListStrategy::Replace;
        };
        for seg in parent.split('.').filter(|s| !s.is_empty()).chain([field]) {
            // A list's items are walked through implicitly, as the path drops indexes.
            while let Some(items) = node.items() {
                node = items;
            }
            match node.property(seg) {
                Some(next) => node = next,
                None => return ListStrategy::Replace,
            }
        }
        match node.list_type.as_deref() {
            Some("map") => match node.list_map_keys.first() {
                Some(key) => ListStrategy::MergeByKey(key.as_str()),
                None => ListStrategy::Replace,
            },
            Some("set") => ListStrategy::MergeScalars,
            _ => ListStrategy::Replace,
        }
    }
}

/// An object's bytes (stored in its storage version) as served through `info`'s version:
/// versions of a definition differ only in `apiVersion` (conversion `None`), which canonical
/// objects carry right after `kind`, so the first `apiVersion` is the object's own.
pub fn served_bytes(info: &ResourceInfo, bytes: &bytes::Bytes) -> bytes::Bytes {
    let Some(c) = custom(info).filter(|c| c.storage_version != info.version) else {
        return bytes.clone();
    };
    let from = format!("\"apiVersion\":\"{}\"", c.storage_api_version());
    let to = format!("\"apiVersion\":\"{}\"", info.api_version());
    match memchr_find(bytes, from.as_bytes()) {
        Some(at) => {
            let mut out = Vec::with_capacity(bytes.len() + to.len());
            out.extend_from_slice(&bytes[..at]);
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(&bytes[at + from.len()..]);
            out.into()
        }
        None => bytes.clone(),
    }
}

/// An object as served through `info`'s version.
pub fn serve_value(info: &ResourceInfo, o: &mut Value) {
    if custom(info).is_some_and(|c| c.storage_version != info.version)
        && let Some(m) = o.as_object_mut()
    {
        m.insert("apiVersion".into(), json!(info.api_version()));
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Strategy for CustomResource {
    fn prune(&self, o: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        if let Some(s) = &self.schema {
            s.prune(o, &mut pruned);
        }
        pruned
    }

    fn default(&self, o: &mut Value) {
        if let Some(s) = &self.schema {
            let meta = o.as_object_mut().and_then(|m| m.shift_remove("metadata"));
            s.apply_defaults(o);
            if let (Some(meta), Some(m)) = (meta, o.as_object_mut()) {
                m.insert("metadata".into(), meta);
            }
        }
    }

    fn prepare_create(&self, o: &mut Value) {
        // With a status subresource, status is written only through it.
        if self.info.has(Subresource::Status)
            && let Some(m) = o.as_object_mut()
        {
            m.shift_remove("status");
        }
    }

    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        None
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        if let Some(s) = &self.schema {
            s.validate(o, out);
        }
    }

    fn to_storage(&self, o: &mut Value) {
        o["apiVersion"] = json!(self.storage_api_version());
    }
}

/// A definition's served custom resources and whether it is being deleted.
#[derive(Debug, Clone)]
struct Entry {
    resource: &'static CustomResource,
    terminating: bool,
}

/// What custom resources one API server serves, from the definitions in its store.
#[derive(Default)]
pub struct Catalog {
    entries: RwLock<Vec<Entry>>,
    /// Bumped on every change, for documents built from the catalog.
    generation: std::sync::atomic::AtomicU64,
}

impl Catalog {
    /// Serves what the definition `crd` says (nothing unless it is established).
    pub fn set(&self, crd: &Value) -> Vec<&'static CustomResource> {
        let name = str_at(crd, "/metadata/name");
        let established = crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
        let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
        let served = if established {
            resources_of(crd)
        } else {
            Vec::new()
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.resource.definition != name);
        entries.extend(served.iter().map(|r| Entry {
            resource: r,
            terminating,
        }));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        served
    }

    /// Stops serving the definition named `name`; returns what it served.
    pub fn remove(&self, name: &str) -> Vec<&'static CustomResource> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let gone = entries
            .iter()
            .filter(|e| e.resource.definition == name)
            .map(|e| e.resource)
            .collect();
        entries.retain(|e| e.resource.definition != name);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gone
    }

    /// Serves nothing (before the definitions are loaded again).
    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The custom resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
        self.read()
            .iter()
            .find(|e| {
                let i = &e.resource.info;
                i.group == group && i.version == version && i.plural == plural
            })
            .map(|e| &e.resource.info)
    }

    /// Whether some definition serves `group`.
    pub fn serves_group(&self, group: &str) -> bool {
        self.read().iter().any(|e| e.resource.info.group == group)
    }

    /// Whether the definition serving `info` is being deleted (no new objects then).
    pub fn terminating(&self, info: &ResourceInfo) -> bool {
        self.read()
            .iter()
            .any(|e| std::ptr::eq(&e.resource.info, info) && e.terminating)
    }

    /// Every served custom resource, in the order definitions were seen.
    pub fn all(&self) -> Vec<&'static CustomResource> {
        self.read().iter().map(|e| e.resource).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_crd(status: bool) -> Value {
        let mut crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}},
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}}]}});
        if status {
            crd["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
        }
        crd
    }

    #[test]
    fn established_definitions_are_served_once_interned() {
        let catalog = Catalog::default();
        assert!(catalog.set(&widget_crd(false)).is_empty());
        assert!(catalog.find("example.com", "v1", "widgets").is_none());
        let served = catalog.set(&widget_crd(true));
        assert_eq!(served.len(), 1);
        let info = catalog.find("example.com", "v1", "widgets").unwrap();
        assert_eq!(info.short_names, ["wd"]);
        assert!(info.has(Subresource::Status) && info.has(Subresource::Scale));
        assert!(std::ptr::eq(custom(info).unwrap(), served[0]));
        // The same definition seen again (another server, a restart) is the same resource.
        let other = Catalog::default();
        other.set(&widget_crd(true));
        assert!(std::ptr::eq(
            other.find("example.com", "v1", "widgets").unwrap(),
            info
        ));
        catalog.remove("widgets.example.com");
        assert!(catalog.find("example.com", "v1", "widgets").is_none());
    }
}
