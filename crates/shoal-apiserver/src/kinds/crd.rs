//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): names, scope and versions checked as
//! kube-apiextensions checks them, every version's schema structural, and the status the
//! definition's controllers would write (accepted names, `NamesAccepted`, `Established`,
//! stored versions) computed when it is written, so a definition is served the moment its
//! create returns. A new definition gets the cleanup finalizer: deleting it removes its objects
//! first (`crate::crd::cleanup`).

use super::Strategy;
use super::defaulting::{obj, set_default};
use crate::cache::WatchCache;
use crate::crd::CLEANUP_FINALIZER;
use crate::crd::jsonpath::JsonPath;
use crate::crd::schema::Schema;
use crate::error::ApiResult;
use crate::meta;
use serde_json::{Value, json};
use shoal_api::resources::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain};
use shoal_api::{Cause, ResourceInfo};

pub(super) struct CrdStrategy;
pub(super) static CRD: CrdStrategy = CrdStrategy;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn versions(o: &Value) -> &[Value] {
    o.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

const PRINTER_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];

impl Strategy for CrdStrategy {
    fn default(&self, o: &mut Value) {
        let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
            let kind = names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if !kind.is_empty() {
                set_default(names, "singular", json!(kind.to_lowercase()));
                set_default(names, "listKind", json!(format!("{kind}List")));
            }
        }
        let conversion = spec
            .entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
        if let Some(c) = obj(conversion) {
            set_default(c, "strategy", json!("None"));
        }
    }

    fn prepare_create(&self, o: &mut Value) {
        let m = meta::meta_mut(o);
        let finalizers = m.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = finalizers.as_array_mut()
            && !list.iter().any(|f| f == CLEANUP_FINALIZER)
        {
            list.push(json!(CLEANUP_FINALIZER));
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let group = s(o, "/spec/group");
        let plural = s(o, "/spec/names/plural");
        let name = meta::name(o);
        if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
            out.push(Cause::invalid(
                "metadata.name",
                name,
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
        if group.is_empty() {
            out.push(Cause::required("spec.group"));
        } else if !is_dns1123_subdomain(group) || !group.contains('.') {
            out.push(Cause::invalid(
                "spec.group",
                group,
                "should be a domain with at least one dot",
            ));
        } else if shoal_api::resources::groups().contains(&group) {
            out.push(Cause::invalid(
                "spec.group",
                group,
                "is served by the API server itself and cannot be extended",
            ));
        }
        match s(o, "/spec/scope") {
            "Cluster" | "Namespaced" => {}
            "" => out.push(Cause::required("spec.scope")),
            other => out.push(Cause::not_supported(
                "spec.scope",
                other,
                &["Cluster", "Namespaced"],
            )),
        }
        validate_names(o, out);
        validate_versions(o, out);
        match s(o, "/spec/conversion/strategy") {
            "" | "None" => {}
            "Webhook" => out.push(Cause::forbidden(
                "spec.conversion.strategy",
                "conversion webhooks are not supported by Shoal: use None (versions differing only in apiVersion)",
            )),
            other => out.push(Cause::not_supported(
                "spec.conversion.strategy",
                other,
                &["None", "Webhook"],
            )),
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        for (field, ptr) in [("spec.group", "/spec/group"), ("spec.scope", "/spec/scope")] {
            if o.pointer(ptr) != old.pointer(ptr) {
                out.push(Cause::invalid(field, s(o, ptr), "field is immutable"));
            }
        }
        let names: Vec<&str> = versions(o).iter().map(|v| s(v, "/name")).collect();
        let stored = old
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, v) in stored.iter().enumerate() {
            if let Some(v) = v.as_str()
                && !names.contains(&v)
            {
                out.push(Cause::invalid(
                    format!("status.storedVersions[{i}]"),
                    v,
                    "must appear in spec.versions",
                ));
            }
        }
    }

    fn admits_from_fresh_cache(&self) -> bool {
        true
    }

    /// The status the definition's controllers would write: its names accepted unless another
    /// definition of the group holds one of them, then established.
    fn admit(
        &self,
        cache: &WatchCache,
        info: &ResourceInfo,
        o: &mut Value,
        _old: Option<&Value>,
    ) -> ApiResult<()> {
        let info =
            shoal_api::resources::find_kind(info.group, info.kind).expect("definitions are served");
        let name = meta::name(o).to_owned();
        let group = s(o, "/spec/group").to_owned();
        let names = o.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let mine = all_names(&names);
        let prefix = info.storage_prefix();
        let clash = cache
            .resource(info)
            .list(&prefix, None)
            .iter()
            .map(|c| c.value().clone())
            .filter(|other| meta::name(other) != name && s(other, "/spec/group") == group)
            .find_map(|other| {
                let taken = all_names(
                    other
                        .pointer("/status/acceptedNames")
                        .unwrap_or(&Value::Null),
                );
                mine.iter().find(|n| taken.contains(n)).cloned()
            });
        let now = meta::now();
        let mut status = o.get("status").cloned().unwrap_or(json!({}));
        let previous = |t: &str| {
            status
                .get("conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                .cloned()
        };
        let condition = |t: &str, ok: bool, reason: &str, message: &str| {
            let st = if ok { "True" } else { "False" };
            let since = previous(t)
                .filter(|c| c["status"] == st)
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or(json!(now));
            json!({"type": t, "status": st, "lastTransitionTime": since, "reason": reason, "message": message})
        };
        let mut conditions = match &clash {
            None => vec![
                condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
                condition(
                    "Established",
                    true,
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                ),
            ],
            Some(n) => vec![
                condition(
                    "NamesAccepted",
                    false,
                    "NameConflict",
                    &format!("{n:?} is already in use"),
                ),
                condition(
                    "Established",
                    false,
                    "NotAccepted",
                    "not all names are accepted",
                ),
            ],
        };
        if let Some(t) = previous("Terminating") {
            conditions.push(t);
        }
        let accepted = if clash.is_none() {
            names
        } else {
            status
                .get("acceptedNames")
                .cloned()
                .unwrap_or(json!({"plural": "", "kind": ""}))
        };
        let mut stored: Vec<Value> = status
            .get("storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(v) = versions(o)
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .map(|v| json!(s(v, "/name")))
            && !stored.contains(&v)
        {
            stored.push(v);
        }
        status["acceptedNames"] = accepted;
        status["conditions"] = json!(conditions);
        status["storedVersions"] = json!(stored);
        o["status"] = status;
        Ok(())
    }
}

/// Every name a definition's `names` (or `acceptedNames`) claims in its group.
fn all_names(names: &Value) -> Vec<String> {
    let mut out: Vec<String> = ["plural", "singular", "kind", "listKind"]
        .iter()
        .map(|k| s(names, &format!("/{k}")).to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(short) = names.get("shortNames").and_then(Value::as_array) {
        out.extend(short.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    out
}

fn validate_names(o: &Value, out: &mut Vec<Cause>) {
    let names = o.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    for (key, required) in [
        ("plural", true),
        ("singular", false),
        ("kind", true),
        ("listKind", false),
    ] {
        let v = s(&names, &format!("/{key}"));
        let field = format!("spec.names.{key}");
        if v.is_empty() {
            if required {
                out.push(Cause::required(field));
            }
            continue;
        }
        let ok = match key {
            "plural" | "singular" => is_dns1035_label(v) || is_dns1123_label(v),
            _ => is_dns1035_label(&v.to_lowercase()),
        };
        if !ok {
            out.push(Cause::invalid(field, v, super::validation::DNS1035_MSG));
        }
    }
    if let Some(short) = names.get("shortNames").and_then(Value::as_array) {
        for (i, n) in short.iter().enumerate() {
            let n = n.as_str().unwrap_or("");
            if !is_dns1123_label(n) {
                out.push(Cause::invalid(
                    format!("spec.names.shortNames[{i}]"),
                    n,
                    super::validation::DNS1123_LABEL_MSG,
                ));
            }
        }
    }
}

fn validate_versions(o: &Value, out: &mut Vec<Cause>) {
    let vs = versions(o);
    if vs.is_empty() {
        out.push(Cause::invalid(
            "spec.versions",
            "null",
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = vs
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        out.push(Cause::invalid(
            "spec.versions",
            storage,
            "must have exactly one version marked as storage version",
        ));
    }
    if !vs
        .iter()
        .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
    {
        out.push(Cause::invalid(
            "spec.versions",
            "[]",
            "must have at least one version marked as served",
        ));
    }
    let mut seen = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        let name = s(v, "/name");
        if name.is_empty() {
            out.push(Cause::required(format!("{at}.name")));
        } else if !is_dns1035_label(name) {
            out.push(Cause::invalid(
                format!("{at}.name"),
                name,
                super::validation::DNS1035_MSG,
            ));
        } else if seen.contains(&name) {
            out.push(Cause::duplicate(format!("{at}.name"), name));
        }
        seen.push(name);
        let schema_at = format!("{at}.schema.openAPIV3Schema");
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => out.push(
                Cause::required(schema_at).with_message("Required value: schemas are required"),
            ),
            Some(schema) => {
                let mut errors = Vec::new();
                let compiled = Schema::compile(schema, &schema_at, &mut errors);
                if errors.is_empty() {
                    compiled.check_defaults(&schema_at, &mut errors);
                }
                out.extend(errors);
            }
        }
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            for (j, c) in cols.iter().enumerate() {
                let col = format!("{at}.additionalPrinterColumns[{j}]");
                if s(c, "/name").is_empty() {
                    out.push(Cause::required(format!("{col}.name")));
                }
                let ty = s(c, "/type");
                if !PRINTER_TYPES.contains(&ty) {
                    out.push(Cause::not_supported(
                        format!("{col}.type"),
                        ty,
                        PRINTER_TYPES,
                    ));
                }
                if let Err(e) = JsonPath::parse(s(c, "/jsonPath")) {
                    out.push(Cause::invalid(
                        format!("{col}.jsonPath"),
                        s(c, "/jsonPath"),
                        &e,
                    ));
                }
            }
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            for (key, prefix, required) in [
                ("specReplicasPath", ".spec.", true),
                ("statusReplicasPath", ".status.", true),
                ("labelSelectorPath", "", false),
            ] {
                let p = s(scale, &format!("/{key}"));
                let field = format!("{at}.subresources.scale.{key}");
                if p.is_empty() {
                    if required {
                        out.push(Cause::required(field));
                    }
                    continue;
                }
                let plain = JsonPath::parse(p).ok().and_then(|j| j.fields().map(|_| ()));
                if plain.is_none() || !p.starts_with(prefix) {
                    out.push(Cause::invalid(
                        field,
                        p,
                        &format!("should be a json path under {}", prefix.trim_matches('.')),
                    ));
                }
            }
        }
    }
}
