//! Creating an object: name (or generateName), namespace, uid, timestamps, generation, the
//! kind's preparation and initial status, admission, allocation, then a store write that
//! fails if the name is taken.

use super::{ObjectRef, Registry, WriteOptions, Written, type_meta::check_type_meta, with_rv};
use crate::apply;
use crate::cache::encode_stored;
use crate::error::ApiResult;
use crate::kinds;
use crate::meta::{self, meta_mut};
use serde_json::{Value, json};
use shoal_api::{ResourceInfo, StatusError};
use shoal_store::{Compare, Txn};

impl Registry {
    /// Creates `o` in `ns`.
    pub async fn create(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        mut o: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        check_type_meta(info, &mut o)?;
        let mut warnings = Vec::new();
        crate::conversion::from_served(info, &mut o, opts.validation, &mut warnings)?;
        let strategy = kinds::strategy(info);
        let m = meta_mut(&mut o);
        if info.namespaced {
            let url_ns = ns.unwrap_or("default");
            match m.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != url_ns => {
                    return Err(StatusError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    )
                    .into());
                }
                _ => {
                    m.insert("namespace".into(), json!(url_ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty() {
            match m.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let generated = format!("{g}{}", meta::random_suffix(5));
                    m.insert("name".into(), json!(generated));
                }
                _ => {
                    return Err(StatusError::invalid(
                        info.kind,
                        info.group,
                        "",
                        vec![
                            shoal_api::Cause::required("metadata.name")
                                .with_message("name or generateName is required"),
                        ],
                    )
                    .into());
                }
            }
        }
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        strategy.prepare_create(&mut o);
        let m = meta_mut(&mut o);
        let now = meta::now();
        m.insert("creationTimestamp".into(), json!(now));
        if info.has_spec {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if let Some(status) = strategy.initial_status(info, &o)
            && let Some(root) = o.as_object_mut()
        {
            root.insert("status".into(), status);
        }
        if info.namespaced {
            self.check_namespace(ns.unwrap_or("default")).await?;
        }
        let name = meta::name(&o).to_owned();
        let r = ObjectRef::new(info, ns, &name);
        self.admit(&r, &mut o, None, opts, &mut warnings).await?;
        if !opts.manager.is_empty() && o.pointer("/metadata/managedFields").is_none() {
            crate::patch::with_lists(crate::crd::custom(info), || {
                apply::record_update(None, &mut o, &opts.manager, &info.api_version(), &now, "")
            });
        }
        let key = r.key();
        let owner = json!({
            "namespace": ns,
            "name": name,
            "uid": meta::str_field(&o, "uid"),
            "resource": info.plural,
        })
        .to_string();
        let mut taken = std::collections::HashSet::new();
        let cache = self.cache.resource(info);
        // Each attempt claims what it allocates in the create's own transaction; a claim found
        // taken (another API server was quicker) is allocated again, at most a few times.
        for _ in 0..ALLOCATION_ATTEMPTS {
            let mut attempt = o.clone();
            let ctx = kinds::AllocContext {
                info,
                cache: &cache,
                network: &self.network,
                taken: &taken,
            };
            let claims = strategy.allocate(&ctx, &mut attempt)?;
            crate::canonical::canonicalize(&mut attempt);
            if opts.dry_run {
                if self.read(&key).await?.is_some() {
                    return Err(StatusError::already_exists(info.plural, info.group, &name).into());
                }
                return Ok(Written {
                    object: attempt,
                    created: true,
                    warnings,
                });
            }
            let mut txn = Txn::new().when(Compare::absent(&key));
            for c in &claims {
                txn = txn.when(Compare::absent(&c.key));
            }
            txn = txn.put(&key, encode_stored(&attempt));
            for c in &claims {
                txn = txn.put(&c.key, owner.clone().into_bytes());
            }
            let res = self.store.txn(txn.or_get(&key)).await?;
            if res.succeeded {
                return Ok(Written {
                    object: with_rv(attempt, res.revision),
                    created: true,
                    warnings,
                });
            }
            if res.current.iter().any(Option::is_some) || claims.is_empty() {
                return Err(StatusError::already_exists(info.plural, info.group, &name).into());
            }
            // Another server (or a write this server's cache has not seen yet) holds a claim:
            // learn every claim of the kind from the store, releasing those whose owner is gone.
            for c in &claims {
                if self.claim_is_live(&c.key).await? {
                    if c.requested {
                        return Err(StatusError::invalid(
                            info.kind,
                            info.group,
                            &name,
                            vec![shoal_api::Cause::invalid(
                                &c.field,
                                &c.value,
                                &c.clash_message(),
                            )],
                        )
                        .into());
                    }
                    taken.insert(c.key.clone());
                }
            }
            for prefix in strategy.claim_prefixes() {
                let held = self
                    .store
                    .range(shoal_store::RangeRequest::prefix(prefix))
                    .await?;
                taken.extend(held.kvs.into_iter().map(|kv| kv.key));
            }
        }
        Err(StatusError::internal(format!(
            "failed to allocate for {} {name}: the ranges changed under {ALLOCATION_ATTEMPTS} attempts",
            info.kind
        ))
        .into())
    }

    /// Whether the claim at `key` belongs to an object that still exists; a claim whose owner
    /// is gone is released on the way (a deletion that left it, or a create that failed after
    /// claiming).
    async fn claim_is_live(&self, key: &str) -> ApiResult<bool> {
        let r = self
            .store
            .range(shoal_store::RangeRequest::key(key))
            .await?;
        let Some(kv) = r.kvs.into_iter().next() else {
            return Ok(false);
        };
        let owner: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let field = |f: &str| owner.get(f).and_then(Value::as_str).unwrap_or("");
        let live = match shoal_api::resources::RESOURCES
            .iter()
            .find(|i| i.plural == field("resource") && i.group.is_empty())
        {
            Some(info) => {
                let ns = owner.get("namespace").and_then(Value::as_str);
                let r = ObjectRef::new(info, ns, field("name"));
                self.read(&r.key())
                    .await?
                    .is_some_and(|c| meta::str_field(&c.value, "uid") == field("uid"))
            }
            None => true,
        };
        if !live {
            self.store
                .txn(
                    Txn::new()
                        .when(Compare::mod_revision(key, kv.mod_revision))
                        .delete(key),
                )
                .await?;
        }
        Ok(live)
    }
}

/// How often a create allocates again when a claim it made was taken meanwhile.
const ALLOCATION_ATTEMPTS: usize = 8;
