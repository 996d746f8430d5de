//! The one way every controller on kube-rs' controller runtime runs: each reconcile in a
//! `reconcile{controller, object}` span; a failed reconcile logged once and retried after a
//! back-off that doubles per object (100 ms up to 30 s, as a workqueue's rate limiter does)
//! and is forgotten when the object reconciles. Each controller's queue is measured as
//! Kubernetes' workqueue metrics are, by `name`: `workqueue_adds_total` (reconciles started),
//! `workqueue_depth` (kube-rs' controller hands items straight to reconciles, so this is the
//! items being reconciled), `workqueue_work_duration_seconds`, `workqueue_retries_total`.

use crate::Error;
use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// The first retry of a failed reconcile; doubled per failure in a row.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before a retry.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What every reconcile is given.
pub struct Ctx {
    pub client: kube::Client,
    /// The controller's name, for logs.
    name: &'static str,
    /// The current back-off of objects whose last reconcile failed.
    backoff: Mutex<HashMap<String, Duration>>,
}

impl Ctx {
    fn next_backoff(&self, key: &str) -> Duration {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let next = b.get(key).map_or(RETRY_FIRST, |d| (*d * 2).min(RETRY_MAX));
        b.insert(key.to_owned(), next);
        next
    }

    fn forget(&self, key: &str) {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if !b.is_empty() {
            b.remove(key);
        }
    }
}

fn key<K: kube::Resource>(obj: &K) -> String {
    let m = obj.meta();
    match &m.namespace {
        Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or("")),
        None => m.name.clone().unwrap_or_default(),
    }
}

/// Runs `controller` (with its watches set up) reconciling with `reconcile` until its
/// streams end.
pub async fn run<K, F, Fut>(
    name: &'static str,
    client: kube::Client,
    controller: Controller<K>,
    reconcile: F,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let ctx = Arc::new(Ctx {
        client,
        name,
        backoff: Mutex::default(),
    });
    controller
        .run(
            move |obj: Arc<K>, ctx: Arc<Ctx>| {
                let object = key(obj.as_ref());
                let span = tracing::info_span!("reconcile", controller = name, object = %object);
                let done = reconcile(obj, ctx.clone());
                metrics::counter!("workqueue_adds_total", "name" => name).increment(1);
                let depth = metrics::gauge!("workqueue_depth", "name" => name);
                depth.increment(1.0);
                let started = std::time::Instant::now();
                async move {
                    let r = done.await;
                    depth.decrement(1.0);
                    metrics::histogram!("workqueue_work_duration_seconds", "name" => name)
                        .record(started.elapsed().as_secs_f64());
                    if r.is_ok() {
                        ctx.forget(&object);
                    }
                    r
                }
                .instrument(span)
            },
            |obj: Arc<K>, e: &Error, ctx: Arc<Ctx>| {
                let object = key(obj.as_ref());
                let delay = ctx.next_backoff(&object);
                metrics::counter!("workqueue_retries_total", "name" => ctx.name).increment(1);
                tracing::warn!(controller = ctx.name, object = %object, error = %e, retry_in = ?delay, "reconcile failed; retrying");
                Action::requeue(delay)
            },
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(controller = name, error = %e, "reconcile");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_back_off_doubles_per_object_and_is_forgotten_on_success() {
        let ctx = Ctx {
            client: kube::Client::try_from(kube::Config::new(
                "http://127.0.0.1:1".parse().unwrap(),
            ))
            .unwrap(),
            name: "test",
            backoff: Mutex::default(),
        };
        assert_eq!(ctx.next_backoff("a"), RETRY_FIRST);
        assert_eq!(ctx.next_backoff("a"), RETRY_FIRST * 2);
        assert_eq!(ctx.next_backoff("b"), RETRY_FIRST);
        ctx.forget("a");
        assert_eq!(ctx.next_backoff("a"), RETRY_FIRST);
        for _ in 0..20 {
            ctx.next_backoff("c");
        }
        assert_eq!(ctx.next_backoff("c"), RETRY_MAX);
    }
}
