//! Write semantics of the API: create, update, patch, apply and delete, with everything a
//! Kubernetes user relies on (optimistic concurrency, uid, generation, status split,
//! finalizers, dry run, defaulting and validation), over the [`Store`].
//!
//! The pipeline is the same for every kind; what differs by kind is asked of its
//! [`crate::kinds::Strategy`]. Every read-modify-write goes through
//! [`Registry::guaranteed_update`] (Kubernetes' name for it): read the object, compute the new
//! one, commit it if nothing changed meanwhile, else try again.
//!
//! - [`create`](Registry::create): `create.rs`;
//! - [`update`](Registry::update), [`patch`](Registry::patch), [`apply`](Registry::apply):
//!   `update.rs`;
//! - [`delete`](Registry::delete): `delete.rs`;
//! - scale and binding: `subresources.rs`;
//! - type checks of bodies: `type_meta.rs`.

mod create;
mod delete;
mod subresources;
mod type_meta;
mod update;

pub use subresources::{ScaleChange, scale_of};
pub use type_meta::check_type_meta;
pub(crate) use type_meta::check_typed_as;

use crate::apply;
use crate::cache::{WatchCache, encode_stored};
use crate::error::ApiResult;
use crate::kinds;
use crate::meta::{self, meta_mut};
use crate::request::FieldValidation;
use serde_json::{Value, json};
use shoal_api::{ResourceInfo, StatusError, Subresource};
use shoal_store::{Compare, RangeRequest, Revision, Store, Txn};
use std::sync::Arc;

/// How many times a write that lost a race without a client precondition is tried. Kubernetes'
/// storage layer retries such a write until it lands; this bound only stops a livelock (with
/// the pauses below it is about 30 s of losing), and the jittered pause after each loss
/// (random, up to [`BACKOFF_STEP`] doubled per loss, at most [`BACKOFF_MAX`]) spreads
/// contending writers apart so they stop colliding.
const RETRIES: usize = 1000;
const BACKOFF_STEP: std::time::Duration = std::time::Duration::from_micros(200);
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// Options every write carries.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub manager: String,
    pub validation: FieldValidation,
    /// Who writes (`None`: the API server itself): the escalation check of RBAC objects and
    /// the `userInfo` admission policies see.
    pub user: Option<std::sync::Arc<crate::auth::UserInfo>>,
}

/// The outcome of a write.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

/// `DeleteOptions` as kubectl sends them.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
    /// Who deletes (`None`: the API server itself), for admission policies.
    pub user: Option<std::sync::Arc<crate::auth::UserInfo>>,
}

impl DeleteOptions {
    pub fn from_body(body: &Value) -> Self {
        DeleteOptions {
            propagation: body
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_owned),
            grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
            uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            resource_version: body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            dry_run: body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All")),
            user: None,
        }
    }
}

/// The object a write is about: its resource, namespace (for namespaced resources) and name,
/// and the subresource written, if any.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    pub info: &'static ResourceInfo,
    pub ns: Option<&'a str>,
    pub name: &'a str,
    pub sub: Option<Subresource>,
}

impl<'a> ObjectRef<'a> {
    pub fn new(info: &'static ResourceInfo, ns: Option<&'a str>, name: &'a str) -> Self {
        ObjectRef {
            info,
            ns: ns.filter(|_| info.namespaced),
            name,
            sub: None,
        }
    }

    pub fn subresource(self, sub: Option<Subresource>) -> Self {
        ObjectRef { sub, ..self }
    }

    fn key(&self) -> String {
        self.info.storage_key(self.ns, self.name)
    }

    fn stale(&self) -> crate::ApiError {
        StatusError::stale(self.info.plural, self.info.group, self.name).into()
    }
}

pub struct Registry {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    /// The Wasm admission policies in force.
    pub admission: crate::admission::Admission,
    /// The ranges Services take addresses and node ports from.
    pub network: crate::kinds::ServiceNetwork,
    /// The encryption layer under `store`, if values are encrypted at rest: an update that
    /// changes nothing still rewrites a value stored under an older key (rotation).
    pub encrypted: Option<Arc<crate::encryption::EncryptedStore>>,
    /// The PodSecurity plugin's defaults and exemptions.
    pub pod_security: crate::admission::podsecurity::Config,
}

/// Refuses writes by users to what the server keeps itself (the flow control objects that
/// describe its fixed priority levels).
pub(crate) fn read_only(info: &ResourceInfo) -> ApiResult<()> {
    if info.group == crate::flowcontrol::GROUP {
        return Err(StatusError::method_not_allowed(format!(
            "{} are read-only in Shoal: its priority levels are fixed (--max-requests-inflight and --max-mutating-requests-inflight size them)",
            shoal_api::status::qualified(info.plural, info.group)
        ))
        .into());
    }
    Ok(())
}

/// An object read from the store with its revision.
pub(crate) struct Current {
    pub(crate) value: Value,
    revision: Revision,
}

/// One attempt of a [`Registry::guaranteed_update`] (boxed: the futures borrow the request and
/// must be `Send`, which async closures cannot promise yet).
type Attempt<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<Option<T>>> + Send + 'a>>;

fn with_rv(mut v: Value, rev: Revision) -> Value {
    meta::set_resource_version(&mut v, rev.0.to_string());
    v
}

/// The pause after the `n`th lost race: random, up to `2^n` backoff steps (capped).
async fn lost_race(n: usize) {
    let nanos = (BACKOFF_STEP.as_nanos() as u64)
        .saturating_mul(1 << n.min(16))
        .min(BACKOFF_MAX.as_nanos() as u64);
    let pause = uuid::Uuid::new_v4().as_u64_pair().0 % nanos.max(1);
    tokio::time::sleep(std::time::Duration::from_nanos(pause)).await;
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, cache: Arc<WatchCache>) -> Self {
        Registry {
            store,
            cache,
            admission: crate::admission::Admission::default(),
            network: crate::kinds::ServiceNetwork::default(),
            encrypted: None,
            pod_security: Default::default(),
        }
    }

    async fn read(&self, key: &str) -> ApiResult<Option<Current>> {
        let r = self.store.range(RangeRequest::key(key)).await?;
        match r.kvs.into_iter().next() {
            None => Ok(None),
            Some(kv) => {
                let value: Value = serde_json::from_slice(&kv.value).map_err(|_| {
                    StatusError::internal(format!("stored object at {key} is not valid JSON"))
                })?;
                Ok(Some(Current {
                    value: with_rv(value, kv.mod_revision),
                    revision: kv.mod_revision,
                }))
            }
        }
    }

    async fn read_existing(&self, r: &ObjectRef<'_>) -> ApiResult<Current> {
        self.read(&r.key())
            .await?
            .ok_or_else(|| StatusError::not_found(r.info.plural, r.info.group, r.name).into())
    }

    /// Kubernetes' GuaranteedUpdate: reads the object and lets `attempt` write over it;
    /// `attempt` answers `None` when the object changed before its write could commit (it
    /// fails itself when the client named a `resourceVersion`), and is run again on a fresh
    /// read, up to [`RETRIES`] times.
    pub(crate) async fn guaranteed_update<'a, T>(
        &'a self,
        r: ObjectRef<'a>,
        mut attempt: impl FnMut(Current) -> Attempt<'a, T>,
    ) -> ApiResult<T> {
        for n in 0..RETRIES {
            let current = self.read_existing(&r).await?;
            if let Some(done) = attempt(current).await? {
                return Ok(done);
            }
            lost_race(n).await;
        }
        Err(r.stale())
    }

    /// Checks that the namespace exists and is not terminating. Read from the watch cache, as
    /// Kubernetes' NamespaceLifecycle admission reads its informer; a namespace created an
    /// instant ago and not yet in the cache is looked up in the store.
    async fn check_namespace(&self, ns: &str) -> ApiResult<()> {
        let info = shoal_api::resources::find("", "v1", "namespaces")
            .expect("namespaces are in the resource table");
        let key = info.storage_key(None, ns);
        let found = match self.cache.resource(info).get(&key) {
            Some(o) => Some(meta::is_deleting(o.value())),
            None => self.read(&key).await?.map(|c| meta::is_deleting(&c.value)),
        };
        match found {
            None => Err(StatusError::not_found("namespaces", "", ns).into()),
            Some(true) => Err(StatusError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))
            .into()),
            Some(false) => Ok(()),
        }
    }

    /// The admission chain for an object about to be written: built-in mutation (the
    /// kind's normalisation and defaults), Wasm mutating policies, validation and type
    /// checks, Wasm validating policies.
    async fn admit(
        &self,
        r: &ObjectRef<'_>,
        o: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<()> {
        let info = r.info;
        let strategy = kinds::strategy(info);
        if let (None, Some(user)) = (r.sub, &opts.user) {
            crate::rbac::check_write(&self.cache, info, user, o)?;
        }
        if let Some(user) = &opts.user {
            crate::rbac::node::restrict(user, info, r.sub, o)?;
            read_only(info)?;
        }
        if info.group == kinds::certificates::GROUP
            && let Some(user) = &opts.user
        {
            if r.sub.is_none() && old.is_none() {
                kinds::certificates::set_requester(o, user);
            }
            kinds::certificates::admit(&self.cache, r.sub, user, o, old)?;
        }
        if r.sub.is_none() && strategy.admits_from_fresh_cache() {
            self.cache.sync().await?;
        }
        if r.sub.is_none() && strategy.admit(&self.cache, info, o, old).is_err() {
            // What it read may not have reached the watch cache yet (a PriorityClass created an
            // instant ago): once more, after the cache has caught up with the store.
            self.cache.sync().await?;
            strategy.admit(&self.cache, info, o, old)?;
        }
        strategy.normalize(o);
        type_meta::report_unknown(strategy.prune(o), opts.validation, warnings)?;
        strategy.default(o);
        let name = meta::name(o).to_owned();
        let namespace = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let attrs = crate::admission::Attributes {
            info,
            sub: r.sub,
            operation: if old.is_some() { "UPDATE" } else { "CREATE" },
            namespace: namespace.as_deref(),
            name: &name,
            dry_run: opts.dry_run,
            user: opts.user.as_deref(),
        };
        self.admission
            .mutate(&self.cache, &attrs, o, old, warnings)
            .await?;
        let causes = kinds::validate(info, o, old);
        if !causes.is_empty() {
            return Err(StatusError::invalid(info.kind, info.group, &name, causes).into());
        }
        type_meta::check_typed(info, o, opts.validation, warnings)?;
        // Built-in validating admission: Pod Security, then ResourceQuota (last, as it
        // charges the object to its quotas).
        if r.sub.is_none() && old.is_none() {
            crate::admission::podsecurity::admit(
                &self.cache,
                &self.pod_security,
                info,
                o,
                opts.user.as_deref().map(|u| u.username.as_str()),
                warnings,
            )?;
            crate::admission::quota::admit(self, info, o, opts.dry_run).await?;
        }
        if r.sub.is_none() && info.kind == "Namespace" && info.group.is_empty() {
            let labels = |v: Option<&Value>| {
                v.and_then(|v| v.pointer("/metadata/labels"))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            let now = labels(Some(o));
            if now != labels(old) {
                warnings.extend(crate::admission::podsecurity::existing_violations(
                    &self.cache,
                    &self.pod_security,
                    meta::name(o),
                    &now,
                ));
            }
        }
        self.admission
            .validate(&self.cache, &attrs, Some(o), old, warnings)
            .await?;
        strategy.to_storage(o);
        Ok(())
    }

    /// Turns `new` (a full object for the main resource or a subresource) into what is stored,
    /// given the stored `old`.
    fn prepare_update(&self, r: &ObjectRef<'_>, old: &Value, mut new: Value) -> Value {
        let strategy = kinds::strategy(r.info);
        if r.sub == Some(Subresource::EphemeralContainers) {
            // Only the pod's ephemeral containers change through this path.
            let mut out = old.clone();
            match new.pointer("/spec/ephemeralContainers") {
                Some(ec) => out["spec"]["ephemeralContainers"] = ec.clone(),
                None => {
                    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.remove("ephemeralContainers");
                    }
                }
            }
            return out;
        }
        if matches!(r.sub, Some(Subresource::Status | Subresource::Approval)) {
            // A status write changes status only.
            let mut out = old.clone();
            if let Some(st) = new.get("status") {
                out["status"] = st.clone();
            }
            strategy.prepare_update(r.sub, old, &mut out);
            return out;
        }
        let old_meta = meta::meta(old).clone();
        let m = meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        if !m.contains_key("managedFields")
            && let Some(mf) = old_meta.get("managedFields")
        {
            m.insert("managedFields".into(), mf.clone());
        }
        if r.info.has(Subresource::Status) {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(root) = new.as_object_mut() {
                        root.remove("status");
                    }
                }
            }
        }
        if r.info.has_spec && old.get("spec") != new.get("spec") {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        strategy.prepare_update(r.sub, old, &mut new);
        new
    }

    /// Writes `new` over `current` if unchanged since; deletes instead when the last finalizer
    /// of a deleting object is gone. `None`: `current` changed in the meantime.
    pub(crate) async fn commit(
        &self,
        r: &ObjectRef<'_>,
        current: &Current,
        mut new: Value,
        dry_run: bool,
    ) -> ApiResult<Option<Value>> {
        let key = r.key();
        crate::canonical::canonicalize(&mut new);
        if meta::is_deleting(&new)
            && meta::finalizers(&new).is_empty()
            && !kinds::strategy(r.info).holds_deletion(&new)
        {
            if dry_run {
                return Ok(Some(new));
            }
            let res = self
                .store
                .txn(
                    Txn::new()
                        .when(Compare::mod_revision(&key, current.revision))
                        .delete(&key),
                )
                .await?;
            return Ok(res.succeeded.then(|| with_rv(new, res.revision)));
        }
        // A write that changes nothing is not a write: no new resourceVersion, no event.
        let mut unchanged = new.clone();
        meta::set_resource_version(&mut unchanged, current.revision.0.to_string());
        let stale = match &self.encrypted {
            Some(e) if unchanged == current.value => e.stale(&key).await?,
            _ => false,
        };
        if unchanged == current.value && !stale {
            return Ok(Some(current.value.clone()));
        }
        if dry_run {
            return Ok(Some(new));
        }
        let res = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::mod_revision(&key, current.revision))
                    .put(&key, encode_stored(&new)),
            )
            .await?;
        Ok(res.succeeded.then(|| with_rv(new, res.revision)))
    }

    /// Prepares, admits and commits `target` over `current`; `None` if `current` changed in
    /// the meantime. `record` notes the write in managedFields (apply does that itself).
    async fn write_over(
        &self,
        r: &ObjectRef<'_>,
        current: &Current,
        target: Value,
        opts: &WriteOptions,
        record: bool,
    ) -> ApiResult<Option<Written>> {
        let mut warnings = Vec::new();
        let mut new = self.prepare_update(r, &current.value, target);
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        self.admit(r, &mut new, Some(&current.value), opts, &mut warnings)
            .await?;
        if record && !opts.manager.is_empty() {
            crate::patch::with_lists(crate::crd::custom(r.info), || {
                apply::record_update(
                    Some(&current.value),
                    &mut new,
                    &opts.manager,
                    &r.info.api_version(),
                    &meta::now(),
                    r.sub.map(|s| s.name()).unwrap_or(""),
                )
            });
        }
        let committed = self.commit(r, current, new, opts.dry_run).await?;
        Ok(committed.map(|object| Written {
            object,
            created: false,
            warnings,
        }))
    }
}
