//! Ingress status: every node's ingress controller serves the Ingresses of the IngressClasses
//! whose controller is Shoal's on the node's address, so this controller writes those
//! addresses — the InternalIP of every Ready node, as [`crate::servicelb`] does for
//! LoadBalancer Services — into each such Ingress's `status.loadBalancer.ingress`. Ingresses
//! of other controllers are theirs to describe and left alone.

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;
use shoal_api::net::is_shoal_ingress;
use std::sync::Arc;

/// Runs the controller (forever).
pub async fn run(client: kube::Client) {
    let ingresses: Api<Ingress> = Api::all(client.clone());
    let controller = Controller::new(ingresses, watcher::Config::default());
    let store = controller.store();
    let every = |store: Store<Ingress>| {
        move || {
            store
                .state()
                .into_iter()
                .map(|i| ObjectRef::from_obj(i.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    // A node or a class changing concerns every Ingress.
    let (on_node, on_class) = (every(store.clone()), every(store));
    let controller = controller
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |_: Node| on_node(),
        )
        .watches(
            Api::<IngressClass>::all(client.clone()),
            watcher::Config::default(),
            move |_: IngressClass| on_class(),
        );
    crate::runner::run("ingress-status", client, controller, reconcile).await;
}

async fn reconcile(ing: Arc<Ingress>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ing.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let classes = Api::<IngressClass>::all(ctx.client.clone())
        .list(&Default::default())
        .await?
        .items;
    if !is_shoal_ingress(&ing, &classes.iter().collect::<Vec<_>>()) {
        return Ok(Action::await_change());
    }
    let (Some(ns), Some(name)) = (&ing.metadata.namespace, &ing.metadata.name) else {
        return Ok(Action::await_change());
    };
    let have = crate::servicelb::published(ing.as_ref(), &["ip"]);
    let wanted = crate::servicelb::node_entries(&ctx.client, &json!({})).await?;
    crate::servicelb::publish(
        Api::<Ingress>::namespaced(ctx.client.clone(), ns),
        name,
        have,
        wanted,
    )
    .await?;
    Ok(Action::await_change())
}
