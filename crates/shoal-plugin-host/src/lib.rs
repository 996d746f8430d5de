//! The wasmtime host for Shoal's plugin components.
//!
//! Admission policies and scheduler plugins are components implementing a world of the WIT
//! package `shoal:plugin` (`wit/plugin.wit`, the only copy). This crate owns that package, the
//! plugin engine and its sandbox:
//!
//! - every module is compiled once per digest ([`Host::load`]) and pre-instantiated;
//! - every call gets a fresh instance (admission: per request; scheduler: per scheduling
//!   cycle) from the pooling allocator;
//! - every call has a wall-clock deadline enforced with epochs and a memory cap enforced by a
//!   resource limiter; a trap, a timeout or a blown cap is a typed [`PluginError`] the caller
//!   turns into the plugin's failure policy;
//! - guests get no ambient capabilities: no files, no network, no environment, frozen clocks.
//!
//! Start at [`Host::new`], then [`admission::AdmissionModule`] or
//! [`scheduler::SchedulerModule`].

pub mod admission;
pub mod reload;
pub mod scheduler;
pub mod source;

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Trap,
};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

/// How often the plugin engine's epoch advances: the granularity of deadlines and yields.
pub const TICK: Duration = Duration::from_millis(1);

/// The memory a plugin instance may grow to, unless the host is built with another cap.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;

/// How many plugin instances may be alive at once (pool slots).
const POOL_INSTANCES: u32 = 256;

/// Why a plugin could not be loaded or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot fetch module {reference}: {message}")]
    Fetch { reference: String, message: String },
    #[error("module digest is {actual}, expected {expected}")]
    Digest { expected: String, actual: String },
    #[error("not a valid plugin component: {0}")]
    Invalid(String),
    #[error("the plugin rejected its settings: {0}")]
    Settings(String),
    #[error("plugin timed out after {0:?}")]
    Timeout(Duration),
    #[error("plugin exceeded its memory limit of {0} bytes")]
    Memory(usize),
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin returned an invalid answer: {0}")]
    Answer(String),
}

impl PluginError {
    /// A short machine-readable reason: `Timeout`, `MemoryLimit`, `Trap`, ...
    pub fn reason(&self) -> &'static str {
        match self {
            PluginError::Fetch { .. } => "FetchFailed",
            PluginError::Digest { .. } => "DigestMismatch",
            PluginError::Invalid(_) => "InvalidModule",
            PluginError::Settings(_) => "InvalidSettings",
            PluginError::Timeout(_) => "Timeout",
            PluginError::Memory(_) => "MemoryLimit",
            PluginError::Trap(_) => "Trap",
            PluginError::Answer(_) => "InvalidAnswer",
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The plugin engine: one per process, shared by admission and scheduling.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    memory_limit: usize,
    /// Compiled components by digest: a policy reloaded with the same module compiles nothing.
    compiled: Mutex<HashMap<String, Component>>,
}

impl Host {
    /// An engine with the pooling allocator, epochs and `memory_limit` per instance; starts
    /// the epoch thread.
    pub fn new(memory_limit: usize) -> Result<Self, PluginError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(memory_limit)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20)
            .memory_reservation(memory_limit as u64)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        shoal_runtime_wasm::engine::start_ticker_every(&engine, TICK);
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                memory_limit,
                compiled: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn memory_limit(&self) -> usize {
        self.inner.memory_limit
    }

    /// Compiles `bytes` (cached by digest); checks the digest when `expected` is given.
    pub fn compile(&self, bytes: &[u8], expected: Option<&str>) -> Result<Loaded, PluginError> {
        let digest = digest(bytes);
        if let Some(expected) = expected.filter(|e| !e.is_empty())
            && expected != digest
        {
            return Err(PluginError::Digest {
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        if let Some(c) = self.lock().get(&digest) {
            return Ok(Loaded {
                component: c.clone(),
                digest,
            });
        }
        let component = Component::new(&self.inner.engine, bytes)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let mut cache = self.lock();
        // A handful of versions per plugin at most; a host that sees many drops the oldest
        // wholesale rather than growing without bound.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(digest.clone(), component.clone());
        Ok(Loaded { component, digest })
    }

    /// Compiles `bytes` and pre-instantiates it with a linker that `add` fills (WASI plus
    /// the world's imports); an error names `world` when the component does not fit it.
    fn prepare(
        &self,
        bytes: &[u8],
        expected_digest: Option<&str>,
        world: &str,
        add: impl FnOnce(&mut Linker<CallState>) -> wasmtime::Result<()>,
    ) -> Result<(InstancePre<CallState>, String), PluginError> {
        let loaded = self.compile(bytes, expected_digest)?;
        let mut linker = Linker::<CallState>::new(self.engine());
        add(&mut linker).map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&loaded.component).map_err(|e| {
            PluginError::Invalid(format!("does not implement shoal:plugin/{world}: {e:#}"))
        })?;
        Ok((pre, loaded.digest))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        self.inner
            .compiled
            .lock()
            .expect("compiled-plugin cache lock is never poisoned")
    }

    /// The per-call state of a fresh instance: an empty WASI context (no files, network or
    /// environment; frozen clocks), the memory limiter and the deadline.
    fn state(&self, timeout: Duration) -> CallState {
        let wasi = WasiCtxBuilder::new()
            .wall_clock(Frozen)
            .monotonic_clock(Frozen)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                limit: self.inner.memory_limit,
                hit: false,
            },
            deadline: Instant::now() + timeout,
            timeout,
            nodes: Vec::new(),
            pod: None,
        }
    }
}

/// A compiled plugin component and its digest.
#[derive(Clone)]
pub struct Loaded {
    pub component: Component,
    pub digest: String,
}

/// Clocks that always read zero: the worlds grant no clock.
struct Frozen;

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Refuses growth past the cap and remembers that it did, so the trap that follows is
/// reported as a memory error rather than as whatever the guest's allocator does on failure.
struct Limiter {
    limit: usize,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// What a plugin instance's store holds.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    deadline: Instant,
    timeout: Duration,
    /// What a scheduler plugin's getters read (see `scheduler`).
    /// The nodes lent to the current call; a node handle is an index.
    nodes: Vec<scheduler::NodeView>,
    pod: Option<scheduler::PodView>,
}

impl wasmtime_wasi::WasiView for CallState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Sets up a store's limiter and deadline. `yielding`: async calls yield to the executor at
/// every tick, so a guest that loops shares its thread until its deadline.
fn guard(store: &mut wasmtime::Store<CallState>, yielding: bool) {
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |ctx| {
        if Instant::now() >= ctx.data().deadline {
            return Ok(wasmtime::UpdateDeadline::Interrupt);
        }
        Ok(if yielding {
            wasmtime::UpdateDeadline::Yield(1)
        } else {
            wasmtime::UpdateDeadline::Continue(1)
        })
    });
}

/// Turns what a call returned into a typed error: a timeout, the memory cap, or a trap.
fn classify(store: &wasmtime::Store<CallState>, e: wasmtime::Error) -> PluginError {
    let data = store.data();
    if data.limiter.hit {
        return PluginError::Memory(data.limiter.limit);
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginError::Timeout(data.timeout);
    }
    PluginError::Trap(format!("{e:#}"))
}
