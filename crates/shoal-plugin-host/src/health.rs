//! How a loaded plugin is doing, and what it may cost the host when it misbehaves.
//!
//! Every call goes through [`Health::begin`], which returns a [`CallGuard`]; the guard records
//! the call's outcome when it is failed or dropped. A [`Health`] counts failures, keeps the
//! circuit breaker (a plugin that fails [`THRESHOLD`] times in a row is benched: calls are
//! refused at once with [`PluginError::Benched`] instead of paying its timeout, until a probe
//! call after [`BENCH_INITIAL`] — doubling to [`BENCH_MAX`] — succeeds), logs the plugin's
//! output and failures tagged with its name, and sends [`Notice`]s that the loader records as
//! Events on the plugin object. Logs and notices are rate-limited per plugin, so a plugin
//! that fails or prints on every call cannot flood the logs or the API.
//!
//! The common path — a healthy plugin's call — costs two relaxed atomic loads.

use crate::output::{Bucket, Capture};
use crate::{PluginError, PluginKey};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures in a row that bench a plugin.
pub const THRESHOLD: u32 = 5;
/// How long a plugin is first benched.
pub const BENCH_INITIAL: Duration = Duration::from_secs(30);
/// The longest bench (each failed probe doubles it).
pub const BENCH_MAX: Duration = Duration::from_secs(300);

/// Output lines logged per plugin: a burst, then one per this period.
const LOG_BURST: u32 = 20;
const LOG_EVERY: Duration = Duration::from_millis(200);
/// Failure events per plugin: a burst, then one per this period.
const EVENT_BURST: u32 = 5;
const EVENT_EVERY: Duration = Duration::from_secs(10);

/// Something an Event on the plugin object should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub key: PluginKey,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Where a plugin's notices go (the loader turns them into Events); full means dropped
/// (they are logged too).
pub type Notices = tokio::sync::mpsc::Sender<Notice>;

/// Why a plugin is benched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Benched {
    /// How long this bench lasts.
    pub period: Duration,
    /// Failures in a row that led to it.
    pub failures: u32,
    /// The last failure.
    pub last: String,
}

impl std::fmt::Display for Benched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "benched for {}s after {} failures in a row (last: {})",
            self.period.as_secs(),
            self.failures,
            self.last
        )
    }
}

/// The state of one loaded plugin.
pub struct Health {
    key: PluginKey,
    /// How logs and messages name the plugin (`scheduler plugin avoid`).
    label: String,
    /// The reason of failure events (`PluginFailed`, `PolicyFailed`).
    failed_reason: &'static str,
    failures: AtomicI64,
    in_a_row: AtomicU32,
    /// Milliseconds after `epoch` until which the plugin is benched; 0 when it is not.
    benched_until: AtomicU64,
    /// A probe call is under way.
    probing: AtomicBool,
    bench: Mutex<Option<Benched>>,
    epoch: Instant,
    log: Mutex<Bucket>,
    events: Mutex<Bucket>,
    notices: Option<Notices>,
}

impl Health {
    pub fn new(
        key: PluginKey,
        label: String,
        failed_reason: &'static str,
        notices: Option<Notices>,
    ) -> Arc<Self> {
        Arc::new(Health {
            key,
            label,
            failed_reason,
            failures: AtomicI64::new(0),
            in_a_row: AtomicU32::new(0),
            benched_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            bench: Mutex::new(None),
            epoch: Instant::now(),
            log: Mutex::new(Bucket::new(LOG_BURST, LOG_EVERY)),
            events: Mutex::new(Bucket::new(EVENT_BURST, EVENT_EVERY)),
            notices,
        })
    }

    pub fn key(&self) -> &PluginKey {
        &self.key
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Calls that failed since the module was loaded (refusals while benched not counted).
    pub fn failures(&self) -> i64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the plugin is benched, while it is.
    pub fn benched(&self) -> Option<Benched> {
        if self.benched_until.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.bench.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        // At least 1, so 0 can mean "not benched".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Starts a call. While the plugin is benched this is [`PluginError::Benched`] — except
    /// for one probe call once the bench is over, whose outcome ends or renews the bench.
    pub fn begin(self: &Arc<Self>) -> Result<CallGuard, PluginError> {
        let until = self.benched_until.load(Ordering::Relaxed);
        let probe = until != 0;
        if probe
            && (self.now_ms() < until
                || self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err())
        {
            let why = self
                .benched()
                .map(|b| b.to_string())
                .unwrap_or_else(|| "benched".into());
            self.count_failure("Benched");
            return Err(PluginError::Benched(why));
        }
        Ok(CallGuard {
            health: self.clone(),
            started: Instant::now(),
            probe,
            done: false,
        })
    }

    fn succeeded(&self, probe: bool) {
        if self.in_a_row.load(Ordering::Relaxed) != 0 {
            self.in_a_row.store(0, Ordering::Relaxed);
        }
        if probe {
            *self.bench.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.benched_until.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            tracing::info!(plugin = %self.label, "plugin answered its probe call; no longer benched");
            self.notify(
                "Normal",
                "PluginRecovered",
                "answered its probe call; no longer benched".into(),
            );
        }
    }

    fn failed(&self, e: &PluginError, probe: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let in_a_row = self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        let allowed = self.events.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(suppressed) = allowed {
            tracing::warn!(plugin = %self.label, reason = e.reason(), error = %e, suppressed, "plugin call failed");
            self.notify("Warning", self.failed_reason, e.to_string());
        }
        if !probe && in_a_row < THRESHOLD {
            return;
        }
        let mut bench = self.bench.lock().unwrap_or_else(|p| p.into_inner());
        let period = match (&*bench, probe) {
            // Another call benched it meanwhile.
            (Some(_), false) => return,
            (Some(b), true) => (b.period * 2).min(BENCH_MAX),
            (None, _) => BENCH_INITIAL,
        };
        let benched = Benched {
            period,
            failures: in_a_row,
            last: e.to_string(),
        };
        tracing::warn!(plugin = %self.label, "plugin {benched}");
        self.notify("Warning", "PluginBenched", benched.to_string());
        *bench = Some(benched);
        self.benched_until
            .store(self.now_ms() + period.as_millis() as u64, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    /// Sends a notice for an Event on the plugin object (dropped if the queue is full).
    pub fn notify(&self, type_: &'static str, reason: &'static str, message: String) {
        if let Some(tx) = &self.notices {
            let _ = tx.try_send(Notice {
                key: self.key.clone(),
                type_,
                reason,
                message,
            });
        }
    }

    /// Logs what a call wrote since the last time (and forgets it), tagged with the plugin's
    /// name, within the plugin's log budget.
    pub fn log_output(&self, capture: &Capture) {
        if capture.total() == 0 {
            return;
        }
        let lines = capture.take_lines();
        let mut bucket = self.log.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines {
            match bucket.take() {
                Some(0) => tracing::info!(plugin = %self.label, "{line}"),
                Some(suppressed) => {
                    tracing::info!(plugin = %self.label, suppressed, "{line}")
                }
                None => {}
            }
        }
    }
}

impl Health {
    /// `shoal_plugin_call_failures_total{kind, plugin, reason}`.
    fn count_failure(&self, reason: &'static str) {
        metrics::counter!(
            "shoal_plugin_call_failures_total",
            "kind" => self.key.kind,
            "plugin" => self.key.name.clone(),
            "reason" => reason,
        )
        .increment(1);
    }

    /// `shoal_plugin_call_duration_seconds{kind, plugin, result}`.
    fn time_call(&self, started: Instant, result: &'static str) {
        metrics::histogram!(
            "shoal_plugin_call_duration_seconds",
            "kind" => self.key.kind,
            "plugin" => self.key.name.clone(),
            "result" => result,
        )
        .record(started.elapsed().as_secs_f64());
    }
}

/// One call in progress. Dropping it records a success; [`CallGuard::fail`] a failure. Both
/// are timed and counted in the plugin metrics.
pub struct CallGuard {
    health: Arc<Health>,
    started: Instant,
    probe: bool,
    done: bool,
}

impl CallGuard {
    /// Records that the call failed with `e` (a [`PluginError::Benched`] is not counted).
    pub fn fail(mut self, e: &PluginError) {
        self.done = true;
        self.health.time_call(self.started, "error");
        self.health.count_failure(e.reason());
        if matches!(e, PluginError::Benched(_)) {
            return;
        }
        self.health.failed(e, self.probe);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.health.time_call(self.started, "success");
            self.health.succeeded(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> (Arc<Health>, tokio::sync::mpsc::Receiver<Notice>) {
        let (tx, rx) = tokio::sync::mpsc::channel(100);
        let key = PluginKey::cluster("SchedulerPlugin", "loops");
        (
            Health::new(
                key,
                "scheduler plugin loops".into(),
                "PluginFailed",
                Some(tx),
            ),
            rx,
        )
    }

    fn timeout() -> PluginError {
        PluginError::Timeout {
            after: Duration::from_millis(100),
            written: Default::default(),
        }
    }

    #[test]
    fn five_failures_in_a_row_bench_the_plugin_and_a_success_in_between_resets_the_count() {
        let (h, mut rx) = health();
        for _ in 0..4 {
            h.begin().unwrap().fail(&timeout());
        }
        drop(h.begin().unwrap());
        for _ in 0..4 {
            h.begin().unwrap().fail(&timeout());
        }
        assert!(h.benched().is_none());
        h.begin().unwrap().fail(&timeout());
        let b = h.benched().expect("benched");
        assert_eq!(b.period, BENCH_INITIAL);
        assert_eq!(
            b.to_string(),
            "benched for 30s after 5 failures in a row (last: plugin timed out after 100ms)"
        );
        let Err(PluginError::Benched(why)) = h.begin() else {
            panic!("calls are refused while benched")
        };
        assert!(why.starts_with("benched for 30s"), "{why}");
        assert_eq!(h.failures(), 9, "refusals are not failures");
        let mut reasons = Vec::new();
        while let Ok(n) = rx.try_recv() {
            reasons.push(n.reason);
        }
        // Failure events are rate-limited (a burst of 5); the bench is always reported.
        assert_eq!(reasons.iter().filter(|r| **r == "PluginFailed").count(), 5);
        assert_eq!(reasons.last(), Some(&"PluginBenched"));
    }

    #[test]
    fn after_the_bench_one_probe_decides_and_a_failed_probe_doubles_the_bench() {
        let (h, _rx) = health();
        for _ in 0..THRESHOLD {
            h.begin().unwrap().fail(&timeout());
        }
        // Pretend the bench is over.
        h.benched_until.store(1, Ordering::Release);
        let probe = h.begin().expect("the probe call goes ahead");
        assert!(h.begin().is_err(), "only one probe at a time");
        probe.fail(&timeout());
        assert_eq!(h.benched().unwrap().period, BENCH_INITIAL * 2);
        h.benched_until.store(1, Ordering::Release);
        drop(h.begin().expect("probe"));
        assert!(h.benched().is_none());
        assert!(h.begin().is_ok());
    }
}
