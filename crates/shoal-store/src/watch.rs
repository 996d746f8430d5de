//! Watch delivery shared by the backends: replay from history, then follow live commits.
//!
//! Every backend commits on one writer and then publishes the committed revision's events on a
//! broadcast channel. A watcher subscribes *before* reading history, so an event is either in
//! the history it reads or on the channel it holds (or both, deduplicated by revision): no gap.
//! A watcher that falls behind the channel re-reads history from where it was.
//!
//! A watch also reports progress on request ([`WatchStream::request_progress`]): "every change
//! up to revision R under this prefix has been delivered", in band, as etcd's progress
//! notifications do. The watch cache uses it to serve consistent reads when nothing under
//! its prefix changed.

use crate::{Event, Revision, StoreError};
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{Notify, broadcast, mpsc};

/// The events of one committed revision.
pub(crate) type Batch = Arc<Vec<Event>>;

/// Read access to the revision log a backend keeps for watches.
pub(crate) trait History: Send + Sync + 'static {
    /// All events in `[start, end)` (or of key `start` when `end` is empty) with a revision
    /// `>= from`, in order, or [`StoreError::Compacted`] if `from` is not after the last
    /// compaction. Also returns the revision the read was served at: every later event comes
    /// after it.
    fn history(
        &self,
        start: &str,
        end: &str,
        from: Revision,
    ) -> Result<(Vec<Event>, Revision), StoreError>;
    fn current(&self) -> Revision;
}

/// Fans committed batches out to watchers.
#[derive(Clone)]
pub(crate) struct WatchHub {
    tx: broadcast::Sender<Batch>,
}

impl WatchHub {
    pub(crate) fn new() -> Self {
        // Enough for bursts of group commits; a watcher that lags further re-reads history.
        let (tx, _) = broadcast::channel(4096);
        WatchHub { tx }
    }

    pub(crate) fn publish(&self, batch: Batch) {
        // No receivers is not an error: nobody is watching.
        let _ = self.tx.send(batch);
    }

    pub(crate) fn watch<H: History>(
        &self,
        history: Arc<H>,
        prefix: &str,
        from: Revision,
    ) -> WatchStream {
        let rx = self.tx.subscribe();
        let (out, out_rx) = mpsc::channel(256);
        let start = prefix.to_owned();
        let end = crate::prefix_end(prefix);
        let from = if from == Revision::ZERO {
            history.current().next()
        } else {
            from
        };
        let progress = ProgressRequester::default();
        let task = tokio::spawn(follow(history, rx, out, progress.clone(), start, end, from));
        WatchStream::new(out_rx, task.abort_handle(), progress)
    }
}

async fn follow<H: History>(
    history: Arc<H>,
    mut rx: broadcast::Receiver<Batch>,
    out: mpsc::Sender<Result<WatchItem, StoreError>>,
    progress: ProgressRequester,
    start: String,
    end: String,
    mut next: Revision,
) {
    let in_range = |key: &str| key >= start.as_str() && key < end.as_str();
    let mut catch_up = true;
    loop {
        if catch_up {
            let h = history.clone();
            let (s, e) = (start.clone(), end.clone());
            let read = tokio::task::spawn_blocking(move || h.history(&s, &e, next)).await;
            let events = match read {
                Ok(r) => r,
                Err(join) => Err(StoreError::backend(join)),
            };
            match events {
                Ok((events, upto)) => {
                    for group in group_by_revision(events) {
                        if out.send(Ok(WatchItem::Events(group))).await.is_err() {
                            return;
                        }
                    }
                    next = next.max(upto.next());
                }
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            }
            catch_up = false;
        }
        let received = tokio::select! {
            r = rx.recv() => r,
            () = progress.0.notified() => {
                let upto = Revision(next.0 - 1);
                if out.send(Ok(WatchItem::Progress(upto))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match received {
            Ok(batch) => {
                let Some(first) = batch.first() else { continue };
                if first.revision() < next {
                    continue;
                }
                if first.revision() > next {
                    // A revision we have not seen was published before we subscribed to
                    // this one: read it from history rather than skip it.
                    catch_up = true;
                    continue;
                }
                next = first.revision().next();
                let events: Vec<Event> = batch
                    .iter()
                    .filter(|e| in_range(&e.kv.key))
                    .cloned()
                    .collect();
                if !events.is_empty() && out.send(Ok(WatchItem::Events(events))).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
            Err(broadcast::error::RecvError::Closed) => {
                let _ = out.send(Err(StoreError::Closed)).await;
                return;
            }
        }
    }
}

/// Splits events into one group per revision, keeping their order.
pub(crate) fn group_by_revision(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut groups: Vec<Vec<Event>> = Vec::new();
    for e in events {
        match groups.last_mut() {
            Some(g) if g[0].revision() == e.revision() => g.push(e),
            _ => groups.push(vec![e]),
        }
    }
    groups
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// The changes of one revision under the watched prefix.
    Events(Vec<Event>),
    /// Every change up to this revision has been delivered (answer to a progress request).
    Progress(Revision),
}

/// Asks a running watch to report its progress; cheap to clone, usable from anywhere.
#[derive(Clone, Default)]
pub struct ProgressRequester(pub(crate) Arc<Notify>);

impl ProgressRequester {
    /// The watch answers with a [`WatchItem::Progress`] as soon as it can; requests made
    /// before it answers are merged into one.
    pub fn request(&self) {
        self.0.notify_one();
    }
}

/// The changes a watch delivers, grouped by revision, in revision order. Dropping it cancels
/// the watch.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchItem, StoreError>>,
    task: tokio::task::AbortHandle,
    progress: ProgressRequester,
}

impl WatchStream {
    /// A stream fed by `task` through `rx`; `progress` reaches the task.
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<WatchItem, StoreError>>,
        task: tokio::task::AbortHandle,
        progress: ProgressRequester,
    ) -> Self {
        WatchStream { rx, task, progress }
    }

    /// The next revision's events, skipping progress reports; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Vec<Event>, StoreError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The next event group or progress report; `None` once the watch has ended.
    pub async fn next_item(&mut self) -> Option<Result<WatchItem, StoreError>> {
        self.rx.recv().await
    }

    /// A handle that asks this watch for a [`WatchItem::Progress`].
    pub fn progress_requester(&self) -> ProgressRequester {
        self.progress.clone()
    }

    /// The same changes with every value (and previous value) passed through `f`, as a store
    /// layered over another (one that decrypts) delivers them. `f` gets the key and the value;
    /// an error from it ends the stream with that error.
    pub fn map_values<F>(mut self, f: F) -> WatchStream
    where
        F: Fn(&str, Bytes) -> Result<Bytes, StoreError> + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let progress = self.progress.clone();
        let task = tokio::spawn(async move {
            while let Some(item) = self.next_item().await {
                let item = item.and_then(|item| match item {
                    WatchItem::Events(events) => events
                        .into_iter()
                        .map(|mut e| {
                            e.kv.value = f(&e.kv.key, std::mem::take(&mut e.kv.value))?;
                            if let Some(p) = e.prev_kv.as_mut() {
                                p.value = f(&p.key, std::mem::take(&mut p.value))?;
                            }
                            Ok(e)
                        })
                        .collect::<Result<Vec<_>, StoreError>>()
                        .map(WatchItem::Events),
                    other => Ok(other),
                });
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        })
        .abort_handle();
        WatchStream::new(rx, task, progress)
    }
}

impl Stream for WatchStream {
    type Item = Result<Vec<Event>, StoreError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(WatchItem::Progress(_)))) => continue,
                Poll::Ready(Some(Ok(WatchItem::Events(e)))) => Poll::Ready(Some(Ok(e))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
