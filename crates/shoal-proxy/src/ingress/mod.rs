//! The node's ingress controller (IngressClass `shoal`, controller [`routes::CONTROLLER`]):
//! it watches Ingresses, IngressClasses, Services, EndpointSlices and TLS Secrets, keeps one
//! routing table ([`routes::Table`]) swapped whole on every change, and serves HTTP/1.1 and
//! HTTP/2 on the node's ingress ports — TLS with the certificate of the host the client asks
//! for (SNI) — forwarding each request straight to an endpoint of its backend Service, not
//! through the Service proxy, as Kubernetes' ingress controllers do ([`forward`]).
//!
//! It runs with an identity of its own (`system:shoal:ingress-controller`), not the node's:
//! a node may not read Ingresses or other pods' Secrets. The controller-manager publishes
//! the nodes' addresses in the Ingresses' status, as it does for LoadBalancer Services.

pub mod activator;
pub mod forward;
pub mod routes;
pub mod tls;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use routes::Table;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The routing table every listener reads, replaced whole by the watch loop; requests held
/// for a Deployment waking from zero wait for its next version.
#[derive(Clone)]
pub struct SharedTable(Arc<tokio::sync::watch::Sender<Arc<Table>>>);

impl Default for SharedTable {
    fn default() -> Self {
        SharedTable(Arc::new(tokio::sync::watch::Sender::new(Arc::default())))
    }
}

impl std::fmt::Debug for SharedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTable")
    }
}

impl SharedTable {
    pub fn get(&self) -> Arc<Table> {
        self.0.borrow().clone()
    }

    pub fn set(&self, t: Table) {
        self.0.send_replace(Arc::new(t));
    }

    /// A receiver told of every new table.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Table>> {
        self.0.subscribe()
    }
}

/// Watches what the routes are made of and keeps `table` current until `stop`.
pub async fn watch(client: kube::Client, table: SharedTable, stop: CancellationToken) {
    let changed = Arc::new(Notify::new());
    let poke = || {
        let c = changed.clone();
        move || c.notify_one()
    };
    let (ingresses, _w1) = shoal_client::watch_store(Api::<Ingress>::all(client.clone()), poke());
    let (classes, _w2) =
        shoal_client::watch_store(Api::<IngressClass>::all(client.clone()), poke());
    let (services, _w3) = shoal_client::watch_store(Api::<Service>::all(client.clone()), poke());
    let (slices, _w4) =
        shoal_client::watch_store(Api::<EndpointSlice>::all(client.clone()), poke());
    // Only TLS Secrets: the controller has no business with the others' data.
    let tls_only = kube::runtime::watcher::Config::default().fields("type=kubernetes.io/tls");
    let (secrets, _w5) =
        shoal_client::watch_store_with(Api::<Secret>::all(client.clone()), tls_only, poke());
    let (deployments, _w6) =
        shoal_client::watch_store(Api::<Deployment>::all(client.clone()), poke());
    let (autoscalers, _w7) =
        shoal_client::watch_store(Api::<HorizontalPodAutoscaler>::all(client.clone()), poke());
    let mut reported = BTreeSet::new();
    let mut served = Vec::new();
    loop {
        let (i, c, s, e, x, d, h) = (
            ingresses.state(),
            classes.state(),
            services.state(),
            slices.state(),
            secrets.state(),
            deployments.state(),
            autoscalers.state(),
        );
        let built = routes::build(&routes::Objects {
            ingresses: i.iter().map(AsRef::as_ref).collect(),
            classes: c.iter().map(AsRef::as_ref).collect(),
            services: s.iter().map(AsRef::as_ref).collect(),
            slices: e.iter().map(AsRef::as_ref).collect(),
            secrets: x.iter().map(AsRef::as_ref).collect(),
            deployments: d.iter().map(AsRef::as_ref).collect(),
            autoscalers: h.iter().map(AsRef::as_ref).collect(),
        });
        // Each problem once, while it lasts.
        let now: BTreeSet<String> = built.problems.iter().cloned().collect();
        for p in now.difference(&reported) {
            tracing::warn!(problem = %p, "ingress not fully served");
        }
        reported = now;
        if built.ingresses != served {
            tracing::info!(ingresses = ?built.ingresses, "ingress routes changed");
            served = built.ingresses.clone();
        }
        table.set(built);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changed.notified() => {}
        }
    }
}
