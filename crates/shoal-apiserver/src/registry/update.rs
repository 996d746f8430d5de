//! Replacing (PUT), patching (JSON, merge and strategic merge patches) and server-side apply,
//! each a [`Registry::guaranteed_update`]: a write without a `resourceVersion` is re-applied to
//! the fresh object when another write lands in between; one with a `resourceVersion` that is
//! no longer current is a 409.

use super::{ObjectRef, Registry, WriteOptions, Written, type_meta::check_type_meta};
use crate::apply;
use crate::error::{ApiError, ApiResult};
use crate::meta::{self, meta_mut};
use crate::patch::{self, PatchType};
use serde_json::{Value, json};
use shoal_api::StatusError;

/// A body's name must be the URL's (or empty).
fn check_name(r: &ObjectRef<'_>, o: &Value) -> ApiResult<()> {
    let body_name = meta::name(o);
    if !body_name.is_empty() && body_name != r.name {
        return Err(StatusError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            r.name
        ))
        .into());
    }
    Ok(())
}

impl Registry {
    /// Replaces an object (PUT), on the main resource or the status subresource.
    pub async fn update(
        &self,
        r: ObjectRef<'_>,
        mut o: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        check_type_meta(r.info, &mut o)?;
        check_name(&r, &o)?;
        let mut warnings = Vec::new();
        crate::conversion::from_served(r.info, &mut o, opts.validation, &mut warnings)?;
        // `resourceVersion: "0"` asks for an unconditional update, as in Kubernetes.
        let wanted_rv = meta::resource_version(&o).filter(|rv| *rv != 0);
        let wanted_uid = meta::str_field(&o, "uid").to_owned();
        let (o, wanted_uid) = (&o, wanted_uid.as_str());
        self.guaranteed_update(r, move |current| Box::pin(async move {
            if wanted_rv.is_some_and(|rv| rv != current.revision.0) {
                return Err(r.stale());
            }
            let uid = meta::str_field(&current.value, "uid");
            if !wanted_uid.is_empty() && wanted_uid != uid {
                return Err(StatusError::conflict(
                    r.info.plural,
                    r.info.group,
                    r.name,
                    &format!(
                        "Precondition failed: UID in precondition: {wanted_uid}, UID in object meta: {uid}"
                    ),
                )
                .into());
            }
            // Lost a race: the next attempt's precondition answers 409 if the client named
            // the resourceVersion that just went stale.
            self.write_over(&r, &current, o.clone(), opts, true).await
        }))
        .await
        .map(|mut w| {
            w.warnings.extend(warnings);
            w
        })
    }

    /// Patches an object (PATCH) with a JSON, merge or strategic merge patch (server-side
    /// apply is [`Registry::apply`]).
    pub async fn patch(
        &self,
        r: ObjectRef<'_>,
        kind: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        self.guaranteed_update(r, move |current| {
            Box::pin(async move {
                let mut target = current.value.clone();
                // Patched as the client sees it: in the version it asked for.
                crate::conversion::serve_value(r.info, &mut target);
                match kind {
                    PatchType::Json => patch::json_patch(&mut target, body)?,
                    PatchType::Merge => patch::merge_patch(&mut target, body)?,
                    _ => patch::strategic_merge_patch(&mut target, body)?,
                }
                // The patched object carries the current resourceVersion unless the patch
                // set one: that is a precondition. A patch without one that loses a race is
                // applied again to the fresh object (`None`), as GuaranteedUpdate does.
                if meta::resource_version(&target).is_some_and(|rv| rv != current.revision.0) {
                    return Err(r.stale());
                }
                check_type_meta(r.info, &mut target)?;
                let mut warnings = Vec::new();
                crate::conversion::from_served(
                    r.info,
                    &mut target,
                    opts.validation,
                    &mut warnings,
                )?;
                let written = self.write_over(&r, &current, target, opts, true).await?;
                Ok(written.map(|mut w| {
                    w.warnings.extend(warnings);
                    w
                }))
            })
        })
        .await
    }

    /// Server-side apply of `applied` (the decoded configuration): creates the object if
    /// missing, else merges the manager's intent.
    pub async fn apply(
        &self,
        r: ObjectRef<'_>,
        mut applied: Value,
        force: bool,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        if opts.manager.is_empty() {
            return Err(StatusError::bad_request(
                "PATCH requests with the apply patch type require a fieldManager query parameter",
            )
            .into());
        }
        if !applied.is_object() {
            return Err(
                StatusError::bad_request("the applied configuration must be an object").into(),
            );
        }
        let av = applied
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kd = applied.get("kind").and_then(Value::as_str).unwrap_or("");
        if av.is_empty() || kd.is_empty() {
            return Err(StatusError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            )
            .into());
        }
        check_type_meta(r.info, &mut applied)?;
        check_name(&r, &applied)?;
        let api_version = r.info.api_version();
        // The applied configuration merged into `live` (lists merged as the kind's schema says).
        let converts = crate::conversion::converts(r.info);
        let merge = |live: &Value| {
            // Merged as the client sees it: in the version it applies.
            let mut served = live.clone();
            if converts {
                crate::conversion::serve_value(r.info, &mut served);
            }
            patch::with_lists(crate::crd::custom(r.info), || {
                apply::apply(
                    &served,
                    &applied,
                    &opts.manager,
                    force,
                    &api_version,
                    &meta::now(),
                )
            })
        };
        for n in 0..super::RETRIES {
            let Some(current) = self.read(&r.key()).await? else {
                let mut fresh = json!({"metadata": {"name": r.name}});
                let created = merge(&fresh)?;
                let mf = created.pointer("/metadata/managedFields").cloned();
                fresh = created;
                if let Some(m) = fresh.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                }
                if let Some(mf) = mf {
                    meta_mut(&mut fresh).insert("managedFields".into(), mf);
                }
                match self.create(r.info, r.ns, fresh, opts).await {
                    // Created by someone else meanwhile: apply over it.
                    Err(ApiError(e)) if e.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            };
            if meta::resource_version(&applied).is_some_and(|rv| rv != current.revision.0) {
                return Err(r.stale());
            }
            let mut merged = merge(&current.value)?;
            let mut warnings = Vec::new();
            crate::conversion::from_served(r.info, &mut merged, opts.validation, &mut warnings)?;
            if let Some(mut w) = self.write_over(&r, &current, merged, opts, false).await? {
                w.warnings.extend(warnings);
                return Ok(w);
            }
            super::lost_race(n).await;
        }
        Err(r.stale())
    }
}
