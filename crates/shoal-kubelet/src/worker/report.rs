//! What the worker reports: the pod's status, the index the logs server reads, and when the
//! loop must wake next.

use super::*;

impl Worker {
    pub(super) fn publish_index(&self) {
        let running = self
            .ctrs
            .iter()
            .filter(|c| c.running())
            .filter_map(|c| Some((c.spec.name.clone(), c.id.clone()?)))
            .collect();
        self.k.index.set_running(
            &self.ns,
            &self.name,
            PodEntry {
                uid: self.uid.clone(),
                dir: self.dir.clone(),
                running,
                ip: self.sandbox.as_ref().map(|sb| sb.ip),
            },
        );
    }

    pub(super) fn next_wake(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.setup_retry;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if !self.all_done() {
            consider(self.token_refresh);
            consider(self.deadline());
            for c in &self.ctrs {
                if !c.done && !c.running() {
                    consider(c.retry_at);
                }
            }
        }
        t
    }

    pub(super) async fn write_status(&mut self) {
        let runtime_name = self.k.runtime.version().name;
        let phase = status::phase(&self.ctrs, self.failed.is_some());
        if phase == "Running"
            && let Some(seen) = self.first_seen.take()
        {
            // From this kubelet first seeing the pod to it running, as Kubernetes measures it.
            metrics::histogram!("kubelet_pod_start_duration_seconds")
                .record(seen.elapsed().as_secs_f64());
        }
        let scheduled = self
            .pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(self.start_time, |t| t.0);
        let mut conditions = status::conditions(&self.ctrs, phase, scheduled, &mut self.history);
        if let (Some(at), Some((_, message)), Some(list)) =
            (self.evicted_at, &self.failed, conditions.as_array_mut())
        {
            list.push(json!({"type": "DisruptionTarget", "status": "True",
                "reason": "TerminationByKubelet", "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": at.round(jiff::Unit::Second).unwrap_or(at).to_string()}));
        }
        let (init, main): (Vec<&Ctr>, Vec<&Ctr>) = self.ctrs.iter().partition(|c| c.init);
        let (ephemeral, main): (Vec<&Ctr>, Vec<&Ctr>) = main.into_iter().partition(|c| c.ephemeral);
        let host = self.k.config.address.to_string();
        let mut st = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host,
            "hostIPs": [{"ip": host}],
            "startTime": self.start_time.round(jiff::Unit::Second).unwrap_or(self.start_time).to_string(),
            "containerStatuses": main.iter().map(|c| status::container_status(c, &runtime_name)).collect::<Vec<_>>(),
        });
        if !init.is_empty() {
            st["initContainerStatuses"] = init
                .iter()
                .map(|c| status::container_status(c, &runtime_name))
                .collect();
        }
        if !ephemeral.is_empty() {
            st["ephemeralContainerStatuses"] = ephemeral
                .iter()
                .map(|c| status::container_status(c, &runtime_name))
                .collect();
        }
        if let Some(ip) = self.ip {
            st["podIP"] = json!(ip.to_string());
            st["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        if let Some((reason, message)) = &self.failed {
            st["reason"] = json!(reason);
            st["message"] = json!(message);
        }
        if st == self.written || self.written == json!({"adopted": true}) && self.all_done() {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.k.client.clone(), &self.ns);
        match api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": st })),
            )
            .await
        {
            Ok(_) => self.written = st,
            Err(kube::Error::Api(e)) if e.code == 404 => self.written = st,
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "cannot write pod status"),
        }
    }
}
