//! Deleting a definition deletes its objects: the role of kube-apiextensions' finalizer
//! controller. A definition being deleted keeps [`super::CLEANUP_FINALIZER`] until no object
//! of it is left; each is deleted as a client would delete it (its own finalizers and
//! dependents honoured), then the finalizer goes and the definition with it.

use super::{CLEANUP_FINALIZER, GROUP};
use crate::ApiServer;
use crate::error::ApiResult;
use crate::meta;
use crate::patch::PatchType;
use crate::registry::{DeleteOptions, ObjectRef, WriteOptions};
use serde_json::{Value, json};
use std::sync::Weak;
use std::time::Duration;

/// How often definitions being deleted are looked at again while their objects go.
const POLL: Duration = Duration::from_millis(200);

/// Runs until the server is dropped.
pub async fn run(server: Weak<ApiServer>) {
    let Some(strong) = server.upgrade() else {
        return;
    };
    let mut tick = strong.cache.subscribe_revision();
    drop(strong);
    loop {
        let Some(s) = server.upgrade() else {
            return;
        };
        for crd in terminating(&s) {
            if let Err(e) = clean(&s, &crd).await {
                tracing::warn!(error = %e.0.message, definition = meta::name(&crd), "cleaning up a definition's objects");
            }
        }
        drop(s);
        // Changes wake it; the pause bounds how often it looks while objects are deleted.
        let _ = tokio::time::timeout(POLL * 5, tick.changed()).await;
        tokio::time::sleep(POLL).await;
    }
}

fn definitions() -> &'static shoal_api::ResourceInfo {
    shoal_api::resources::find(GROUP, "v1", "customresourcedefinitions")
        .expect("definitions are served")
}

/// Definitions being deleted that still hold the cleanup finalizer.
fn terminating(s: &ApiServer) -> Vec<Value> {
    let info = definitions();
    s.cache
        .resource(info)
        .list(&info.storage_prefix(), None)
        .iter()
        .map(|c| c.value().clone())
        .filter(|crd| {
            meta::is_deleting(crd) && meta::finalizers(crd).iter().any(|f| f == CLEANUP_FINALIZER)
        })
        .collect()
}

fn options() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        manager: "apiextensions-apiserver".into(),
        validation: crate::request::FieldValidation::Ignore,
        user: None,
    }
}

async fn clean(s: &ApiServer, crd: &Value) -> ApiResult<()> {
    let name = meta::name(crd).to_owned();
    let info = definitions();
    let Some(resource) = super::resources_of(crd).into_iter().next() else {
        return release(s, crd).await;
    };
    let objects = s
        .cache
        .resource(&resource.info)
        .list(&resource.info.storage_prefix(), None);
    if objects.is_empty() {
        return release(s, crd).await;
    }
    let terminating = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Terminating"));
    if !terminating {
        let mut conditions = crd
            .pointer("/status/conditions")
            .cloned()
            .unwrap_or(json!([]));
        if let Some(list) = conditions.as_array_mut() {
            list.push(json!({"type": "Terminating", "status": "True", "lastTransitionTime": meta::now(),
                "reason": "InstanceDeletionInProgress", "message": "CustomResource deletion is in progress"}));
        }
        let body = json!({"status": {"conditions": conditions}}).to_string();
        let r = ObjectRef::new(info, None, &name).subresource(Some(shoal_api::Subresource::Status));
        s.registry
            .patch(r, PatchType::Merge, body.as_bytes(), &options())
            .await?;
    }
    for o in objects.iter().filter(|o| !meta::is_deleting(o.value())) {
        let v = o.value();
        let ns = v.pointer("/metadata/namespace").and_then(Value::as_str);
        match s
            .registry
            .delete(&resource.info, ns, meta::name(v), &DeleteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.0.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the cleanup finalizer: the definition then goes (or waits for its other
/// finalizers).
async fn release(s: &ApiServer, crd: &Value) -> ApiResult<()> {
    let rest: Vec<String> = meta::finalizers(crd)
        .into_iter()
        .filter(|f| f != CLEANUP_FINALIZER)
        .collect();
    let body = json!({"metadata": {"finalizers": rest, "resourceVersion": crd.pointer("/metadata/resourceVersion")}})
        .to_string();
    let r = ObjectRef::new(definitions(), None, meta::name(crd));
    match s
        .registry
        .patch(r, PatchType::Merge, body.as_bytes(), &options())
        .await
    {
        // Changed meanwhile: looked at again on the next round.
        Err(e) if e.0.code == 409 || e.0.code == 404 => Ok(()),
        other => other.map(|_| ()),
    }
}
