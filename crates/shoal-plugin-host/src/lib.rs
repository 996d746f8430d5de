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
//! - guests get no ambient capabilities: no files, no network, no environment, frozen clocks;
//!   what they write to stdout and stderr is captured per call ([`output`]), never reaching
//!   the host's own streams;
//! - every call goes through the plugin's [`health::Health`]: failures counted and logged
//!   with the plugin's name, a circuit breaker that benches a plugin failing again and again;
//! - modules come only from where the operator allows ([`source::SourcePolicy`]);
//! - [`loader::Loader`] keeps a consumer's set of plugins in step with the API objects that
//!   configure them (fetch, compile, check settings, swap, status, events).
//!
//! Start at [`Host::new`], then [`admission::AdmissionModule`] or
//! [`scheduler::SchedulerModule`], and [`loader::Loader`].

pub mod admission;
pub mod health;
pub mod loader;
pub mod output;
pub mod reload;
pub mod scheduler;
pub mod source;

use output::{Capture, Written};

use shoal_wasm::cache::{CompileError, ComponentCache};
use std::sync::Arc;
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
    /// The module reference breaks a rule of where modules may come from; `rule` names it.
    #[error("module {reference} is not allowed: {rule}")]
    Refused { reference: String, rule: String },
    #[error("module digest is {actual}, expected {expected}")]
    Digest { expected: String, actual: String },
    #[error("not a valid plugin component: {0}")]
    Invalid(String),
    #[error("the plugin rejected its settings: {0}")]
    Settings(String),
    #[error("plugin timed out after {after:?}{written}")]
    Timeout { after: Duration, written: Written },
    #[error("plugin exceeded its memory limit of {limit} bytes{written}")]
    Memory { limit: usize, written: Written },
    #[error("plugin trapped: {message}{written}")]
    Trap { message: String, written: Written },
    #[error("plugin returned an invalid answer: {0}")]
    Answer(String),
    /// The circuit breaker refused the call without running it (see [`health`]).
    #[error("plugin is {0}")]
    Benched(String),
}

impl PluginError {
    /// A short machine-readable reason: `Timeout`, `MemoryLimit`, `Trap`, ...
    pub fn reason(&self) -> &'static str {
        match self {
            PluginError::Fetch { .. } => "FetchFailed",
            PluginError::Refused { .. } => "SourceRefused",
            PluginError::Digest { .. } => "DigestMismatch",
            PluginError::Invalid(_) => "InvalidModule",
            PluginError::Settings(_) => "InvalidSettings",
            PluginError::Timeout { .. } => "Timeout",
            PluginError::Memory { .. } => "MemoryLimit",
            PluginError::Trap { .. } => "Trap",
            PluginError::Answer(_) => "InvalidAnswer",
            PluginError::Benched(_) => "Benched",
        }
    }
}

/// Names a plugin object: its kind, namespace (namespaced kinds only) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginKey {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl PluginKey {
    pub fn cluster(kind: &'static str, name: &str) -> Self {
        PluginKey {
            kind,
            namespace: None,
            name: name.to_owned(),
        }
    }

    /// `name` or `namespace/name`, as users name the object.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl std::fmt::Display for PluginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.display_name())
    }
}

pub use shoal_wasm::digest;

/// The plugin engine: one per process, shared by admission and scheduling.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    memory_limit: usize,
    /// Compiled components by digest: a policy reloaded with the same module compiles nothing.
    /// A handful of versions per plugin at most; a host that sees many drops them wholesale.
    compiled: Arc<ComponentCache>,
}

/// Components kept compiled in memory.
const COMPILED: usize = 64;

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
        shoal_wasm::ticker::start(&engine, TICK);
        let compiled = ComponentCache::new(&engine, None, COMPILED)
            .map_err(|e| PluginError::Invalid(e.to_string()))?;
        Ok(Host {
            inner: Arc::new(HostInner {
                memory_limit,
                compiled: Arc::new(compiled),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        self.inner.compiled.engine()
    }

    pub fn memory_limit(&self) -> usize {
        self.inner.memory_limit
    }

    /// Compiles `bytes` (cached by digest); checks the digest when `expected` is given.
    /// Bytes that are not a WebAssembly component are refused before anything else, with a
    /// message that says so without quoting them (a module reference must not become a way
    /// to read the host's files).
    pub fn compile(&self, bytes: &[u8], expected: Option<&str>) -> Result<Loaded, PluginError> {
        check_header(bytes)?;
        let digest = digest(bytes);
        if let Some(expected) = expected.filter(|e| !e.is_empty())
            && expected != digest
        {
            return Err(PluginError::Digest {
                expected: expected.to_owned(),
                actual: digest,
            });
        }
        let component = self
            .inner
            .compiled
            .get(&digest, || Ok(bytes.to_vec()))
            .map_err(|e| match e {
                CompileError::Invalid(e) => PluginError::Invalid(format!("{e:#}")),
                other => PluginError::Invalid(other.to_string()),
            })?;
        Ok(Loaded { component, digest })
    }

    /// [`Host::compile`] on a blocking thread: compiling takes milliseconds to seconds of
    /// CPU, which must not stall an async runtime's workers.
    pub async fn compile_blocking(
        &self,
        bytes: std::sync::Arc<[u8]>,
        expected: Option<String>,
    ) -> Result<Loaded, PluginError> {
        let host = self.clone();
        tokio::task::spawn_blocking(move || host.compile(&bytes, expected.as_deref()))
            .await
            .map_err(|e| PluginError::Invalid(format!("compiling failed: {e}")))?
    }

    /// Compiles `bytes` (off the async threads) and pre-instantiates it with a linker that
    /// `add` fills (WASI plus the world's imports); an error names `world` when the component
    /// does not fit it.
    async fn prepare(
        &self,
        bytes: &[u8],
        expected_digest: Option<&str>,
        world: &str,
        add: impl FnOnce(&mut Linker<CallState>) -> wasmtime::Result<()>,
    ) -> Result<(InstancePre<CallState>, String), PluginError> {
        let loaded = self
            .compile_blocking(bytes.into(), expected_digest.map(str::to_owned))
            .await?;
        let mut linker = Linker::<CallState>::new(self.engine());
        add(&mut linker).map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&loaded.component).map_err(|e| {
            PluginError::Invalid(format!("does not implement shoal:plugin/{world}: {e:#}"))
        })?;
        Ok((pre, loaded.digest))
    }

    /// The per-call state of a fresh instance: an empty WASI context (no files, network or
    /// environment; frozen clocks; stdout and stderr captured), the memory limiter and the
    /// deadline.
    fn state(&self, timeout: Duration) -> CallState {
        let output = Capture::new();
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(Frozen)
            .monotonic_clock(Frozen)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        CallState {
            wasi,
            output,
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
    /// What the instance wrote to stdout and stderr.
    output: Capture,
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

/// Turns what a call returned into a typed error — a timeout, the memory cap, or a trap —
/// carrying the last lines the instance wrote (a panic's message, say). Never by error text:
/// the limiter remembers that it refused growth, and traps are downcast.
fn classify(store: &wasmtime::Store<CallState>, e: wasmtime::Error) -> PluginError {
    let data = store.data();
    let written = Written(data.output.last_lines());
    if data.limiter.hit {
        return PluginError::Memory {
            limit: data.limiter.limit,
            written,
        };
    }
    let message = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return PluginError::Timeout {
                after: data.timeout,
                written,
            };
        }
        Some(trap) => trap.to_string(),
        // A host function's error, or an exit: its root cause, on one line.
        None => e.root_cause().to_string().replace('\n', " "),
    };
    PluginError::Trap { message, written }
}

/// The header a component starts with: `\0asm`, version 0x0d, layer 1.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Refuses bytes that are not a WebAssembly component, without quoting them.
fn check_header(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || bytes[..4] != COMPONENT_HEADER[..4] {
        return Err(PluginError::Invalid(
            "the module is not WebAssembly (it does not start with the \\0asm header)".into(),
        ));
    }
    if bytes[4..8] == [0x01, 0x00, 0x00, 0x00] {
        return Err(PluginError::Invalid(
            "the module is a core WebAssembly module, not a component (build it for wasm32-wasip2)"
                .into(),
        ));
    }
    if bytes[..8] != COMPONENT_HEADER {
        return Err(PluginError::Invalid(
            "the module is not a WebAssembly component (unknown version or layer)".into(),
        ));
    }
    Ok(())
}
