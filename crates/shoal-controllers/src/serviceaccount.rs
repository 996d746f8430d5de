//! The `default` ServiceAccount of every namespace, as Kubernetes' serviceaccounts-controller
//! keeps it: created when a namespace appears, created again when deleted, left alone in a
//! namespace being deleted.

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::sync::Arc;

const DEFAULT: &str = "default";

/// Runs the ServiceAccount controller (forever).
pub async fn run(client: kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let controller = Controller::new(namespaces, watcher::Config::default())
        // A deleted `default` account brings its namespace back to be looked at.
        .watches(
            accounts,
            watcher::Config::default(),
            |sa: ServiceAccount| {
                let ns = sa.metadata.namespace.clone()?;
                (sa.metadata.name.as_deref() == Some(DEFAULT)).then(|| ObjectRef::new(&ns))
            },
        );
    crate::runner::run("serviceaccount", client, controller, reconcile).await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    let Some(name) = ns.metadata.name.as_deref().filter(|_| !terminating) else {
        return Ok(Action::await_change());
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), name);
    if api.get_opt(DEFAULT).await?.is_some() {
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(DEFAULT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        // Made meanwhile, or the namespace began terminating: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
