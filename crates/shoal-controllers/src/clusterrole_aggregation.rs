//! ClusterRole aggregation, as Kubernetes' `clusterrole-aggregation` controller does it: a
//! ClusterRole with an `aggregationRule` gets the rules of every other ClusterRole its
//! selectors match (in name order, each rule once), so labelling a new role
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"` extends `view`, `edit` and `admin`.

use crate::Error;
use crate::runner::Ctx;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::json;
use shoal_api::selector::LabelSelectorExt;
use std::sync::Arc;

/// Runs the aggregation controller (forever).
pub async fn run(client: kube::Client) {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let controller = Controller::new(roles, watcher::Config::default());
    let store = controller.store();
    crate::runner::run(
        "clusterrole-aggregation",
        client,
        controller,
        move |role: Arc<ClusterRole>, ctx: Arc<Ctx>| {
            let store = store.clone();
            async move { reconcile(role, ctx, store).await }
        },
    )
    .await;
}

/// The rules `role` aggregates from `all`.
pub fn aggregated_rules(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref()?;
    let mut sources: Vec<&ClusterRole> = all
        .iter()
        .map(Arc::as_ref)
        .filter(|r| r.metadata.name != role.metadata.name)
        .filter(|r| {
            selectors.iter().any(|s| {
                let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|e| e.is_empty());
                !empty && s.selects(r.metadata.labels.as_ref())
            })
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out: Vec<PolicyRule> = Vec::new();
    for rule in sources.iter().flat_map(|r| r.rules.iter().flatten()) {
        if !out.contains(rule) {
            out.push(rule.clone());
        }
    }
    Some(out)
}

/// Any role changing may change what an aggregated role should hold: every aggregated role is
/// brought up to date from the store, which already holds the change (an aggregated role
/// updated here changes in turn, so `view` → `edit` → `admin` settle one after the other).
async fn reconcile(
    _changed: Arc<ClusterRole>,
    ctx: Arc<Ctx>,
    store: Store<ClusterRole>,
) -> Result<Action, Error> {
    let all = store.state();
    for role in all.iter().filter(|r| r.aggregation_rule.is_some()) {
        let Some(rules) = aggregated_rules(role, &all) else {
            continue;
        };
        if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
            continue;
        }
        let name = role.metadata.name.clone().unwrap_or_default();
        tracing::info!(role = %name, rules = rules.len(), "aggregating ClusterRole rules");
        Api::<ClusterRole>::all(ctx.client.clone())
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"rules": rules})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn role(name: &str, label: Option<&str>, verbs: &[&str]) -> Arc<ClusterRole> {
        Arc::new(ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| [(l.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            rules: Some(vec![PolicyRule {
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["pods".into()]),
                ..Default::default()
            }]),
            ..Default::default()
        })
    }

    #[test]
    fn aggregated_roles_hold_the_rules_of_the_roles_they_select() {
        let mut view = (*role("view", None, &[])).clone();
        view.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some([("agg".to_owned(), "true".to_owned())].into()),
                ..Default::default()
            }]),
        });
        let all = vec![
            role("b", Some("agg"), &["list"]),
            role("a", Some("agg"), &["get"]),
            role("dup", Some("agg"), &["get"]),
            role("other", None, &["delete"]),
        ];
        let rules = aggregated_rules(&view, &all).unwrap();
        let verbs: Vec<&str> = rules.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, ["get", "list"]);
        assert!(aggregated_rules(&all[0], &all).is_none());
    }
}
