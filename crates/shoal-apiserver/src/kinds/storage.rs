//! PersistentVolumes, PersistentVolumeClaims and StorageClasses: Kubernetes' defaults
//! (reclaim policy, volume mode, binding mode), the fields a volume and a claim need, what may
//! not change, and the DefaultStorageClass admission (a claim without a class gets the class
//! marked default). Every cluster has the `local-path` class: directories on the node that
//! runs the claim's first pod (provisioned by that node's kubelet).

use super::Strategy;
use super::defaulting::{child, obj, set_default};
use crate::cache::WatchCache;
use crate::error::ApiResult;
use serde_json::{Value, json};
use shoal_api::{Cause, ResourceInfo};

/// The annotation marking the default StorageClass.
pub(crate) const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The class every cluster has, and its provisioner.
pub(crate) const LOCAL_PATH: &str = "local-path";
pub(crate) const LOCAL_PATH_PROVISIONER: &str = "shoal.dev/local-path";

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn access_modes(spec: &Value, field: &str, out: &mut Vec<Cause>) {
    match spec.get("accessModes").and_then(Value::as_array) {
        Some(modes) if !modes.is_empty() => {
            for (i, m) in modes.iter().enumerate() {
                let m = m.as_str().unwrap_or("");
                if !ACCESS_MODES.contains(&m) {
                    out.push(Cause::not_supported(
                        format!("{field}[{i}]"),
                        m,
                        ACCESS_MODES,
                    ));
                }
            }
        }
        _ => out.push(Cause::required(field)),
    }
}

fn quantity(v: Option<&Value>, field: &str, out: &mut Vec<Cause>) {
    match v.and_then(Value::as_str) {
        None => out.push(Cause::required(field)),
        Some(q) => {
            if shoal_api::quantity::bytes(q).is_err() {
                out.push(Cause::invalid(
                    field,
                    q,
                    "must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$",
                ));
            }
        }
    }
}

/// Defaults volumes and claims share (`volumeMode: Filesystem`) and `extra` ones.
fn default_spec(o: &mut Value, extra: &[(&str, &str)]) {
    let Some(root) = obj(o) else { return };
    if let Some(spec) = obj(child(root, "spec")) {
        set_default(spec, "volumeMode", json!("Filesystem"));
        for (k, v) in extra {
            set_default(spec, k, json!(v));
        }
    }
}

/// The spec of a volume or claim, with its access modes and the storage at `ptr` checked.
fn checked_spec(o: &Value, ptr: &str, field: &str, out: &mut Vec<Cause>) -> Value {
    let spec = o.get("spec").cloned().unwrap_or(Value::Null);
    access_modes(&spec, "spec.accessModes", out);
    quantity(spec.pointer(ptr), field, out);
    spec
}

pub(super) struct VolumeStrategy;
pub(super) static PERSISTENT_VOLUME: VolumeStrategy = VolumeStrategy;

impl Strategy for VolumeStrategy {
    fn default(&self, o: &mut Value) {
        default_spec(o, &[("persistentVolumeReclaimPolicy", "Retain")]);
    }

    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let spec = checked_spec(o, "/capacity/storage", "spec.capacity.storage", out);
        let sources = ["hostPath", "local", "nfs", "csi"];
        match sources.iter().filter(|s| spec.get(**s).is_some()).count() {
            0 => out.push(
                Cause::required("spec").with_message("Required value: must specify a volume type"),
            ),
            1 => {}
            _ => out.push(Cause::forbidden(
                "spec",
                "may not specify more than 1 volume type",
            )),
        }
        if spec.get("local").is_some() && spec.get("nodeAffinity").is_none() {
            out.push(
                Cause::required("spec.nodeAffinity")
                    .with_message("Required value: Local volume requires node affinity"),
            );
        }
        if let Some(p) = spec
            .get("persistentVolumeReclaimPolicy")
            .and_then(Value::as_str)
            && !matches!(p, "Retain" | "Delete" | "Recycle")
        {
            out.push(Cause::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                &["Delete", "Recycle", "Retain"],
            ));
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        for (ptr, field) in [
            ("/spec/local", "spec.local"),
            ("/spec/hostPath", "spec.hostPath"),
        ] {
            if o.pointer(ptr) != old.pointer(ptr) {
                out.push(Cause::forbidden(
                    field,
                    "spec.persistentvolumesource is immutable after creation",
                ));
            }
        }
    }
}

pub(super) struct ClaimStrategy;
pub(super) static PERSISTENT_VOLUME_CLAIM: ClaimStrategy = ClaimStrategy;

impl Strategy for ClaimStrategy {
    fn default(&self, o: &mut Value) {
        default_spec(o, &[]);
    }

    fn initial_status(&self, _info: &ResourceInfo, _o: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        checked_spec(
            o,
            "/resources/requests/storage",
            "spec.resources[storage]",
            out,
        );
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        // Only the requests may change (and a volume or class be filled in once).
        let strip = |v: &Value| {
            let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = spec.as_object_mut() {
                m.remove("resources");
                if old.pointer("/spec/volumeName").is_none_or(|v| v == "") {
                    m.remove("volumeName");
                }
                if old.pointer("/spec/storageClassName").is_none() {
                    m.remove("storageClassName");
                }
            }
            spec
        };
        if strip(o) != strip(old) {
            out.push(Cause::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
    }

    /// DefaultStorageClass admission: a new claim without `storageClassName` gets the
    /// default class's name.
    fn admit(
        &self,
        cache: &WatchCache,
        _info: &ResourceInfo,
        o: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        if old.is_some() || o.pointer("/spec/storageClassName").is_some() {
            return Ok(());
        }
        let classes = shoal_api::resources::find("storage.k8s.io", "v1", "storageclasses")
            .expect("storage classes are served");
        super::give_default_class(cache, classes, DEFAULT_CLASS, o, "storageClassName");
        Ok(())
    }
}

pub(super) struct ClassStrategy;
pub(super) static STORAGE_CLASS: ClassStrategy = ClassStrategy;

impl Strategy for ClassStrategy {
    fn default(&self, o: &mut Value) {
        if let Some(root) = obj(o) {
            set_default(root, "reclaimPolicy", json!("Delete"));
            set_default(root, "volumeBindingMode", json!("Immediate"));
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        if o.get("provisioner")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            out.push(Cause::required("provisioner"));
        }
        if let Some(m) = o.get("volumeBindingMode").and_then(Value::as_str)
            && !matches!(m, "Immediate" | "WaitForFirstConsumer")
        {
            out.push(Cause::not_supported(
                "volumeBindingMode",
                m,
                &["Immediate", "WaitForFirstConsumer"],
            ));
        }
        if let Some(p) = o.get("reclaimPolicy").and_then(Value::as_str)
            && !matches!(p, "Retain" | "Delete")
        {
            out.push(Cause::not_supported(
                "reclaimPolicy",
                p,
                &["Delete", "Retain"],
            ));
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        for field in [
            "provisioner",
            "parameters",
            "reclaimPolicy",
            "volumeBindingMode",
        ] {
            if o.get(field) != old.get(field) {
                out.push(Cause::forbidden(
                    field,
                    format!("updates to {field} are forbidden."),
                ));
            }
        }
    }
}

/// The `local-path` StorageClass every cluster starts with (the default class).
pub(crate) fn local_path_class() -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer"})
}
