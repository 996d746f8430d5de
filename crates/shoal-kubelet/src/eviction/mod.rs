//! Node-pressure eviction, as the kubelet's eviction manager does it.
//!
//! Every `eviction_interval` the manager reads two signals: `memory.available` (the pods'
//! memory budget the runtime enforces, less what the pods use — the runtime sees every byte of
//! every guest) and `nodefs.available` (free space of the file system the node's data lives
//! on). A signal below its `--eviction-hard` threshold turns on the node's `MemoryPressure` or
//! `DiskPressure` condition (kept on for `pressure_transition` after the signal last crossed,
//! so it does not flap), and evicts one pod per interval in Kubernetes' order ([`rank`]):
//! stopped at once, `Failed` with reason `Evicted`, the message naming the resource, the
//! threshold and what its biggest container used. Pods that pass their own local-storage
//! limits (an emptyDir's `sizeLimit`, `ephemeral-storage` limits) are evicted too, whatever
//! the node's state. Under disk pressure the images no pod of the node names are removed
//! first ([`reclaim_images`], Kubernetes' image garbage collection); pods are evicted only if
//! that frees nothing. While `MemoryPressure` lasts the kubelet admits no new BestEffort pod;
//! while `DiskPressure` lasts, no new pod.

pub mod rank;
pub mod storage;
pub mod thresholds;

pub use thresholds::{FlagError, Quantity, Reserved, Thresholds, quantity};

use crate::Kubelet;
use crate::pods::ActivePod;
use k8s_openapi::api::core::v1::Pod;
use rank::Candidate;
use shoal_api::pod::{PodExt, container_limit, container_request};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often pods' local storage is measured (walking directories costs more than reading the
/// runtime's counters).
const STORAGE_EVERY: Duration = Duration::from_secs(10);
/// A pod told to leave is not picked again for this long; and no other pod is evicted for the
/// same pressure until it has let go of what it used, or this long has passed (Kubernetes'
/// wait for pod cleanup: its memory may take a moment to come back).
const EVICTING_FOR: Duration = Duration::from_secs(30);

/// A node condition driven by an eviction signal.
#[derive(Debug, Clone)]
pub struct PressureCondition {
    pub on: bool,
    /// When `on` last changed.
    pub since: jiff::Timestamp,
    last_crossed: Option<Instant>,
}

impl PressureCondition {
    fn new() -> Self {
        PressureCondition {
            on: false,
            since: jiff::Timestamp::now(),
            last_crossed: None,
        }
    }

    /// Takes in whether the signal is past its threshold now; on while it is and for `hold`
    /// after. Returns whether the condition changed.
    fn observe(&mut self, crossed: bool, now: Instant, hold: Duration) -> bool {
        if crossed {
            self.last_crossed = Some(now);
        }
        let on = self
            .last_crossed
            .is_some_and(|t| now.duration_since(t) < hold)
            || crossed;
        if on == self.on {
            return false;
        }
        self.on = on;
        self.since = jiff::Timestamp::now();
        true
    }
}

/// The node's pressure conditions.
#[derive(Debug, Clone)]
pub struct Pressure {
    pub memory: PressureCondition,
    pub disk: PressureCondition,
}

impl Default for Pressure {
    fn default() -> Self {
        Pressure {
            memory: PressureCondition::new(),
            disk: PressureCondition::new(),
        }
    }
}

/// One signal read against its threshold.
#[derive(Debug, Clone, Copy)]
struct Signal {
    resource: &'static str,
    available: u64,
    threshold: Quantity,
    threshold_bytes: u64,
}

impl Signal {
    fn crossed(&self) -> bool {
        self.available < self.threshold_bytes
    }

    /// `The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. `
    fn message(&self) -> String {
        format!(
            "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
            self.resource,
            self.threshold,
            quantity(self.available)
        )
    }
}

fn memory_signal(k: &Kubelet) -> Option<Signal> {
    let threshold = k.config.eviction_hard.memory_available?;
    let m = k.runtime.node_memory()?;
    Some(Signal {
        resource: "memory",
        available: m.limit_bytes.saturating_sub(m.used_bytes),
        threshold,
        threshold_bytes: threshold.of(k.config.memory_bytes),
    })
}

fn disk_signal(k: &Kubelet) -> Option<Signal> {
    let threshold = k.config.eviction_hard.nodefs_available?;
    let (capacity, free) = storage::filesystem(&k.config.data_dir).ok()?;
    Some(Signal {
        resource: "ephemeral-storage",
        available: free,
        threshold,
        threshold_bytes: threshold.of(capacity),
    })
}

/// Whether the kubelet may start `pod` now: under memory pressure no BestEffort pod, under
/// disk pressure none. The reason is Kubernetes' (`The node had condition: [MemoryPressure]. `).
pub fn admit(k: &Kubelet, pod: &Pod) -> Result<(), String> {
    let p = k.pressure();
    if p.disk.on {
        return Err("The node had condition: [DiskPressure]. ".into());
    }
    if p.memory.on && pod.qos() == shoal_api::pod::QosClass::BestEffort {
        return Err("The node had condition: [MemoryPressure]. ".into());
    }
    Ok(())
}

/// Runs the eviction manager (forever).
pub async fn run(k: Arc<Kubelet>) {
    let mut evicting: HashMap<String, Instant> = HashMap::new();
    let mut storage_at = Instant::now() + STORAGE_EVERY;
    let mut tick = tokio::time::interval(k.config.eviction_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = Instant::now();
        evicting.retain(|_, t| now.duration_since(*t) < EVICTING_FOR);
        let memory = memory_signal(&k);
        let disk = disk_signal(&k);
        let crossed = |s: &Option<Signal>| s.as_ref().is_some_and(Signal::crossed);
        let hold = k.config.pressure_transition;
        let flipped = {
            let mut p = k.pressure.lock().unwrap_or_else(|p| p.into_inner());
            let m = p.memory.observe(crossed(&memory), now, hold);
            let d = p.disk.observe(crossed(&disk), now, hold);
            if m || d {
                tracing::warn!(
                    memory_pressure = p.memory.on,
                    disk_pressure = p.disk.on,
                    "node pressure changed"
                );
            }
            m || d
        };
        if flipped && let Err(e) = crate::node::write_status(&k).await {
            tracing::warn!(error = %e, "cannot report the node's pressure");
        }
        if let Some(signal) = memory.filter(Signal::crossed) {
            if !cleaning_up(&k, &evicting).await {
                evict_for_memory(&k, &signal, &mut evicting).await;
            }
        } else if let Some(signal) = disk.filter(Signal::crossed) {
            evict_for_disk(&k, &signal, &mut evicting).await;
        }
        if now >= storage_at {
            storage_at = now + STORAGE_EVERY;
            local_storage_limits(&k, &mut evicting).await;
        }
    }
}

/// Whether a pod evicted recently still holds memory (its worker is stopping it): the next
/// eviction waits for it rather than take a second pod for the same shortage.
async fn cleaning_up(k: &Kubelet, evicting: &HashMap<String, Instant>) -> bool {
    if evicting.is_empty() {
        return false;
    }
    let stats = k.runtime.list_pod_sandbox_stats().await.unwrap_or_default();
    stats
        .iter()
        .any(|s| evicting.contains_key(&s.uid) && s.memory_bytes > 0)
}

/// The pods that may be evicted: running, not being deleted, not already told to leave.
fn candidates(k: &Kubelet, evicting: &HashMap<String, Instant>) -> Vec<(String, ActivePod)> {
    k.active
        .all()
        .into_iter()
        .filter(|p| !p.pod.is_terminal() && p.pod.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.pod.metadata.uid.clone()?, p)))
        .filter(|(uid, _)| !evicting.contains_key(uid))
        .collect()
}

/// Evicts the first of `ranked` (by uid), with `message`.
fn evict_first(
    pods: &HashMap<String, ActivePod>,
    ranked: &[Candidate],
    evicting: &mut HashMap<String, Instant>,
    message: impl FnOnce(&ActivePod) -> String,
) {
    let Some(victim) = ranked.first() else {
        tracing::warn!("the node is under pressure and no pod can be evicted");
        return;
    };
    let Some(pod) = pods.get(&victim.uid) else {
        return;
    };
    pod.evict(message(pod));
    evicting.insert(victim.uid.clone(), Instant::now());
}

async fn evict_for_memory(k: &Kubelet, signal: &Signal, evicting: &mut HashMap<String, Instant>) {
    let stats = k.runtime.list_pod_sandbox_stats().await.unwrap_or_default();
    let pods: HashMap<String, ActivePod> = candidates(k, evicting).into_iter().collect();
    // Per pod: the stats of its sandbox that uses the most (its latest run).
    let mut usage: HashMap<&str, &shoal_runtime::SandboxStats> = HashMap::new();
    for s in &stats {
        let e = usage.entry(s.uid.as_str()).or_insert(s);
        if s.memory_bytes > e.memory_bytes {
            *e = s;
        }
    }
    let ranked = rank::order(
        pods.iter()
            .map(|(uid, p)| Candidate {
                uid: uid.clone(),
                priority: p.pod.priority(),
                usage: usage.get(uid.as_str()).map_or(0, |s| s.memory_bytes),
                request: p.pod.request("memory"),
            })
            .collect(),
    );
    evict_first(&pods, &ranked, evicting, |p| {
        let uid = p.pod.metadata.uid.as_deref().unwrap_or("");
        let biggest = usage
            .get(uid)
            .and_then(|s| s.containers.iter().max_by_key(|c| c.memory_bytes))
            .map(|c| (c.name.clone(), c.memory_bytes));
        let mut message = signal.message();
        if let Some((name, bytes)) = biggest {
            let request = p
                .pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| c.name == name)
                .and_then(|c| container_request(c, "memory"))
                .unwrap_or(0);
            message.push_str(&format!(
                "Container {name} was using {}, request is {}, has larger consumption of memory. ",
                quantity(bytes),
                quantity(request)
            ));
        }
        message
    });
}

/// What a pod's local storage takes: its logs and emptyDir volumes.
fn local_usage(p: &ActivePod) -> u64 {
    let volumes = p
        .pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| v.empty_dir.is_some())
        .map(|v| storage::disk_usage(&p.dir.join("volumes").join(&v.name)))
        .sum::<u64>();
    volumes + storage::disk_usage(&p.dir.join("logs"))
}

/// The images of `present` that may be removed: named by no pod of the node (`used` holds
/// their digests) and not the node's own (`shoal.local/...`: sample workloads and the sandbox
/// image, which no registry has).
fn reclaimable<'a>(
    present: &'a [shoal_runtime::ImageRef],
    used: &std::collections::HashSet<String>,
) -> Vec<&'a shoal_runtime::ImageRef> {
    present
        .iter()
        .filter(|i| !used.contains(&i.digest))
        .filter(|i| !i.names.iter().any(|n| n.starts_with("shoal.local/")))
        .collect()
}

/// Removes the images no pod of the node uses; the bytes freed.
async fn reclaim_images(k: &Kubelet) -> u64 {
    let mut names = Vec::new();
    for p in k.active.all() {
        let Some(spec) = p.pod.spec.as_ref() else {
            continue;
        };
        let containers = spec.containers.iter();
        let init = spec.init_containers.iter().flatten();
        names.extend(containers.chain(init).filter_map(|c| c.image.clone()));
        let ephemeral = spec.ephemeral_containers.iter().flatten();
        names.extend(ephemeral.filter_map(|c| c.image.clone()));
    }
    let mut used = std::collections::HashSet::new();
    for name in names {
        if let Ok(Some(image)) = k.runtime.image_status(&name).await {
            used.insert(image.digest);
        }
    }
    let present = k.runtime.list_images().await.unwrap_or_default();
    let mut freed = 0;
    for image in reclaimable(&present, &used) {
        match k.runtime.remove_image(&image.digest).await {
            Ok(()) => {
                tracing::info!(image = ?image.names, digest = %image.digest, "removed an unused image under disk pressure");
                freed += image.size;
            }
            Err(e) => {
                tracing::warn!(image = ?image.names, error = %e, "cannot remove an unused image")
            }
        }
    }
    freed
}

async fn evict_for_disk(k: &Kubelet, signal: &Signal, evicting: &mut HashMap<String, Instant>) {
    // Node-level resources first: the next round measures again before any pod goes.
    if reclaim_images(k).await > 0 {
        return;
    }
    let pods: HashMap<String, ActivePod> = candidates(k, evicting).into_iter().collect();
    let measured = pods.clone();
    let usage = tokio::task::spawn_blocking(move || {
        measured
            .iter()
            .map(|(uid, p)| (uid.clone(), local_usage(p)))
            .collect::<HashMap<String, u64>>()
    })
    .await
    .unwrap_or_default();
    let ranked = rank::order(
        pods.iter()
            .map(|(uid, p)| Candidate {
                uid: uid.clone(),
                priority: p.pod.priority(),
                usage: usage.get(uid).copied().unwrap_or(0),
                request: p.pod.request("ephemeral-storage"),
            })
            .collect(),
    );
    evict_first(&pods, &ranked, evicting, |_| signal.message());
}

/// Why `p` is past one of its own local-storage limits, if it is.
fn storage_violation(p: &ActivePod) -> Option<String> {
    let spec = p.pod.spec.as_ref()?;
    let mut pod_total = storage::disk_usage(&p.dir.join("logs"));
    for v in spec.volumes.iter().flatten() {
        let Some(ed) = &v.empty_dir else { continue };
        let used = storage::disk_usage(&p.dir.join("volumes").join(&v.name));
        pod_total += used;
        if let Some(limit) = &ed.size_limit
            && let Ok(bytes) = shoal_api::quantity::bytes(&limit.0)
            && used > bytes
        {
            return Some(format!(
                "Usage of EmptyDir volume \"{}\" exceeds the limit \"{}\". ",
                v.name, limit.0
            ));
        }
    }
    for c in &spec.containers {
        if let Some(limit) = container_limit(c, "ephemeral-storage")
            && storage::disk_usage(&p.dir.join("logs").join(&c.name)) > limit
        {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit \"{}\". ",
                c.name,
                quantity(limit)
            ));
        }
    }
    let limits: Option<u64> = spec
        .containers
        .iter()
        .map(|c| container_limit(c, "ephemeral-storage"))
        .sum();
    match limits {
        Some(total) if pod_total > total => Some(format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
            quantity(total)
        )),
        _ => None,
    }
}

/// Evicts every pod past its own local-storage limits.
async fn local_storage_limits(k: &Kubelet, evicting: &mut HashMap<String, Instant>) {
    let limited: Vec<(String, ActivePod)> = candidates(k, evicting)
        .into_iter()
        .filter(|(_, p)| {
            p.pod.spec.as_ref().is_some_and(|s| {
                s.volumes
                    .iter()
                    .flatten()
                    .any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()))
                    || s.containers
                        .iter()
                        .any(|c| container_limit(c, "ephemeral-storage").is_some())
            })
        })
        .collect();
    if limited.is_empty() {
        return;
    }
    let verdicts = tokio::task::spawn_blocking(move || {
        limited
            .into_iter()
            .filter_map(|(uid, p)| Some((uid, storage_violation(&p)?, p)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (uid, message, p) in verdicts {
        p.evict(message);
        evicting.insert(uid, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pressure_condition_holds_for_the_transition_period_after_the_last_crossing() {
        let mut c = PressureCondition::new();
        let t0 = Instant::now();
        let hold = Duration::from_secs(10);
        assert!(!c.observe(false, t0, hold));
        assert!(c.observe(true, t0, hold), "turns on at once");
        assert!(!c.observe(false, t0 + Duration::from_secs(5), hold));
        assert!(c.on);
        assert!(c.observe(false, t0 + Duration::from_secs(11), hold));
        assert!(!c.on);
    }

    #[test]
    fn unused_images_are_reclaimable_but_the_node_s_own_are_kept() {
        let image = |name: &str, digest: &str| shoal_runtime::ImageRef {
            names: vec![name.to_owned()],
            digest: digest.to_owned(),
            size: 1,
        };
        let present = [
            image("docker.io/library/busybox:latest", "sha256:a"),
            image("docker.io/library/nginx:1", "sha256:b"),
            image("shoal.local/pause:1.0", "sha256:c"),
            image("shoal.local/hello:latest", "sha256:d"),
        ];
        let used = ["sha256:a".to_owned()].into_iter().collect();
        let gone: Vec<&str> = reclaimable(&present, &used)
            .iter()
            .map(|i| i.digest.as_str())
            .collect();
        assert_eq!(gone, ["sha256:b"]);
    }

    #[test]
    fn messages_name_the_resource_threshold_and_what_is_left() {
        let s = Signal {
            resource: "memory",
            available: 50 << 20,
            threshold: Quantity::Bytes(100 << 20),
            threshold_bytes: 100 << 20,
        };
        assert!(s.crossed());
        assert_eq!(
            s.message(),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "
        );
    }
}
