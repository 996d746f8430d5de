//! Reads: `get` and `list` from the watch cache (or the store for later pages), with label
//! and field selectors, `limit` and `continue`.

use super::*;

/// Selectors and namespace a list or watch filters by.
pub(super) struct Filter {
    pub(super) prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

/// The string value of a selectable field.
pub(super) fn field_value(o: &Value, field: &str) -> String {
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
    pub(super) fn selects_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub(super) fn new(info: &ResourceInfo, ns: Option<&str>, q: &Query) -> ApiResult<Self> {
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
    pub(super) fn matches_obj(&self, o: &CachedObject) -> bool {
        (self.labels.is_empty() && self.fields.is_empty()) || self.matches(o.value())
    }

    pub(super) fn matches(&self, o: &Value) -> bool {
        self.labels.matches_object(o)
            && (self.fields.is_empty() || self.fields.matches(|f| field_value(o, f)))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Continue {
    rv: i64,
    start: String,
}

pub(super) fn encode_continue(rv: i64, last_key: &str) -> String {
    let c = serde_json::to_vec(&Continue {
        rv,
        start: last_key.to_owned(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c)
}

pub(super) fn decode_continue(token: &str) -> ApiResult<Continue> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            StatusError::bad_request("continue key is not valid: illegal base64 data").into()
        })
}

pub(super) const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Waits for the cache as the request's resourceVersion asks: `""` is a consistent read, `"0"`
/// any, `N` not older than N.
pub(super) async fn sync_cache(s: &ApiServer, q: &Query) -> ApiResult<i64> {
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

pub(super) async fn list(
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
            // Without selectors a page needs only its own keys (and one more, to know there
            // are more); the store counts the rest.
            if let Some(l) = limit.filter(|_| filter.selects_everything()) {
                req.limit = l + 1;
            }
            let r = s.registry.store.range(req).await.map_err(|e| match e {
                shoal_store::StoreError::Compacted { .. } => {
                    ApiError(StatusError::expired(CONTINUE_TOO_OLD))
                }
                other => other.into(),
            })?;
            let mut out = Vec::new();
            let mut next = None;
            let total = r.count.max(r.kvs.len());
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
    // Streamed item by item from the snapshot (`stream.rs`): the bytes of the whole list,
    // never all of them in memory at once.
    let chunks = if wants_table(headers) {
        let include = IncludeObject::parse(q.get("includeObject"));
        Chunks::new(
            table_head(info, list_meta),
            objects,
            table_rows(info, include),
        )
    } else {
        Chunks::new(list_head(info, &list_meta), objects, json_items(info))
    };
    Ok(streamed(chunks, &s.list_seats))
}

pub(super) async fn get(
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
    // The cached body already ends with the newline: no copy.
    Ok(json_body(
        StatusCode::OK,
        Body::from(crate::conversion::served_bytes(info, &obj.body)),
    ))
}
