//! Watches: from the watch cache's window, or the store's history for older revisions, with
//! bookmarks, tables and selectors.

use super::*;

/// How a watcher wants its events.
pub(super) struct WatchFormat {
    table: bool,
    include: IncludeObject,
    bookmarks: bool,
}

pub(super) fn encode_event(
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
    if kind == ev.kind && !crate::conversion::converts(info) {
        crate::conversion::served_bytes(info, &ev.line)
    } else {
        watch_line(
            kind.as_str(),
            &crate::conversion::served_bytes(info, &ev.object.json),
        )
    }
}

/// The type a filtered watcher sees: an object entering the selection is ADDED, one leaving
/// it is DELETED.
pub(super) fn filtered_kind(filter: &Filter, ev: &CacheEvent) -> Option<WatchType> {
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

pub(super) fn error_line(e: &StatusError) -> Bytes {
    watch_line(
        "ERROR",
        &serde_json::to_vec(&e.to_status()).unwrap_or_default(),
    )
}

pub(super) async fn watch(
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
pub(super) async fn store_watch(
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
