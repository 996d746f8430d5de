//! The node's one wasmtime `Engine`, its epoch ticker and the compiled-component cache.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the epoch advances: the granularity of CPU shares, deadlines and yields.
pub const TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot read component {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid component: {0:#}")]
    Invalid(wasmtime::Error),
}

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

pub fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        // Guest stacks are bounded so runaway recursion traps instead of growing.
        .max_wasm_stack(1 << 20);
    Engine::new(&config)
}

/// Advances the engine's epoch every [`TICK`] on its own thread until the engine is dropped.
/// A thread rather than a tokio task: a runtime busy with guests must not delay the tick that
/// makes those guests yield.
pub fn start_ticker(engine: &Engine) {
    start_ticker_every(engine, TICK);
}

/// Advances `engine`'s epoch every `tick` on its own thread until the engine is dropped.
pub fn start_ticker_every(engine: &Engine, tick: Duration) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("shoal-epoch".into())
        .spawn(move || {
            while let Some(e) = engine.upgrade() {
                e.increment_epoch();
                drop(e);
                std::thread::sleep(tick);
            }
        })
        .expect("spawning the epoch thread");
}

/// Compiled components by digest: in memory, and on disk keyed by digest and engine so a
/// restart does not compile again. Only artifacts this node wrote are ever deserialised.
pub struct ComponentCache {
    engine: Engine,
    dir: PathBuf,
    engine_key: String,
    memory: Mutex<HashMap<String, Compiled>>,
}

impl ComponentCache {
    pub fn new(engine: &Engine, dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache {
            engine: engine.clone(),
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", h.finish()),
            memory: Mutex::new(HashMap::new()),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled component for the blob at `path` whose digest is `digest`.
    pub fn get(&self, digest: &str, path: &Path) -> Result<Compiled, CompileError> {
        if let Some(c) = self.lock().get(digest) {
            return Ok(c.clone());
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let artifact = self.dir.join(format!("{hex}-{}.cwasm", self.engine_key));
        let component = match self.load_artifact(&artifact) {
            Some(c) => c,
            None => {
                let bytes = std::fs::read(path).map_err(|source| CompileError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let c = Component::new(&self.engine, &bytes).map_err(CompileError::Invalid)?;
                if let Ok(bytes) = c.serialize() {
                    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
                    if std::fs::write(&tmp, bytes).is_ok() {
                        let _ = std::fs::rename(&tmp, &artifact);
                    }
                }
                c
            }
        };
        let kind = kind_of(&self.engine, &component)?;
        let compiled = Compiled { component, kind };
        self.lock().insert(digest.to_owned(), compiled.clone());
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Compiled>> {
        self.memory
            .lock()
            .expect("component cache lock is never poisoned")
    }

    #[allow(unsafe_code)]
    fn load_artifact(&self, artifact: &Path) -> Option<Component> {
        if !artifact.exists() {
            return None;
        }
        // SAFETY: the file is one this node serialised from a component it compiled with an
        // engine of the same compatibility hash (in the name); the cache directory belongs to
        // the node, and wasmtime still checks the header and engine settings.
        unsafe { Component::deserialize_file(&self.engine, artifact) }.ok()
    }
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
