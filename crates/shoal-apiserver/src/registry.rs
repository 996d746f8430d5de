//! Write semantics of the API: create, update, patch, apply and delete, with everything a
//! Kubernetes user relies on (optimistic concurrency, uid, generation, status split,
//! finalizers, dry run, defaulting and validation), over the [`Store`].

use crate::apply;
use crate::cache::{WatchCache, encode_stored};
use crate::defaults;
use crate::error::{ApiError, ApiResult};
use crate::meta::{self, meta_mut};
use crate::patch::{self, PatchType};
use crate::request::FieldValidation;
use crate::typed;
use crate::validate;
use serde_json::{Value, json};
use shoal_api::{ResourceInfo, StatusError, Subresource};
use shoal_store::{Compare, RangeRequest, Revision, Store, Txn};
use std::sync::Arc;

/// How many times a write that lost a race without a client precondition is retried.
const RETRIES: usize = 8;

/// Options every write carries.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub manager: String,
    pub validation: FieldValidation,
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
        }
    }
}

pub struct Registry {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    /// The Wasm admission policies in force.
    pub admission: crate::admission::Admission,
}

/// An object read from the store with its revision.
struct Current {
    value: Value,
    revision: Revision,
}

fn with_rv(mut v: Value, rev: Revision) -> Value {
    meta_mut(&mut v).insert("resourceVersion".into(), json!(rev.0.to_string()));
    v
}

fn kind_error(info: &ResourceInfo, msg: &str) -> ApiError {
    StatusError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {msg}",
        info.kind, info.version, info.kind
    ))
    .into()
}

/// Checks types and unknown fields through k8s-openapi.
fn check_typed(
    info: &ResourceInfo,
    o: &Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    let Some(rt) = typed::round_trip_kind(info.group, info.kind, o) else {
        return Ok(());
    };
    let typed = rt.map_err(|e| kind_error(info, &e))?;
    if validation == FieldValidation::Ignore {
        return Ok(());
    }
    let unknown: Vec<String> = typed::unknown_fields(o, &typed)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    match validation {
        FieldValidation::Strict => Err(StatusError::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))
        .into()),
        _ => {
            warnings.extend(unknown);
            Ok(())
        }
    }
}

/// Checks `apiVersion`/`kind` of a body against the resource it was sent to.
pub fn check_type_meta(info: &ResourceInfo, o: &mut Value) -> ApiResult<()> {
    let want_av = info.api_version();
    let av = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = o
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !av.is_empty() && av != want_av {
        return Err(StatusError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        ))
        .into());
    }
    if !kind.is_empty() && kind != info.kind {
        return Err(StatusError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            info.kind
        ))
        .into());
    }
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(want_av));
        m.insert("kind".into(), json!(info.kind));
    }
    Ok(())
}

fn qos_class(spec: &Value) -> &'static str {
    let cs = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        any |= req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty());
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The status a new object starts with.
fn initial_status(info: &ResourceInfo, o: &mut Value) {
    let Some(root) = o.as_object_mut() else {
        return;
    };
    match (info.group, info.kind) {
        ("", "Node") => {}
        ("", "Pod") => {
            let qos = qos_class(root.get("spec").unwrap_or(&Value::Null));
            root.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        ("", "Namespace") => {
            root.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "Service") => {
            root.insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("policy.shoal.dev", _) => {
            root.insert("status".into(), json!({"phase": "Pending"}));
        }
        _ if info.has(Subresource::Status) => {
            root.insert("status".into(), json!({}));
        }
        _ => {}
    }
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, cache: Arc<WatchCache>) -> Self {
        Registry {
            store,
            cache,
            admission: crate::admission::Admission::default(),
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

    async fn read_existing(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Current> {
        self.read(&info.storage_key(ns, name))
            .await?
            .ok_or_else(|| StatusError::not_found(info.plural, info.group, name).into())
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

    /// The admission chain for an object about to be written: built-in mutation
    /// (defaulting), Wasm mutating policies, validation and type checks, Wasm validating
    /// policies.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        info: &ResourceInfo,
        sub: Option<Subresource>,
        o: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<()> {
        if info.group.is_empty() && info.kind == "Secret" {
            fold_string_data(o);
        }
        defaults::apply(info.group, info.kind, o);
        let name = meta::name(o).to_owned();
        let namespace = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let attrs = crate::admission::Attributes {
            info,
            sub,
            operation: if old.is_some() { "UPDATE" } else { "CREATE" },
            namespace: namespace.as_deref(),
            name: &name,
            dry_run: opts.dry_run,
        };
        self.admission
            .mutate(&self.cache, &attrs, o, old, warnings)
            .await?;
        let causes = validate::validate(info, o, old);
        if !causes.is_empty() {
            return Err(StatusError::invalid(info.kind, info.group, &name, causes).into());
        }
        check_typed(info, o, opts.validation, warnings)?;
        self.admission
            .validate(&self.cache, &attrs, Some(o), old, warnings)
            .await
    }

    /// Allocates a ClusterIP and node ports for a new Service.
    fn allocate_service(&self, info: &ResourceInfo, o: &mut Value) -> ApiResult<()> {
        let ty = o
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned();
        let cache = self.cache.resource(info);
        let existing = cache.list(&info.storage_prefix(), None);
        let used_ips: std::collections::HashSet<String> = existing
            .iter()
            .filter_map(|s| {
                s.value()
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let used_ports: std::collections::HashSet<i64> = existing
            .iter()
            .flat_map(|s| {
                s.value()
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        if ty != "ExternalName"
            && spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            // 10.96.0.0/16, skipping .0.0 and .0.1 (the `kubernetes` service's address).
            let seed = uuid::Uuid::new_v4().as_u128() as u32;
            let ip = (0..65534u32)
                .map(|i| (seed.wrapping_add(i) % 65534) + 2)
                .map(|n| format!("10.96.{}.{}", n >> 8, n & 0xff))
                .find(|ip| !used_ips.contains(ip))
                .ok_or_else(|| {
                    StatusError::internal("failed to allocate a serviceIP: range is full")
                })?;
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
            && let Some(Value::Array(ports)) = spec.get_mut("ports")
        {
            let mut next = 30000 + (uuid::Uuid::new_v4().as_u128() % 2768) as i64;
            for p in ports {
                if p.get("nodePort").is_none_or(Value::is_null) {
                    let mut tries = 0;
                    while used_ports.contains(&next) && tries < 2768 {
                        next = if next >= 32767 { 30000 } else { next + 1 };
                        tries += 1;
                    }
                    p["nodePort"] = json!(next);
                    next = if next >= 32767 { 30000 } else { next + 1 };
                }
            }
        }
        Ok(())
    }

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
        if info.group == "batch" && info.kind == "Job" {
            crate::defaults::job_selector(&mut o);
        }
        let m = meta_mut(&mut o);
        let now = meta::now();
        m.insert("creationTimestamp".into(), json!(now));
        if info.has_spec {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        initial_status(info, &mut o);
        if info.namespaced {
            self.check_namespace(ns.unwrap_or("default")).await?;
        }
        self.admit(info, None, &mut o, None, opts, &mut warnings)
            .await?;
        if info.kind == "Service" && info.group.is_empty() {
            self.allocate_service(info, &mut o)?;
        }
        if !opts.manager.is_empty() && o.pointer("/metadata/managedFields").is_none() {
            apply::record_update(None, &mut o, &opts.manager, &info.api_version(), &now, "");
        }
        let name = meta::name(&o).to_owned();
        let key = info.storage_key(ns.filter(|_| info.namespaced), &name);
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

    /// Turns `new` (a full object for the main resource or a subresource) into what is stored,
    /// given the stored `old`.
    fn prepare_update(
        &self,
        info: &ResourceInfo,
        sub: Option<Subresource>,
        old: &Value,
        mut new: Value,
    ) -> Value {
        if sub == Some(Subresource::Status) {
            // A status write changes status only.
            let mut out = old.clone();
            if let Some(st) = new.get("status") {
                out["status"] = st.clone();
            }
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
        if info.has(Subresource::Status) {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(r) = new.as_object_mut() {
                        r.remove("status");
                    }
                }
            }
        }
        if info.has_spec && old.get("spec") != new.get("spec") {
            let g = old_meta
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        new
    }

    /// Writes `new` over `current` if unchanged since; deletes instead when the last finalizer
    /// of a deleting object is gone.
    async fn commit(
        &self,
        info: &ResourceInfo,
        key: &str,
        current: &Current,
        new: Value,
        dry_run: bool,
    ) -> ApiResult<Option<Value>> {
        if meta::is_deleting(&new)
            && meta::finalizers(&new).is_empty()
            && !has_namespace_finalizers(info, &new)
        {
            if dry_run {
                return Ok(Some(new));
            }
            let res = self
                .store
                .txn(
                    Txn::new()
                        .when(Compare::mod_revision(key, current.revision))
                        .delete(key),
                )
                .await?;
            return if res.succeeded {
                Ok(Some(with_rv(new, res.revision)))
            } else {
                Ok(None)
            };
        }
        // A write that changes nothing is not a write: no new resourceVersion, no event.
        let mut unchanged = new.clone();
        meta_mut(&mut unchanged).insert(
            "resourceVersion".into(),
            json!(current.revision.0.to_string()),
        );
        if unchanged == current.value {
            return Ok(Some(current.value.clone()));
        }
        if dry_run {
            return Ok(Some(new));
        }
        let res = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::mod_revision(key, current.revision))
                    .put(key, encode_stored(&new)),
            )
            .await?;
        Ok(res.succeeded.then(|| with_rv(new, res.revision)))
    }

    /// Prepares, admits and commits `target` over `current`; `None` if `current` changed in
    /// the meantime. `record` notes the write in managedFields (apply does that itself).
    #[allow(clippy::too_many_arguments)]
    async fn write_over(
        &self,
        info: &ResourceInfo,
        key: &str,
        sub: Option<Subresource>,
        current: &Current,
        target: Value,
        opts: &WriteOptions,
        record: bool,
    ) -> ApiResult<Option<Written>> {
        let mut warnings = Vec::new();
        let mut new = self.prepare_update(info, sub, &current.value, target);
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        self.admit(
            info,
            sub,
            &mut new,
            Some(&current.value),
            opts,
            &mut warnings,
        )
        .await?;
        if record && !opts.manager.is_empty() {
            let sub_name = sub.map(|s| s.name()).unwrap_or("");
            apply::record_update(
                Some(&current.value),
                &mut new,
                &opts.manager,
                &info.api_version(),
                &meta::now(),
                sub_name,
            );
        }
        let committed = self.commit(info, key, current, new, opts.dry_run).await?;
        Ok(committed.map(|object| Written {
            object,
            created: false,
            warnings,
        }))
    }

    /// Replaces an object (PUT), on the main resource or the status subresource.
    pub async fn update(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        mut o: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        check_type_meta(info, &mut o)?;
        let body_name = meta::name(&o).to_owned();
        if !body_name.is_empty() && body_name != name {
            return Err(StatusError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ))
            .into());
        }
        let wanted_rv = meta::resource_version(&o);
        let wanted_uid = meta::str_field(&o, "uid").to_owned();
        let key = info.storage_key(ns.filter(|_| info.namespaced), name);
        for _ in 0..RETRIES {
            let current = self.read_existing(info, ns, name).await?;
            if let Some(rv) = wanted_rv
                && rv != current.revision.0
            {
                return Err(StatusError::stale(info.plural, info.group, name).into());
            }
            if !wanted_uid.is_empty() && wanted_uid != meta::str_field(&current.value, "uid") {
                return Err(StatusError::conflict(info.plural, info.group, name, &format!(
                    "Precondition failed: UID in precondition: {wanted_uid}, UID in object meta: {}",
                    meta::str_field(&current.value, "uid")
                ))
                .into());
            }
            if let Some(w) = self
                .write_over(info, &key, sub, &current, o.clone(), opts, true)
                .await?
            {
                return Ok(w);
            }
            if wanted_rv.is_some() {
                return Err(StatusError::stale(info.plural, info.group, name).into());
            }
        }
        Err(StatusError::stale(info.plural, info.group, name).into())
    }

    /// Patches an object (PATCH) with any of the four patch types.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        kind: PatchType,
        body: &[u8],
        force: bool,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        if kind == PatchType::Apply {
            return self.apply(info, ns, name, sub, body, force, opts).await;
        }
        let key = info.storage_key(ns.filter(|_| info.namespaced), name);
        for _ in 0..RETRIES {
            let current = self.read_existing(info, ns, name).await?;
            let mut target = current.value.clone();
            match kind {
                PatchType::Json => patch::json_patch(&mut target, body)?,
                PatchType::Merge => patch::merge_patch(&mut target, body)?,
                _ => patch::strategic_merge_patch(&mut target, body)?,
            }
            // A resourceVersion in the patch is a precondition.
            let wanted_rv = meta::resource_version(&target);
            if let Some(rv) = wanted_rv
                && rv != current.revision.0
            {
                return Err(StatusError::stale(info.plural, info.group, name).into());
            }
            check_type_meta(info, &mut target)?;
            if let Some(w) = self
                .write_over(info, &key, sub, &current, target, opts, true)
                .await?
            {
                return Ok(w);
            }
            if wanted_rv.is_some() {
                return Err(StatusError::stale(info.plural, info.group, name).into());
            }
        }
        Err(StatusError::stale(info.plural, info.group, name).into())
    }

    /// Server-side apply: creates the object if missing, else merges the manager's intent.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        body: &[u8],
        force: bool,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        if opts.manager.is_empty() {
            return Err(StatusError::bad_request(
                "PATCH requests with the apply patch type require a fieldManager query parameter",
            )
            .into());
        }
        let mut applied = crate::body::from_yaml(body)
            .map_err(|e| StatusError::bad_request(format!("error decoding YAML: {e}")))?;
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
        check_type_meta(info, &mut applied)?;
        let body_name = meta::name(&applied).to_owned();
        if !body_name.is_empty() && body_name != name {
            return Err(StatusError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ))
            .into());
        }
        let key = info.storage_key(ns.filter(|_| info.namespaced), name);
        for _ in 0..RETRIES {
            let Some(current) = self.read(&key).await? else {
                let mut fresh = json!({"metadata": {"name": name}});
                let now = meta::now();
                let mut created = apply::apply(
                    &fresh,
                    &applied,
                    &opts.manager,
                    force,
                    &info.api_version(),
                    &now,
                )?;
                let mf = created.pointer("/metadata/managedFields").cloned();
                if let Some(m) = created.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                }
                fresh = created;
                if let Some(mf) = mf {
                    meta_mut(&mut fresh).insert("managedFields".into(), mf);
                }
                match self.create(info, ns, fresh, opts).await {
                    Err(ApiError(e)) if e.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            };
            if let Some(rv) = meta::resource_version(&applied)
                && rv != current.revision.0
            {
                return Err(StatusError::stale(info.plural, info.group, name).into());
            }
            let merged = apply::apply(
                &current.value,
                &applied,
                &opts.manager,
                force,
                &info.api_version(),
                &meta::now(),
            )?;
            if let Some(w) = self
                .write_over(info, &key, sub, &current, merged, opts, false)
                .await?
            {
                return Ok(w);
            }
        }
        Err(StatusError::stale(info.plural, info.group, name).into())
    }

    /// Deletes an object, gracefully where Kubernetes would (finalizers, foreground/orphan
    /// propagation, pods on a node, namespaces).
    pub async fn delete(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let key = info.storage_key(ns.filter(|_| info.namespaced), name);
        for _ in 0..RETRIES {
            let current = self.read_existing(info, ns, name).await?;
            let uid = meta::str_field(&current.value, "uid").to_owned();
            if let Some(want) = &opts.uid
                && *want != uid
            {
                return Err(StatusError::conflict(info.plural, info.group, name, &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}")).into());
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
            let attrs = crate::admission::Attributes {
                info,
                sub: None,
                operation: "DELETE",
                namespace: ns.filter(|_| info.namespaced),
                name,
                dry_run: opts.dry_run,
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
            let mut finalizers = meta::finalizers(&current.value);
            // Foreground and orphan deletion wait for the garbage collector only when there
            // are dependents to delete or orphan; without any, it would finish at once.
            let dependents = matches!(opts.propagation.as_deref(), Some("Foreground" | "Orphan"))
                && {
                    self.cache.sync().await?;
                    self.cache.has_dependents(&uid, ns)
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
            let grace = if info.kind == "Pod" && info.group.is_empty() {
                let bound = current
                    .value
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let default = current
                    .value
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                // A pod on a node is stopped by its kubelet first; an unbound pod has nothing to stop.
                if bound {
                    opts.grace_period.unwrap_or(default)
                } else {
                    0
                }
            } else {
                0
            };
            let graceful = !finalizers.is_empty()
                || grace > 0
                || has_namespace_finalizers(info, &current.value);
            if graceful {
                if meta::is_deleting(&current.value)
                    && grace == 0
                    && meta::finalizers(&current.value) == finalizers
                {
                    return Ok((current.value, false));
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
                if info.kind == "Namespace" {
                    new["status"] = json!({"phase": "Terminating"});
                }
                if opts.dry_run {
                    return Ok((new, false));
                }
                if let Some(object) = self.commit(info, &key, &current, new, false).await? {
                    return Ok((object, false));
                }
                continue;
            }
            if opts.dry_run {
                return Ok((current.value, true));
            }
            let res = self
                .store
                .txn(
                    Txn::new()
                        .when(Compare::mod_revision(&key, current.revision))
                        .delete(&key),
                )
                .await?;
            if res.succeeded {
                return Ok((with_rv(current.value, res.revision), true));
            }
        }
        Err(StatusError::stale(info.plural, info.group, name).into())
    }

    /// The autoscaling/v1 Scale of a scalable object.
    pub async fn get_scale(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        let current = self.read_existing(info, ns, name).await?;
        Ok(scale_of(&current.value))
    }

    /// Sets replicas from a Scale written by PUT or PATCH.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_scale(
        &self,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch_kind: Option<PatchType>,
        body: &[u8],
        content_type: &str,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let key = info.storage_key(ns.filter(|_| info.namespaced), name);
        for _ in 0..RETRIES {
            let current = self.read_existing(info, ns, name).await?;
            let mut scale = scale_of(&current.value);
            match patch_kind {
                None => scale = crate::body::decode_object(content_type, body)?,
                Some(PatchType::Json) => patch::json_patch(&mut scale, body)?,
                Some(PatchType::Merge) => patch::merge_patch(&mut scale, body)?,
                Some(_) => patch::strategic_merge_patch(&mut scale, body)?,
            }
            let wanted_rv = meta::resource_version(&scale);
            if let Some(rv) = wanted_rv
                && rv != current.revision.0
            {
                return Err(StatusError::stale(info.plural, info.group, name).into());
            }
            let replicas = match scale.pointer("/spec/replicas") {
                Some(Value::Number(n)) if n.as_i64().is_some_and(|r| r >= 0) => {
                    n.as_i64().unwrap_or(0)
                }
                Some(v) => {
                    return Err(StatusError::invalid(
                        "Scale",
                        "autoscaling",
                        name,
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
            new["spec"]["replicas"] = json!(replicas);
            let written = self
                .write_over(
                    info,
                    &key,
                    Some(Subresource::Scale),
                    &current,
                    new,
                    opts,
                    true,
                )
                .await?;
            if let Some(w) = written {
                return Ok(scale_of(&w.object));
            }
            if wanted_rv.is_some() {
                return Err(StatusError::stale(info.plural, info.group, name).into());
            }
        }
        Err(StatusError::stale(info.plural, info.group, name).into())
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
        let key = info.storage_key(ns, name);
        for _ in 0..RETRIES {
            let current = self.read_existing(info, ns, name).await?;
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
            let conds = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c.get("type") != Some(&json!("PodScheduled")))
                .collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now()}));
            new["status"]["conditions"] = json!(conds);
            meta_mut(&mut new).remove("resourceVersion");
            if self
                .commit(info, &key, &current, new, false)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(StatusError::stale(info.plural, info.group, name).into())
    }
}

/// A Secret's write-only `stringData` is merged into `data`, base64-encoded, as Kubernetes does.
fn fold_string_data(o: &mut Value) {
    use base64::Engine;
    let Some(root) = o.as_object_mut() else {
        return;
    };
    let Some(Value::Object(sd)) = root.remove("stringData") else {
        return;
    };
    let data = root.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            d.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn has_namespace_finalizers(info: &ResourceInfo, o: &Value) -> bool {
    info.kind == "Namespace"
        && o.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// The Scale view of an object with `spec.replicas`.
pub fn scale_of(o: &Value) -> Value {
    let m = meta::meta(o);
    let selector = o
        .pointer("/spec/selector")
        .and_then(|s| shoal_api::selector::LabelSelector::from_object(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": o.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}
