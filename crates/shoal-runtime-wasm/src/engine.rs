//! The node's one wasmtime `Engine`, its epoch ticker, and what a compiled component is to a
//! pod (a command or an HTTP server). Compiled components are cached by
//! [`shoal_wasm::cache::ComponentCache`].

pub use shoal_wasm::cache::CompileError;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the epoch advances: the granularity of CPU shares, deadlines and yields.
pub const TICK: Duration = Duration::from_millis(10);

/// What a component exports, which decides how a container runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `wasi:cli/run`: runs to completion and exits with its code.
    Command,
    /// `wasi:http/incoming-handler`: served on the pod IP, a fresh instance per request.
    Http,
}

/// A compiled component and how to run it.
#[derive(Clone)]
pub struct Compiled {
    pub component: Component,
    pub kind: Kind,
}

/// The pools' slot sizes (the largest linear memory of an instance taken from them) and their
/// share of the instances: an HTTP container whose memory limit is at most a slot size takes
/// its per-request instances from the pool of the smallest such slots. The large slots are
/// fewer (each reserves eight times the address space).
const POOL_CLASSES: [(u64, u32); 2] = [(128 << 20, 16), (1 << 30, 1)];

/// Instances the pools hold at once, all sizes together; past a pool's share a request is
/// instantiated on demand.
pub const POOL_INSTANCES: u32 = 1000;

/// `(slot size, instances)` of each pool, smallest slots first, sharing `instances` out.
pub fn pool_classes(instances: u32) -> Vec<(u64, u32)> {
    let shares: u32 = POOL_CLASSES.iter().map(|(_, s)| s).sum();
    POOL_CLASSES
        .iter()
        .map(|&(slot, share)| (slot, (instances * share / shares).max(1)))
        .collect()
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        // Guest stacks are bounded so runaway recursion traps instead of growing.
        .max_wasm_stack(1 << 20);
    config
}

/// The node's engine: on-demand allocation (commands, exec, and HTTP containers that do not
/// fit a pool slot or find the pool full).
pub fn engine() -> wasmtime::Result<Engine> {
    Engine::new(&base_config())
}

/// An engine of pooled HTTP instances: `instances` slots of `slot` bytes of linear memory
/// each, reserved once, so a request's instance costs no `mmap`/`munmap` (wasmtime's `serve`
/// default). Its compiled code differs from the node engine's (memories are bounded by the
/// slot), so components are compiled for it separately.
pub fn pooled_engine(slot: u64, instances: u32) -> wasmtime::Result<Engine> {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 4)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .max_memory_size(slot as usize);
    let mut config = base_config();
    config
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
        .memory_reservation(slot);
    Engine::new(&config)
}

/// Advances the engine's epoch every [`TICK`] (see [`shoal_wasm::ticker`]).
pub fn start_ticker(engine: &Engine) {
    shoal_wasm::ticker::start(engine, TICK);
}

/// A compiled component and how to run it.
pub fn compiled(engine: &Engine, component: Component) -> Result<Compiled, CompileError> {
    let kind = kind_of(engine, &component)?;
    Ok(Compiled { component, kind })
}

fn kind_of(engine: &Engine, component: &Component) -> Result<Kind, CompileError> {
    let ty = component.component_type();
    let mut kind = None;
    for (name, _) in ty.exports(engine) {
        if name.starts_with("wasi:http/incoming-handler@") {
            kind = Some(Kind::Http);
        } else if name.starts_with("wasi:cli/run@") && kind.is_none() {
            kind = Some(Kind::Command);
        }
    }
    kind.ok_or_else(|| {
        CompileError::Invalid(wasmtime::Error::msg(
            "the component exports neither wasi:cli/run nor wasi:http/incoming-handler",
        ))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_instances_are_shared_out_with_room_in_every_pool() {
        assert_eq!(super::pool_classes(1000), [(128 << 20, 941), (1 << 30, 58)]);
        assert_eq!(super::pool_classes(1), [(128 << 20, 1), (1 << 30, 1)]);
    }
}
