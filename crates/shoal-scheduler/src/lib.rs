//! The scheduler: watches pods without a node and the nodes, filters and scores nodes with
//! [`plugins::Plugin`]s, binds through `pods/binding`, and reports a pod that fits nowhere as
//! Kubernetes does (a `FailedScheduling` event and `PodScheduled=False` with
//! `0/N nodes are available: ...`). Unschedulable pods are retried with back-off, and at once
//! when a node changes.

pub mod framework;
pub mod interpod;
pub mod plugins;
pub mod preemption;
pub mod spread;
pub mod volumes;
pub mod wasm;

use framework::{Framework, NodeInfo, Plugin, PodAccount};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use shoal_api::pod::PodExt;
use shoal_supervisor::{Restart, Supervisor};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The scheduler name pods select with `spec.schedulerName`.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Bindings in flight at once (each is one API request).
const PARALLEL_BINDS: usize = 64;

#[derive(Default)]
struct State {
    /// Every node, as an empty node info (allocatable parsed once per node version).
    nodes: BTreeMap<String, NodeInfo>,
    /// Every pod by `namespace/name`.
    pods: HashMap<String, Arc<Pod>>,
    /// What each bound pod takes from its node.
    accounts: HashMap<String, Arc<PodAccount>>,
    /// Pods assumed bound (to the node named) while their binding is in flight; the watch
    /// does not undo that until it shows them bound.
    assumed: HashMap<String, String>,
    /// Unschedulable pods: when to try again, and the current back-off.
    backoff: HashMap<String, (Instant, Duration)>,
    /// PodDisruptionBudgets by `namespace/name`, which preemption tries not to violate.
    budgets: HashMap<String, preemption::Budget>,
    /// The claims, volumes and classes pods' volumes need.
    volumes: volumes::Volumes,
    /// RuntimeClass handlers, shared with the RuntimeHandler plugin.
    runtime_classes: plugins::RuntimeClasses,
}

/// `namespace/name` of any object.
fn object_key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn pending_for_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let unbound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let ours = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n == DEFAULT_SCHEDULER);
    let finished = pod.is_terminal();
    unbound && ours && !finished && pod.metadata.deletion_timestamp.is_none()
}

fn bound_and_active(pod: &Pod) -> Option<&str> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let finished = pod.is_terminal();
    (!node.is_empty() && !finished).then_some(node)
}

/// How a scheduler runs: its Wasm plugins (none without a plugin engine) and the supervisor
/// of its tasks.
#[derive(Clone, Default)]
pub struct Config {
    pub plugins: Option<wasm::PluginConfig>,
    pub supervisor: Supervisor,
}

/// A running scheduler.
pub struct Scheduler {
    client: kube::Client,
    config: Config,
    /// The built-in plugins, then the Wasm plugins in force (rebuilt when they change).
    framework: std::sync::RwLock<Arc<Framework>>,
    builtin: Vec<Arc<dyn Plugin>>,
    wasm: Arc<wasm::WasmPlugins>,
    wasm_seen: std::sync::atomic::AtomicI64,
    state: Mutex<State>,
    wake: Notify,
    binds: Arc<tokio::sync::Semaphore>,
    events: shoal_client::Recorder,
}

impl Scheduler {
    pub fn new(client: kube::Client, plugins: Vec<Box<dyn Plugin>>, config: Config) -> Arc<Self> {
        let runtime_classes = plugins::RuntimeClasses::default();
        let builtin: Vec<Arc<dyn Plugin>> =
            std::iter::once(Box::new(plugins::RuntimeHandler(runtime_classes.clone())) as _)
                .chain(plugins)
                .map(Arc::from)
                .collect();
        let events = shoal_client::Recorder::new(client.clone(), DEFAULT_SCHEDULER, None);
        Arc::new(Self {
            client,
            config,
            framework: std::sync::RwLock::new(Arc::new(Framework::shared(builtin.clone()))),
            builtin,
            wasm: Arc::default(),
            wasm_seen: std::sync::atomic::AtomicI64::new(0),
            state: Mutex::new(State {
                runtime_classes,
                ..Default::default()
            }),
            wake: Notify::new(),
            binds: Arc::new(tokio::sync::Semaphore::new(PARALLEL_BINDS)),
            events,
        })
    }

    /// The profile for this pass: the built-ins plus the Wasm plugins loaded now.
    fn framework(&self) -> Arc<Framework> {
        use std::sync::atomic::Ordering;
        let generation = self.wasm.generation.load(Ordering::Acquire);
        if self.wasm_seen.swap(generation, Ordering::AcqRel) != generation {
            let wasm = self
                .wasm
                .plugins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut plugins = self.builtin.clone();
            plugins.extend(wasm.into_iter().map(|p| p as Arc<dyn Plugin>));
            *self.framework.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(Framework::shared(plugins));
        }
        self.framework
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("scheduler state lock is never poisoned")
    }

    /// Runs until `shutdown`: the node and pod watches, the plugin loader and the scheduling
    /// loop, each a supervised task (a panic is logged, reported and the task restarted).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let sup = self.config.supervisor.clone();
        let this = self.clone();
        let nodes = sup.spawn(
            "scheduler/node-watch",
            Restart::Always,
            shutdown.clone(),
            move || this.clone().watch_nodes(),
        );
        let this = self.clone();
        let pods = sup.spawn(
            "scheduler/pod-watch",
            Restart::Always,
            shutdown.clone(),
            move || this.clone().watch_pods(),
        );
        use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
        use k8s_openapi::api::node::v1::RuntimeClass;
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use k8s_openapi::api::storage::v1::StorageClass;
        let followers = [
            self.follow::<PodDisruptionBudget>(
                &shutdown,
                "scheduler/disruption-budget-watch",
                |s, b| match preemption::Budget::of(&b) {
                    Some(budget) => {
                        s.budgets.insert(object_key(&b.metadata), budget);
                    }
                    None => {
                        s.budgets.remove(&object_key(&b.metadata));
                    }
                },
                |s, b| {
                    s.budgets.remove(&object_key(&b.metadata));
                },
                |s| s.budgets.clear(),
            ),
            self.follow::<PersistentVolumeClaim>(
                &shutdown,
                "scheduler/claim-watch",
                |s, c| {
                    s.volumes.claims.insert(object_key(&c.metadata), c);
                },
                |s, c| {
                    s.volumes.claims.remove(&object_key(&c.metadata));
                },
                |s| s.volumes.claims.clear(),
            ),
            self.follow::<PersistentVolume>(
                &shutdown,
                "scheduler/volume-watch",
                |s, v| {
                    s.volumes
                        .volumes
                        .insert(v.metadata.name.clone().unwrap_or_default(), v);
                },
                |s, v| {
                    s.volumes
                        .volumes
                        .remove(v.metadata.name.as_deref().unwrap_or(""));
                },
                |s| s.volumes.volumes.clear(),
            ),
            self.follow::<StorageClass>(
                &shutdown,
                "scheduler/storage-class-watch",
                |s, c| {
                    s.volumes
                        .classes
                        .insert(c.metadata.name.clone().unwrap_or_default(), c);
                },
                |s, c| {
                    s.volumes
                        .classes
                        .remove(c.metadata.name.as_deref().unwrap_or(""));
                },
                |s| s.volumes.classes.clear(),
            ),
            self.follow::<RuntimeClass>(
                &shutdown,
                "scheduler/runtime-class-watch",
                |s, c| {
                    let name = c.metadata.name.clone().unwrap_or_default();
                    let mut classes = s.runtime_classes.write().unwrap_or_else(|p| p.into_inner());
                    classes.insert(name, c.handler);
                },
                |s, c| {
                    let mut classes = s.runtime_classes.write().unwrap_or_else(|p| p.into_inner());
                    classes.remove(c.metadata.name.as_deref().unwrap_or(""));
                },
                |s| {
                    s.runtime_classes
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear()
                },
            ),
        ];
        let plugins = self.config.plugins.clone().map(|config| {
            let client = self.client.clone();
            let out = self.wasm.clone();
            sup.spawn(
                "scheduler/plugin-loader",
                Restart::Always,
                shutdown.clone(),
                move || wasm::run_loader(client.clone(), config.clone(), out.clone()),
            )
        });
        let this = self.clone();
        let stop = shutdown.clone();
        let scheduling = sup.spawn(
            "scheduler/scheduling",
            Restart::Always,
            shutdown.clone(),
            move || this.clone().schedule_loop(stop.clone()),
        );
        shutdown.cancelled().await;
        for task in [Some(nodes), Some(pods), plugins]
            .into_iter()
            .flatten()
            .chain(followers)
        {
            task.abort();
        }
        let _ = scheduling.await;
    }

    /// Schedules what is pending whenever something changes (or every second).
    async fn schedule_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(BACKOFF_INITIAL) => {}
            }
            // A pass is CPU work (and Wasm plugins block while they run), so it runs on a
            // blocking thread, never on the runtime's workers that serve everything else.
            let this = self.clone();
            let snapshot_took =
                match tokio::task::spawn_blocking(move || this.schedule_pending()).await {
                    Ok(took) => took,
                    // The supervisor reports and restarts the loop.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => break,
                };
            // Building the snapshot costs the same however many pods a pass schedules: under
            // a stream of new pods, wait as long again so each pass takes a batch, rather
            // than spending the CPU the API server needs on snapshots of one pod each.
            let pause = (snapshot_took * 2).min(Duration::from_millis(50));
            if pause >= Duration::from_millis(1) {
                tokio::time::sleep(pause).await;
            }
        }
    }

    async fn watch_nodes(self: Arc<Self>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(e) = stream.next().await {
            let mut s = self.lock();
            match e {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    s.nodes.insert(
                        n.metadata.name.clone().unwrap_or_default(),
                        NodeInfo::new(n),
                    );
                }
                Ok(watcher::Event::Delete(n)) => {
                    s.nodes.remove(n.metadata.name.as_deref().unwrap_or(""));
                }
                Ok(watcher::Event::Init) => s.nodes.clear(),
                Ok(watcher::Event::InitDone) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                    continue;
                }
            }
            // A node changed: unschedulable pods may fit now.
            s.backoff.clear();
            drop(s);
            self.wake.notify_one();
        }
    }

    /// Follows every object of kind `K` into the state with `apply`, `delete` and `clear` (a
    /// fresh list), as a supervised task; each change lets waiting pods try again.
    fn follow<K>(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        name: &'static str,
        apply: fn(&mut State, K),
        delete: fn(&mut State, K),
        clear: fn(&mut State),
    ) -> tokio::task::JoinHandle<()>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let this = self.clone();
        self.config
            .supervisor
            .spawn(name, Restart::Always, shutdown.clone(), move || {
                let this = this.clone();
                async move {
                    let api: Api<K> = Api::all(this.client.clone());
                    let mut stream = watcher(api, watcher::Config::default())
                        .default_backoff()
                        .boxed();
                    while let Some(e) = stream.next().await {
                        let mut s = this.lock();
                        match e {
                            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                                apply(&mut s, o)
                            }
                            Ok(watcher::Event::Delete(o)) => delete(&mut s, o),
                            Ok(watcher::Event::Init) => clear(&mut s),
                            Ok(watcher::Event::InitDone) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, task = name, "watch failed; retrying");
                                continue;
                            }
                        }
                        s.backoff.clear();
                        drop(s);
                        this.wake.notify_one();
                    }
                }
            })
    }

    async fn watch_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(e) = stream.next().await {
            let mut s = self.lock();
            let wake = match e {
                Ok(watcher::Event::Apply(mut p) | watcher::Event::InitApply(mut p)) => {
                    let k = key(&p);
                    if let Some(node) = s.assumed.get(&k) {
                        if bound_and_active(&p).is_some() || p.metadata.deletion_timestamp.is_some()
                        {
                            s.assumed.remove(&k);
                        } else if let Some(spec) = p.spec.as_mut() {
                            // Still assumed: keep it on its node until the binding shows.
                            spec.node_name = Some(node.clone());
                        }
                    }
                    let pending = pending_for_us(&p);
                    s.accounts.insert(k.clone(), Arc::new(PodAccount::of(&p)));
                    s.pods.insert(k, Arc::new(p));
                    pending
                }
                Ok(watcher::Event::Delete(p)) => {
                    s.pods.remove(&key(&p));
                    s.accounts.remove(&key(&p));
                    s.assumed.remove(&key(&p));
                    s.backoff.remove(&key(&p));
                    // Freed room may let a waiting pod fit.
                    s.backoff.clear();
                    true
                }
                Ok(watcher::Event::Init) => {
                    s.pods.clear();
                    false
                }
                Ok(watcher::Event::InitDone) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    false
                }
            };
            drop(s);
            if wake {
                self.wake.notify_one();
            }
        }
    }

    /// Node infos with every active pod bound to each node accounted for.
    fn snapshot(&self) -> (Vec<NodeInfo>, Vec<Arc<Pod>>) {
        let s = self.lock();
        let mut infos: BTreeMap<&str, NodeInfo> = s
            .nodes
            .iter()
            .map(|(name, n)| (name.as_str(), n.clone()))
            .collect();
        let now = Instant::now();
        let mut pending = Vec::new();
        for (k, p) in &s.pods {
            if let Some(node) = bound_and_active(p) {
                if let Some(info) = infos.get_mut(node) {
                    match s.accounts.get(k) {
                        Some(a) => info.add_accounted(p.clone(), a),
                        None => info.add(p.clone()),
                    }
                }
            } else if pending_for_us(p) && s.backoff.get(k).is_none_or(|(t, _)| now >= *t) {
                pending.push(p.clone());
            }
        }
        pending.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        (infos.into_values().collect(), pending)
    }

    /// Schedules every pending pod once; returns how long the snapshot took. Runs on a
    /// blocking thread (see [`Scheduler::schedule_loop`]).
    fn schedule_pending(self: &Arc<Self>) -> Duration {
        let runtime = tokio::runtime::Handle::current();
        let started = Instant::now();
        let (mut nodes, pending) = self.snapshot();
        let snapshot_took = started.elapsed();
        let framework = self.framework();
        for pod in pending {
            let k = key(&pod);
            let _span = tracing::info_span!("schedule", pod = %k).entered();
            let attempt = Attempt::new(&pod);
            // The pod's claims: whether it can go anywhere yet, and where.
            let needs = self.lock().volumes.needs(&pod);
            let needs = match needs {
                Ok(needs) => needs,
                Err(why) => {
                    self.back_off(&pod);
                    let n = nodes.len();
                    self.report_unschedulable(&pod, format!("0/{n} nodes are available: {why}."));
                    attempt.done("unschedulable");
                    continue;
                }
            };
            let result = match &needs.nodes {
                None => framework.schedule(&pod, &nodes),
                Some(allowed) => {
                    let index: Vec<usize> = (0..nodes.len())
                        .filter(|i| allowed.iter().any(|a| a == nodes[*i].name()))
                        .collect();
                    let subset: Vec<NodeInfo> = index.iter().map(|i| nodes[*i].clone()).collect();
                    if subset.is_empty() {
                        Err(format!(
                            "0/{n} nodes are available: {n} node(s) had volume node affinity conflict.",
                            n = nodes.len()
                        ))
                    } else {
                        framework.schedule(&pod, &subset).map(|mut d| {
                            d.node = index[d.node];
                            d
                        })
                    }
                }
            };
            match result {
                Ok(decision) => {
                    let i = decision.node;
                    let node = nodes[i].name().to_owned();
                    if let Err(why) = framework.reserve(&decision.state, &pod, &node) {
                        self.back_off(&pod);
                        self.report_unschedulable(&pod, why);
                        attempt.done("unschedulable");
                        continue;
                    }
                    attempt.done("scheduled");
                    // Assume the binding: the pod counts on its node from now on.
                    let mut bound = (*pod).clone();
                    if let Some(spec) = bound.spec.as_mut() {
                        spec.node_name = Some(node.clone());
                    }
                    let bound = Arc::new(bound);
                    nodes[i].add(bound.clone());
                    {
                        let mut s = self.lock();
                        s.backoff.remove(&k);
                        s.assumed.insert(k.clone(), node.clone());
                        s.pods.insert(k.clone(), bound);
                    }
                    let Ok(permit) = runtime.block_on(self.binds.clone().acquire_owned()) else {
                        return snapshot_took;
                    };
                    let this = self.clone();
                    let framework = framework.clone();
                    let select = needs.select;
                    runtime.spawn(async move {
                        let result = match this.select_node(&select, &node).await {
                            Ok(()) => this.bind(&pod, &node).await,
                            Err(e) => Err(e),
                        };
                        drop(permit);
                        if let Err(e) = result {
                            tracing::warn!(pod = %k, error = %e, "binding failed");
                            framework.unreserve(&decision.state, &pod, &node);
                            {
                                let mut s = this.lock();
                                if s.assumed.remove(&k).is_some() {
                                    s.pods.insert(k.clone(), pod.clone());
                                }
                            }
                            this.back_off(&pod);
                            this.wake.notify_one();
                        }
                    });
                }
                Err(message) => {
                    let budgets: Vec<preemption::Budget> =
                        self.lock().budgets.values().cloned().collect();
                    if preemption::may_preempt(&pod, &nodes)
                        && let Some(plan) = preemption::plan(&framework, &pod, &nodes, &budgets)
                    {
                        let node = nodes[plan.node].name().to_owned();
                        let this = self.clone();
                        let preemptor = pod.clone();
                        runtime.spawn(async move {
                            this.preempt(&preemptor, &node, &plan.victims).await
                        });
                    }
                    self.back_off(&pod);
                    self.report_unschedulable(&pod, message);
                    attempt.done("unschedulable");
                }
            }
        }
        snapshot_took
    }

    /// Deletes `victims` for `pod` (a `Preempted` event on each, as kube-scheduler records
    /// it) and nominates `node` in the pod's status.
    async fn preempt(&self, pod: &Pod, node: &str, victims: &[Arc<Pod>]) {
        let uid = pod.metadata.uid.as_deref().unwrap_or("");
        for v in victims {
            let ns = v.metadata.namespace.as_deref().unwrap_or("default");
            let name = v.metadata.name.as_deref().unwrap_or("");
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            match api.delete(name, &Default::default()).await {
                Ok(_) => self.event(
                    v,
                    "Normal",
                    "Preempted",
                    format!("Preempted by pod {uid} on node {node}"),
                ),
                Err(e) => tracing::debug!(pod = %name, error = %e, "cannot preempt"),
            }
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let status = json!({"status": {"nominatedNodeName": node}});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "cannot nominate a node");
        }
    }

    fn report_unschedulable(self: &Arc<Self>, pod: &Arc<Pod>, message: String) {
        let this = self.clone();
        let pod = pod.clone();
        tokio::spawn(async move { this.unschedulable(&pod, &message).await });
    }

    fn back_off(&self, pod: &Pod) {
        let mut s = self.lock();
        let next = s
            .backoff
            .get(&key(pod))
            .map_or(BACKOFF_INITIAL, |(_, d)| (*d * 2).min(BACKOFF_MAX));
        s.backoff.insert(key(pod), (Instant::now() + next, next));
    }

    /// Names `node` in each claim that waits for its first consumer, for the node's
    /// provisioner (kube-scheduler's VolumeBinding PreBind).
    async fn select_node(
        &self,
        claims: &[(String, String)],
        node: &str,
    ) -> Result<(), kube::Error> {
        use k8s_openapi::api::core::v1::PersistentVolumeClaim;
        for (ns, name) in claims {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
            let patch = json!({"metadata": {"annotations": {volumes::SELECTED_NODE: node}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        Ok(())
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let _: serde_json::Value = api
            .create_subresource("binding", name, &PostParams::default(), &binding)
            .await?;
        self.event(
            pod,
            "Normal",
            "Scheduled",
            format!("Successfully assigned {ns}/{name} to {node}"),
        );
        Ok(())
    }

    async fn unschedulable(&self, pod: &Pod, message: &str) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let already = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .is_some_and(|c| c.message.as_deref() == Some(message));
        if already {
            return;
        }
        self.event(pod, "Warning", "FailedScheduling", message.to_owned());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string();
        let status = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null, "lastTransitionTime": now,
        }]}});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "cannot report unschedulable pod");
        }
    }

    fn event(&self, pod: &Pod, kind: &str, reason: &str, message: String) {
        let kind = if kind == "Warning" {
            shoal_client::EventType::Warning
        } else {
            shoal_client::EventType::Normal
        };
        self.events.record(pod, None, kind, reason, message);
    }
}

/// Runs one scheduling cycle of `plugins` for `pod`: the index of the chosen node, or the
/// message saying why no node fits (`0/3 nodes are available: 1 Insufficient memory, ...`).
pub fn decide(
    plugins: Vec<Box<dyn Plugin>>,
    pod: &Pod,
    nodes: &[NodeInfo],
) -> Result<usize, String> {
    Framework::new(plugins).schedule(pod, nodes).map(|d| d.node)
}

/// One scheduling attempt, counted and timed as Kubernetes' `scheduler_schedule_attempts_total`
/// and `scheduler_scheduling_attempt_duration_seconds` (by result and profile).
struct Attempt {
    profile: String,
    started: Instant,
}

impl Attempt {
    fn new(pod: &Pod) -> Self {
        Attempt {
            profile: pod
                .spec
                .as_ref()
                .and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| "default-scheduler".into()),
            started: Instant::now(),
        }
    }

    /// `scheduled`, `unschedulable` or `error`.
    fn done(&self, result: &'static str) {
        let labels = [
            ("result", result.to_owned()),
            ("profile", self.profile.clone()),
        ];
        metrics::counter!("scheduler_schedule_attempts_total", &labels).increment(1);
        metrics::histogram!("scheduler_scheduling_attempt_duration_seconds", &labels)
            .record(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value, extra: serde_json::Value) -> NodeInfo {
        let mut n = json!({"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}});
        if let Some(spec) = extra.get("spec") {
            n["spec"] = spec.clone();
        }
        NodeInfo::new(serde_json::from_value::<Node>(n).unwrap())
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn explains_why_no_node_fits_like_kubernetes() {
        let nodes = vec![
            node("a", json!({}), json!({})),
            node(
                "b",
                json!({}),
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node(
                "c",
                json!({}),
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
        ];
        let big = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"memory": "2Gi"}}}]}),
        );
        let msg = decide(plugins::defaults(), &big, &nodes).unwrap_err();
        assert_eq!(
            msg,
            "0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {dedicated: gpu}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        let small = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(decide(plugins::defaults(), &small, &nodes), Ok(0));
    }

    #[test]
    fn selectors_affinity_and_tolerations() {
        let nodes = vec![
            node("a", json!({"zone": "x"}), json!({})),
            node(
                "b",
                json!({"zone": "y"}),
                json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            ),
        ];
        let sel = pod(
            json!({"containers": [{"name": "a"}], "nodeSelector": {"zone": "y"},
            "tolerations": [{"key": "k", "operator": "Exists"}]}),
        );
        assert_eq!(decide(plugins::defaults(), &sel, &nodes), Ok(1));
        let aff = pod(
            json!({"containers": [{"name": "a"}], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["y"]}]}]}}}}),
        );
        assert_eq!(decide(plugins::defaults(), &aff, &nodes), Ok(0));
        let none = pod(json!({"containers": [{"name": "a"}], "nodeSelector": {"zone": "z"}}));
        let msg = decide(plugins::defaults(), &none, &nodes).unwrap_err();
        assert!(msg.starts_with("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {k: }."), "{msg}");
    }

    #[test]
    fn only_best_effort_pods_stay_off_a_node_under_memory_pressure() {
        let nodes = vec![node(
            "a",
            json!({}),
            json!({"spec": {"taints": [{"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}]}}),
        )];
        let best_effort = pod(json!({"containers": [{"name": "a"}]}));
        let msg = decide(plugins::defaults(), &best_effort, &nodes).unwrap_err();
        assert!(
            msg.starts_with("0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/memory-pressure: }."),
            "{msg}"
        );
        let burstable = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"memory": "16Mi"}}}]}),
        );
        assert_eq!(decide(plugins::defaults(), &burstable, &nodes), Ok(0));
    }

    #[test]
    fn least_allocated_spreads_pods() {
        let mut nodes = vec![
            node("a", json!({}), json!({})),
            node("b", json!({}), json!({})),
        ];
        let p = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}}]}),
        );
        let first = decide(plugins::defaults(), &p, &nodes).unwrap();
        nodes[first].add(p.clone());
        let second = decide(plugins::defaults(), &p, &nodes).unwrap();
        assert_ne!(first, second);
    }
}
