//! Subresources with write semantics of their own: `scale` (the autoscaling/v1 view of
//! `spec.replicas`) and `pods/binding` (assigning a pod to a node, once).

use super::{ObjectRef, Registry, WriteOptions};
use crate::error::ApiResult;
use crate::meta::{self, meta_mut};
use crate::patch::{self, PatchType};
use serde_json::{Value, json};
use shoal_api::{ResourceInfo, StatusError, Subresource};

/// How a Scale is written: replaced (PUT, the decoded body) or patched.
pub enum ScaleChange<'a> {
    Replace(Value),
    Patch(PatchType, &'a [u8]),
}

impl Registry {
    /// The autoscaling/v1 Scale of a scalable object.
    pub async fn get_scale(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        let current = self.read_existing(&ObjectRef::new(info, ns, name)).await?;
        Ok(scale_of(info, &current.value))
    }

    /// Sets replicas from a Scale written by PUT or PATCH.
    pub async fn update_scale(
        &self,
        r: ObjectRef<'_>,
        change: ScaleChange<'_>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let r = r.subresource(Some(Subresource::Scale));
        let change = &change;
        self.guaranteed_update(r, move |current| {
            Box::pin(async move {
                let mut scale = scale_of(r.info, &current.value);
                match change {
                    ScaleChange::Replace(v) => scale = v.clone(),
                    ScaleChange::Patch(PatchType::Json, body) => {
                        patch::json_patch(&mut scale, body)?
                    }
                    ScaleChange::Patch(PatchType::Merge, body) => {
                        patch::merge_patch(&mut scale, body)?
                    }
                    ScaleChange::Patch(_, body) => patch::strategic_merge_patch(&mut scale, body)?,
                }
                // A resourceVersion in the written Scale (or set by the patch) is a
                // precondition; the current one carried over from `scale_of` is not.
                if meta::resource_version(&scale).is_some_and(|rv| rv != current.revision.0) {
                    return Err(r.stale());
                }
                let replicas = match scale.pointer("/spec/replicas") {
                    Some(Value::Number(n)) if n.as_i64().is_some_and(|x| x >= 0) => {
                        n.as_i64().unwrap_or(0)
                    }
                    Some(v) => {
                        return Err(StatusError::invalid(
                            "Scale",
                            "autoscaling",
                            r.name,
                            vec![shoal_api::Cause::invalid(
                                "spec.replicas",
                                v,
                                "must be greater than or equal to 0",
                            )],
                        )
                        .into());
                    }
                    None => 0,
                };
                let mut new = current.value.clone();
                set_spec_replicas(r.info, &mut new, replicas);
                let written = self.write_over(&r, &current, new, opts, true).await?;
                Ok(written.map(|w| scale_of(r.info, &w.object)))
            })
        })
        .await
    }

    /// `pods/binding`: assigns a pod to a node, once.
    pub async fn bind(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        binding: &Value,
    ) -> ApiResult<()> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return Err(StatusError::invalid(
                "Binding",
                "",
                name,
                vec![shoal_api::Cause::required("target.name")],
            )
            .into());
        }
        let r = ObjectRef::new(info, ns, name);
        let node = node.to_owned();
        let node = node.as_str();
        self.guaranteed_update(r, move |current| Box::pin(async move {
            if meta::is_deleting(&current.value) {
                return Err(StatusError::conflict(
                    info.plural,
                    info.group,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                )
                .into());
            }
            let existing = current
                .value
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !existing.is_empty() {
                return Err(StatusError::conflict(
                    info.plural,
                    info.group,
                    name,
                    &format!("pod {name} is already assigned to node \"{existing}\""),
                )
                .into());
            }
            let mut new = current.value.clone();
            new["spec"]["nodeName"] = json!(node);
            let mut conds: Vec<Value> = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.get("type") != Some(&json!("PodScheduled")))
                .collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now()}));
            new["status"]["conditions"] = json!(conds);
            meta_mut(&mut new).remove("resourceVersion");
            Ok(self.commit(&r, &current, new, false).await?.map(drop))
        }))
        .await
    }

    /// `pods/eviction`: deletes the pod unless that would take its PodDisruptionBudget below
    /// what it allows (429, as Kubernetes answers, and `kubectl drain` retries). A healthy
    /// pod's eviction takes one disruption from the budget and records the pod among its
    /// `disruptedPods` before the pod is deleted.
    pub async fn evict(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        opts: &super::DeleteOptions,
    ) -> ApiResult<()> {
        let pod = self
            .read_existing(&ObjectRef::new(info, Some(ns), name))
            .await?;
        if let Some(user) = &opts.user {
            crate::rbac::node::restrict(user, info, Some(Subresource::Eviction), &pod.value)?;
        }
        let ready = pod
            .value
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        let phase = pod
            .value
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let budgets = self.budgets_of(ns, &pod.value).await?;
        // Finished, unready or already deleting pods are not protected by a budget.
        let protected =
            ready && !matches!(phase, "Succeeded" | "Failed") && !meta::is_deleting(&pod.value);
        match budgets.as_slice() {
            [] => {}
            [_] if !protected => {}
            [pdb] => self.take_disruption(ns, pdb, name).await?,
            _ => {
                return Err(StatusError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                )
                .into());
            }
        }
        self.delete(info, Some(ns), name, opts).await.map(drop)
    }

    /// The names of the budgets in `ns` whose selector selects `pod` (an absent selector
    /// selects nothing, an empty one everything, as in policy/v1).
    async fn budgets_of(&self, ns: &str, pod: &Value) -> ApiResult<Vec<String>> {
        let pdbs = shoal_api::resources::find("policy", "v1", "poddisruptionbudgets")
            .expect("poddisruptionbudgets are served");
        self.cache.sync().await?;
        Ok(self
            .cache
            .resource(pdbs)
            .list(&pdbs.namespace_prefix(Some(ns)), None)
            .iter()
            .filter(|b| {
                b.value()
                    .pointer("/spec/selector")
                    .and_then(|s| shoal_api::selector::LabelSelector::from_object(s).ok())
                    .is_some_and(|s| s.matches_object(pod))
            })
            .map(|b| meta::name(b.value()).to_owned())
            .collect())
    }

    /// Takes one allowed disruption from budget `pdb` for pod `pod`, or answers 429.
    async fn take_disruption(&self, ns: &str, pdb: &str, pod: &str) -> ApiResult<()> {
        let pdbs = shoal_api::resources::find("policy", "v1", "poddisruptionbudgets")
            .expect("poddisruptionbudgets are served");
        let r = ObjectRef::new(pdbs, Some(ns), pdb).subresource(Some(Subresource::Status));
        let opts = WriteOptions {
            dry_run: false,
            manager: String::new(),
            validation: crate::request::FieldValidation::Ignore,
            user: None,
        };
        let opts = &opts;
        self.guaranteed_update(r, move |current| {
            Box::pin(async move {
                let status = current.value.get("status").cloned().unwrap_or(json!({}));
                let int = |k: &str| status.get(k).and_then(Value::as_i64).unwrap_or(0);
                let observed = int("observedGeneration");
                let generation = current
                    .value
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let refuse = |why: String| {
                    let mut e = StatusError::with_code(
                        429,
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    );
                    e.details = Some(Box::new(shoal_api::Details {
                        causes: vec![shoal_api::Cause {
                            reason: "DisruptionBudget".into(),
                            message: why,
                            field: String::new(),
                        }],
                        ..Default::default()
                    }));
                    e
                };
                if observed < generation {
                    return Err(refuse(format!(
                        "The disruption budget {pdb} is still being processed by the server."
                    ))
                    .into());
                }
                if int("disruptionsAllowed") <= 0 {
                    return Err(refuse(format!(
                        "The disruption budget {pdb} needs {} healthy pods and has {} currently",
                        int("desiredHealthy"),
                        int("currentHealthy")
                    ))
                    .into());
                }
                let mut new = current.value.clone();
                new["status"]["disruptionsAllowed"] = json!(int("disruptionsAllowed") - 1);
                new["status"]["disruptedPods"][pod] = json!(meta::now());
                Ok(self
                    .write_over(&r, &current, new, opts, false)
                    .await?
                    .map(drop))
            })
        })
        .await
    }
}

/// The Scale view of an object with `spec.replicas`.
/// Sets the replicas a Scale asked for where the kind keeps them (a custom resource's
/// `specReplicasPath`).
fn set_spec_replicas(info: &ResourceInfo, o: &mut Value, replicas: i64) {
    let paths = crate::crd::custom(info).and_then(|c| c.scale.as_ref());
    let fields = paths
        .and_then(|p| p.spec_replicas.fields())
        .unwrap_or_else(|| vec!["spec", "replicas"]);
    let mut at = o;
    for f in &fields[..fields.len().saturating_sub(1)] {
        if !at.get(*f).is_some_and(Value::is_object) {
            at[*f] = json!({});
        }
        at = &mut at[*f];
    }
    if let Some(last) = fields.last() {
        at[*last] = json!(replicas);
    }
}

pub fn scale_of(info: &ResourceInfo, o: &Value) -> Value {
    let m = meta::meta(o);
    let custom = crate::crd::custom(info).and_then(|c| c.scale.as_ref());
    let (spec_replicas, status_replicas, selector) = match custom {
        Some(p) => (
            p.spec_replicas.select(o).first().map(|v| (*v).clone()),
            p.status_replicas.select(o).first().map(|v| (*v).clone()),
            p.label_selector
                .as_ref()
                .and_then(|l| {
                    l.select(o)
                        .first()
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default(),
        ),
        None => (
            o.pointer("/spec/replicas").cloned(),
            o.pointer("/status/replicas").cloned(),
            if info.kind == "ReplicationController" {
                // A plain label map.
                shoal_api::selector::map_to_string(o.pointer("/spec/selector"))
            } else {
                o.pointer("/spec/selector")
                    .and_then(|s| shoal_api::selector::LabelSelector::from_object(s).ok())
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            },
        ),
    };
    // A custom resource without replicas yet scales from 0, a built-in kind from its default.
    let default_replicas = if custom.is_some() { 0 } else { 1 };
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": spec_replicas.unwrap_or(json!(default_replicas))},
        "status": {
            "replicas": status_replicas.unwrap_or(json!(0)),
            "selector": selector,
        },
    });
    // `selector` is `omitempty` in autoscaling/v1's ScaleStatus.
    if selector.is_empty()
        && let Some(st) = scale["status"].as_object_mut()
    {
        st.remove("selector");
    }
    crate::canonical::canonicalize(&mut scale);
    scale
}
