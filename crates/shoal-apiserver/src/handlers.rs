//! Request dispatch: paths are parsed as the Kubernetes API server's RequestInfo does, then
//! served by verb. Reads come from the watch cache; writes go through the [`Registry`].

use crate::ApiServer;
use crate::cache::{CacheEvent, CachedObject, Subscription, WatchType, watch_line};
use crate::discovery;
use crate::error::{ApiError, ApiResult, status_response};
use crate::patch::PatchType;
use crate::registry::{DeleteOptions, ObjectRef, ScaleChange, WriteOptions, Written};
use crate::request::{FieldValidation, Query, Target, parse_target};
use crate::table::{self, IncludeObject};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use shoal_api::selector::{FieldSelector, LabelSelector};
use shoal_api::{ResourceInfo, StatusError, Subresource};
use shoal_store::{RangeRequest, Revision};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

fn json_response(code: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut r = (code, Body::from(body.into())).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn value_response(code: StatusCode, v: &Value) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn wants_table(headers: &HeaderMap) -> bool {
    let a = accept(headers);
    a.split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

/// The single entry point for every request.
pub async fn dispatch(State(server): State<Arc<ApiServer>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let headers = req.headers().clone();
    let span = tracing::debug_span!("request", verb = %method, path = %path);
    let _enter = span.enter();
    let body = match axum::body::to_bytes(req.into_body(), crate::body::MAX_BODY + 1).await {
        Ok(b) => b,
        Err(_) => {
            return status_response(&StatusError::too_large(
                "the request body is larger than 3 MiB",
            ));
        }
    };
    match route(&server, &method, &path, &query, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(
    s: &Arc<ApiServer>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let agg = discovery::wants_aggregated(&accept(headers));
    match parts.as_slice() {
        ["version"] => {
            let mut r = value_response(StatusCode::OK, &discovery::version());
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            Ok(r)
        }
        ["healthz" | "livez", ..] => Ok((StatusCode::OK, "ok").into_response()),
        // Ready while every supervised task of the process runs (a task that panicked is
        // reported until it has run again for a while).
        ["readyz", ..] => {
            let (ok, body) = s.supervisor.readyz(q.get("verbose").is_some());
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Ok((code, body).into_response())
        }
        ["api"] if agg => Ok(aggregated(discovery::aggregated(true))),
        ["apis"] if agg => Ok(aggregated(discovery::aggregated(false))),
        ["api"] => Ok(value_response(StatusCode::OK, &discovery::api_versions())),
        ["apis"] => Ok(value_response(StatusCode::OK, &discovery::api_group_list())),
        ["api", "v1"] => Ok(value_response(
            StatusCode::OK,
            &discovery::resource_list("", "v1").unwrap_or_default(),
        )),
        ["apis", g] => discovery::group(g)
            .map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(|| StatusError::path_not_found().into()),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] if method == Method::POST => {
            let mut review = crate::body::decode_object(content_type(headers), &body)
                .unwrap_or_else(|_| json!({}));
            review["apiVersion"] = json!("authorization.k8s.io/v1");
            review["kind"] = json!("SelfSubjectAccessReview");
            review["status"] =
                json!({"allowed": true, "reason": "the admin token may do everything"});
            Ok(value_response(StatusCode::CREATED, &review))
        }
        ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] if method == Method::POST => {
            Ok(value_response(
                StatusCode::CREATED,
                &json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null},
                "status": {"userInfo": {"username": "shoal-admin", "groups": ["system:masters", "system:authenticated"]}}}),
            ))
        }
        ["apis", g, v] => discovery::resource_list(g, v)
            .map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(|| StatusError::path_not_found().into()),
        ["openapi", "v3"] => Ok(value_response(StatusCode::OK, &s.openapi.root())),
        ["openapi", "v3", rest @ ..] => {
            let gv = rest.join("/");
            s.openapi
                .doc(&gv)
                .map(|b| json_response(StatusCode::OK, b))
                .ok_or_else(|| StatusError::path_not_found().into())
        }
        ["api", "v1", rest @ ..] => {
            resource(s, method, parse_target("", "v1", rest)?, q, headers, body).await
        }
        ["apis", g, v, rest @ ..] => {
            resource(s, method, parse_target(g, v, rest)?, q, headers, body).await
        }
        _ => Err(StatusError::path_not_found().into()),
    }
}

fn aggregated(v: Value) -> Response {
    let mut r = value_response(StatusCode::OK, &v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED),
    );
    r
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn write_options(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let manager = match q.get("fieldManager") {
        Some(m) if !m.is_empty() => m.to_owned(),
        // Kubernetes names an Update's manager after the client's user agent.
        _ => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_owned())
            .unwrap_or_default(),
    };
    if manager.len() > 128 {
        return Err(StatusError::bad_request("fieldManager must be at most 128 characters").into());
    }
    Ok(WriteOptions {
        dry_run: q.dry_run()?,
        manager,
        validation: FieldValidation::from_query(q)?,
    })
}

fn written(w: Written) -> Response {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    with_warnings(value_response(code, &w.object), &w.warnings)
}

async fn resource(
    s: &Arc<ApiServer>,
    method: &Method,
    t: Target,
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let info = t.info;
    let ns = if info.namespaced {
        t.namespace.as_deref()
    } else {
        None
    };
    let name = t.name.as_deref();
    let reg = &s.registry;
    match (method.clone(), name, t.subresource) {
        (Method::GET, None, None) if q.flag("watch") => watch(s, info, ns, q, headers).await,
        (Method::GET, None, None) => list(s, info, ns, q, headers).await,
        (Method::GET, Some(n), None | Some(Subresource::Status)) => {
            get(s, info, ns, n, q, headers).await
        }
        (Method::GET, Some(n), Some(Subresource::Scale)) => Ok(value_response(
            StatusCode::OK,
            &reg.get_scale(info, ns, n).await?,
        )),
        (Method::POST, None, None) => {
            let obj = crate::body::decode_object(content_type(headers), &body)?;
            Ok(written(
                reg.create(
                    info,
                    ns.or(Some("default")).filter(|_| info.namespaced),
                    obj,
                    &write_options(q, headers)?,
                )
                .await?,
            ))
        }
        (Method::POST, Some(n), Some(Subresource::Binding)) => {
            let b = crate::body::decode_object(content_type(headers), &body)?;
            reg.bind(info, ns, n, &b).await?;
            Ok(value_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (Method::POST, Some(n), Some(Subresource::Eviction)) => {
            reg.delete(info, ns, n, &DeleteOptions::default()).await?;
            Ok(value_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (Method::PUT, Some(n), None | Some(Subresource::Status) | Some(Subresource::Finalize)) => {
            let obj = crate::body::decode_object(content_type(headers), &body)?;
            let sub = t.subresource.filter(|s| *s == Subresource::Status);
            Ok(written(
                reg.update(
                    ObjectRef::new(info, ns, n).subresource(sub),
                    obj,
                    &write_options(q, headers)?,
                )
                .await?,
            ))
        }
        (Method::PUT, Some(n), Some(Subresource::Scale)) => {
            let scale = crate::body::decode_object(content_type(headers), &body)?;
            let out = reg
                .update_scale(
                    ObjectRef::new(info, ns, n),
                    ScaleChange::Replace(scale),
                    &write_options(q, headers)?,
                )
                .await?;
            Ok(value_response(StatusCode::OK, &out))
        }
        (
            Method::PATCH,
            Some(n),
            sub @ (None | Some(Subresource::Status) | Some(Subresource::Scale)),
        ) => {
            let ct = content_type(headers);
            let kind = PatchType::from_content_type(ct)
                .ok_or_else(|| StatusError::unsupported_media_type(ct))?;
            if body.len() > crate::body::MAX_BODY {
                return Err(StatusError::too_large("the request body is larger than 3 MiB").into());
            }
            let opts = write_options(q, headers)?;
            if sub == Some(Subresource::Scale) {
                let out = reg
                    .update_scale(
                        ObjectRef::new(info, ns, n),
                        ScaleChange::Patch(kind, &body),
                        &opts,
                    )
                    .await?;
                return Ok(value_response(StatusCode::OK, &out));
            }
            let force = q.flag("force");
            if force && kind != PatchType::Apply {
                return Err(
                    StatusError::bad_request("force may only be set for apply patches").into(),
                );
            }
            let r = ObjectRef::new(info, ns, n).subresource(sub);
            if kind == PatchType::Apply {
                let applied = crate::body::from_yaml(&body)
                    .map_err(|e| StatusError::bad_request(format!("error decoding YAML: {e}")))?;
                return Ok(written(reg.apply(r, applied, force, &opts).await?));
            }
            Ok(written(reg.patch(r, kind, &body, &opts).await?))
        }
        (Method::DELETE, Some(n), None) => {
            let opts = delete_options(q, headers, &body)?;
            let (obj, gone) = reg.delete(info, ns, n, &opts).await?;
            if gone {
                Ok(value_response(
                    StatusCode::OK,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": n, "group": info.group, "kind": info.plural, "uid": obj.pointer("/metadata/uid")},
                    }),
                ))
            } else {
                Ok(value_response(StatusCode::OK, &obj))
            }
        }
        (Method::DELETE, None, None) => delete_collection(s, info, ns, q, headers, &body).await,
        (Method::GET, Some(n), Some(Subresource::Log)) if info.plural == "pods" => {
            crate::kubelet_proxy::pod_log(s, ns.unwrap_or("default"), n, q).await
        }
        (
            _,
            Some(_),
            Some(
                sub @ (Subresource::Log
                | Subresource::Exec
                | Subresource::Attach
                | Subresource::PortForward
                | Subresource::Proxy),
            ),
        ) => Err(StatusError::bad_request(format!(
            "{} is not supported yet: the kubelet serves only logs",
            sub.name()
        ))
        .into()),
        _ => Err(StatusError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {})",
            info.qualified()
        ))
        .into()),
    }
}

fn delete_options(q: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        DeleteOptions::from_body(&crate::body::decode_object(content_type(headers), body)?)
    };
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation = Some(p.to_owned());
    }
    if let Some(g) = q.int("gracePeriodSeconds")? {
        opts.grace_period = Some(g);
    }
    if q.flag("orphanDependents") && opts.propagation.is_none() {
        opts.propagation = Some("Orphan".into());
    }
    opts.dry_run |= q.dry_run()?;
    Ok(opts)
}

/// Selectors and namespace a list or watch filters by.
struct Filter {
    prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

/// The string value of a selectable field.
pub fn field_value(o: &Value, field: &str) -> String {
    let ptr = match field {
        "source" => "/source/component".to_owned(),
        f => format!("/{}", f.replace('.', "/")),
    };
    match o.pointer(&ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

impl Filter {
    /// Whether no label or field selector narrows the list.
    fn selects_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn new(info: &ResourceInfo, ns: Option<&str>, q: &Query) -> ApiResult<Self> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| StatusError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(|e| StatusError::bad_request(e.to_string()))?;
        for r in &fields.requirements {
            if !info.supports_field(&r.field) {
                return Err(StatusError::bad_request(format!(
                    "field label not supported: {}",
                    r.field
                ))
                .into());
            }
        }
        let mut prefix = info.namespace_prefix(ns);
        // `metadata.name=x` in one namespace narrows the scan to one key.
        if let (Some(n), true) = (
            fields.required_value("metadata.namespace"),
            ns.is_none() && info.namespaced,
        ) {
            prefix = info.namespace_prefix(Some(n));
        }
        Ok(Filter {
            prefix,
            labels,
            fields,
        })
    }

    /// Matches without parsing the object when there is no selector.
    fn matches_obj(&self, o: &CachedObject) -> bool {
        (self.labels.is_empty() && self.fields.is_empty()) || self.matches(o.value())
    }

    fn matches(&self, o: &Value) -> bool {
        self.labels.matches_object(o)
            && (self.fields.is_empty() || self.fields.matches(|f| field_value(o, f)))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, last_key: &str) -> String {
    let c = serde_json::to_vec(&Continue {
        rv,
        start: last_key.to_owned(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c)
}

fn decode_continue(token: &str) -> ApiResult<Continue> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            StatusError::bad_request("continue key is not valid: illegal base64 data").into()
        })
}

const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Waits for the cache as the request's resourceVersion asks: `""` is a consistent read, `"0"`
/// any, `N` not older than N.
async fn sync_cache(s: &ApiServer, q: &Query) -> ApiResult<i64> {
    match q.get("resourceVersion") {
        None | Some("") => s.cache.sync().await,
        Some("0") => Ok(s.cache.revision()),
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| StatusError::bad_request(format!("invalid resource version {v:?}")))?;
            s.cache.wait_for(n).await
        }
    }
}

async fn list(
    s: &Arc<ApiServer>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let filter = Filter::new(info, ns, q)?;
    let limit = q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    // Objects after this page, before filtering (what kube-apiserver reports as
    // `remainingItemCount` when a list without selectors is cut short).
    let mut remaining = None;
    let (objects, rv, next): (Vec<Arc<CachedObject>>, i64, Option<String>) =
        if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
            // Later pages are read from the store at the first page's revision.
            let c = decode_continue(token)?;
            let mut req = RangeRequest::prefix(&filter.prefix).at(Revision(c.rv));
            req.start = format!("{}\0", c.start);
            let r = s.registry.store.range(req).await.map_err(|e| match e {
                shoal_store::StoreError::Compacted { .. } => {
                    ApiError(StatusError::expired(CONTINUE_TOO_OLD))
                }
                other => other.into(),
            })?;
            let mut out = Vec::new();
            let mut next = None;
            let total = r.kvs.len();
            for (i, kv) in r.kvs.into_iter().enumerate() {
                let obj = CachedObject::decode(&kv.key, &kv.value, kv.mod_revision.get())?;
                if filter.matches_obj(&obj) {
                    if limit.is_some_and(|l| out.len() >= l) {
                        next = out
                            .last()
                            .map(|o: &Arc<CachedObject>| encode_continue(c.rv, &o.key));
                        remaining = Some(total - i);
                        break;
                    }
                    out.push(Arc::new(obj));
                }
            }
            (out, c.rv, next)
        } else {
            let rv = sync_cache(s, q).await?;
            let cache = s.cache.resource(info);
            let mut out = Vec::new();
            let mut next = None;
            let all = cache.list(&filter.prefix, None);
            let total = all.len();
            for (i, o) in all.into_iter().enumerate() {
                if filter.matches_obj(&o) {
                    if limit.is_some_and(|l| out.len() >= l) {
                        next = out
                            .last()
                            .map(|o: &Arc<CachedObject>| encode_continue(rv, &o.key));
                        remaining = Some(total - i);
                        break;
                    }
                    out.push(o);
                }
            }
            (out, rv, next)
        };
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if let Some(n) = &next {
        list_meta["continue"] = json!(n);
        if let Some(r) = remaining.filter(|_| filter.selects_everything()) {
            list_meta["remainingItemCount"] = json!(r);
        }
    }
    if wants_table(headers) {
        let values: Vec<&Value> = objects.iter().map(|o| o.value()).collect();
        let t = table::table(
            info,
            &values,
            IncludeObject::parse(q.get("includeObject")),
            list_meta,
            true,
        );
        return Ok(value_response(StatusCode::OK, &t));
    }
    // The list is assembled from each object's cached encoding.
    let mut out = Vec::with_capacity(objects.iter().map(|o| o.json.len() + 1).sum::<usize>() + 128);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":",
            info.list_kind(),
            info.api_version()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&serde_json::to_vec(&list_meta).unwrap_or_default());
    out.extend_from_slice(b",\"items\":[");
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&o.json);
    }
    out.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, out))
}

async fn get(
    s: &Arc<ApiServer>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    sync_cache(s, q).await?;
    let key = info.storage_key(ns, name);
    let obj = s
        .cache
        .resource(info)
        .get(&key)
        .ok_or_else(|| StatusError::not_found(info.plural, info.group, name))?;
    if wants_table(headers) {
        let rv = obj.revision.to_string();
        let t = table::table(
            info,
            &[obj.value()],
            IncludeObject::parse(q.get("includeObject")),
            json!({"resourceVersion": rv}),
            true,
        );
        return Ok(value_response(StatusCode::OK, &t));
    }
    Ok(json_response(StatusCode::OK, obj.json.clone()))
}

async fn delete_collection(
    s: &Arc<ApiServer>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let filter = Filter::new(info, ns, q)?;
    let opts = delete_options(q, headers, body)?;
    s.cache.sync().await?;
    let mut deleted = Vec::new();
    for o in s.cache.resource(info).list(&filter.prefix, None) {
        if !filter.matches_obj(&o) {
            continue;
        }
        let name = o
            .value()
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let o_ns = o
            .value()
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match s.registry.delete(info, o_ns.as_deref(), &name, &opts).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(ApiError(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": {"resourceVersion": s.cache.revision().to_string()}, "items": deleted});
    Ok(value_response(StatusCode::OK, &list))
}

/// How a watcher wants its events.
struct WatchFormat {
    table: bool,
    include: IncludeObject,
    bookmarks: bool,
}

fn encode_event(
    info: &ResourceInfo,
    ev: &CacheEvent,
    kind: WatchType,
    fmt: &WatchFormat,
    first_table: &mut bool,
) -> Bytes {
    if fmt.table {
        let t = table::table(
            info,
            &[ev.object.value()],
            fmt.include,
            json!({"resourceVersion": ev.revision.to_string()}),
            *first_table,
        );
        *first_table = false;
        return watch_line(kind.as_str(), &serde_json::to_vec(&t).unwrap_or_default());
    }
    if kind == ev.kind {
        ev.line.clone()
    } else {
        watch_line(kind.as_str(), &ev.object.json)
    }
}

/// The type a filtered watcher sees: an object entering the selection is ADDED, one leaving
/// it is DELETED.
fn filtered_kind(filter: &Filter, ev: &CacheEvent) -> Option<WatchType> {
    if !ev.object.key.starts_with(&filter.prefix) {
        return None;
    }
    let now = filter.matches_obj(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| filter.matches_obj(p));
    match (ev.kind, before, now) {
        (WatchType::Deleted, true, _) => Some(WatchType::Deleted),
        (WatchType::Deleted, false, _) => None,
        (_, false, true) => Some(WatchType::Added),
        (_, true, true) => Some(ev.kind),
        (_, true, false) => Some(WatchType::Deleted),
        (_, false, false) => None,
    }
}

fn error_line(e: &StatusError) -> Bytes {
    watch_line(
        "ERROR",
        &serde_json::to_vec(&e.to_status()).unwrap_or_default(),
    )
}

async fn watch(
    s: &Arc<ApiServer>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let filter = Filter::new(info, ns, q)?;
    let fmt = WatchFormat {
        table: wants_table(headers),
        include: IncludeObject::parse(q.get("includeObject")),
        bookmarks: q.flag("allowWatchBookmarks"),
    };
    let timeout = Duration::from_secs(
        q.int("timeoutSeconds")?
            .filter(|t| *t > 0)
            .map_or(1800, |t| t as u64),
    );
    let from = match q.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| StatusError::bad_request(format!("invalid resource version {v:?}")))?,
        ),
    };
    if let Some(rv) = from {
        s.cache.wait_for(rv).await?;
    }
    let cache = s.cache.resource(info).clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let subscription = cache.subscribe(from, &filter.prefix);
    let server = s.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut first_table = true;
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(b)).await.is_ok() }
        };
        let Subscription { initial, mut live } = match subscription {
            Ok(sub) => sub,
            Err(_) => {
                // Older than the cache's window: replay from the store's history.
                let from = from.unwrap_or(0);
                store_watch(&server, info, &filter, from, &fmt, tx, timeout).await;
                return;
            }
        };
        let mut last = from.unwrap_or(0);
        for ev in &initial {
            let kind = if from.is_none() {
                (filter.matches_obj(&ev.object) && ev.object.key.starts_with(&filter.prefix))
                    .then_some(WatchType::Added)
            } else {
                filtered_kind(&filter, ev)
            };
            last = last.max(ev.revision);
            if let Some(k) = kind
                && !send(encode_event(info, ev, k, &fmt, &mut first_table)).await
            {
                return;
            }
        }
        let mut bookmark =
            tokio::time::interval(Duration::from_secs(if fmt.bookmarks { 5 } else { 3600 }));
        bookmark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmark.tick(), if fmt.bookmarks => {
                    // Everything up to `rev` has been broadcast; drain it before promising it.
                    let rev = server.cache.revision();
                    loop {
                        match live.try_recv() {
                            Ok(ev) => {
                                if ev.revision <= last { continue; }
                                last = ev.revision;
                                if let Some(k) = filtered_kind(&filter, &ev)
                                    && !send(encode_event(info, &ev, k, &fmt, &mut first_table)).await { return; }
                            }
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        }
                    }
                    if rev > last {
                        last = rev;
                        let b = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
                        if !send(watch_line("BOOKMARK", &serde_json::to_vec(&b).unwrap_or_default())).await { return; }
                    }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.revision <= last { continue; }
                        last = ev.revision;
                        if let Some(k) = filtered_kind(&filter, &ev)
                            && !send(encode_event(info, &ev, k, &fmt, &mut first_table)).await { return; }
                    }
                    // A watcher this far behind is closed; the client resumes from its last
                    // resourceVersion, from the cache's window or the store's history.
                    Err(_) => return,
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

/// Serves a watch from the store's history when the cache's window does not reach back.
async fn store_watch(
    s: &ApiServer,
    info: &'static ResourceInfo,
    filter: &Filter,
    from: i64,
    fmt: &WatchFormat,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    timeout: Duration,
) {
    let mut w = match s
        .registry
        .store
        .watch(&filter.prefix, Revision(from + 1))
        .await
    {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(Ok(error_line(&ApiError::from(e).0))).await;
            return;
        }
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut first_table = true;
    loop {
        let batch = tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            b = w.next() => b,
        };
        let events = match batch {
            Some(Ok(events)) => events,
            Some(Err(e)) => {
                let _ = tx.send(Ok(error_line(&ApiError::from(e).0))).await;
                return;
            }
            None => return,
        };
        for e in events {
            let rev = e.kv.mod_revision.get();
            let prev = e
                .prev_kv
                .as_ref()
                .and_then(|p| CachedObject::decode(&p.key, &p.value, p.mod_revision.get()).ok())
                .map(Arc::new);
            let (kind, object) = match e.kind {
                shoal_store::EventKind::Put => {
                    let kind = if prev.is_some() {
                        WatchType::Modified
                    } else {
                        WatchType::Added
                    };
                    match CachedObject::decode(&e.kv.key, &e.kv.value, rev) {
                        Ok(o) => (kind, Arc::new(o)),
                        Err(_) => continue,
                    }
                }
                shoal_store::EventKind::Delete => {
                    let Some(p) = &prev else { continue };
                    (
                        WatchType::Deleted,
                        Arc::new(CachedObject::from_value(
                            e.kv.key.clone(),
                            &mut p.value().clone(),
                            rev,
                        )),
                    )
                }
            };
            let ev = CacheEvent {
                kind,
                line: watch_line(kind.as_str(), &object.json),
                object,
                prev,
                revision: rev,
            };
            if let Some(k) = filtered_kind(filter, &ev)
                && tx
                    .send(Ok(encode_event(info, &ev, k, fmt, &mut first_table)))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}
