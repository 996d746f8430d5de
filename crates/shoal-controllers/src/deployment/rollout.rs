//! The rollout's plan: how big each ReplicaSet should be now, for a rolling update, a
//! Recreate, or a paused Deployment.

use super::{Ctx, Want, rs_name, spec_replicas, status_of};
use crate::{Error, pod_active};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use shoal_api::pod::PodExt;
use std::collections::BTreeMap;

/// What the rollout wants: new ReplicaSet size and old ones' sizes (by name).
pub(super) struct Plan {
    pub(super) sizes: BTreeMap<String, i32>,
}

impl Plan {
    pub(super) fn get(&self, rs: &ReplicaSet) -> i32 {
        self.sizes.get(rs_name(rs)).copied().unwrap_or(0)
    }
    pub(super) fn set(&mut self, rs: &ReplicaSet, n: i32) {
        self.sizes.insert(rs_name(rs).to_owned(), n);
    }
}

/// One RollingUpdate step (Kubernetes' reconcileNewReplicaSet + reconcileOldReplicaSets):
/// grow the new ReplicaSet within `replicas + max_surge`, shrink the old ones while at least
/// `replicas - max_unavailable` pods stay available, unhealthy old pods first.
pub(super) fn rolling_step(
    plan: &mut Plan,
    new: &ReplicaSet,
    old: &[&ReplicaSet],
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
) {
    let total = |plan: &Plan| plan.get(new) + old.iter().map(|r| plan.get(r)).sum::<i32>();
    let new_size = plan.get(new);
    if new_size > replicas {
        plan.set(new, replicas);
    } else if new_size < replicas {
        let room = replicas + max_surge - total(plan);
        if room > 0 {
            plan.set(new, new_size + room.min(replicas - new_size));
        }
    }
    if old.iter().all(|r| plan.get(r) == 0) {
        return;
    }
    let min_available = replicas - max_unavailable;
    let new_unavailable = (plan.get(new) - status_of(new).2).max(0);
    let mut budget = total(plan) - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    // Unhealthy old pods first: they do not count as available anyway.
    for r in old {
        if budget == 0 {
            break;
        }
        let unhealthy = (plan.get(r) - status_of(r).2).max(0);
        let down = unhealthy.min(budget);
        if down > 0 {
            plan.set(r, plan.get(r) - down);
            budget -= down;
        }
    }
    // Then available ones, as long as enough stay available.
    let available: i32 = status_of(new).2
        + old
            .iter()
            .map(|r| status_of(r).2.min(plan.get(r)))
            .sum::<i32>();
    let mut down_total = available - min_available;
    for r in old {
        if down_total <= 0 {
            break;
        }
        let down = plan.get(r).min(down_total);
        plan.set(r, plan.get(r) - down);
        down_total -= down;
    }
}

/// The plan for `old` and `new` ReplicaSets under `want`'s strategy.
pub(super) async fn plan(
    ctx: &Ctx,
    want: &Want<'_>,
    old: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Result<Plan, Error> {
    let (replicas, paused) = (want.replicas, want.paused);
    let mut plan = Plan {
        sizes: old
            .iter()
            .copied()
            .chain(new_rs)
            .map(|r| (rs_name(r).to_owned(), spec_replicas(r)))
            .collect(),
    };
    match new_rs {
        // Paused, or a template without a ReplicaSet yet: only scale. With one active
        // ReplicaSet, it gets the new size; the rollout resumes later.
        _ if paused => {
            let active: Vec<&ReplicaSet> = old
                .iter()
                .copied()
                .chain(new_rs)
                .filter(|r| spec_replicas(r) > 0)
                .collect();
            if let [only] = active.as_slice() {
                plan.set(only, replicas);
            } else if active.is_empty()
                && let Some(newest) = new_rs.or(old.last().copied())
            {
                plan.set(newest, replicas);
            }
        }
        Some(new) if want.recreate => {
            for r in old {
                plan.set(r, 0);
            }
            let old_running = if old
                .iter()
                .any(|r| spec_replicas(r) > 0 || status_of(r).0 > 0)
            {
                true
            } else {
                // Old pods may still be stopping: Recreate waits until none is left.
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), want.ns);
                let old_uids: Vec<&str> = old
                    .iter()
                    .filter_map(|r| r.metadata.uid.as_deref())
                    .collect();
                pods.list(&ListParams::default().labels(&want.selector))
                    .await?
                    .items
                    .iter()
                    .any(|p| {
                        crate::controller_uid(&p.metadata).is_some_and(|u| old_uids.contains(&u))
                            && !p.is_terminal()
                            && (pod_active(p) || p.metadata.deletion_timestamp.is_some())
                    })
            };
            if !old_running {
                plan.set(new, replicas);
            }
        }
        Some(new) => rolling_step(
            &mut plan,
            new,
            old,
            replicas,
            want.max_surge,
            want.max_unavailable,
        ),
        None => {}
    }

    Ok(plan)
}
