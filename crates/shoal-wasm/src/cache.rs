//! Compiled components by digest: in memory, and (for the pod runtime) on disk keyed by digest
//! and engine, so a restart does not compile again. Only artifacts this process wrote are ever
//! deserialised.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot read the component")]
    Read(#[source] std::io::Error),
    #[error("not a valid component: {0:#}")]
    Invalid(wasmtime::Error),
    #[error("compiling did not finish: {0}")]
    Interrupted(String),
}

/// See the module documentation.
pub struct ComponentCache {
    engine: Engine,
    /// Where serialised artifacts live across restarts; `None`: memory only.
    dir: Option<PathBuf>,
    engine_key: String,
    /// Components kept in memory; past it the memory cache is cleared wholesale (a host that
    /// sees that many versions should not grow without bound).
    max_entries: usize,
    memory: Mutex<HashMap<String, Component>>,
}

impl ComponentCache {
    /// A cache for `engine`, persisted under `dir` if given, keeping up to `max_entries`
    /// components in memory.
    pub fn new(engine: &Engine, dir: Option<&Path>, max_entries: usize) -> std::io::Result<Self> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d)?;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache {
            engine: engine.clone(),
            dir: dir.map(Path::to_owned),
            engine_key: format!("{:016x}", h.finish()),
            max_entries,
            memory: Mutex::new(HashMap::new()),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Component>> {
        // Only map lookups and inserts run under the lock.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compiled component whose bytes have `digest`; `bytes()` supplies them when it has
    /// to be compiled. Compiling takes milliseconds to seconds of CPU: call this where
    /// blocking is allowed (see [`ComponentCache::get_blocking`]).
    pub fn get(
        &self,
        digest: &str,
        bytes: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Component, CompileError> {
        if let Some(c) = self.lock().get(digest) {
            return Ok(c.clone());
        }
        let artifact = self.dir.as_ref().map(|d| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            d.join(format!("{hex}-{}.cwasm", self.engine_key))
        });
        let component = match artifact.as_deref().and_then(|a| self.load_artifact(a)) {
            Some(c) => c,
            None => {
                let bytes = bytes().map_err(CompileError::Read)?;
                let c = Component::new(&self.engine, &bytes).map_err(CompileError::Invalid)?;
                if let Some(artifact) = &artifact
                    && let Ok(serialized) = c.serialize()
                {
                    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
                    if std::fs::write(&tmp, serialized).is_ok() {
                        let _ = std::fs::rename(&tmp, artifact);
                    }
                }
                c
            }
        };
        let mut memory = self.lock();
        if memory.len() >= self.max_entries {
            memory.clear();
        }
        memory.insert(digest.to_owned(), component.clone());
        Ok(component)
    }

    /// [`ComponentCache::get`] for `bytes` on a blocking thread.
    pub async fn get_blocking(
        self: &Arc<Self>,
        digest: String,
        bytes: Arc<[u8]>,
    ) -> Result<Component, CompileError> {
        let cache = self.clone();
        tokio::task::spawn_blocking(move || cache.get(&digest, || Ok(bytes.to_vec())))
            .await
            .map_err(|e| CompileError::Interrupted(e.to_string()))?
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the component-model preamble and nothing else.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_component_compiles_once_and_is_found_on_disk_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ComponentCache::new(&engine, Some(dir.path()), 8).unwrap();
        let digest = crate::digest(EMPTY);
        let mut reads = 0;
        cache
            .get(&digest, || {
                reads += 1;
                Ok(EMPTY.to_vec())
            })
            .unwrap();
        cache.get(&digest, || panic!("compiled again")).unwrap();
        assert_eq!(reads, 1);
        let restarted = ComponentCache::new(&engine, Some(dir.path()), 8).unwrap();
        restarted
            .get(&digest, || panic!("the artifact on disk is used"))
            .unwrap();
        assert!(matches!(
            restarted.get("sha256:other", || Ok(b"junk".to_vec())),
            Err(CompileError::Invalid(_))
        ));
    }
}
