//! DaemonSet: one pod on each eligible node (the template's node selector and required node
//! affinity match, its taints are tolerated). Pods are pinned to their node with a
//! `metadata.name` node-affinity term and placed by the scheduler, as Kubernetes does, and
//! carry the daemon tolerations. RollingUpdate replaces pods of an older template at most
//! `maxUnavailable` at a time; OnDelete waits for pods to be deleted by hand.

use crate::runner::Ctx;
use crate::{
    Error, PodName, claim, controller_ref, delete_quietly, pod_available, pod_from_template,
    pod_ready, scaled_value, selector_string,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use shoal_api::pod::PodExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The label holding the hash of the template a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Runs the DaemonSet controller (forever).
pub async fn run(client: kube::Client) {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let controller = controller
        .owns(pods, watcher::Config::default())
        // A node appearing, going or changing labels or taints concerns every DaemonSet.
        .watches(nodes, watcher::Config::default(), move |_node| {
            store
                .state()
                .iter()
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        });
    crate::runner::run("daemonset", client, controller, reconcile).await;
}

/// A short, stable hash of a template (FNV-1a in the safe alphabet).
pub fn revision_hash(template: &PodTemplateSpec) -> String {
    crate::deployment::template_hash(template, 0)
}

/// The tolerations Kubernetes adds to every daemon pod.
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The template as a daemon pod: with the daemon tolerations added.
fn daemon_template(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    let spec = t.spec.get_or_insert_with(Default::default);
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for d in daemon_tolerations() {
        if !tols.iter().any(|t| t.key == d.key && t.effect == d.effect) {
            tols.push(d);
        }
    }
    t
}

/// Whether a daemon pod from `template` belongs on `node`.
pub fn eligible(template: &PodTemplateSpec, node: &Node) -> bool {
    let pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        status: None,
    };
    node.metadata.deletion_timestamp.is_none()
        && pod.fits_node_affinity(node)
        && pod.untolerated_taint(node).is_none()
}

/// Pins a pod to `node` with a required `metadata.name` node-affinity term (replacing any
/// earlier pin), so the scheduler places it there.
fn pin(pod: &mut Pod, node: &str) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let field = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.into()]),
    };
    let sel = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm::default()],
        });
    if sel.node_selector_terms.is_empty() {
        sel.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut sel.node_selector_terms {
        term.match_fields = Some(vec![field.clone()]);
    }
}

/// The node a daemon pod is for: where it is bound, or where it is pinned.
fn pod_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_owned());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
    let name = ds.metadata.name.as_deref().unwrap_or("");
    let spec = ds
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("daemonset {name} has no spec")))?;
    let selector = selector_string(&spec.selector)?;
    if selector.is_empty() {
        return Err(Error::Invalid(format!(
            "daemonset {name} selects every pod"
        )));
    }
    let template = daemon_template(&spec.template);
    let hash = revision_hash(&spec.template);
    let generation = ds.metadata.generation.unwrap_or(1).to_string();

    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let wanted: BTreeMap<String, ()> = nodes
        .iter()
        .filter(|n| eligible(&template, n))
        .filter_map(|n| Some((n.metadata.name.clone()?, ())))
        .collect();

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let owner = controller_ref("apps/v1", "DaemonSet", &ds.metadata);
    let candidates = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let owned = claim(&pods, &owner, candidates).await;
    crate::history::record(
        &ctx.client,
        &crate::history::Owner {
            kind: "DaemonSet",
            meta: &ds.metadata,
            selector: &selector,
            template: &spec.template,
            hash: &hash,
            limit: spec.revision_history_limit.unwrap_or(10),
        },
        &crate::history::hashes_in_use(&owned),
    )
    .await?;

    // Pods by node; failed pods are deleted to be replaced, pods on nodes that should not
    // run them are deleted, and a node with several keeps its oldest.
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut doomed: Vec<&Pod> = Vec::new();
    let mut misscheduled = 0;
    // A node whose old pod is still stopping gets its new one once that one is gone.
    let stopping: HashSet<String> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter_map(pod_node)
        .collect();
    for p in owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        match pod_node(p) {
            _ if phase == Some("Failed") => doomed.push(p),
            Some(n) if wanted.contains_key(&n) => by_node.entry(n).or_default().push(p),
            _ => {
                misscheduled += 1;
                doomed.push(p);
            }
        }
    }
    for list in by_node.values_mut() {
        list.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        doomed.extend(list.drain(1..));
    }

    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let available = |p: &Pod| pod_available(p, min_ready, now).is_ok();
    let updated = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL))
            == Some(&hash)
    };

    // Rolling update: old pods go while no more than maxUnavailable nodes lack an
    // available pod.
    let strategy = spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete") {
        let desired = wanted.len() as i32;
        let max_unavailable = scaled_value(
            strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.as_ref()),
            desired,
            false,
            1,
        )?
        .max(1);
        let unavailable = wanted
            .keys()
            .filter(|n| {
                by_node
                    .get(*n)
                    .and_then(|l| l.first())
                    .is_none_or(|p| !available(p))
            })
            .count() as i32;
        let mut budget = max_unavailable - unavailable;
        // Old pods that are not available anyway go first, and do not use the budget.
        for list in by_node.values() {
            if let Some(p) = list.first()
                && !updated(p)
                && !available(p)
            {
                doomed.push(p);
            }
        }
        for list in by_node.values() {
            if budget <= 0 {
                break;
            }
            if let Some(p) = list.first()
                && !updated(p)
                && available(p)
            {
                doomed.push(p);
                budget -= 1;
            }
        }
    }
    let doomed_names: HashSet<&str> = doomed
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    for n in &doomed_names {
        delete_quietly(&pods, n).await?;
        crate::record(
            &ctx.client,
            "daemonset-controller",
            ds.as_ref(),
            "Normal",
            "SuccessfulDelete",
            format!("Deleted pod: {n}"),
        );
    }

    // Nodes without a pod get one.
    let prefix = format!("{name}-");
    for node in wanted.keys() {
        if by_node.get(node).is_some_and(|l| !l.is_empty()) || stopping.contains(node) {
            continue;
        }
        let mut pod = pod_from_template(
            &template,
            ns,
            PodName::Generate(&prefix),
            &owner,
            &[
                (REVISION_LABEL, &hash),
                ("pod-template-generation", &generation),
            ],
        );
        pin(&mut pod, node);
        crate::create_pod(&ctx.client, "daemonset-controller", ds.as_ref(), &pod).await?;
    }

    let current: Vec<&Pod> = by_node
        .values()
        .filter_map(|l| l.first().copied())
        .filter(|p| !doomed_names.contains(p.metadata.name.as_deref().unwrap_or("")))
        .collect();
    let scheduled = current
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        })
        .count();
    let number_available = current.iter().filter(|p| available(p)).count();
    let status = json!({"status": {
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": wanted.len(),
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": misscheduled,
        "numberReady": current.iter().filter(|p| pod_ready(p)).count(),
        "updatedNumberScheduled": current.iter().filter(|p| updated(p)).count(),
        "numberAvailable": number_available,
        "numberUnavailable": wanted.len().saturating_sub(number_available),
    }});
    Api::<DaemonSet>::namespaced(ctx.client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(Action::requeue(Duration::from_secs(if min_ready > 0 {
        1
    } else {
        300
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                                      "spec": {"taints": taints}}))
        .unwrap()
    }

    #[test]
    fn daemon_pods_go_where_the_selector_matches_and_taints_are_tolerated() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "d"}},
            "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        let t = daemon_template(&t);
        assert!(eligible(&t, &node("a", json!({"disk": "ssd"}), json!([]))));
        assert!(!eligible(&t, &node("b", json!({}), json!([]))));
        // Daemon pods tolerate unschedulable and not-ready nodes, but not arbitrary taints.
        let cordoned = json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]);
        assert!(eligible(&t, &node("c", json!({"disk": "ssd"}), cordoned)));
        let gpu = json!([{"key": "gpu", "value": "x", "effect": "NoSchedule"}]);
        assert!(!eligible(&t, &node("d", json!({"disk": "ssd"}), gpu)));
    }

    #[test]
    fn a_pinned_pod_names_its_node() {
        let mut p = Pod::default();
        pin(&mut p, "node-7");
        assert_eq!(pod_node(&p).as_deref(), Some("node-7"));
        pin(&mut p, "node-8");
        assert_eq!(pod_node(&p).as_deref(), Some("node-8"));
    }
}
