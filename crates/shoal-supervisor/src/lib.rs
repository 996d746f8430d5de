//! Supervised long-running tasks.
//!
//! Every task a Shoal process runs for its whole life (the scheduling loop, each controller,
//! the plugin loaders, the watch cache feeder, kubelet pod workers) is started through a
//! [`Supervisor`]: when it panics (or, for a service, ends before shutdown) the supervisor logs
//! the failure with the task's name, counts it, reports it to the health endpoints while it
//! lasts ([`Supervisor::readyz`]), and starts the task again after a back-off. Without it, a
//! panic in one spawned task ends that task silently and everything that depended on it waits
//! forever with nothing in the logs.
//!
//! Start at [`Supervisor::spawn`]. The supervisor does not decide what a task does on
//! shutdown: tasks watch their own `CancellationToken`; the supervisor only stops restarting.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first wait before a failed task starts again; doubled on each failure in a row.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a failed task starts again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a restarted task must run before it counts as healthy again (and its back-off is
/// reset): a task that fails at once on every start stays reported as failing.
pub const STABLE: Duration = Duration::from_secs(10);

/// What ending means for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// A service: it should run until shutdown, so ending early is a failure too.
    Always,
    /// A worker (a pod's, say): ending is being done; only a panic is a failure.
    OnPanic,
}

/// Starts, watches and restarts tasks; cheap to clone (one registry per process).
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tasks: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    /// Failures over the process's life, tasks that have ended included.
    failures: AtomicU64,
}

struct Entry {
    name: String,
    restarts: u64,
    last_failure: Option<String>,
    /// When the current run started; `None` while waiting to restart.
    running_since: Option<Instant>,
}

impl Entry {
    /// Why the task counts as failing now: waiting to restart, or restarted too recently.
    fn failing(&self, now: Instant) -> Option<&str> {
        let why = self.last_failure.as_deref()?;
        match self.running_since {
            Some(since) if now.duration_since(since) >= STABLE => None,
            _ => Some(why),
        }
    }
}

/// One task as the health endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    pub name: String,
    /// How many times it failed and was started again.
    pub restarts: u64,
    /// Why it is failing now, if it is (its last failure, until it has run for [`STABLE`]).
    pub failing: Option<String>,
}

/// Aborts the task when dropped: a helper task (a watch feeding a cache, say) that must end
/// with the task that started it, including when that task is restarted.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a task's entry when its supervising loop ends, however it ends.
struct Registration {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.lock().remove(&self.id);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic never happens while the lock is held (only map updates run under it).
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The message a panic carried, if it was a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        return format!("panicked: {s}");
    }
    if let Some(s) = payload.downcast_ref::<String>() {
        return format!("panicked: {s}");
    }
    "panicked".to_owned()
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `make()` as the task `name` until `shutdown` (or until the returned handle is
    /// aborted, which stops the current run too). A panic — or, for [`Restart::Always`], an
    /// end before `shutdown` — is logged, counted and reported by [`Supervisor::tasks`] while
    /// the task waits ([`INITIAL_BACKOFF`] doubling to [`MAX_BACKOFF`]) and for [`STABLE`]
    /// after it has started again.
    pub fn spawn<F, Fut>(
        &self,
        name: impl Into<String>,
        restart: Restart,
        shutdown: CancellationToken,
        mut make: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.lock().insert(
            id,
            Entry {
                name: name.clone(),
                restarts: 0,
                last_failure: None,
                running_since: Some(Instant::now()),
            },
        );
        let registration = Registration {
            inner: self.inner.clone(),
            id,
        };
        tokio::spawn(async move {
            let inner = registration.inner.clone();
            let mut delay = INITIAL_BACKOFF;
            loop {
                let started = Instant::now();
                if let Some(e) = inner.lock().get_mut(&id) {
                    e.running_since = Some(started);
                }
                let mut run = AbortOnDrop(tokio::spawn(make()));
                let why = match (&mut run.0).await {
                    Ok(()) if shutdown.is_cancelled() || restart == Restart::OnPanic => return,
                    Ok(()) => "ended before shutdown".to_owned(),
                    Err(e) if e.is_cancelled() => return,
                    Err(e) => panic_message(&*e.into_panic()),
                };
                if shutdown.is_cancelled() {
                    tracing::warn!(task = %name, error = %why, "task failed during shutdown");
                    return;
                }
                if started.elapsed() >= STABLE {
                    delay = INITIAL_BACKOFF;
                }
                inner.failures.fetch_add(1, Ordering::Relaxed);
                let restarts = {
                    let mut tasks = inner.lock();
                    let Some(e) = tasks.get_mut(&id) else { return };
                    e.restarts += 1;
                    e.last_failure = Some(why.clone());
                    e.running_since = None;
                    e.restarts
                };
                tracing::error!(task = %name, restarts, error = %why, retry_in = ?delay, "task failed; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        })
    }

    /// Every task running or waiting to restart, by name.
    pub fn tasks(&self) -> Vec<TaskReport> {
        let now = Instant::now();
        let mut out: Vec<TaskReport> = self
            .inner
            .lock()
            .values()
            .map(|e| TaskReport {
                name: e.name.clone(),
                restarts: e.restarts,
                failing: e.failing(now).map(str::to_owned),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The tasks failing now.
    pub fn failing(&self) -> Vec<TaskReport> {
        let mut out = self.tasks();
        out.retain(|t| t.failing.is_some());
        out
    }

    /// Failures over the process's life.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// The body of a Kubernetes-style `/readyz` (`[+]name ok` / `[-]name failed: why` lines,
    /// then `readyz check passed|failed`) and whether every check passed. Healthy tasks are
    /// listed only when `verbose`, as kube-apiserver lists passing checks.
    pub fn readyz(&self, verbose: bool) -> (bool, String) {
        let tasks = self.tasks();
        let ok = tasks.iter().all(|t| t.failing.is_none());
        let mut body = String::new();
        if verbose || !ok {
            body.push_str("[+]ping ok\n");
            for t in &tasks {
                match &t.failing {
                    Some(why) => body.push_str(&format!(
                        "[-]task/{} failed: {why} (restarted {} times)\n",
                        t.name, t.restarts
                    )),
                    None if verbose => body.push_str(&format!("[+]task/{} ok\n", t.name)),
                    None => {}
                }
            }
        }
        body.push_str(if ok {
            if verbose {
                "readyz check passed\n"
            } else {
                "ok"
            }
        } else {
            "readyz check failed\n"
        });
        (ok, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Lets the runtime run every task that is ready.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_with_back_off_and_reported_while_it_fails() {
        let sup = Supervisor::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let shutdown = CancellationToken::new();
        sup.spawn("scheduler", Restart::Always, shutdown.clone(), move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 2 {
                    panic!("boom {run}");
                }
                std::future::pending::<()>().await
            }
        });
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let report = sup.failing();
        assert_eq!(report.len(), 1, "{report:?}");
        assert_eq!(report[0].name, "scheduler");
        assert_eq!(report[0].restarts, 1);
        assert_eq!(report[0].failing.as_deref(), Some("panicked: boom 0"));
        let (ok, body) = sup.readyz(false);
        assert!(!ok);
        assert!(
            body.contains("[-]task/scheduler failed: panicked: boom 0 (restarted 1 times)")
                && body.ends_with("readyz check failed\n"),
            "{body}"
        );

        // Restarted after 1 s, fails again, waits 2 s (doubled), then stays up.
        tokio::time::sleep(INITIAL_BACKOFF).await;
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(sup.failing()[0].restarts, 2);
        tokio::time::sleep(INITIAL_BACKOFF).await;
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "back-off doubled");
        tokio::time::sleep(INITIAL_BACKOFF).await;
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        // Running again, but still reported until it has been up for STABLE.
        assert_eq!(sup.failing().len(), 1);
        tokio::time::sleep(STABLE).await;
        settle().await;
        assert!(sup.failing().is_empty());
        assert_eq!(sup.tasks()[0].restarts, 2);
        assert_eq!(sup.failures(), 2);
        assert_eq!(sup.readyz(false), (true, "ok".to_owned()));
        assert!(sup.readyz(true).1.contains("[+]task/scheduler ok"));
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_ends_early_is_restarted_but_a_finished_worker_is_not() {
        let sup = Supervisor::new();
        let shutdown = CancellationToken::new();
        let service_runs = Arc::new(AtomicUsize::new(0));
        let counted = service_runs.clone();
        sup.spawn(
            "controller/job",
            Restart::Always,
            shutdown.clone(),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {}
            },
        );
        let worker = sup.spawn("pod/a", Restart::OnPanic, shutdown.clone(), || async {});
        worker.await.unwrap();
        settle().await;
        let tasks = sup.tasks();
        assert_eq!(tasks.len(), 1, "the finished worker is gone: {tasks:?}");
        assert_eq!(tasks[0].failing.as_deref(), Some("ended before shutdown"));
        tokio::time::sleep(INITIAL_BACKOFF).await;
        settle().await;
        assert_eq!(service_runs.load(Ordering::SeqCst), 2);
        // After shutdown nothing is restarted and the task leaves the registry.
        shutdown.cancel();
        tokio::time::sleep(MAX_BACKOFF).await;
        settle().await;
        assert!(sup.tasks().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn aborting_a_supervised_task_stops_its_current_run() {
        let sup = Supervisor::new();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let d = dropped.clone();
        let handle = sup.spawn(
            "watch",
            Restart::Always,
            CancellationToken::new(),
            move || {
                let flag = Flag(d.clone());
                async move {
                    let _flag = flag;
                    std::future::pending::<()>().await
                }
            },
        );
        settle().await;
        handle.abort();
        settle().await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert!(sup.tasks().is_empty());
    }
}
