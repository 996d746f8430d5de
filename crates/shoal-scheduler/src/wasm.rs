//! Scheduler plugins as Wasm components: [`WasmPlugin`] adapts a loaded module to the
//! framework's [`Plugin`] trait, and [`run_loader`] keeps the scheduler's set of plugins in
//! step with the `SchedulerPlugin` objects it watches (through the plugin host's
//! [`Loader`]: hot reload, last good module kept, status, events).
//!
//! Plugin calls are synchronous and run where the scheduler runs its cycles, on a blocking
//! thread. A plugin's failure is its own: a trap, a timeout, a blown memory cap or a malformed
//! answer fails the plugin's part of the cycle (`Ignore` skips it, `Fail` rejects the nodes it
//! was asked about, naming the plugin and the cause), and the plugin's circuit breaker benches
//! a plugin that keeps failing so cycles stop paying its timeout.

use crate::framework::{self, CycleState, NodeInfo, Plugin};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use shoal_api::policy::{PluginStatus, SchedulerPlugin, SchedulerPluginSpec};
use shoal_plugin_host::health::{Health, Notice};
use shoal_plugin_host::loader::{Backend, Loader, PluginObject};
use shoal_plugin_host::scheduler::{Amounts, Cycle, NodeView, PodView, Points, SchedulerModule};
use shoal_plugin_host::source::SourcePolicy;
use shoal_plugin_host::{Host, PluginError, PluginKey};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A Wasm scheduler plugin in the framework.
pub struct WasmPlugin {
    name: String,
    module: SchedulerModule,
    settings: String,
    points: Points,
    weight: i64,
    ignore_failures: bool,
    timeout: Duration,
}

/// The plugin's instance for one cycle, or why it has none.
enum Slot {
    Live(Box<Cycle>),
    Failed(String),
}

fn view(node: &NodeInfo) -> NodeView {
    NodeView {
        node: node.node.clone(),
        allocatable: Amounts {
            cpu_millis: node.allocatable_cpu_millis,
            memory_bytes: node.allocatable_memory,
            pods: node.allocatable_pods,
        },
        requested: Amounts {
            cpu_millis: node.requested_cpu_millis,
            memory_bytes: node.requested_memory,
            pods: node.pods,
        },
    }
}

impl WasmPlugin {
    /// `spec` checked by the API server; `module` loaded from its module.
    pub fn new(name: &str, spec: &SchedulerPluginSpec, module: SchedulerModule) -> Self {
        let has = |p: &str| {
            spec.extension_points.is_empty() || spec.extension_points.iter().any(|x| x == p)
        };
        WasmPlugin {
            name: format!("wasm/{name}"),
            module,
            settings: shoal_plugin_host::loader::PluginSpec::settings(spec),
            points: Points {
                pre_filter: has("PreFilter"),
                filter: has("Filter"),
                score: has("Score"),
            },
            weight: spec.weight.unwrap_or(1).clamp(1, 100),
            ignore_failures: spec.failure_policy.as_deref() == Some("Ignore"),
            timeout: Duration::from_millis(
                spec.timeout_milliseconds.unwrap_or(100).clamp(1, 10_000) as u64,
            ),
        }
    }

    /// Calls that failed (trap, timeout, memory) since the module was loaded.
    pub fn failures(&self) -> i64 {
        self.module.health().failures()
    }

    /// The plugin's health (breaker, failures).
    pub fn health(&self) -> &Arc<Health> {
        self.module.health()
    }

    /// The reason a failure counts as in a pod's `0/N nodes are available: ...` message (the
    /// health has logged and counted it). Reasons are listed comma-separated there, so the
    /// error's own commas become semicolons.
    fn failed(&self, e: &PluginError) -> String {
        format!("plugin {} failed: {e}", self.name).replace(", ", "; ")
    }

    /// Runs `f` on the cycle's instance; a failure retires the instance for the cycle.
    fn with_cycle<R>(
        &self,
        state: &CycleState,
        f: impl FnOnce(&mut Cycle) -> Result<R, PluginError>,
    ) -> Option<Result<R, String>> {
        let slot = state.read::<Mutex<Slot>>(&self.name)?;
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *slot {
            Slot::Failed(why) => Some(Err(why.clone())),
            Slot::Live(cycle) => match f(cycle) {
                Ok(r) => Some(Ok(r)),
                Err(e) => {
                    let why = self.failed(&e);
                    *slot = Slot::Failed(why.clone());
                    Some(Err(why))
                }
            },
        }
    }
}

impl Plugin for WasmPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &Pod,
        _nodes: &[NodeInfo],
    ) -> Result<(), String> {
        let mut cycle = match self.module.cycle(&self.settings, self.timeout) {
            Ok(c) => c,
            Err(e) => {
                let why = self.failed(&e);
                state.write(&self.name, Mutex::new(Slot::Failed(why.clone())));
                return if self.ignore_failures {
                    Ok(())
                } else {
                    Err(why)
                };
            }
        };
        cycle.set_pod(PodView {
            pod: Arc::new(pod.clone()),
            requests: Amounts {
                cpu_millis: state.requests.cpu_millis,
                memory_bytes: state.requests.memory,
                pods: 1,
            },
        });
        let verdict = if self.points.pre_filter {
            cycle.pre_filter()
        } else {
            Ok(Ok(()))
        };
        match verdict {
            Ok(v) => {
                state.write(&self.name, Mutex::new(Slot::Live(Box::new(cycle))));
                v
            }
            Err(e) => {
                let why = self.failed(&e);
                state.write(&self.name, Mutex::new(Slot::Failed(why.clone())));
                if self.ignore_failures {
                    Ok(())
                } else {
                    Err(why)
                }
            }
        }
    }

    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Result<(), String> {
        self.filter_many(state, pod, &[node])
            .pop()
            .unwrap_or(Ok(()))
    }

    fn batched(&self) -> bool {
        true
    }

    fn filter_many(
        &self,
        state: &CycleState,
        _pod: &Pod,
        nodes: &[&NodeInfo],
    ) -> Vec<Result<(), String>> {
        if !self.points.filter {
            return vec![Ok(()); nodes.len()];
        }
        match self.with_cycle(state, |c| c.filter(nodes.iter().map(|n| view(n)))) {
            None => vec![Ok(()); nodes.len()],
            Some(Ok(verdicts)) => verdicts
                .into_iter()
                .map(|v| match v {
                    None => Ok(()),
                    Some(why) => Err(why),
                })
                .collect(),
            Some(Err(_)) if self.ignore_failures => vec![Ok(()); nodes.len()],
            Some(Err(why)) => vec![Err(why); nodes.len()],
        }
    }

    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Option<i64> {
        self.score_many(state, pod, &[node]).pop().flatten()
    }

    fn score_many(&self, state: &CycleState, _pod: &Pod, nodes: &[&NodeInfo]) -> Vec<Option<i64>> {
        if !self.points.score {
            return vec![None; nodes.len()];
        }
        // A failing scorer scores nothing (the framework cannot fail a cycle from scoring).
        match self.with_cycle(state, |c| c.score(nodes.iter().map(|n| view(n)))) {
            Some(Ok(scores)) => scores.into_iter().map(Some).collect(),
            _ => vec![None; nodes.len()],
        }
    }

    fn normalize(&self, state: &CycleState, _pod: &Pod, scores: &mut [i64]) {
        match self.with_cycle(state, |c| c.normalize(scores)) {
            Some(Ok(Some(mine))) => {
                for (s, m) in scores.iter_mut().zip(mine) {
                    *s = m.clamp(0, framework::MAX_SCORE);
                }
            }
            _ => framework::normalize_scores(scores, false),
        }
    }

    fn weight(&self) -> i64 {
        self.weight
    }
}

/// The Wasm plugins in force, shared with the scheduler (which rebuilds its framework when
/// the generation moves).
#[derive(Default)]
pub struct WasmPlugins {
    pub generation: AtomicI64,
    pub plugins: Mutex<Vec<Arc<WasmPlugin>>>,
}

impl WasmPlugins {
    fn publish(&self, set: Vec<Arc<WasmPlugin>>) {
        *self.plugins.lock().unwrap_or_else(|p| p.into_inner()) = set;
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Where the scheduler's plugins come from: the process's plugin engine and the operator's
/// rules for module sources.
#[derive(Clone)]
pub struct PluginConfig {
    pub host: Host,
    pub sources: SourcePolicy,
}

/// The scheduler's side of the plugin loader: SchedulerPlugin objects through the API.
struct SchedulerPlugins {
    client: kube::Client,
    events: shoal_client::Recorder,
}

#[async_trait::async_trait]
impl Backend for SchedulerPlugins {
    type Spec = SchedulerPluginSpec;
    type Module = SchedulerModule;
    type Plugin = WasmPlugin;

    fn label(&self, key: &PluginKey) -> String {
        format!("scheduler plugin {}", key.name)
    }

    fn failed_reason(&self) -> &'static str {
        "PluginFailed"
    }

    async fn configmap(&self, namespace: &str, name: &str) -> Result<serde_json::Value, String> {
        let cm = Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .map_err(|e| format!("configmap {namespace}/{name}: {e}"))?;
        serde_json::to_value(&cm).map_err(|e| e.to_string())
    }

    async fn load(
        &self,
        host: &Host,
        health: Arc<Health>,
        bytes: Vec<u8>,
        spec: &SchedulerPluginSpec,
    ) -> Result<SchedulerModule, PluginError> {
        let settings = shoal_plugin_host::loader::PluginSpec::settings(spec);
        SchedulerModule::load_as(
            host,
            health,
            &bytes,
            spec.module_digest.as_deref(),
            &settings,
        )
        .await
    }

    fn digest(module: &SchedulerModule) -> &str {
        &module.digest
    }

    fn build(
        &self,
        object: &PluginObject<SchedulerPluginSpec>,
        module: Option<&SchedulerModule>,
        _error: Option<&str>,
        _health: &Arc<Health>,
    ) -> Option<Arc<WasmPlugin>> {
        // A plugin whose module never loaded takes no part in scheduling.
        let module = module?.clone();
        Some(Arc::new(WasmPlugin::new(
            &object.key.name,
            &object.spec,
            module,
        )))
    }

    async fn write_status(&self, key: &PluginKey, status: &PluginStatus) -> Result<(), String> {
        let patch = serde_json::json!({ "status": status });
        Api::<SchedulerPlugin>::all(self.client.clone())
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn record(&self, key: &PluginKey, uid: Option<&str>, notice: &Notice) {
        let about = shoal_client::Involved {
            api_version: format!(
                "{}/{}",
                shoal_api::policy::GROUP,
                shoal_api::policy::VERSION
            ),
            kind: key.kind.into(),
            name: key.name.clone(),
            uid: uid.map(str::to_owned),
            ..Default::default()
        };
        let type_ = if notice.type_ == "Warning" {
            shoal_client::EventType::Warning
        } else {
            shoal_client::EventType::Normal
        };
        self.events
            .record_about(about, type_, notice.reason, notice.message.clone());
    }
}

/// Keeps `out` in step with the SchedulerPlugin objects (followed with a watch, and looked
/// at again every half second for local modules that changed) until the task is dropped.
pub async fn run_loader(client: kube::Client, config: PluginConfig, out: Arc<WasmPlugins>) {
    let api: Api<SchedulerPlugin> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = changed.clone();
    let follow = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |_| {
            notify.notify_one();
            std::future::ready(())
        });
    let loader = Loader::new(
        SchedulerPlugins {
            client: client.clone(),
            events: shoal_client::Recorder::new(client.clone(), crate::DEFAULT_SCHEDULER, None),
        },
        config.host,
        config.sources,
    );
    let objects = move || {
        let objects = reader
            .state()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                Some(PluginObject {
                    key: PluginKey::cluster("SchedulerPlugin", p.metadata.name.as_deref()?),
                    uid: p.metadata.uid.clone()?,
                    generation: p.metadata.generation.unwrap_or(1),
                    spec: p.spec.clone(),
                })
            })
            .collect();
        Some(objects)
    };
    let wait = move || {
        let changed = changed.clone();
        async move { changed.notified().await }
    };
    tokio::select! {
        _ = follow => tracing::warn!("the SchedulerPlugin watch ended"),
        _ = loader.run(objects, wait, |set| out.publish(set)) => {}
    }
}
