//! The `etcd` backend: a [`Store`] on a real etcd cluster, the distributed engine for users
//! who run several API servers.
//!
//! The mapping is one to one: store revisions are etcd revisions, transactions are etcd
//! transactions comparing `mod_revision`, watches are etcd watches with `prev_kv` (progress
//! requests become [`WatchItem::Progress`]), compaction is etcd compaction, range reads are
//! etcd ranged gets. Keys keep the same `/registry/...` layout as the embedded store.

use crate::watch::{ProgressRequester, WatchItem, group_by_revision};
use crate::{
    Compare, Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Revision, Store,
    StoreError, Txn, TxnResult, WatchStream,
};
use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as etcd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// How to reach an etcd cluster.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379`; requests are balanced across them.
    pub endpoints: Vec<String>,
    /// CA bundle (PEM) that signed the etcd servers' certificates; enables TLS.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A [`Store`] on etcd. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct EtcdStore {
    client: etcd::Client,
}

/// Key of an empty range used to read the current revision and to probe compaction; nothing
/// is ever written there.
const PROBE_KEY: &str = "\u{0}shoal/probe";

fn backend(e: etcd::Error) -> StoreError {
    StoreError::backend(e)
}

fn kv_of(kv: &etcd::KeyValue) -> Result<KeyValue, StoreError> {
    let key = kv
        .key_str()
        .map_err(|_| StoreError::Corrupt {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
        })?
        .to_owned();
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: Revision(kv.create_revision()),
        mod_revision: Revision(kv.mod_revision()),
        version: kv.version(),
    })
}

fn header_revision(h: Option<&etcd::ResponseHeader>) -> Revision {
    Revision(h.map(|h| h.revision()).unwrap_or_default())
}

/// Whether the request certainly never reached etcd (the member's port refused the
/// connection), so that even a write can be sent again, to another member.
fn never_sent(e: &etcd::Error) -> bool {
    match e {
        etcd::Error::TransportError(_) => true,
        etcd::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("tcp connect error")
        }
        _ => false,
    }
}

/// Whether a read may be retried: it changes nothing, so any unavailability qualifies.
fn unavailable(e: &etcd::Error) -> bool {
    matches!(e, etcd::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable) || never_sent(e)
}

/// Runs `f` again (up to 10 times, backing off) while its error says it may be: always when
/// the request never left, and on any unavailability when `idempotent`. With one member of a
/// cluster down, its connection is refused until the client stops choosing it.
async fn retry<T, F, Fut>(idempotent: bool, mut f: F) -> Result<T, etcd::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Err(e) if attempt < 10 && (never_sent(&e) || (idempotent && unavailable(&e))) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            r => return r,
        }
    }
}

/// What an etcd error message says, for the errors with a meaning of their own.
enum Known {
    Compacted,
    Future,
    Other,
}

fn classify(e: &etcd::Error) -> Known {
    let msg = match e {
        etcd::Error::GRpcStatus(s) => s.message(),
        _ => return Known::Other,
    };
    if msg.contains("required revision has been compacted") {
        Known::Compacted
    } else if msg.contains("required revision is a future revision") {
        Known::Future
    } else {
        Known::Other
    }
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers.
    pub async fn connect(opts: &EtcdOptions) -> Result<Self, StoreError> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::backend(std::io::Error::other(
                "no etcd endpoints given",
            )));
        }
        let mut connect = etcd::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if let Some(tls) = tls_options(opts)? {
            connect = connect.with_tls(tls);
        }
        let client = etcd::Client::connect(&opts.endpoints, Some(connect))
            .await
            .map_err(backend)?;
        let store = EtcdStore { client };
        store.current_revision().await?;
        Ok(store)
    }

    async fn compacted_error(&self, requested: Revision) -> StoreError {
        StoreError::Compacted {
            requested,
            compacted: self.compacted_revision().await.unwrap_or(requested),
        }
    }

    async fn future_error(&self, requested: Revision) -> StoreError {
        StoreError::FutureRevision {
            requested,
            current: self.current_revision().await.unwrap_or_default(),
        }
    }

    /// Maps an etcd error about reading at `requested` to the store's own.
    async fn read_error(&self, e: etcd::Error, requested: Revision) -> StoreError {
        match classify(&e) {
            Known::Compacted => self.compacted_error(requested).await,
            Known::Future => self.future_error(requested).await,
            Known::Other => backend(e),
        }
    }
}

fn tls_options(opts: &EtcdOptions) -> Result<Option<etcd::TlsOptions>, StoreError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| {
            StoreError::backend(std::io::Error::new(
                e.kind(),
                format!("reading {}: {e}", p.display()),
            ))
        })
    };
    let https = opts.endpoints.iter().any(|e| e.starts_with("https://"));
    if opts.ca_file.is_none() && opts.cert_file.is_none() && !https {
        return Ok(None);
    }
    let mut tls = etcd::TlsOptions::new();
    if let Some(ca) = &opts.ca_file {
        tls = tls.ca_certificate(etcd::Certificate::from_pem(read(ca)?));
    }
    match (&opts.cert_file, &opts.key_file) {
        (Some(c), Some(k)) => tls = tls.identity(etcd::Identity::from_pem(read(c)?, read(k)?)),
        (None, None) => {}
        _ => {
            return Err(StoreError::backend(std::io::Error::other(
                "an etcd client certificate needs both a certificate and a key file",
            )));
        }
    }
    Ok(Some(tls))
}

#[async_trait]
impl Store for EtcdStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let compares: Vec<etcd::Compare> = txn
            .compare
            .iter()
            .map(|c| match c {
                // A missing key's mod_revision compares as 0 in etcd too.
                Compare::ModRevision { key, revision } => etcd::Compare::mod_revision(
                    key.as_str(),
                    etcd::CompareOp::Equal,
                    revision.get(),
                ),
            })
            .collect();
        let success: Vec<etcd::TxnOp> = txn
            .success
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => etcd::TxnOp::put(
                    key.as_str(),
                    value.to_vec(),
                    Some(etcd::PutOptions::new().with_prev_key()),
                ),
                Op::Delete { key } => etcd::TxnOp::delete(
                    key.as_str(),
                    Some(etcd::DeleteOptions::new().with_prev_key()),
                ),
            })
            .collect();
        let failure: Vec<etcd::TxnOp> = txn
            .failure_get
            .iter()
            .map(|k| etcd::TxnOp::get(k.as_str(), None))
            .collect();
        let request = etcd::Txn::new()
            .when(compares)
            .and_then(success)
            .or_else(failure);
        let resp = retry(false, || {
            let (mut c, r) = (self.client.clone(), request.clone());
            async move { c.txn(r).await }
        })
        .await
        .map_err(backend)?;
        let revision = header_revision(resp.header());
        let mut out = TxnResult {
            succeeded: resp.succeeded(),
            revision,
            results: Vec::new(),
            prev: Vec::new(),
            current: Vec::new(),
        };
        let responses = resp.op_responses();
        if resp.succeeded() {
            for (op, r) in txn.success.iter().zip(responses) {
                match (op, r) {
                    (Op::Put { key, value }, etcd::TxnOpResponse::Put(p)) => {
                        let prev = p.prev_key().map(kv_of).transpose()?;
                        out.results.push(Some(KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                            mod_revision: revision,
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                        }));
                        out.prev.push(prev);
                    }
                    (Op::Delete { .. }, etcd::TxnOpResponse::Delete(d)) => {
                        out.results.push(None);
                        out.prev.push(d.prev_kvs().first().map(kv_of).transpose()?);
                    }
                    _ => {
                        return Err(StoreError::backend(std::io::Error::other(
                            "etcd answered a transaction with responses that do not match its operations",
                        )));
                    }
                }
            }
        } else {
            for r in responses {
                if let etcd::TxnOpResponse::Get(g) = r {
                    out.current.push(g.kvs().first().map(kv_of).transpose()?);
                }
            }
        }
        Ok(out)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let mut opts = etcd::GetOptions::new();
        if !req.end.is_empty() {
            opts = opts.with_range(req.end.as_str());
        }
        if req.limit > 0 {
            opts = opts.with_limit(req.limit as i64);
        }
        let at = req.revision.filter(|r| r.get() > 0);
        if let Some(r) = at {
            opts = opts.with_revision(r.get());
        }
        let resp = match retry(true, || {
            let (mut c, o, k) = (self.client.clone(), opts.clone(), req.start.clone());
            async move { c.get(k, Some(o)).await }
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.read_error(e, at.unwrap_or_default()).await),
        };
        let kvs = resp.kvs().iter().map(kv_of).collect::<Result<_, _>>()?;
        Ok(RangeResponse {
            kvs,
            more: resp.more(),
            count: usize::try_from(resp.count()).unwrap_or_default(),
            revision: at.unwrap_or_else(|| header_revision(resp.header())),
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let mut opts = etcd::WatchOptions::new()
            .with_prev_key()
            .with_progress_notify()
            .with_range(crate::prefix_end(prefix));
        if from.get() > 0 {
            opts = opts.with_start_revision(from.get());
        }
        let stream = retry(true, || {
            let (mut c, o, k) = (self.client.watch_client(), opts.clone(), prefix.to_owned());
            async move { c.watch(k, Some(o)).await }
        })
        .await
        .map_err(backend)?;
        let (out, rx) = mpsc::channel(256);
        let progress = ProgressRequester::default();
        let task = tokio::spawn(follow(stream, out, progress.clone(), from));
        Ok(WatchStream::new(rx, task.abort_handle(), progress))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self
            .client
            .clone()
            .compact(
                revision.get(),
                Some(etcd::CompactionOptions::new().with_physical()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.read_error(e, revision).await),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = retry(true, || {
            let mut c = self.client.clone();
            async move {
                c.get(PROBE_KEY, Some(etcd::GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await
        .map_err(backend)?;
        Ok(header_revision(resp.header()))
    }

    /// etcd does not report its compaction point directly. A read at revision 1 tells whether
    /// history was compacted at all; if so, a watch from revision 1 is cancelled with the
    /// compaction revision.
    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        let probe = etcd::GetOptions::new().with_revision(1).with_count_only();
        match retry(true, || {
            let (mut c, o) = (self.client.clone(), probe.clone());
            async move { c.get(PROBE_KEY, Some(o)).await }
        })
        .await
        {
            Ok(_) => return Ok(Revision::ZERO),
            Err(e) if matches!(classify(&e), Known::Compacted) => {}
            Err(e) => return Err(backend(e)),
        }
        let mut stream = self
            .client
            .watch_client()
            .watch(
                PROBE_KEY,
                Some(etcd::WatchOptions::new().with_start_revision(1)),
            )
            .await
            .map_err(backend)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let msg = tokio::time::timeout_at(deadline, stream.message())
                .await
                .map_err(|_| {
                    StoreError::backend(std::io::Error::other(
                        "etcd did not report its compaction revision within 10s",
                    ))
                })?
                .map_err(backend)?;
            let Some(resp) = msg else {
                return Err(StoreError::Closed);
            };
            if resp.compact_revision() > 0 {
                return Ok(Revision(resp.compact_revision()));
            }
            if resp.canceled() {
                return Err(StoreError::backend(std::io::Error::other(format!(
                    "etcd cancelled a watch: {}",
                    resp.cancel_reason()
                ))));
            }
        }
    }
}

fn event_of(e: &etcd::Event) -> Result<Option<Event>, StoreError> {
    let Some(kv) = e.kv() else { return Ok(None) };
    let mut kv = kv_of(kv)?;
    let kind = match e.event_type() {
        etcd::EventType::Put => EventKind::Put,
        etcd::EventType::Delete => {
            kv.value = Bytes::new();
            EventKind::Delete
        }
    };
    Ok(Some(Event {
        kind,
        kv,
        prev_kv: e.prev_kv().map(kv_of).transpose()?,
    }))
}

/// Forwards an etcd watch's responses, one revision per item, and progress requests to etcd.
///
/// etcd before 3.4.31/3.5.13 may answer a progress request while the watch is still replaying
/// history, with a revision ahead of events not yet sent (etcd-io/etcd#15220). So progress is
/// reported only once the watch is known to have caught up: it started at or after the
/// revision current when it was created, or it has delivered an event or a periodic
/// notification (which etcd sends only to caught-up watches) at or past that revision.
async fn follow(
    stream: etcd::WatchStream,
    out: mpsc::Sender<Result<WatchItem, StoreError>>,
    progress: ProgressRequester,
    from: Revision,
) {
    let (mut requests, mut responses) = stream.split();
    // The store revision when the watch was created (from its `created` response).
    let mut created_at: Option<Revision> = None;
    let mut synced = false;
    loop {
        let msg = tokio::select! {
            m = responses.message() => m,
            () = progress.0.notified() => {
                if let Err(e) = requests.request_progress().await {
                    let _ = out.send(Err(backend(e))).await;
                    return;
                }
                continue;
            }
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = out
                    .send(Err(StoreError::backend(std::io::Error::other(
                        "etcd ended the watch stream",
                    ))))
                    .await;
                return;
            }
            Err(e) => {
                let _ = out.send(Err(backend(e))).await;
                return;
            }
        };
        if resp.compact_revision() > 0 {
            let _ = out
                .send(Err(StoreError::Compacted {
                    requested: from,
                    compacted: Revision(resp.compact_revision()),
                }))
                .await;
            return;
        }
        if resp.canceled() {
            let reason = resp.cancel_reason().to_owned();
            let _ = out
                .send(Err(StoreError::backend(std::io::Error::other(format!(
                    "etcd cancelled the watch: {reason}"
                )))))
                .await;
            return;
        }
        let at = header_revision(resp.header());
        if resp.created() {
            created_at = Some(at);
            synced = from.get() == 0 || from > at;
            continue;
        }
        if resp.events().is_empty() {
            // A periodic notification (watch id of this watch) comes only to caught-up
            // watches; an answer to a request (id -1 in 3.4) may not.
            if resp.watch_id() >= 0 && created_at.is_some_and(|c| at >= c) {
                synced = true;
            }
            if synced && out.send(Ok(WatchItem::Progress(at))).await.is_err() {
                return;
            }
            continue;
        }
        let mut events = Vec::with_capacity(resp.events().len());
        for e in resp.events() {
            match event_of(e) {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => {}
                Err(err) => {
                    let _ = out.send(Err(err)).await;
                    return;
                }
            }
        }
        if let (Some(last), Some(c)) = (events.last(), created_at)
            && last.kv.mod_revision >= c
        {
            synced = true;
        }
        for group in group_by_revision(events) {
            if out.send(Ok(WatchItem::Events(group))).await.is_err() {
                return;
            }
        }
    }
}
