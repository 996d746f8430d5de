//! ServiceAccount admission: a new pod without `imagePullSecrets` gets its ServiceAccount's,
//! and its token volume: a new pod gets Kubernetes' `kube-api-access-XXXXX`
//! projected volume (a bound token the kubelet requests and rotates, the cluster CA from the
//! `kube-root-ca.crt` ConfigMap, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container, unless the pod or its
//! ServiceAccount says `automountServiceAccountToken: false`.

use crate::cache::WatchCache;
use serde_json::{Value, json};

/// Where containers find their credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
/// The token's life the kubelet asks for (Kubernetes' 3607 s: an hour and a marker).
const TOKEN_EXPIRATION: i64 = 3607;

/// Whether the pod's account token is to be mounted: the pod's own say first, then its
/// ServiceAccount's.
fn automount(cache: &WatchCache, pod: &Value, ns: &str, account: &str) -> bool {
    if let Some(b) = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
    {
        return b;
    }
    account_field(cache, ns, account, "automountServiceAccountToken")
        .and_then(|v| v.as_bool())
        .unwrap_or(true)
}

/// A field of the pod's ServiceAccount, as the watch cache has it.
fn account_field(cache: &WatchCache, ns: &str, account: &str, field: &str) -> Option<Value> {
    let info = shoal_api::resources::find("", "v1", "serviceaccounts")?;
    cache
        .resource(info)
        .get(&info.storage_key(Some(ns), account))
        .and_then(|sa| sa.value().get(field).cloned())
}

/// Adds the token volume and its mounts to a new pod (again on a retried admission: the
/// volume it already has is reused).
pub(super) fn admit_pod(cache: &WatchCache, pod: &mut Value) {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    // A pod naming no pull secrets gets its ServiceAccount's, as Kubernetes' admission does.
    let has_secrets = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if !has_secrets
        && let Some(secrets) = account_field(cache, &ns, &account, "imagePullSecrets")
            .filter(|s| s.as_array().is_some_and(|a| !a.is_empty()))
        && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("imagePullSecrets".into(), secrets);
    }
    if !automount(cache, pod, &ns, &account) {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let needs = |c: &Value| {
        !c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|ms| {
                ms.iter()
                    .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
            })
    };
    let any_needs = ["containers", "initContainers"].iter().any(|k| {
        spec.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(needs))
    });
    if !any_needs {
        return;
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if !volumes.is_array() {
        return;
    }
    let existing = volumes.as_array().into_iter().flatten().find_map(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .filter(|n| n.starts_with(VOLUME_PREFIX))
            .map(str::to_owned)
    });
    let name = match existing {
        Some(n) => n,
        None => {
            let name = format!("{VOLUME_PREFIX}{}", crate::meta::random_suffix(5));
            if let Some(list) = volumes.as_array_mut() {
                list.push(json!({
                    "name": name,
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                        ],
                    },
                }));
            }
            name
        }
    };
    for key in ["containers", "initContainers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if !needs(c) {
                continue;
            }
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(list) = mounts.as_array_mut() {
                list.push(json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH}));
            }
        }
    }
}
