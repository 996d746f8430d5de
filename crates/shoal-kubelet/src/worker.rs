//! One pod's worker: sandbox, volumes, init containers in order, containers with their restart
//! policy and back-off, probes, deadline, graceful deletion, and the status and events of all of it.

use crate::events::{Kind as EventKind, Recorder};
use crate::probe::{self, Kind as ProbeKind, Report};
use crate::resolve::{self, VolumeDir};
use crate::status::{self, Ctr, State, Term};
use crate::{Kubelet, PodEntry};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
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
        let terminal = shoal_api::pod::is_terminal(&pod);
        let events = Recorder::new(k.client.clone(), &k.config.node_name);
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
            ctrs,
            tx,
            start_time,
            failed: None,
            setup_error: None,
            setup_retry: None,
            history: HashMap::new(),
            written: Value::Null,
            evicted_at: None,
        };
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
        self.ctrs.iter().all(|c| c.done && !c.running())
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
            let cfg = SandboxConfig {
                name: self.name.clone(),
                namespace: self.ns.clone(),
                uid: self.uid.clone(),
                log_directory: self.dir.join("logs"),
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
                Ok(v) => self.volumes = Some(v),
                Err(e) => {
                    self.setup_warning("FailedMount", format!("MountVolume.SetUp failed: {e}"));
                    return false;
                }
            }
        }
        self.setup_error = None;
        true
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

    /// Makes the container's image present; `Err((reason, message))` if it cannot be.
    async fn ensure_image(&mut self, idx: usize) -> Result<String, (String, String)> {
        let spec = &self.ctrs[idx].spec;
        let name = spec.name.clone();
        let image = spec.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err((
                "InvalidImageName".into(),
                "the container has no image".into(),
            ));
        }
        let policy = spec.image_pull_policy.clone().unwrap_or_else(|| {
            if !has_tag(&image) || image.ends_with(":latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = self.k.runtime.image_status(&image).await.ok().flatten();
        let resolved = match (policy.as_str(), present) {
            ("Never", None) => {
                let msg =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.record(
                    Some(&name),
                    EventKind::Warning,
                    "ErrImageNeverPull",
                    msg.clone(),
                );
                return Err(("ErrImageNeverPull".into(), msg));
            }
            ("Never" | "IfNotPresent", Some(img)) => {
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                );
                img
            }
            _ => {
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Pulling",
                    format!("Pulling image {image:?}"),
                );
                let t = std::time::Instant::now();
                match self.k.runtime.pull_image(&image).await {
                    Ok(img) => {
                        self.record(
                            Some(&name),
                            EventKind::Normal,
                            "Pulled",
                            format!(
                                "Successfully pulled image {image:?} in {:?}. Image size: {} bytes.",
                                t.elapsed(),
                                img.size
                            ),
                        );
                        img
                    }
                    Err(e) => {
                        let reason = if self.ctrs[idx].retry_at.is_some() {
                            "ImagePullBackOff"
                        } else {
                            "ErrImagePull"
                        };
                        return Err((
                            reason.into(),
                            format!("Failed to pull image {image:?}: {e}"),
                        ));
                    }
                }
            }
        };
        let repo = image.split('@').next().unwrap_or(&image);
        let repo = match repo.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repo,
        };
        self.ctrs[idx].image_id = format!("{repo}@{}", resolved.digest);
        Ok(image)
    }

    /// Pulls, resolves, creates and starts container `idx`; why not, if it cannot yet.
    async fn launch(&mut self, idx: usize, sb: &Sandbox) -> Result<(ContainerId, i32), NotStarted> {
        let name = self.ctrs[idx].spec.name.clone();
        let image = self.ensure_image(idx).await.map_err(|(reason, message)| {
            let c = &mut self.ctrs[idx];
            c.backoff = next_backoff(c.backoff, &self.k.config).max(RETRY);
            NotStarted {
                reason,
                message,
                retry: c.backoff,
            }
        })?;
        let spec = &self.ctrs[idx].spec;
        let env = resolve::environment(
            &self.k.client,
            &self.pod,
            spec,
            sb.ip,
            self.k.config.address,
        )
        .await
        .map_err(NotStarted::config)?;
        let restarts = self.ctrs[idx].restarts + i32::from(self.ctrs[idx].ever_ran);
        let log_dir = self.dir.join("logs").join(&name);
        let log_path = log_dir.join(format!("{restarts}.log"));
        prune_logs(&log_dir, restarts);
        let volumes = self.volumes.clone().unwrap_or_default();
        let cfg = resolve::container_config(spec, env, &volumes, image, log_path)
            .map_err(NotStarted::config)?;
        let id = self
            .k
            .runtime
            .create_container(&sb.id, cfg)
            .await
            .map_err(|e| NotStarted::soon("CreateContainerError", e))?;
        self.record(
            Some(&name),
            EventKind::Normal,
            "Created",
            format!("Created container: {name}"),
        );
        if let Err(e) = self.k.runtime.start_container(&id).await {
            let _ = self.k.runtime.remove_container(&id).await;
            return Err(NotStarted::soon("RunContainerError", e));
        }
        self.record(
            Some(&name),
            EventKind::Normal,
            "Started",
            format!("Started container {name}"),
        );
        Ok((id, restarts))
    }

    async fn start(&mut self, idx: usize) {
        let Some(sb) = self.sandbox.clone() else {
            return;
        };
        let (id, restarts) = match self.launch(idx, &sb).await {
            Ok(started) => started,
            Err(n) => return self.waiting(idx, &n.reason, n.message, n.retry),
        };
        let spec = self.ctrs[idx].spec.clone();
        let c = &mut self.ctrs[idx];
        c.restarts = restarts;
        c.ever_ran = true;
        c.run += 1;
        c.id = Some(id.clone());
        c.retry_at = None;
        c.state = State::Running {
            started_at: Timestamp::now(),
        };
        c.started = spec.startup_probe.is_none();
        c.ready = c.started && spec.readiness_probe.is_none() && !c.init;
        let run = c.run;
        let runtime = self.k.runtime.clone();
        let tx = self.tx.clone();
        let wait_id = id.clone();
        tokio::spawn(async move {
            let status = loop {
                match runtime.wait_container(&wait_id).await {
                    Ok(s) => break s,
                    // Removed before it exited: the worker that removed it has recorded its end.
                    Err(shoal_runtime::RuntimeError::ContainerNotFound(_)) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, container = %wait_id, "cannot wait for container");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            };
            let _ = tx.send(Msg::Exited {
                idx,
                run,
                status: Box::new(status),
            });
        });
        if !c.init
            && (spec.liveness_probe.is_some()
                || spec.readiness_probe.is_some()
                || spec.startup_probe.is_some())
        {
            let (ptx, mut prx) = mpsc::unbounded_channel();
            let target = probe::Target {
                ip: sb.ip,
                runtime: self.k.runtime.clone(),
                container: id,
                spec,
            };
            let tx = self.tx.clone();
            let task = tokio::spawn(async move {
                let probes = tokio::spawn(probe::run(target, ptx));
                while let Some(report) = prx.recv().await {
                    if tx.send(Msg::Probe { idx, run, report }).is_err() {
                        break;
                    }
                }
                probes.abort();
            });
            c.probes = Some(task.abort_handle());
        }
        self.publish_index();
    }

    fn publish_index(&self) {
        let running = self
            .ctrs
            .iter()
            .filter(|c| c.running())
            .filter_map(|c| Some((c.spec.name.clone(), c.id.clone()?)))
            .collect();
        self.k.index.set_running(
            &self.ns,
            &self.name,
            PodEntry {
                uid: self.uid.clone(),
                dir: self.dir.clone(),
                running,
            },
        );
    }

    /// A container whose image was changed (`kubectl set image pod/...`, the one mutable part of
    /// a container) is killed and started again from the new image, as Kubernetes does.
    fn images_changed(&mut self) {
        let spec = self.spec();
        let wanted: HashMap<&str, Option<&String>> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| (c.name.as_str(), c.image.as_ref()))
            .collect();
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        for i in 0..self.ctrs.len() {
            let Some(image) = wanted.get(self.ctrs[i].spec.name.as_str()) else {
                continue;
            };
            if self.ctrs[i].spec.image.as_ref() == *image || self.ctrs[i].init {
                continue;
            }
            let name = self.ctrs[i].spec.name.clone();
            let c = &mut self.ctrs[i];
            c.spec.image = image.cloned();
            c.backoff = Duration::ZERO;
            c.retry_at = None;
            if c.running()
                && let Some(id) = c.id.clone()
            {
                let runtime = self.k.runtime.clone();
                tokio::spawn(async move {
                    let _ = runtime.stop_container(&id, grace).await;
                });
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Killing",
                    format!("Container {name} definition changed, will be restarted"),
                );
            }
        }
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

    async fn exited(&mut self, idx: usize, st: &ContainerStatus) {
        let policy = self.restart_policy();
        let runtime_name = self.k.runtime.version().name;
        let cfg = self.k.config.clone();
        let c = &mut self.ctrs[idx];
        if let Some(p) = c.probes.take() {
            p.abort();
        }
        let term = Term {
            exit_code: st.exit_code,
            reason: st.reason.clone(),
            message: st.message.clone(),
            started_at: nanos_to_ts(st.started_at),
            finished_at: nanos_to_ts(st.finished_at),
            container_id: Some(format!("{runtime_name}://{}", st.id)),
        };
        if let Some(id) = &c.id {
            let _ = self.k.runtime.remove_container(id).await;
        }
        c.ready = false;
        let restart = match (c.init, policy.as_str()) {
            (true, "Never") => false,
            (true, _) => term.exit_code != 0,
            (false, "Always") => true,
            (false, "OnFailure") => term.exit_code != 0,
            _ => false,
        };
        let ran_for = term
            .finished_at
            .duration_since(term.started_at)
            .unsigned_abs();
        if !restart {
            c.done = true;
            c.state = State::Terminated(term);
            self.publish_index();
            return;
        }
        // A container that ran well for a while starts its back-off afresh, as Kubernetes does.
        if ran_for > cfg.backoff_max * 2 {
            c.backoff = Duration::ZERO;
        }
        let delay = c.backoff;
        c.backoff = next_backoff(c.backoff, &cfg);
        c.last = Some(term.clone());
        if delay.is_zero() {
            c.state = State::Terminated(term);
            c.retry_at = None;
        } else {
            let name = c.spec.name.clone();
            let message = format!(
                "back-off {} restarting failed container={name} pod={}_{}({})",
                go_duration(delay),
                self.name,
                self.ns,
                self.uid
            );
            c.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message,
            };
            c.retry_at = Some(Instant::now() + delay);
            self.record(
                Some(&name),
                EventKind::Warning,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    self.name, self.ns, self.uid
                ),
            );
        }
        self.publish_index();
    }

    async fn probed(&mut self, idx: usize, report: Report) {
        let name = self.ctrs[idx].spec.name.clone();
        match report {
            Report::Failed(kind, msg) => self.record(
                Some(&name),
                EventKind::Warning,
                "Unhealthy",
                format!("{} probe failed: {msg}", kind.name()),
            ),
            Report::Verdict(ProbeKind::Readiness, ok) => {
                let c = &mut self.ctrs[idx];
                c.ready = ok && c.started;
            }
            Report::Verdict(ProbeKind::Startup, true) => {
                let c = &mut self.ctrs[idx];
                c.started = true;
                c.ready = c.spec.readiness_probe.is_none();
            }
            Report::Verdict(kind @ (ProbeKind::Startup | ProbeKind::Liveness), false) => {
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Killing",
                    format!(
                        "Container {name} failed {} probe, will be restarted",
                        kind.name().to_lowercase()
                    ),
                );
                let c = &mut self.ctrs[idx];
                c.ready = false;
                if let Some(p) = c.probes.take() {
                    p.abort();
                }
                if let Some(id) = c.id.clone() {
                    let grace = self
                        .spec()
                        .termination_grace_period_seconds
                        .unwrap_or(30)
                        .max(0) as u64;
                    let runtime = self.k.runtime.clone();
                    // The exit arrives through the container's wait task.
                    tokio::spawn(async move {
                        let _ = runtime
                            .stop_container(&id, Duration::from_secs(grace))
                            .await;
                    });
                }
            }
            Report::Verdict(ProbeKind::Liveness, true) => {}
        }
    }

    /// Stops every running container within `grace` and records how each ended.
    async fn kill_all(&mut self, grace: Duration) {
        let mut stops = Vec::new();
        for c in &mut self.ctrs {
            if let Some(p) = c.probes.take() {
                p.abort();
            }
            if c.running()
                && let Some(id) = c.id.clone()
            {
                let runtime = self.k.runtime.clone();
                stops.push(async move {
                    let _ = runtime.stop_container(&id, grace).await;
                    runtime.container_status(&id).await.ok()
                });
            }
        }
        let finals: Vec<ContainerStatus> = futures::future::join_all(stops)
            .await
            .into_iter()
            .flatten()
            .collect();
        for st in finals {
            if let Some(i) = self.ctrs.iter().position(|c| c.id.as_ref() == Some(&st.id)) {
                let runtime_name = self.k.runtime.version().name;
                let c = &mut self.ctrs[i];
                c.run += 1; // the wait task's report is now stale
                c.ready = false;
                c.done = true;
                c.state = State::Terminated(Term {
                    exit_code: st.exit_code,
                    reason: st.reason.clone(),
                    message: st.message.clone(),
                    started_at: nanos_to_ts(st.started_at),
                    finished_at: nanos_to_ts(st.finished_at),
                    container_id: Some(format!("{runtime_name}://{}", st.id)),
                });
                let _ = self.k.runtime.remove_container(&st.id).await;
            }
        }
    }

    /// Node-pressure eviction: every container stopped at once (hard eviction has no grace
    /// period), the pod `Failed` with reason `Evicted`, an event, and a `DisruptionTarget`
    /// condition, as the kubelet's eviction manager does.
    async fn evict(&mut self, message: String) {
        if self.all_done() || self.failed.is_some() {
            return;
        }
        tracing::warn!(pod = %format!("{}/{}", self.ns, self.name), %message, "evicting pod");
        self.record(None, EventKind::Warning, "Evicted", message.clone());
        self.failed = Some(("Evicted".into(), message));
        self.evicted_at = Some(Timestamp::now());
        self.kill_all(Duration::ZERO).await;
        for c in &mut self.ctrs {
            c.done = true;
            c.retry_at = None;
        }
    }

    /// Graceful deletion: stop every container within the grace period, report the end.
    async fn terminate(&mut self) {
        for c in &self.ctrs {
            if c.running() {
                self.record(
                    Some(&c.spec.name),
                    EventKind::Normal,
                    "Killing",
                    format!("Stopping container {}", c.spec.name),
                );
            }
        }
        let grace = self.grace();
        self.kill_all(grace).await;
        for c in &mut self.ctrs {
            c.done = true;
            c.retry_at = None;
        }
        self.write_status().await;
    }

    async fn delete_from_api(&self) {
        let api: Api<Pod> = Api::namespaced(self.k.client.clone(), &self.ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&self.name, &dp).await {
            match e {
                kube::Error::Api(s) if s.code == 404 || s.code == 409 => {}
                e => tracing::warn!(pod = %self.name, error = %e, "cannot finish deleting pod"),
            }
        }
    }

    async fn teardown(&mut self) {
        for c in &self.ctrs {
            if let Some(id) = &c.id {
                let _ = self.k.runtime.remove_container(id).await;
            }
        }
        if let Some(sb) = self.sandbox.take() {
            let _ = self.k.runtime.stop_pod_sandbox(&sb.id).await;
            let _ = self.k.runtime.remove_pod_sandbox(&sb.id).await;
        }
        self.k.index.remove(&self.ns, &self.name, &self.uid);
        self.k.active.remove(&self.uid);
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.setup_retry;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if !self.all_done() {
            consider(self.deadline());
            for c in &self.ctrs {
                if !c.done && !c.running() {
                    consider(c.retry_at);
                }
            }
        }
        t
    }

    async fn write_status(&mut self) {
        let runtime_name = self.k.runtime.version().name;
        let phase = status::phase(&self.ctrs, self.failed.is_some());
        let scheduled = self
            .pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(self.start_time, |t| t.0);
        let mut conditions = status::conditions(&self.ctrs, phase, scheduled, &mut self.history);
        if let (Some(at), Some((_, message)), Some(list)) =
            (self.evicted_at, &self.failed, conditions.as_array_mut())
        {
            list.push(json!({"type": "DisruptionTarget", "status": "True",
                "reason": "TerminationByKubelet", "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": at.round(jiff::Unit::Second).unwrap_or(at).to_string()}));
        }
        let (init, main): (Vec<&Ctr>, Vec<&Ctr>) = self.ctrs.iter().partition(|c| c.init);
        let host = self.k.config.address.to_string();
        let mut st = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host,
            "hostIPs": [{"ip": host}],
            "startTime": self.start_time.round(jiff::Unit::Second).unwrap_or(self.start_time).to_string(),
            "containerStatuses": main.iter().map(|c| status::container_status(c, &runtime_name)).collect::<Vec<_>>(),
        });
        if !init.is_empty() {
            st["initContainerStatuses"] = init
                .iter()
                .map(|c| status::container_status(c, &runtime_name))
                .collect();
        }
        if let Some(ip) = self.ip {
            st["podIP"] = json!(ip.to_string());
            st["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        if let Some((reason, message)) = &self.failed {
            st["reason"] = json!(reason);
            st["message"] = json!(message);
        }
        if st == self.written || self.written == json!({"adopted": true}) && self.all_done() {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.k.client.clone(), &self.ns);
        match api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": st })),
            )
            .await
        {
            Ok(_) => self.written = st,
            Err(kube::Error::Api(e)) if e.code == 404 => self.written = st,
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "cannot write pod status"),
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
