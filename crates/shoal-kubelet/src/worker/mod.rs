//! One pod's worker: sandbox, volumes, init containers in order, containers with their restart
//! policy and back-off, probes, deadline, graceful deletion, and the status and events of all of it.
//!
//! This file holds the worker's loop and its state; `containers.rs` starting containers and
//! reacting to their exits and probes, `termination.rs` stopping them (deletion, deadline,
//! eviction), `report.rs` the status it writes.

mod containers;
mod report;
mod termination;

use crate::events::{Kind as EventKind, Recorder};
use crate::probe::{self, Kind as ProbeKind, Report};
use crate::resolve::{self, VolumeDir};
use crate::status::{self, Ctr, State, Term};
use crate::{Kubelet, PodEntry};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use shoal_api::pod::PodExt;
use shoal_runtime::{ContainerId, ContainerStatus, Sandbox, SandboxConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How soon a step that failed for a reason outside the pod (a missing ConfigMap, a pull error)
/// is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Why a container did not start, as its waiting state shows it, and when to try again.
struct NotStarted {
    reason: String,
    message: String,
    retry: Duration,
}

impl NotStarted {
    fn config(e: resolve::ResolveError) -> Self {
        Self {
            reason: "CreateContainerConfigError".into(),
            message: e.0,
            retry: RETRY,
        }
    }

    fn soon(reason: &str, e: shoal_runtime::RuntimeError) -> Self {
        Self {
            reason: reason.into(),
            message: e.to_string(),
            retry: RETRY,
        }
    }
}

pub(crate) enum Msg {
    /// The eviction manager's verdict: stop everything now and fail the pod as `Evicted`.
    Evict { message: String },
    Exited {
        idx: usize,
        run: u64,
        status: Box<ContainerStatus>,
    },
    Probe {
        idx: usize,
        run: u64,
        report: Report,
    },
}

struct Worker {
    k: Arc<Kubelet>,
    pod: Pod,
    ns: String,
    name: String,
    uid: String,
    dir: PathBuf,
    events: Recorder,
    sandbox: Option<Sandbox>,
    /// The pod's IP, kept in the status after the sandbox is gone.
    ip: Option<std::net::IpAddr>,
    volumes: Option<HashMap<String, VolumeDir>>,
    /// When the projected service account tokens are to be renewed.
    token_refresh: Option<Instant>,
    ctrs: Vec<Ctr>,
    tx: mpsc::UnboundedSender<Msg>,
    start_time: Timestamp,
    /// Set when the pod failed as a whole (`DeadlineExceeded`): reason and message.
    failed: Option<(String, String)>,
    /// The last warning about the sandbox or volumes, so it is reported once.
    setup_error: Option<String>,
    setup_retry: Option<Instant>,
    history: HashMap<&'static str, (bool, Timestamp)>,
    written: Value,
    /// When the kubelet evicted the pod (its `DisruptionTarget` condition).
    evicted_at: Option<Timestamp>,
    /// When this kubelet first saw the pod, until it has been reported running.
    first_seen: Option<Instant>,
}

/// Runs the pod `rx` holds until it is deleted (from the API or by its grace period ending).
pub async fn run(k: Arc<Kubelet>, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let (tx, mut msgs) = mpsc::unbounded_channel();
    let mut w = Worker::new(k, pod, tx);
    loop {
        if w.pod.metadata.deletion_timestamp.is_some() {
            w.terminate().await;
            w.delete_from_api().await;
            w.teardown().await;
            return;
        }
        w.step().await;
        w.write_status().await;
        let wake = w.next_wake();
        tokio::select! {
            changed = rx.changed() => {
                let current = rx.borrow_and_update().clone();
                match (changed, current) {
                    (Ok(()), Some(pod)) => {
                        w.k.active.update(&w.uid, &pod);
                        w.pod = pod;
                        w.images_changed();
                        w.adopt_ephemeral();
                    }
                    _ => {
                        // Gone from the API (force-deleted): stop at once, report nothing.
                        w.kill_all(Duration::ZERO).await;
                        w.teardown().await;
                        return;
                    }
                }
            }
            Some(m) = msgs.recv() => w.handle(m).await,
            _ = sleep_until(wake) => {}
        }
        // Drain what else arrived, so one status write covers it.
        while let Ok(m) = msgs.try_recv() {
            w.handle(m).await;
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn nanos_to_ts(n: i64) -> Timestamp {
    Timestamp::from_nanosecond(n as i128).unwrap_or_else(|_| Timestamp::now())
}

fn has_tag(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.contains(':') || image.contains('@')
}

impl Worker {
    fn new(k: Arc<Kubelet>, pod: Pod, tx: mpsc::UnboundedSender<Msg>) -> Self {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = k.config.pod_dir(&ns, &name, &uid);
        let spec = pod.spec.clone().unwrap_or_default();
        let previous: HashMap<String, Value> = pod
            .status
            .iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
            .filter_map(|cs| Some((cs.name.clone(), serde_json::to_value(cs).ok()?)))
            .collect();
        let mut ctrs: Vec<Ctr> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Ctr::new(c.clone(), true))
            .chain(spec.containers.iter().map(|c| Ctr::new(c.clone(), false)))
            .collect();
        // A kubelet that restarts continues the restart counts it reported.
        for c in &mut ctrs {
            if let Some(p) = previous.get(&c.spec.name) {
                c.restarts = p["restartCount"].as_i64().unwrap_or(0) as i32;
                c.ever_ran = p["state"].get("running").is_some()
                    || p["state"].get("terminated").is_some()
                    || p["lastState"].get("terminated").is_some();
            }
        }
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(Timestamp::now, |t| t.0);
        let terminal = pod.is_terminal();
        let events = Recorder::new(k.client.clone(), &k.config.node_name);
        // Ephemeral containers that already ran (before a kubelet restart) do not run again,
        // and keep the state they ended in.
        let ran_ephemeral: HashMap<String, Option<Term>> = pod
            .status
            .iter()
            .flat_map(|s| s.ephemeral_container_statuses.iter().flatten())
            .map(|s| {
                let term = s
                    .state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .map(|t| Term {
                        exit_code: t.exit_code,
                        reason: t.reason.clone().unwrap_or_default(),
                        message: t.message.clone().unwrap_or_default(),
                        started_at: t.started_at.as_ref().map_or_else(Timestamp::now, |x| x.0),
                        finished_at: t.finished_at.as_ref().map_or_else(Timestamp::now, |x| x.0),
                        container_id: t.container_id.clone(),
                    });
                (s.name.clone(), term)
            })
            .collect();
        let mut w = Self {
            k,
            pod,
            ns,
            name,
            uid,
            dir,
            events,
            sandbox: None,
            ip: None,
            volumes: None,
            token_refresh: None,
            ctrs,
            tx,
            start_time,
            failed: None,
            setup_error: None,
            setup_retry: None,
            history: HashMap::new(),
            written: Value::Null,
            evicted_at: None,
            first_seen: (!terminal).then(Instant::now),
        };
        w.adopt_ephemeral();
        for c in w.ctrs.iter_mut().filter(|c| c.ephemeral) {
            if let Some(term) = ran_ephemeral.get(&c.spec.name) {
                c.done = true;
                c.ever_ran = true;
                let term = term.clone().unwrap_or_else(|| Term {
                    exit_code: 137,
                    reason: "Error".into(),
                    message: "the kubelet restarted while it ran".into(),
                    started_at: Timestamp::now(),
                    finished_at: Timestamp::now(),
                    container_id: None,
                });
                c.state = State::Terminated(term);
            }
        }
        w.k.active.insert(&w.uid, &w.pod, w.tx.clone(), &w.dir);
        if terminal {
            // Finished before this kubelet started: nothing runs again.
            for c in &mut w.ctrs {
                c.done = true;
            }
            w.written = json!({"adopted": true});
        }
        w
    }

    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn restart_policy(&self) -> String {
        self.spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into())
    }

    fn record(&self, c: Option<&str>, kind: EventKind, reason: &str, message: String) {
        self.events.record(&self.pod, c, kind, reason, message);
    }

    fn all_done(&self) -> bool {
        self.ctrs
            .iter()
            .filter(|c| !c.ephemeral)
            .all(|c| c.done && !c.running())
    }

    /// Takes on the ephemeral containers the spec has gained (`kubectl debug`). One that
    /// mounts nothing gets the volume mounts of its target container (the first container if
    /// it names none): without a shared process namespace to reach them through, this is how
    /// a debugging container sees the pod's volumes.
    fn adopt_ephemeral(&mut self) {
        let spec = self.spec();
        for ec in spec.ephemeral_containers.iter().flatten() {
            if self.ctrs.iter().any(|c| c.spec.name == ec.name) {
                continue;
            }
            let Ok(mut c) = serde_json::to_value(ec)
                .and_then(serde_json::from_value::<k8s_openapi::api::core::v1::Container>)
            else {
                continue;
            };
            if c.volume_mounts.as_ref().is_none_or(Vec::is_empty) {
                let target = ec
                    .target_container_name
                    .as_deref()
                    .and_then(|t| spec.containers.iter().find(|m| m.name == t))
                    .or_else(|| spec.containers.first());
                c.volume_mounts = target.and_then(|t| t.volume_mounts.clone());
            }
            self.ctrs.push(Ctr::ephemeral(c));
        }
    }

    /// Does what is due: sandbox, volumes, deadline, and starting containers.
    async fn step(&mut self) {
        if self.all_done() {
            if let Some(sb) = self.sandbox.take() {
                let _ = self.k.runtime.stop_pod_sandbox(&sb.id).await;
                let _ = self.k.runtime.remove_pod_sandbox(&sb.id).await;
            }
            return;
        }
        if let Some(deadline) = self.deadline()
            && Instant::now() >= deadline
        {
            let msg = "Pod was active on the node longer than the specified deadline".to_owned();
            self.record(None, EventKind::Warning, "DeadlineExceeded", msg.clone());
            self.failed = Some(("DeadlineExceeded".into(), msg));
            let grace = self.grace();
            self.kill_all(grace).await;
            for c in &mut self.ctrs {
                c.done = true;
                c.retry_at = None;
            }
            return;
        }
        if self.token_refresh.is_some_and(|t| Instant::now() >= t) {
            self.renew_tokens().await;
        }
        if self.setup_retry.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if !self.setup().await {
            self.setup_retry = Some(Instant::now() + RETRY);
            return;
        }
        self.setup_retry = None;
        let now = Instant::now();
        let due = |c: &Ctr| !c.done && !c.running() && c.retry_at.is_none_or(|t| now >= t);
        let mut init_pending = false;
        for i in 0..self.ctrs.len() {
            if !self.ctrs[i].init || self.ctrs[i].succeeded() {
                continue;
            }
            init_pending = true;
            if due(&self.ctrs[i]) {
                self.start(i).await;
            }
            break;
        }
        if init_pending {
            return;
        }
        for i in 0..self.ctrs.len() {
            if !self.ctrs[i].init && due(&self.ctrs[i]) {
                self.start(i).await;
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let secs = self.spec().active_deadline_seconds?;
        let elapsed = Timestamp::now()
            .duration_since(self.start_time)
            .unsigned_abs();
        let total = Duration::from_secs(secs.max(0) as u64);
        Some(Instant::now() + total.saturating_sub(elapsed))
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self.spec().termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    /// Creates the sandbox and the volumes; false (with a warning event) if it cannot yet.
    async fn setup(&mut self) -> bool {
        if self.sandbox.is_none() {
            let runtime_handler = match self.runtime_handler().await {
                Ok(h) => h,
                Err(message) => {
                    self.setup_warning("FailedCreatePodSandBox", message);
                    return false;
                }
            };
            let cfg = SandboxConfig {
                name: self.name.clone(),
                namespace: self.ns.clone(),
                uid: self.uid.clone(),
                log_directory: self.dir.join("logs"),
                dns: crate::network::pod_dns(
                    &self.pod,
                    &self.k.config.cluster_domain,
                    self.k.config.cluster_dns,
                ),
                labels: self.pod.metadata.labels.clone().unwrap_or_default(),
                annotations: self.pod.metadata.annotations.clone().unwrap_or_default(),
                runtime_handler,
            };
            match self.k.runtime.run_pod_sandbox(&cfg).await {
                Ok(sb) => {
                    self.ip = Some(sb.ip);
                    self.sandbox = Some(sb);
                }
                Err(e) => {
                    self.setup_warning(
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    return false;
                }
            }
        }
        if self.volumes.is_none() {
            let host_ip = self.k.config.address;
            match resolve::volumes(
                &self.k.client,
                &self.pod,
                &self.dir.join("volumes"),
                host_ip,
            )
            .await
            {
                Ok((v, refresh)) => {
                    self.volumes = Some(v);
                    self.token_refresh = refresh.map(|d| Instant::now() + d);
                }
                Err(e) => {
                    self.setup_warning("FailedMount", format!("MountVolume.SetUp failed: {e}"));
                    return false;
                }
            }
        }
        self.setup_error = None;
        true
    }

    /// The runtime handler of the pod: its RuntimeClass's, or, without one, the one its first
    /// container's image calls for (a Wasm component or an OCI container image).
    async fn runtime_handler(&self) -> Result<String, String> {
        if let Some(class) = self.spec().runtime_class_name.as_deref() {
            let classes: Api<k8s_openapi::api::node::v1::RuntimeClass> =
                Api::all(self.k.client.clone());
            return match classes.get_opt(class).await {
                Ok(Some(rc)) => Ok(rc.handler),
                Ok(None) => Err(format!(
                    "Failed to create pod sandbox: RuntimeClass {class:?} not found"
                )),
                Err(e) => Err(format!(
                    "Failed to create pod sandbox: cannot read RuntimeClass {class:?}: {e}"
                )),
            };
        }
        let spec = self.spec();
        let Some(image) = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .find_map(|c| c.image.clone())
        else {
            return Ok(String::new());
        };
        let auth = resolve::pull_auth(&self.k.client, &self.pod, &image).await;
        self.k
            .runtime
            .image_handler(&image, auth.as_ref())
            .await
            .map_err(|e| format!("Failed to create pod sandbox: {e}"))
    }

    /// Writes fresh service account tokens into the pod's volumes; tries again soon if the
    /// API server cannot issue them now.
    async fn renew_tokens(&mut self) {
        let dir = self.dir.join("volumes");
        match resolve::write_tokens(&self.k.client, &self.pod, &dir).await {
            Ok(refresh) => self.token_refresh = refresh.map(|d| Instant::now() + d),
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "cannot renew the pod's token");
                self.token_refresh = Some(Instant::now() + 5 * RETRY);
            }
        }
    }

    fn setup_warning(&mut self, reason: &str, message: String) {
        if self.setup_error.as_deref() != Some(message.as_str()) {
            self.record(None, EventKind::Warning, reason, message.clone());
            self.setup_error = Some(message);
        }
    }

    fn waiting(&mut self, idx: usize, reason: &str, message: String, retry: Duration) {
        let name = self.ctrs[idx].spec.name.clone();
        self.record(
            Some(&name),
            EventKind::Warning,
            "Failed",
            format!("Error: {message}"),
        );
        let c = &mut self.ctrs[idx];
        c.state = State::Waiting {
            reason: reason.into(),
            message,
        };
        c.retry_at = Some(Instant::now() + retry);
    }

    async fn handle(&mut self, m: Msg) {
        match m {
            Msg::Evict { message } => self.evict(message).await,
            Msg::Exited { idx, run, status } => {
                if self.ctrs.get(idx).is_some_and(|c| c.run == run) {
                    self.exited(idx, &status).await;
                }
            }
            Msg::Probe { idx, run, report } => {
                if self
                    .ctrs
                    .get(idx)
                    .is_some_and(|c| c.run == run && c.running())
                {
                    self.probed(idx, report).await;
                }
            }
        }
    }
}

fn next_backoff(current: Duration, cfg: &crate::Config) -> Duration {
    if current.is_zero() {
        cfg.backoff_initial
    } else {
        (current * 2).min(cfg.backoff_max)
    }
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`), as the back-off message shows it.
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if d.subsec_millis() > 0 && s < 10 {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{s}s")
    }
}

/// Keeps the log of this run and the one before it (`kubectl logs --previous`).
fn prune_logs(dir: &std::path::Path, restart: i32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let n = name.split('.').next().and_then(|n| n.parse::<i32>().ok());
        if n.is_some_and(|n| n < restart - 1) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }

    #[test]
    fn images_default_to_always_without_a_tag() {
        assert!(!has_tag("shoal.local/hello"));
        assert!(has_tag("shoal.local/hello:1"));
        assert!(!has_tag("localhost:5000/hello"));
        assert!(has_tag("localhost:5000/hello@sha256:ab"));
    }

    #[test]
    fn back_off_doubles_to_the_cap() {
        let mut cfg = crate::Config::new("n", std::path::Path::new("/tmp"));
        cfg.backoff_initial = Duration::from_secs(10);
        cfg.backoff_max = Duration::from_secs(300);
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..7 {
            d = next_backoff(d, &cfg);
            seen.push(d.as_secs());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
    }
}
