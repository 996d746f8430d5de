//! The watch cache: lists, gets and watches are served from memory.
//!
//! One task follows a single store watch on `/registry/` and keeps, per resource, the current
//! objects and a window of recent events. Each object and each event is encoded to JSON once,
//! when it enters the cache; every reader and every watcher gets those same bytes.
//!
//! Consistency: a read first asks the store for its current revision and waits until the
//! cache has applied it (consistent reads from cache, as in Kubernetes' KEP-2340), so a client
//! always reads its own writes.

use crate::error::{ApiError, ApiResult};
use bytes::Bytes;
use serde_json::Value;
use shoal_api::{ResourceInfo, StatusError, resources::RESOURCES};
use shoal_store::{
    EventKind, ProgressRequester, RangeRequest, Revision, Store, StoreError, WatchItem,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::{broadcast, watch};

/// Events kept per resource for watches that resume from a recent resourceVersion. Older
/// resumes are served from the store's own history.
const HISTORY: usize = 4096;

/// An object as stored, with `metadata.resourceVersion` filled in and encoded once. The
/// parsed form is built on first use: most objects are only ever sent as bytes.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub json: Bytes,
    /// `json` and a newline, as a whole response body ends (same buffer, no copy).
    pub body: Bytes,
    pub revision: i64,
    value: OnceLock<Value>,
    /// One view derived from the object, worked out on first use and dropped with it (the
    /// Node authorizer's summary of what a pod refers to).
    derived: OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

/// Objects stored before objects were kept in Kubernetes' field order begin with this; their
/// resource version is spliced in right after it.
const OLD_STORED_PREFIX: &[u8] = b"{\"metadata\":{";
/// The key the resource version follows in a canonical object ([`crate::canonical`]).
const UID_KEY: &[u8] = b"\"uid\":\"";
const META_KEY: &[u8] = b"\"metadata\":{";

/// Encodes an object for the store: as it is (callers canonicalise it first), without
/// `metadata.resourceVersion` (the store's revision is the version). Serialises straight from
/// `v`, without copying it.
pub fn encode_stored(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&Stored(v)).unwrap_or_default()
}

/// An object as [`encode_stored`] writes it.
struct Stored<'a>(&'a Value);

/// `metadata` without `resourceVersion`.
struct StoredMeta<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for StoredMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self
            .0
            .iter()
            .filter(|(k, _)| k.as_str() != "resourceVersion")
        {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(obj) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut m = s.serialize_map(None)?;
        for (k, v) in obj {
            match v.as_object() {
                Some(meta) if k == "metadata" => m.serialize_entry(k, &StoredMeta(meta))?,
                _ => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

/// Where the resource version goes in stored bytes: right after metadata's `uid` value.
/// A JSON string cannot hold an unescaped `":`, so the first `"metadata":{` is the object's
/// (only `kind` and `apiVersion` come before it); between it and `uid` come only metadata's
/// name fields, plain strings: any `{` or `[` in between means this is not that shape, and
/// the caller parses instead.
fn rv_position(bytes: &[u8]) -> Option<usize> {
    let find = |from: usize, pat: &[u8]| {
        bytes[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|i| from + i)
    };
    let meta = find(0, META_KEY)? + META_KEY.len();
    let uid = find(meta, UID_KEY)?;
    if bytes[meta..uid].iter().any(|b| matches!(b, b'{' | b'[')) {
        return None;
    }
    let start = uid + UID_KEY.len();
    let end = bytes[start..].iter().position(|b| *b == b'"')?;
    // A uid holds no escapes; anything else is not what this splice expects.
    (!bytes[start..start + end].contains(&b'\\')).then_some(start + end + 1)
}

impl CachedObject {
    /// Decodes stored bytes and sets `metadata.resourceVersion` to `revision`.
    pub fn decode(key: &str, bytes: &[u8], revision: i64) -> Result<Self, StoreError> {
        let rv = format!("\"resourceVersion\":\"{revision}\"");
        let spliced = |at: usize, comma_before: bool, comma_after: bool| {
            let mut json = Vec::with_capacity(bytes.len() + rv.len() + 2);
            json.extend_from_slice(&bytes[..at]);
            if comma_before {
                json.push(b',');
            }
            json.extend_from_slice(rv.as_bytes());
            if comma_after {
                json.push(b',');
            }
            json.extend_from_slice(&bytes[at..]);
            Self::new(key.to_owned(), json, revision, OnceLock::new())
        };
        if let Some(rest) = bytes.strip_prefix(OLD_STORED_PREFIX) {
            // `{"metadata":{` + `"resourceVersion":"N"` + (`,` unless metadata was empty) + rest.
            return Ok(spliced(
                OLD_STORED_PREFIX.len(),
                false,
                rest.first() != Some(&b'}'),
            ));
        }
        if let Some(at) = rv_position(bytes) {
            // `..."uid":"U"` + `,"resourceVersion":"N"` + rest (`,...` or `}`).
            return Ok(spliced(at, true, false));
        }
        let mut value: Value = serde_json::from_slice(bytes).map_err(|_| StoreError::Corrupt {
            key: key.to_owned(),
        })?;
        Ok(Self::from_value(key.to_owned(), &mut value, revision))
    }

    pub fn from_value(key: String, value: &mut Value, revision: i64) -> Self {
        if value.is_object() {
            crate::meta::set_resource_version(value, revision.to_string());
        }
        let json = serde_json::to_vec(value).unwrap_or_default();
        Self::new(key, json, revision, OnceLock::from(std::mem::take(value)))
    }

    fn new(key: String, mut json: Vec<u8>, revision: i64, value: OnceLock<Value>) -> Self {
        json.push(b'\n');
        let body = Bytes::from(json);
        CachedObject {
            key,
            json: body.slice(..body.len() - 1),
            body,
            revision,
            value,
            derived: OnceLock::new(),
        }
    }

    /// `f` of the parsed object, without keeping the parse when it was not already kept (a
    /// Table of every pod should not double the cache's memory for good).
    pub fn with_value<T>(&self, f: impl FnOnce(&Value) -> T) -> T {
        match self.value.get() {
            Some(v) => f(v),
            None => f(&serde_json::from_slice(&self.json).unwrap_or(Value::Null)),
        }
    }

    /// The object, parsed on first use.
    /// The view `make` derives from the object, made once; `None` if this object's view was
    /// made as another type (each kind has one user).
    pub fn derived<T: std::any::Any + Send + Sync>(
        &self,
        make: impl FnOnce(&Value) -> T,
    ) -> Option<&T> {
        self.derived
            .get_or_init(|| Box::new(make(self.value())))
            .downcast_ref::<T>()
    }

    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            // The bytes were produced by us, from stored bytes checked at the prefix; a parse
            // failure means the store holds garbage at this key.
            serde_json::from_slice(&self.json).unwrap_or_else(|e| {
                tracing::error!(key = %self.key, error = %e, "stored object does not parse");
                Value::Null
            })
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchType {
    Added,
    Modified,
    Deleted,
}

impl WatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
        }
    }
}

/// One change, with the watch line every plain-JSON watcher sends, encoded once.
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: WatchType,
    pub object: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
    pub revision: i64,
    pub line: Bytes,
}

pub fn watch_line(kind: &str, object_json: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object_json.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object_json);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Every event after this revision is in `history`.
    complete_after: i64,
}

pub struct ResourceCache {
    pub info: &'static ResourceInfo,
    state: RwLock<State>,
    tx: broadcast::Sender<Arc<CacheEvent>>,
}

/// A starting point for a watch served by the cache.
pub struct Subscription {
    /// Events to send first (synthetic ADDED for a fresh watch, or the replayed window).
    pub initial: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
}

/// Where CustomResourceDefinitions are stored.
const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

impl ResourceCache {
    fn new(info: &'static ResourceInfo) -> Arc<Self> {
        let (tx, _) = broadcast::channel(1024);
        Arc::new(ResourceCache {
            info,
            state: RwLock::new(State::default()),
            tx,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Writers never panic while holding the lock (they only move Arcs around).
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.read().objects.get(key).cloned()
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects under `prefix` with a key `> after`, in key order.
    pub fn list(&self, prefix: &str, after: Option<&str>) -> Vec<Arc<CachedObject>> {
        let st = self.read();
        let end = shoal_store::prefix_end(prefix);
        let start = after.map_or(prefix.to_owned(), |a| format!("{a}\0"));
        st.objects
            .range(start..end)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Subscribes from `from`: `None` replays the current state as ADDED; `Some(rv)` replays
    /// the window after `rv`, or `Err(None)` if the window no longer reaches back that far.
    pub fn subscribe(&self, from: Option<i64>, prefix: &str) -> Result<Subscription, Option<i64>> {
        // Subscribing under the read lock: the updater broadcasts under the write lock, so no
        // event falls between the replay and the live feed.
        let st = self.read();
        let live = self.tx.subscribe();
        let initial = match from {
            None => st
                .objects
                .range(prefix.to_owned()..shoal_store::prefix_end(prefix))
                .map(|(_, o)| {
                    Arc::new(CacheEvent {
                        kind: WatchType::Added,
                        object: o.clone(),
                        prev: None,
                        revision: o.revision,
                        line: watch_line("ADDED", &o.json),
                    })
                })
                .collect(),
            Some(rv) if rv >= st.complete_after => st
                .history
                .iter()
                .filter(|e| e.revision > rv)
                .cloned()
                .collect(),
            Some(_) => return Err(Some(st.complete_after)),
        };
        Ok(Subscription { initial, live })
    }

    fn apply(&self, ev: &shoal_store::Event) -> Result<(), StoreError> {
        let rev = ev.kv.mod_revision.get();
        // Decoded before taking the lock, so readers never wait on it.
        let put = match ev.kind {
            EventKind::Put => Some(Arc::new(CachedObject::decode(
                &ev.kv.key,
                &ev.kv.value,
                rev,
            )?)),
            EventKind::Delete => None,
        };
        let mut st = self.write();
        let prev = st.objects.get(&ev.kv.key).cloned();
        let event = match put {
            Some(obj) => {
                st.objects.insert(ev.kv.key.clone(), obj.clone());
                let kind = if prev.is_some() {
                    WatchType::Modified
                } else {
                    WatchType::Added
                };
                CacheEvent {
                    kind,
                    line: watch_line(kind.as_str(), &obj.json),
                    object: obj,
                    prev,
                    revision: rev,
                }
            }
            None => {
                st.objects.remove(&ev.kv.key);
                // The DELETED event carries the last state with the deletion's revision.
                let mut last = match (&prev, &ev.prev_kv) {
                    (Some(p), _) => p.value().clone(),
                    (None, Some(kv)) => serde_json::from_slice(&kv.value).unwrap_or(Value::Null),
                    (None, None) => Value::Null,
                };
                let obj = Arc::new(CachedObject::from_value(ev.kv.key.clone(), &mut last, rev));
                CacheEvent {
                    kind: WatchType::Deleted,
                    line: watch_line("DELETED", &obj.json),
                    object: obj,
                    prev,
                    revision: rev,
                }
            }
        };
        let event = Arc::new(event);
        if st.history.len() >= HISTORY
            && let Some(old) = st.history.pop_front()
        {
            st.complete_after = old.revision;
        }
        st.history.push_back(event.clone());
        let _ = self.tx.send(event);
        Ok(())
    }
}

/// All resources' caches and the revision they have caught up with.
pub struct WatchCache {
    store: Arc<dyn Store>,
    /// One per built-in resource, and one per custom resource served (added and removed as
    /// definitions come and go).
    caches: RwLock<Vec<Arc<ResourceCache>>>,
    /// The custom resources served, from the definitions in the store.
    catalog: crate::crd::Catalog,
    revision: watch::Sender<i64>,
    /// Reaches the store watch that feeds the cache, to learn its revision when nothing under
    /// `/registry/` changed (another client of a shared etcd may have written elsewhere).
    progress: Mutex<Option<ProgressRequester>>,
}

impl WatchCache {
    /// Loads every resource from the store and starts following its changes (a task of
    /// `supervisor`'s, which reloads everything if it has to restart it).
    pub async fn start(
        store: Arc<dyn Store>,
        supervisor: &shoal_supervisor::Supervisor,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        // One cache per stored resource: the versions of a kind (autoscaling/v2 and v1
        // HorizontalPodAutoscalers) share the first one's.
        let mut caches: Vec<Arc<ResourceCache>> = Vec::new();
        for info in RESOURCES {
            if !caches
                .iter()
                .any(|c| c.info.storage_prefix() == info.storage_prefix())
            {
                caches.push(ResourceCache::new(info));
            }
        }
        let (revision, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            store,
            caches: RwLock::new(caches),
            catalog: crate::crd::Catalog::default(),
            revision,
            progress: Mutex::new(None),
        });
        let rev = cache.load().await?;
        let c = cache.clone();
        let mut first = Some(rev);
        // It ends only when the store is closed.
        supervisor.spawn(
            "apiserver/watch-cache",
            shoal_supervisor::Restart::OnPanic,
            stop,
            move || {
                let c = c.clone();
                let start = first.take();
                async move {
                    // After a failure the cache may have applied part of a batch: start over
                    // from a fresh load rather than guess where it stopped.
                    let rev = match start {
                        Some(rev) => rev,
                        None => loop {
                            match c.load().await {
                                Ok(rev) => break rev,
                                Err(e) => {
                                    tracing::error!(error = %e, "watch cache cannot reload; retrying");
                                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                                }
                            }
                        },
                    };
                    c.follow(rev).await
                }
            },
        );
        Ok(cache)
    }

    async fn load(&self) -> Result<Revision, StoreError> {
        let all = self.store.range(RangeRequest::prefix("/registry/")).await?;
        // Definitions first: their objects need the caches they bring.
        let definitions: Vec<Value> = all
            .kvs
            .iter()
            .filter(|kv| kv.key.starts_with(CRD_PREFIX))
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        self.catalog.clear();
        for crd in &definitions {
            self.define(crd);
        }
        for c in self.caches_read().iter() {
            let mut st = c.write();
            st.objects.clear();
            st.history.clear();
            st.complete_after = all.revision.get();
        }
        for kv in all.kvs {
            if let Some(c) = self.for_key(&kv.key) {
                let obj = CachedObject::decode(&kv.key, &kv.value, kv.mod_revision.get())?;
                c.write().objects.insert(kv.key.clone(), Arc::new(obj));
            }
        }
        self.revision.send_replace(all.revision.get());
        Ok(all.revision)
    }

    async fn follow(self: Arc<Self>, mut rev: Revision) {
        loop {
            let mut w = match self.store.watch("/registry/", rev.next()).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "watch cache cannot watch the store; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(w.progress_requester());
            while let Some(item) = w.next_item().await {
                match item {
                    Ok(WatchItem::Progress(r)) => {
                        if r > rev {
                            rev = r;
                            self.revision.send_replace(rev.get());
                        }
                    }
                    Ok(WatchItem::Events(events)) => {
                        for ev in &events {
                            if let Some(c) = self.for_key(&ev.kv.key)
                                && let Err(e) = c.apply(ev)
                            {
                                tracing::error!(error = %e, key = %ev.kv.key, "skipping undecodable object");
                            }
                            if let Some(name) = ev.kv.key.strip_prefix(CRD_PREFIX) {
                                self.definition_changed(name, ev);
                            }
                        }
                        if let Some(last) = events.last() {
                            rev = last.kv.mod_revision;
                            self.revision.send_replace(rev.get());
                        }
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch cache fell behind the store; reloading");
                        match self.load().await {
                            Ok(r) => rev = r,
                            Err(e) => tracing::error!(error = %e, "reload failed"),
                        }
                        break;
                    }
                }
            }
        }
    }

    fn caches_read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<ResourceCache>>> {
        self.caches.read().unwrap_or_else(|p| p.into_inner())
    }

    fn for_key(&self, key: &str) -> Option<Arc<ResourceCache>> {
        // Longest prefix wins: `/registry/apps/deployments/` before a core `/registry/apps...`.
        self.caches_read()
            .iter()
            .filter(|c| key.starts_with(&c.info.storage_prefix()))
            .max_by_key(|c| c.info.storage_prefix().len())
            .cloned()
    }

    /// `(resource, objects)` for every cache (`pods`, `deployments.apps`): what
    /// `apiserver_storage_objects` reports.
    pub fn object_counts(&self) -> Vec<(String, usize)> {
        self.caches_read()
            .iter()
            .map(|c| {
                let name = if c.info.group.is_empty() {
                    c.info.plural.to_owned()
                } else {
                    format!("{}.{}", c.info.plural, c.info.group)
                };
                (name, c.len())
            })
            .collect()
    }

    /// The cache of `info`'s objects (all versions of a custom resource share one). A custom
    /// resource whose definition has just gone gets an empty cache of its own.
    pub fn resource(&self, info: &'static ResourceInfo) -> Arc<ResourceCache> {
        let caches = self.caches_read();
        caches
            .iter()
            .find(|c| std::ptr::eq(c.info, info))
            .or_else(|| {
                caches
                    .iter()
                    .find(|c| c.info.plural == info.plural && c.info.group == info.group)
            })
            .cloned()
            .unwrap_or_else(|| ResourceCache::new(info))
    }

    /// The custom resources served.
    pub fn catalog(&self) -> &crate::crd::Catalog {
        &self.catalog
    }

    /// Serves what the definition `crd` says, with a cache for each resource it adds.
    fn define(&self, crd: &Value) {
        let served = self.catalog.set(crd);
        let mut caches = self.caches.write().unwrap_or_else(|p| p.into_inner());
        for r in served {
            let prefix = r.info.storage_prefix();
            if !caches.iter().any(|c| c.info.storage_prefix() == prefix) {
                caches.push(ResourceCache::new(&r.info));
            }
        }
    }

    /// Follows a definition written or deleted in the store.
    fn definition_changed(&self, name: &str, ev: &shoal_store::Event) {
        match ev.kind {
            EventKind::Put => match serde_json::from_slice::<Value>(&ev.kv.value) {
                Ok(crd) => self.define(&crd),
                Err(e) => tracing::error!(error = %e, name, "undecodable definition"),
            },
            EventKind::Delete => {
                let gone: Vec<String> = self
                    .catalog
                    .remove(name)
                    .iter()
                    .map(|r| r.info.storage_prefix())
                    .collect();
                self.caches
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|c| !gone.contains(&c.info.storage_prefix()));
            }
        }
    }

    /// Whether any cached object names `uid` in its `ownerReferences` (dependents live in the
    /// owner's namespace, or anywhere for a cluster-scoped owner).
    pub fn has_dependents(&self, uid: &str, namespace: Option<&str>) -> bool {
        self.caches_read().iter().any(|c| {
            let prefix = c
                .info
                .namespace_prefix(namespace.filter(|_| c.info.namespaced));
            c.list(&prefix, None).iter().any(|o| {
                o.value()
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    })
            })
        })
    }

    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    pub fn subscribe_revision(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Waits until the cache has caught up with the store's current revision.
    pub async fn sync(&self) -> ApiResult<i64> {
        let target = self.store.current_revision().await?.get();
        if self.revision() >= target {
            return Ok(self.revision());
        }
        let ask = async {
            loop {
                // Read each time: the watch may be (re)starting.
                let requester = self
                    .progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(r) = requester {
                    r.request();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            r = self.wait_for(target) => r,
            () = ask => unreachable!("asks until the wait ends"),
        }
    }

    pub async fn wait_for(&self, target: i64) -> ApiResult<i64> {
        let mut rx = self.revision.subscribe();
        let fut = rx.wait_for(|r| *r >= target);
        match tokio::time::timeout(std::time::Duration::from_secs(3), fut).await {
            Ok(Ok(r)) => Ok(*r),
            Ok(Err(_)) => {
                Err(StatusError::service_unavailable("the watch cache has stopped").into())
            }
            Err(_) => Err(ApiError(StatusError::too_large_resource_version(
                target,
                self.revision(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded(bytes: &[u8], rev: i64) -> Value {
        let o = CachedObject::decode("/k", bytes, rev).expect("decodes");
        let from_bytes: Value = serde_json::from_slice(&o.json).expect("valid JSON");
        assert_eq!(&from_bytes, o.value());
        from_bytes
    }

    #[test]
    fn stored_objects_get_their_revision_after_uid_without_a_parse() {
        let obj = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "a", "namespace": "d", "uid": "u-1", "resourceVersion": "9", "labels": {"uid": "x"}},
            "spec": {"template": {"metadata": {"uid": "no"}}}});
        let stored = encode_stored(&obj);
        assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
        let o = CachedObject::decode("/k", &stored, 42).unwrap();
        assert_eq!(
            std::str::from_utf8(&o.json).unwrap(),
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"d","uid":"u-1","resourceVersion":"42","labels":{"uid":"x"}},"spec":{"template":{"metadata":{"uid":"no"}}}}"#
        );
        assert_eq!(o.value()["spec"], obj["spec"]);
        // Objects stored the old way (metadata first) still decode.
        let old = br#"{"metadata":{"name":"a"},"kind":"Pod"}"#;
        assert_eq!(
            decoded(old, 7)["metadata"],
            json!({"resourceVersion": "7", "name": "a"})
        );
    }

    #[test]
    fn empty_missing_and_foreign_metadata_decode() {
        let back = decoded(&encode_stored(&json!({"kind": "X", "metadata": {}})), 3);
        assert_eq!(back["metadata"], json!({"resourceVersion": "3"}));
        let back = decoded(&encode_stored(&json!({"kind": "X"})), 4);
        assert_eq!(back["metadata"], json!({"resourceVersion": "4"}));
        // Bytes of another shape (no uid; nesting before it) take the parsing path.
        let back = decoded(br#"{"kind":"X","metadata":{"name":"n"}}"#, 5);
        assert_eq!(
            back["metadata"],
            json!({"name": "n", "resourceVersion": "5"})
        );
        let back = decoded(
            br#"{"kind":"X","metadata":{"labels":{"a":"b"},"uid":"u"}}"#,
            6,
        );
        assert_eq!(back["metadata"]["resourceVersion"], "6");
        assert_eq!(back["metadata"]["labels"], json!({"a": "b"}));
        assert!(CachedObject::decode("/k", b"not json", 1).is_err());
    }

    #[tokio::test]
    async fn consistent_reads_follow_writes_outside_the_registry() {
        let store: Arc<dyn Store> = Arc::new(shoal_store::memory::MemoryStore::new());
        let cache = WatchCache::start(store.clone(), &Default::default(), Default::default())
            .await
            .unwrap();
        // Another client of a shared store writes where the cache does not watch: only a
        // progress report from the store's watch can tell the cache it is up to date.
        let r = store
            .txn(shoal_store::Txn::new().put("/elsewhere/x", "v"))
            .await
            .unwrap()
            .revision;
        assert_eq!(cache.sync().await.unwrap(), r.get());
    }
}
