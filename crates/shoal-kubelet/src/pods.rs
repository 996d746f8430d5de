//! The pods this kubelet's workers run, as the eviction manager and the stats endpoints see
//! them: each pod's latest version, its directory, and the way to tell its worker to evict it.

use crate::worker::Msg;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// One running pod.
#[derive(Clone)]
pub(crate) struct ActivePod {
    pub pod: Arc<Pod>,
    pub dir: PathBuf,
    worker: mpsc::UnboundedSender<Msg>,
}

impl ActivePod {
    /// Tells the pod's worker to evict it with `message` (a no-op if it has ended).
    pub fn evict(&self, message: String) {
        let _ = self.worker.send(Msg::Evict { message });
    }
}

/// Every pod with a worker, by uid.
#[derive(Default)]
pub struct ActivePods {
    pods: Mutex<HashMap<String, ActivePod>>,
}

impl ActivePods {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActivePod>> {
        // Only map updates run under the lock.
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(
        &self,
        uid: &str,
        pod: &Pod,
        worker: mpsc::UnboundedSender<Msg>,
        dir: &Path,
    ) {
        self.lock().insert(
            uid.to_owned(),
            ActivePod {
                pod: Arc::new(pod.clone()),
                dir: dir.to_owned(),
                worker,
            },
        );
    }

    pub(crate) fn update(&self, uid: &str, pod: &Pod) {
        if let Some(p) = self.lock().get_mut(uid) {
            p.pod = Arc::new(pod.clone());
        }
    }

    pub(crate) fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    pub(crate) fn all(&self) -> Vec<ActivePod> {
        self.lock().values().cloned().collect()
    }
}
