//! Deleting an object, gracefully where Kubernetes would: finalizers (the object's and the
//! kind's), foreground and orphan propagation, a grace period (pods on a node).

use super::{DeleteOptions, ObjectRef, Registry, with_rv};
use crate::error::ApiResult;
use crate::kinds;
use crate::meta::{self, meta_mut};
use serde_json::{Value, json};
use shoal_api::{ResourceInfo, StatusError};
use shoal_store::{Compare, Txn};

impl Registry {
    /// Deletes an object; returns what is left of it and whether it is gone (`false`: it is
    /// being deleted and waits for finalizers or its grace period).
    pub async fn delete(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let r = ObjectRef::new(info, ns, name);
        let strategy = kinds::strategy(info);
        self.guaranteed_update(r, move |current| Box::pin(async move {
            let uid = meta::str_field(&current.value, "uid").to_owned();
            if let Some(want) = &opts.uid
                && *want != uid
            {
                return Err(StatusError::conflict(
                    info.plural,
                    info.group,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                )
                .into());
            }
            if let Some(want) = &opts.resource_version
                && *want != current.revision.0.to_string()
            {
                return Err(StatusError::conflict(info.plural, info.group, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                    current.revision.0
                ))
                .into());
            }
            strategy.check_delete(info, &current.value)?;
            if let Some(user) = &opts.user {
                crate::rbac::node::restrict(user, info, None, &current.value)?;
                super::read_only(info)?;
            }
            let attrs = crate::admission::Attributes {
                info,
                sub: None,
                operation: "DELETE",
                namespace: r.ns,
                name,
                dry_run: opts.dry_run,
                user: opts.user.as_deref(),
            };
            // Deletions answer with the object, not warnings: a warning here is dropped.
            self.admission
                .validate(
                    &self.cache,
                    &attrs,
                    None,
                    Some(&current.value),
                    &mut Vec::new(),
                )
                .await?;
            let finalizers = self.finalizers_for(&current.value, &uid, r.ns, opts).await?;
            let grace = strategy.delete_grace(&current.value, opts.grace_period);
            let graceful =
                !finalizers.is_empty() || grace > 0 || strategy.holds_deletion(&current.value);
            if graceful {
                if meta::is_deleting(&current.value)
                    && grace == 0
                    && meta::finalizers(&current.value) == finalizers
                {
                    return Ok(Some((current.value, false)));
                }
                let mut new = current.value.clone();
                let m = meta_mut(&mut new);
                m.remove("resourceVersion");
                if m.get("deletionTimestamp").is_none_or(Value::is_null) {
                    m.insert("deletionTimestamp".into(), json!(meta::now()));
                }
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                m.insert("finalizers".into(), json!(finalizers));
                if finalizers.is_empty() {
                    m.remove("finalizers");
                }
                strategy.begin_deletion(&mut new);
                if opts.dry_run {
                    return Ok(Some((new, false)));
                }
                let committed = self.commit(&r, &current, new, false).await?;
                return Ok(committed.map(|object| (object, false)));
            }
            if opts.dry_run {
                return Ok(Some((current.value, true)));
            }
            let key = r.key();
            let mut txn = Txn::new()
                .when(Compare::mod_revision(&key, current.revision))
                .delete(&key);
            for claim in strategy.claims(&current.value) {
                txn = txn.delete(claim);
            }
            let res = self.store.txn(txn).await?;
            Ok(res
                .succeeded
                .then(|| (with_rv(current.value, res.revision), true)))
        }))
        .await
    }

    /// The finalizers a delete leaves on `o`: its own, plus `foregroundDeletion` or `orphan`
    /// when the propagation policy asks for them and there are dependents to delete or
    /// orphan (without any, the garbage collector would finish at once).
    async fn finalizers_for(
        &self,
        o: &Value,
        uid: &str,
        ns: Option<&str>,
        opts: &DeleteOptions,
    ) -> ApiResult<Vec<String>> {
        let mut finalizers = meta::finalizers(o);
        let dependents = matches!(opts.propagation.as_deref(), Some("Foreground" | "Orphan")) && {
            self.cache.sync().await?;
            self.cache.has_dependents(uid, ns)
        };
        match opts.propagation.as_deref() {
            Some("Foreground" | "Orphan") if !dependents => {}
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into())
            }
            Some("Foreground" | "Orphan" | "Background") | None => {}
            Some(other) => {
                return Err(StatusError::invalid(
                    "DeleteOptions",
                    "",
                    "",
                    vec![shoal_api::Cause::not_supported(
                        "propagationPolicy",
                        other,
                        &["Foreground", "Background", "Orphan"],
                    )],
                )
                .into());
            }
        }
        Ok(finalizers)
    }
}
