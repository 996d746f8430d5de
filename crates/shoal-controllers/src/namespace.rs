//! Namespace deletion: a Terminating namespace has everything in it deleted (every namespaced
//! resource the API server lists in discovery), and once nothing is left its `kubernetes`
//! finalizer is removed through `namespaces/{name}/finalize`, which lets it go.

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs the namespace controller (forever).
pub async fn run(client: kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let controller = Controller::new(namespaces, watcher::Config::default());
    crate::runner::run("namespace", client, controller, reconcile).await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.as_deref().unwrap_or("");
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == "kubernetes") {
        return Ok(Action::await_change());
    }
    let discovery = Discovery::new(ctx.client.clone()).run().await?;
    let mut remaining = 0;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
                || ar.plural.contains('/')
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), name, &ar);
            let left = api.list(&ListParams::default()).await?.items;
            for o in &left {
                if o.metadata.deletion_timestamp.is_none() {
                    let n = o.metadata.name.as_deref().unwrap_or("");
                    match api.delete(n, &DeleteParams::background()).await {
                        Ok(_) | Err(kube::Error::Api(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            remaining += left.len();
        }
    }
    if remaining > 0 {
        // Pods stop gracefully on their nodes; look again shortly.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != "kubernetes").collect();
    let mut body = serde_json::to_value(ns.as_ref()).map_err(|e| Error::Invalid(e.to_string()))?;
    body["spec"]["finalizers"] = json!(rest);
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api
        .replace_subresource("finalize", name, &PostParams::default(), &body)
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
