//! Scheduler plugins as Wasm components: [`WasmPlugin`] adapts a loaded module to the
//! framework's [`Plugin`] trait, and [`run_loader`] keeps the scheduler's set of plugins in
//! step with the `SchedulerPlugin` objects (hot reload, last good module kept, status).

use crate::framework::{self, CycleState, NodeInfo, Plugin};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use shoal_api::policy::{PluginStatus, SchedulerPlugin, SchedulerPluginSpec};
use shoal_plugin_host::reload::{self, Attempt};
use shoal_plugin_host::scheduler::{Amounts, Cycle, NodeView, PodView, Points, SchedulerModule};
use shoal_plugin_host::source::Source;
use shoal_plugin_host::{Host, PluginError};
use std::collections::HashMap;
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
    failures: Arc<AtomicI64>,
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
            settings: settings_of(spec),
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
            failures: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Calls that failed (trap, timeout, memory) since the module was loaded.
    pub fn failures(&self) -> i64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn failed(&self, e: &PluginError) -> String {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %self.name, error = %e, "scheduler plugin failed");
        format!("plugin {} failed: {e}", self.name)
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

fn settings_of(spec: &SchedulerPluginSpec) -> String {
    spec.settings
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "{}".into())
}

/// What the loader knows about one SchedulerPlugin.
struct Loaded {
    attempt: Attempt,
    plugin: Option<Arc<WasmPlugin>>,
    status: PluginStatus,
    /// The status to write once the scheduler has the plugin set this load belongs to.
    next: Option<PluginStatus>,
}

/// The Wasm plugins in force, shared with the scheduler (which rebuilds its framework when
/// the generation moves).
#[derive(Default)]
pub struct WasmPlugins {
    pub generation: AtomicI64,
    pub plugins: Mutex<Vec<Arc<WasmPlugin>>>,
}

/// How often SchedulerPlugins and their local modules are looked at again.
const RESYNC: Duration = Duration::from_millis(500);

/// Keeps `out` in step with the SchedulerPlugin objects until the task is dropped.
pub async fn run_loader(client: kube::Client, out: Arc<WasmPlugins>) {
    let host = match Host::new(shoal_plugin_host::DEFAULT_MEMORY_LIMIT) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "the plugin engine failed to start: no Wasm scheduler plugins");
            return;
        }
    };
    let api: Api<SchedulerPlugin> = Api::all(client.clone());
    let mut loaded: HashMap<String, Loaded> = HashMap::new();
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let changed = sync(&client, &api, &host, list.items, &mut loaded).await;
                if changed {
                    let mut set: Vec<(String, Arc<WasmPlugin>)> = loaded
                        .iter()
                        .filter_map(|(k, l)| Some((k.clone(), l.plugin.clone()?)))
                        .collect();
                    set.sort_by(|a, b| a.0.cmp(&b.0));
                    *out.plugins.lock().unwrap_or_else(|p| p.into_inner()) =
                        set.into_iter().map(|(_, p)| p).collect();
                    out.generation.fetch_add(1, Ordering::Release);
                }
                // Reported once the scheduler can see the plugins (its next pass uses them).
                for (name, l) in loaded.iter_mut() {
                    if let Some(st) = l.next.take() {
                        write_status(&api, name, &mut l.status, st).await;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list SchedulerPlugins"),
        }
        tokio::time::sleep(RESYNC).await;
    }
}

async fn fetch(client: &kube::Client, src: &Source) -> Result<Vec<u8>, String> {
    match src {
        Source::ConfigMap {
            namespace,
            name,
            key,
        } => {
            let ns = namespace.as_deref().unwrap_or("default");
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .map_err(|e| format!("configmap {ns}/{name}: {e}"))?;
            let cm = serde_json::to_value(&cm).map_err(|e| e.to_string())?;
            shoal_plugin_host::source::configmap_module(&cm, key)
        }
        other => other.fetch().await.map_err(|e| e.to_string()),
    }
}

async fn sync(
    client: &kube::Client,
    api: &Api<SchedulerPlugin>,
    host: &Host,
    items: Vec<SchedulerPlugin>,
    loaded: &mut HashMap<String, Loaded>,
) -> bool {
    let mut changed = false;
    let names: Vec<String> = items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let before = loaded.len();
    loaded.retain(|k, _| names.contains(k));
    changed |= before != loaded.len();
    for p in items {
        let (Some(name), Some(uid)) = (p.metadata.name.clone(), p.metadata.uid.clone()) else {
            continue;
        };
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let generation = p.metadata.generation.unwrap_or(1);
        let Ok(src) = Source::parse(&p.spec.module) else {
            continue;
        };
        let prev = loaded.get(&name).filter(|l| l.attempt.uid == uid);
        let status_before = prev.map(|l| l.status.clone()).unwrap_or_default();
        if prev.is_some()
            && !Attempt::should_fetch(prev.map(|l| &l.attempt), &uid, generation, &src)
        {
            refresh_failures(api, &name, loaded).await;
            continue;
        }
        let bytes = fetch(client, &src).await;
        let digest = bytes.as_ref().ok().map(|b| shoal_plugin_host::digest(b));
        if !Attempt::should_load(
            prev.map(|l| &l.attempt),
            &uid,
            generation,
            digest.as_deref(),
        ) {
            refresh_failures(api, &name, loaded).await;
            continue;
        }
        let settings = settings_of(&p.spec);
        let result = bytes.and_then(|b| {
            SchedulerModule::load(host, &b, p.spec.module_digest.as_deref(), &settings)
                .map_err(|e| e.to_string())
        });
        let last_good = prev.and_then(|l| l.plugin.clone());
        let status = reload::status(
            result
                .as_ref()
                .map(|m| m.digest.as_str())
                .map_err(String::as_str),
            last_good.as_ref().map(|p| p.module.digest.as_str()),
            generation,
            status_before.failures,
        );
        let plugin = match result {
            Ok(m) => Some(Arc::new(WasmPlugin::new(&name, &p.spec, m))),
            Err(_) => last_good,
        };
        let entry = Loaded {
            attempt: Attempt::new(&uid, generation, digest),
            plugin,
            status: status_before,
            next: Some(status),
        };
        loaded.insert(name, entry);
        changed = true;
    }
    changed
}

/// Brings the failure count in the status up to date.
async fn refresh_failures(
    api: &Api<SchedulerPlugin>,
    name: &str,
    loaded: &mut HashMap<String, Loaded>,
) {
    let Some(l) = loaded.get_mut(name) else {
        return;
    };
    let Some(p) = &l.plugin else {
        return;
    };
    let failures = p.failures();
    if l.status.failures.unwrap_or(0) != failures {
        let mut st = l.status.clone();
        st.failures = Some(failures);
        write_status(api, name, &mut l.status, st).await;
    }
}

async fn write_status(
    api: &Api<SchedulerPlugin>,
    name: &str,
    current: &mut PluginStatus,
    new: PluginStatus,
) {
    if *current == new {
        return;
    }
    let patch = serde_json::json!({"status": new});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => *current = new,
        Err(e) => tracing::debug!(plugin = name, error = %e, "cannot write SchedulerPlugin status"),
    }
}
