//! Load balancer status: every node's service proxy listens for `LoadBalancer` Services on the
//! service port of the node's address (as k3s' ServiceLB does); this controller, in the
//! service controller's role, writes those addresses — the InternalIP of every Ready node —
//! into each such Service's `status.loadBalancer.ingress`, and clears it when the Service
//! stops being a `LoadBalancer`. (The proxies run as their nodes, which may not write Service
//! status.)

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::sync::Arc;

/// Runs the controller (forever).
pub async fn run(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    // A node coming, going or changing readiness concerns every LoadBalancer Service.
    let controller = controller.watches(nodes, watcher::Config::default(), move |_node: Node| {
        store
            .state()
            .into_iter()
            .filter(|s| is_load_balancer(s))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    });
    crate::runner::run("service-lb", client, controller, reconcile).await;
}

fn is_load_balancer(s: &Service) -> bool {
    s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// The addresses a LoadBalancer Service is reached at: each Ready node's InternalIP, sorted.
pub fn addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `status.loadBalancer.ingress` entries to publish: every Ready node's InternalIP,
/// with `extra` fields on each.
pub(crate) async fn node_entries(
    client: &kube::Client,
    extra: &Value,
) -> Result<Vec<Value>, Error> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect::<Vec<_>>();
    Ok(addresses(&nodes)
        .into_iter()
        .map(|ip| {
            let mut e = json!({"ip": ip});
            if let (Some(e), Some(x)) = (e.as_object_mut(), extra.as_object()) {
                e.extend(x.clone());
            }
            e
        })
        .collect())
}

/// The `fields` of each entry of `obj`'s `status.loadBalancer.ingress` (a Service's or an
/// Ingress's), to compare with what [`node_entries`] wants.
pub(crate) fn published(obj: &impl serde::Serialize, fields: &[&str]) -> Vec<Value> {
    let v = serde_json::to_value(obj).unwrap_or_default();
    v.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let kept = fields
                .iter()
                .filter_map(|f| Some(((*f).to_owned(), e.get(*f)?.clone())))
                .collect::<serde_json::Map<_, _>>();
            Value::Object(kept)
        })
        .collect()
}

/// Writes `wanted` as `status.loadBalancer.ingress` of `name` in `api` unless it is `have`.
pub(crate) async fn publish<K>(
    api: Api<K>,
    name: &str,
    have: Vec<Value>,
    wanted: Vec<Value>,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if have == wanted {
        return Ok(());
    }
    // A JSON merge patch replaces the list whole; `null` removes it.
    let ingress = if wanted.is_empty() {
        Value::Null
    } else {
        Value::Array(wanted)
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
    )
    .await?;
    Ok(())
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
        return Ok(Action::await_change());
    };
    let have = published(svc.as_ref(), &["ip", "ipMode"]);
    let wanted = if is_load_balancer(&svc) {
        node_entries(&ctx.client, &json!({"ipMode": "VIP"})).await?
    } else {
        Vec::new()
    };
    publish(
        Api::<Service>::namespaced(ctx.client.clone(), ns),
        name,
        have,
        wanted,
    )
    .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeStatus};

    fn node(ip: &str, ready: bool) -> Arc<Node> {
        Arc::new(Node {
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn published_entries_keep_the_compared_fields() {
        let svc: Service = serde_json::from_value(json!({"status": {"loadBalancer": {"ingress": [
            {"ip": "127.0.0.2", "ipMode": "VIP", "hostname": "h"}, {"ip": "127.0.0.3"}]}}}))
        .unwrap();
        assert_eq!(
            published(&svc, &["ip", "ipMode"]),
            [
                json!({"ip": "127.0.0.2", "ipMode": "VIP"}),
                json!({"ip": "127.0.0.3"})
            ]
        );
        assert!(published(&Service::default(), &["ip"]).is_empty());
    }

    #[test]
    fn ready_nodes_addresses_are_published() {
        let nodes = [
            node("127.0.0.3", true),
            node("127.0.0.2", true),
            node("127.0.0.4", false),
        ];
        assert_eq!(addresses(&nodes), ["127.0.0.2", "127.0.0.3"]);
    }
}
