//! The `scheduler` world: one fresh instance per scheduling cycle; the pod and each node are
//! lent to the guest as handles it reads through getters.
//!
//! Calls are synchronous and must be made where blocking is allowed (a plain thread or
//! `spawn_blocking`, never an async task): a guest's WASI calls, such as flushing stderr, run
//! host futures to completion, which tokio forbids on its worker threads.

use crate::health::{CallGuard, Health};
use crate::{CallState, Host, PluginError, PluginKey, classify, guard};
use k8s_openapi::api::core::v1::{Node, Pod};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

mod bindings {
    wasmtime::component::bindgen!({
        world: "scheduler",
        path: "wit",
        with: {
            "shoal:plugin/scheduling.nodes": super::Batch,
            "shoal:plugin/scheduling.pod": super::PodView,
        },
    });
}

use bindings::shoal::plugin::scheduling::{self as wit, Resources, Taint};

/// Requests, allocatable or requested amounts as the guest sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u64,
}

impl From<Amounts> for Resources {
    fn from(a: Amounts) -> Self {
        Resources {
            cpu_millis: a.cpu_millis,
            memory_bytes: a.memory_bytes,
            pods: a.pods,
        }
    }
}

/// The node a call is about (cheap to make: the node itself is shared).
pub struct NodeView {
    pub node: Arc<Node>,
    pub allocatable: Amounts,
    pub requested: Amounts,
}

/// The batch of nodes lent to a call (the state holds the nodes themselves).
pub struct Batch;

/// The pod being scheduled.
pub struct PodView {
    pub pod: Arc<Pod>,
    pub requests: Amounts,
}

/// Which extension points a plugin takes part in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Points {
    pub pre_filter: bool,
    pub filter: bool,
    pub score: bool,
}

/// A compiled, linked scheduler plugin.
#[derive(Clone)]
pub struct SchedulerModule {
    host: Host,
    pre: bindings::SchedulerPre<CallState>,
    health: Arc<Health>,
    pub digest: String,
}

/// How long loading may spend in `init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(2);

impl SchedulerModule {
    /// Compiles and links `bytes` and has the plugin accept `settings` once; its cycles are
    /// accounted to a health of its own (see [`SchedulerModule::load_as`]).
    pub async fn load(
        host: &Host,
        bytes: &[u8],
        expected_digest: Option<&str>,
        settings: &str,
    ) -> Result<Self, PluginError> {
        let key = PluginKey::cluster("SchedulerPlugin", "offline");
        let health = Health::new(key, "scheduler plugin".into(), "PluginFailed", None);
        Self::load_as(host, health, bytes, expected_digest, settings).await
    }

    /// As [`SchedulerModule::load`], with every cycle accounted to `health`. Compiling and
    /// the `init` check run on a blocking thread.
    pub async fn load_as(
        host: &Host,
        health: Arc<Health>,
        bytes: &[u8],
        expected_digest: Option<&str>,
        settings: &str,
    ) -> Result<Self, PluginError> {
        let (pre, digest) = host
            .prepare(bytes, expected_digest, "scheduler", |l| {
                wasmtime_wasi::p2::add_to_linker_sync(l)?;
                bindings::Scheduler::add_to_linker::<
                    CallState,
                    wasmtime::component::HasSelf<CallState>,
                >(l, |s| s)
            })
            .await?;
        let pre = bindings::SchedulerPre::new(pre).map_err(|e| {
            PluginError::Invalid(format!("does not implement shoal:plugin/scheduler: {e:#}"))
        })?;
        let module = SchedulerModule {
            host: host.clone(),
            pre,
            health,
            digest,
        };
        let checked = module.clone();
        let settings = settings.to_owned();
        tokio::task::spawn_blocking(move || checked.instance(&settings, INIT_TIMEOUT).map(drop))
            .await
            .map_err(|e| PluginError::Trap {
                message: format!("the settings check did not finish: {e}"),
                written: Default::default(),
            })??;
        Ok(module)
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// A fresh instance for one scheduling cycle, initialised with `settings`; every call
    /// on it gets `timeout`. The cycle counts as one call of the plugin's health: refused at
    /// once while the plugin is benched, failed by its first failing call, a success if it
    /// ends without one.
    pub fn cycle(&self, settings: &str, timeout: Duration) -> Result<Cycle, PluginError> {
        let call = self.health.begin()?;
        match self.instance(settings, timeout) {
            Ok(mut cycle) => {
                cycle.call = Some(call);
                Ok(cycle)
            }
            Err(e) => {
                call.fail(&e);
                Err(e)
            }
        }
    }

    /// A fresh instance with `init(settings)` done, outside the health's accounting.
    fn instance(&self, settings: &str, timeout: Duration) -> Result<Cycle, PluginError> {
        let mut store = wasmtime::Store::new(self.host.engine(), self.host.state(timeout));
        guard(&mut store, false);
        let inst = match self.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(classify(&store, e)),
        };
        let mut cycle = Cycle {
            store,
            inst,
            health: self.health.clone(),
            call: None,
        };
        match cycle.call(|inst, store| inst.call_init(store, settings))? {
            Ok(()) => Ok(cycle),
            Err(msg) => Err(PluginError::Settings(msg)),
        }
    }
}

/// One plugin instance serving one pod's scheduling cycle.
pub struct Cycle {
    store: wasmtime::Store<CallState>,
    inst: bindings::Scheduler,
    health: Arc<Health>,
    /// The cycle's call on the health; taken by the first failure.
    call: Option<CallGuard>,
}

/// The handle every call passes: the state holds one pod and one node at a time.
const REP: u32 = 0;

impl Cycle {
    fn call<R>(
        &mut self,
        f: impl FnOnce(&bindings::Scheduler, &mut wasmtime::Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let timeout = self.store.data().timeout;
        self.store.data_mut().deadline = Instant::now() + timeout;
        self.store.set_epoch_deadline(1);
        let result = f(&self.inst, &mut self.store).map_err(|e| classify(&self.store, e));
        self.log_output();
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    /// Logs what the instance wrote since the last call.
    fn log_output(&mut self) {
        self.health.log_output(&self.store.data().output);
    }

    /// Records the cycle as failed with `e` (once).
    fn failed(&mut self, e: &PluginError) {
        if let Some(call) = self.call.take() {
            call.fail(e);
        }
    }

    /// Lends `pod` to the instance for the rest of the cycle.
    pub fn set_pod(&mut self, pod: PodView) {
        self.store.data_mut().pod = Some(pod);
    }

    pub fn pre_filter(&mut self) -> Result<Result<(), String>, PluginError> {
        self.call(|inst, store| inst.call_pre_filter(store, Resource::new_borrow(REP)))
    }

    /// Lends `nodes` for one call; returns how many.
    fn lend(&mut self, nodes: impl Iterator<Item = NodeView>) -> usize {
        let lent = &mut self.store.data_mut().nodes;
        lent.clear();
        lent.extend(nodes);
        lent.len()
    }

    /// A malformed answer fails the cycle like a trap does.
    fn checked(&mut self, r: Result<(), PluginError>) -> Result<(), PluginError> {
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    fn check_len(got: usize, want: usize, what: &str) -> Result<(), PluginError> {
        if got == want {
            Ok(())
        } else {
            Err(PluginError::Answer(format!(
                "{what} returned {got} answers for {want} nodes"
            )))
        }
    }

    /// One verdict per node: `None` fits, `Some(reason)` does not.
    pub fn filter(
        &mut self,
        nodes: impl Iterator<Item = NodeView>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        let n = self.lend(nodes);
        let out = self.call(|inst, store| {
            inst.call_filter(store, Resource::new_borrow(REP), Resource::new_borrow(REP))
        })?;
        self.checked(Self::check_len(out.len(), n, "filter"))?;
        Ok(out)
    }

    /// One score per node.
    pub fn score(
        &mut self,
        nodes: impl Iterator<Item = NodeView>,
    ) -> Result<Vec<i64>, PluginError> {
        let n = self.lend(nodes);
        let out = self.call(|inst, store| {
            inst.call_score(store, Resource::new_borrow(REP), Resource::new_borrow(REP))
        })?;
        self.checked(Self::check_len(out.len(), n, "score"))?;
        Ok(out)
    }

    /// The plugin's rescaled scores, or `None` to let the host rescale.
    pub fn normalize(&mut self, scores: &[i64]) -> Result<Option<Vec<i64>>, PluginError> {
        let out = self.call(|inst, store| inst.call_normalize(store, scores))?;
        if let Some(v) = &out {
            self.checked(Self::check_len(v.len(), scores.len(), "normalize"))?;
        }
        Ok(out)
    }
}

fn labels(m: &Option<std::collections::BTreeMap<String, String>>) -> Vec<(String, String)> {
    m.iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn get(m: &Option<std::collections::BTreeMap<String, String>>, key: &str) -> Option<String> {
    m.as_ref()?.get(key).cloned()
}

impl CallState {
    fn node(&self, i: u32) -> Option<&NodeView> {
        self.nodes.get(i as usize)
    }
    fn pod_view(&self) -> wasmtime::Result<&PodView> {
        self.pod
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("no pod is lent to this cycle"))
    }
}

impl wit::Host for CallState {}

impl wit::HostNodes for CallState {
    fn len(&mut self, _b: Resource<Batch>) -> u32 {
        self.nodes.len() as u32
    }
    fn name(&mut self, _b: Resource<Batch>, n: u32) -> String {
        self.node(n)
            .and_then(|n| n.node.metadata.name.clone())
            .unwrap_or_default()
    }
    fn label(&mut self, _b: Resource<Batch>, n: u32, key: String) -> Option<String> {
        get(&self.node(n)?.node.metadata.labels, &key)
    }
    fn label_values(&mut self, _b: Resource<Batch>, key: String) -> (Vec<String>, Vec<i32>) {
        let mut distinct: Vec<String> = Vec::new();
        let mut seen: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
        let index = self
            .nodes
            .iter()
            .map(|n| {
                let Some(v) = n.node.metadata.labels.as_ref().and_then(|l| l.get(&key)) else {
                    return -1;
                };
                *seen.entry(v.as_str()).or_insert_with(|| {
                    distinct.push(v.clone());
                    distinct.len() as i32 - 1
                })
            })
            .collect();
        (distinct, index)
    }
    fn labels(&mut self, _b: Resource<Batch>, n: u32) -> Vec<(String, String)> {
        self.node(n)
            .map(|n| labels(&n.node.metadata.labels))
            .unwrap_or_default()
    }
    fn annotation(&mut self, _b: Resource<Batch>, n: u32, key: String) -> Option<String> {
        get(&self.node(n)?.node.metadata.annotations, &key)
    }
    fn taints(&mut self, _b: Resource<Batch>, n: u32) -> Vec<Taint> {
        let Some(n) = self.node(n) else {
            return Vec::new();
        };
        n.node
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .map(|t| Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.clone(),
            })
            .collect()
    }
    fn allocatable(&mut self, _b: Resource<Batch>, n: u32) -> Resources {
        self.node(n)
            .map(|n| n.allocatable)
            .unwrap_or_default()
            .into()
    }
    fn requested(&mut self, _b: Resource<Batch>, n: u32) -> Resources {
        self.node(n).map(|n| n.requested).unwrap_or_default().into()
    }
    fn drop(&mut self, _b: Resource<Batch>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl wit::HostPod for CallState {
    fn name(&mut self, _p: Resource<PodView>) -> String {
        self.pod
            .as_ref()
            .and_then(|p| p.pod.metadata.name.clone())
            .unwrap_or_default()
    }
    fn namespace(&mut self, _p: Resource<PodView>) -> String {
        self.pod
            .as_ref()
            .and_then(|p| p.pod.metadata.namespace.clone())
            .unwrap_or_default()
    }
    fn label(&mut self, _p: Resource<PodView>, key: String) -> Option<String> {
        get(&self.pod.as_ref()?.pod.metadata.labels, &key)
    }
    fn labels(&mut self, _p: Resource<PodView>) -> Vec<(String, String)> {
        self.pod_view()
            .map(|p| labels(&p.pod.metadata.labels))
            .unwrap_or_default()
    }
    fn annotation(&mut self, _p: Resource<PodView>, key: String) -> Option<String> {
        get(&self.pod.as_ref()?.pod.metadata.annotations, &key)
    }
    fn requests(&mut self, _p: Resource<PodView>) -> Resources {
        self.pod_view()
            .map(|p| p.requests.into())
            .unwrap_or_else(|_| Amounts::default().into())
    }
    fn to_json(&mut self, _p: Resource<PodView>) -> String {
        self.pod_view()
            .ok()
            .and_then(|p| serde_json::to_string(&*p.pod).ok())
            .unwrap_or_else(|| "{}".into())
    }
    fn drop(&mut self, _p: Resource<PodView>) -> wasmtime::Result<()> {
        Ok(())
    }
}
