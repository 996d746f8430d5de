//! The rollout history of DaemonSets and StatefulSets, kept as Kubernetes keeps it: one
//! ControllerRevision per pod template the object has had, named `<owner>-<hash>`, holding the
//! patch that restores that template (`{"spec":{"template":{..., "$patch":"replace"}}}`), the
//! current template's with the highest `revision`. A template seen again (a rollback) gets its
//! old revision renumbered as the newest. At most `revisionHistoryLimit` old revisions are
//! kept. `kubectl rollout history|undo` read and apply exactly these.

use crate::{Error, controller_ref};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::daemonset::REVISION_LABEL;

/// What a history belongs to.
pub struct Owner<'a> {
    /// `DaemonSet` or `StatefulSet`.
    pub kind: &'static str,
    pub meta: &'a ObjectMeta,
    /// The owner's selector, as a label query.
    pub selector: &'a str,
    pub template: &'a PodTemplateSpec,
    /// The template's hash (the `controller-revision-hash` of its pods).
    pub hash: &'a str,
    pub limit: i32,
}

/// The `controller-revision-hash`es of `pods` (whose revisions are kept).
pub fn hashes_in_use(pods: &[k8s_openapi::api::core::v1::Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_LABEL).cloned())
        .collect()
}

/// The patch that puts `template` back.
fn restore_patch(template: &PodTemplateSpec) -> Result<serde_json::Value, Error> {
    let mut t = serde_json::to_value(template).map_err(|e| Error::Invalid(e.to_string()))?;
    t["$patch"] = json!("replace");
    Ok(json!({"spec": {"template": t}}))
}

/// Records the owner's current template; returns its revision number. `in_use` holds the
/// hashes pods still run, whose revisions are never pruned.
pub async fn record(
    client: &kube::Client,
    owner: &Owner<'_>,
    in_use: &[String],
) -> Result<i64, Error> {
    let ns = owner.meta.namespace.as_deref().unwrap_or("default");
    let name = owner.meta.name.as_deref().unwrap_or("");
    let uid = owner.meta.uid.as_deref().unwrap_or("");
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let mut history: Vec<ControllerRevision> = api
        .list(&ListParams::default().labels(owner.selector))
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    history.sort_by_key(|r| r.revision);
    let newest = history.last().map_or(0, |r| r.revision);
    let current_name = format!("{name}-{}", owner.hash);
    let current = match history
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&current_name))
    {
        Some(r) if r.revision == newest => r.revision,
        Some(_) => {
            // Rolled back to an earlier template: it becomes the newest revision.
            let patch = json!({"revision": newest + 1});
            api.patch(&current_name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            newest + 1
        }
        None => {
            let mut labels = owner
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_LABEL.into(), owner.hash.to_owned());
            let revision = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(current_name.clone()),
                    namespace: Some(ns.to_owned()),
                    labels: Some(labels),
                    owner_references: Some(vec![controller_ref("apps/v1", owner.kind, owner.meta)]),
                    ..Default::default()
                },
                data: Some(RawExtension(restore_patch(owner.template)?)),
                revision: newest + 1,
            };
            match api.create(&PostParams::default(), &revision).await {
                Ok(_) => {}
                // Made by an earlier reconcile that failed after it: found next time.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            newest + 1
        }
    };
    // Old revisions beyond the limit go, oldest first, unless pods still run them.
    let old: Vec<&ControllerRevision> = history
        .iter()
        .filter(|r| r.metadata.name.as_deref() != Some(&current_name))
        .collect();
    let excess = old.len().saturating_sub(owner.limit.max(0) as usize);
    for r in old.into_iter().take(excess) {
        let hash = r
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL))
            .cloned()
            .unwrap_or_default();
        if in_use.contains(&hash) {
            continue;
        }
        let rname = r.metadata.name.as_deref().unwrap_or("");
        match api.delete(rname, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(current)
}
