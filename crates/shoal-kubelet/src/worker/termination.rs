//! Stopping a pod's containers: graceful deletion, node-pressure eviction, teardown.

use super::*;

impl Worker {
    /// Stops every running container within `grace` and records how each ended.
    pub(super) async fn kill_all(&mut self, grace: Duration) {
        let mut stops = Vec::new();
        for c in &mut self.ctrs {
            if let Some(p) = c.probes.take() {
                p.abort();
            }
            if c.running()
                && let Some(id) = c.id.clone()
            {
                let runtime = self.k.runtime.clone();
                stops.push(async move {
                    let _ = runtime.stop_container(&id, grace).await;
                    runtime.container_status(&id).await.ok()
                });
            }
        }
        let finals: Vec<ContainerStatus> = futures::future::join_all(stops)
            .await
            .into_iter()
            .flatten()
            .collect();
        for st in finals {
            if let Some(i) = self.ctrs.iter().position(|c| c.id.as_ref() == Some(&st.id)) {
                let runtime_name = self.k.runtime.version().name;
                let c = &mut self.ctrs[i];
                c.run += 1; // the wait task's report is now stale
                c.ready = false;
                c.done = true;
                c.state = State::Terminated(Term {
                    exit_code: st.exit_code,
                    reason: st.reason.clone(),
                    message: st.message.clone(),
                    started_at: nanos_to_ts(st.started_at),
                    finished_at: nanos_to_ts(st.finished_at),
                    container_id: Some(format!("{runtime_name}://{}", st.id)),
                });
                let _ = self.k.runtime.remove_container(&st.id).await;
            }
        }
    }

    /// Node-pressure eviction: every container stopped at once (hard eviction has no grace
    /// period), the pod `Failed` with reason `Evicted`, an event, and a `DisruptionTarget`
    /// condition, as the kubelet's eviction manager does.
    pub(super) async fn evict(&mut self, message: String) {
        if self.all_done() || self.failed.is_some() {
            return;
        }
        tracing::warn!(pod = %format!("{}/{}", self.ns, self.name), %message, "evicting pod");
        self.record(None, EventKind::Warning, "Evicted", message.clone());
        self.failed = Some(("Evicted".into(), message));
        self.evicted_at = Some(Timestamp::now());
        self.kill_all(Duration::ZERO).await;
        for c in &mut self.ctrs {
            c.done = true;
            c.retry_at = None;
        }
    }

    /// Graceful deletion: stop every container within the grace period, report the end.
    pub(super) async fn terminate(&mut self) {
        for c in &self.ctrs {
            if c.running() {
                self.record(
                    Some(&c.spec.name),
                    EventKind::Normal,
                    "Killing",
                    format!("Stopping container {}", c.spec.name),
                );
            }
        }
        let grace = self.grace();
        self.kill_all(grace).await;
        for c in &mut self.ctrs {
            c.done = true;
            c.retry_at = None;
        }
        self.write_status().await;
    }

    pub(super) async fn delete_from_api(&self) {
        let api: Api<Pod> = Api::namespaced(self.k.client.clone(), &self.ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&self.name, &dp).await {
            match e {
                kube::Error::Api(s) if s.code == 404 || s.code == 409 => {}
                e => tracing::warn!(pod = %self.name, error = %e, "cannot finish deleting pod"),
            }
        }
    }

    pub(super) async fn teardown(&mut self) {
        for c in &self.ctrs {
            if let Some(id) = &c.id {
                let _ = self.k.runtime.remove_container(id).await;
            }
        }
        if let Some(sb) = self.sandbox.take() {
            let _ = self.k.runtime.stop_pod_sandbox(&sb.id).await;
            let _ = self.k.runtime.remove_pod_sandbox(&sb.id).await;
        }
        self.k.index.remove(&self.ns, &self.name, &self.uid);
        self.k.active.remove(&self.uid);
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
    }
}
