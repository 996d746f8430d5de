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
        let strategy = kinds::strategy(info);
        let mut warnings = Vec::new();
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
        strategy.allocate(info, self.cache.resource(info), &mut o)?;
        if !opts.manager.is_empty() && o.pointer("/metadata/managedFields").is_none() {
            apply::record_update(None, &mut o, &opts.manager, &info.api_version(), &now, "");
        }
        let key = r.key();
        if opts.dry_run {
            if self.read(&key).await?.is_some() {
                return Err(StatusError::already_exists(info.plural, info.group, &name).into());
            }
            return Ok(Written {
                object: o,
                created: true,
                warnings,
            });
        }
        let res = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::absent(&key))
                    .put(&key, encode_stored(&o))
                    .or_get(&key),
            )
            .await?;
        if !res.succeeded {
            return Err(StatusError::already_exists(info.plural, info.group, &name).into());
        }
        Ok(Written {
            object: with_rv(o, res.revision),
            created: true,
            warnings,
        })
    }
}
