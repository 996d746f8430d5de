//! When a plugin object's module is fetched and loaded again, and what its status then says:
//! shared by the API server (admission policies) and the scheduler (scheduler plugins).
//!
//! Local modules (ConfigMaps, files) are re-read on every resync and reloaded when their
//! digest changes; remote ones (registries, URLs) are fetched when the object's spec changes,
//! and retried after a failed fetch. A module that fails to load leaves the last good one
//! serving, and the status says which.

use crate::source::Source;
use shoal_api::policy::PluginStatus;
use std::time::{Duration, Instant};

/// How long a failed remote fetch waits before it is tried again.
pub const REFETCH: Duration = Duration::from_secs(10);

/// What was last tried for one plugin object.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub uid: String,
    pub generation: i64,
    /// Digest of the module bytes last tried (loaded or not).
    pub digest: Option<String>,
    fetch_failed: Option<Instant>,
}

impl Attempt {
    pub fn new(uid: &str, generation: i64, digest: Option<String>) -> Self {
        Attempt {
            uid: uid.to_owned(),
            generation,
            fetch_failed: digest.is_none().then(Instant::now),
            digest,
        }
    }

    /// Whether `prev` (the last attempt for this object) already covers the spec `uid` at
    /// `generation`.
    fn same_spec(prev: Option<&Attempt>, uid: &str, generation: i64) -> bool {
        prev.is_some_and(|p| p.uid == uid && p.generation == generation)
    }

    /// Whether the module must be fetched now.
    pub fn should_fetch(prev: Option<&Attempt>, uid: &str, generation: i64, src: &Source) -> bool {
        let local = matches!(src, Source::ConfigMap { .. } | Source::File(_));
        if local || !Self::same_spec(prev, uid, generation) {
            return true;
        }
        prev.and_then(|p| p.fetch_failed)
            .is_some_and(|t| t.elapsed() >= REFETCH)
    }

    /// Whether bytes with `digest` (`None`: the fetch failed) need loading.
    pub fn should_load(
        prev: Option<&Attempt>,
        uid: &str,
        generation: i64,
        digest: Option<&str>,
    ) -> bool {
        !Self::same_spec(prev, uid, generation) || prev.and_then(|p| p.digest.as_deref()) != digest
    }
}

/// The status after a load: `Active` with the new digest, or `Failed` naming the error and
/// the last good module still serving.
pub fn status(
    result: Result<&str, &str>,
    last_good: Option<&str>,
    generation: i64,
    failures: Option<i64>,
) -> PluginStatus {
    match result {
        Ok(digest) => PluginStatus {
            phase: Some("Active".into()),
            message: Some(format!("module {digest} loaded")),
            digest: Some(digest.to_owned()),
            observed_generation: Some(generation),
            failures: Some(0),
        },
        Err(e) => PluginStatus {
            phase: Some("Failed".into()),
            message: Some(match last_good {
                Some(d) => format!("{e}; the last good module {d} keeps serving"),
                None => e.to_owned(),
            }),
            digest: last_good.map(str::to_owned),
            observed_generation: Some(generation),
            failures,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_modules_are_reread_and_remote_ones_fetched_on_change() {
        let file = Source::File("/x.wasm".into());
        let reg = Source::Registry("h/r:t".into());
        let a = Attempt::new("u", 1, Some("sha256:a".into()));
        assert!(Attempt::should_fetch(Some(&a), "u", 1, &file));
        assert!(!Attempt::should_fetch(Some(&a), "u", 1, &reg));
        assert!(Attempt::should_fetch(Some(&a), "u", 2, &reg));
        assert!(Attempt::should_fetch(None, "u", 1, &reg));
        assert!(!Attempt::should_load(Some(&a), "u", 1, Some("sha256:a")));
        assert!(Attempt::should_load(Some(&a), "u", 1, Some("sha256:b")));
        assert!(Attempt::should_load(Some(&a), "v", 1, Some("sha256:a")));
        let failed = Attempt::new("u", 1, None);
        assert!(!Attempt::should_fetch(Some(&failed), "u", 1, &reg));
    }

    #[test]
    fn a_failed_load_names_the_module_still_serving() {
        let s = status(Err("bad"), Some("sha256:a"), 3, Some(2));
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(
            s.message.as_deref(),
            Some("bad; the last good module sha256:a keeps serving")
        );
        assert_eq!(s.failures, Some(2));
        let s = status(Ok("sha256:b"), None, 4, None);
        assert_eq!(s.phase.as_deref(), Some("Active"));
        assert_eq!(s.observed_generation, Some(4));
    }
}
