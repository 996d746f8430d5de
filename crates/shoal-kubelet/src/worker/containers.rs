//! Starting containers (images, configuration, launch, probes) and what their exits and probe
//! verdicts mean under the pod's restart policy.

use super::*;

impl Worker {
    /// Makes the container's image present; `Err((reason, message))` if it cannot be.
    pub(super) async fn ensure_image(&mut self, idx: usize) -> Result<String, (String, String)> {
        let spec = &self.ctrs[idx].spec;
        let name = spec.name.clone();
        let image = spec.image.clone().unwrap_or_default();
        if image.is_empty() {
            return Err((
                "InvalidImageName".into(),
                "the container has no image".into(),
            ));
        }
        let policy = spec.image_pull_policy.clone().unwrap_or_else(|| {
            if !has_tag(&image) || image.ends_with(":latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = self.k.runtime.image_status(&image).await.ok().flatten();
        let resolved = match (policy.as_str(), present) {
            ("Never", None) => {
                let msg =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.record(
                    Some(&name),
                    EventKind::Warning,
                    "ErrImageNeverPull",
                    msg.clone(),
                );
                return Err(("ErrImageNeverPull".into(), msg));
            }
            ("Never" | "IfNotPresent", Some(img)) => {
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                );
                img
            }
            _ => {
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Pulling",
                    format!("Pulling image {image:?}"),
                );
                let t = std::time::Instant::now();
                let auth = crate::resolve::pull_auth(&self.k.client, &self.pod, &image).await;
                match self.k.runtime.pull_image_as(&image, auth.as_ref()).await {
                    Ok(img) => {
                        self.record(
                            Some(&name),
                            EventKind::Normal,
                            "Pulled",
                            format!(
                                "Successfully pulled image {image:?} in {:?}. Image size: {} bytes.",
                                t.elapsed(),
                                img.size
                            ),
                        );
                        img
                    }
                    Err(e) => {
                        let reason = if self.ctrs[idx].retry_at.is_some() {
                            "ImagePullBackOff"
                        } else {
                            "ErrImagePull"
                        };
                        return Err((
                            reason.into(),
                            format!("Failed to pull image {image:?}: {e}"),
                        ));
                    }
                }
            }
        };
        let repo = image.split('@').next().unwrap_or(&image);
        let repo = match repo.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repo,
        };
        self.ctrs[idx].image_id = format!("{repo}@{}", resolved.digest);
        Ok(image)
    }

    /// Pulls, resolves, creates and starts container `idx`; why not, if it cannot yet.
    pub(super) async fn launch(
        &mut self,
        idx: usize,
        sb: &Sandbox,
    ) -> Result<(ContainerId, i32), NotStarted> {
        let name = self.ctrs[idx].spec.name.clone();
        let image = self.ensure_image(idx).await.map_err(|(reason, message)| {
            let c = &mut self.ctrs[idx];
            c.backoff = next_backoff(c.backoff, &self.k.config).max(RETRY);
            NotStarted {
                reason,
                message,
                retry: c.backoff,
            }
        })?;
        let services = crate::network::services_for(&self.k.client, &self.pod)
            .await
            .map_err(|e| {
                NotStarted::config(resolve::ResolveError(format!(
                    "cannot list the Services for the environment: {e}"
                )))
            })?;
        let spec = &self.ctrs[idx].spec;
        let env = resolve::environment(
            &self.k.client,
            &self.pod,
            spec,
            crate::network::service_env(&services),
            sb.ip,
            self.k.config.address,
        )
        .await
        .map_err(NotStarted::config)?;
        let restarts = self.ctrs[idx].restarts + i32::from(self.ctrs[idx].ever_ran);
        let log_dir = self.dir.join("logs").join(&name);
        let log_path = log_dir.join(format!("{restarts}.log"));
        prune_logs(&log_dir, restarts);
        let volumes = self.volumes.clone().unwrap_or_default();
        let cfg = resolve::container_config(spec, env, &volumes, image, log_path)
            .map_err(NotStarted::config)?;
        let id = self
            .k
            .runtime
            .create_container(&sb.id, cfg)
            .await
            .map_err(|e| NotStarted::soon("CreateContainerError", e))?;
        self.record(
            Some(&name),
            EventKind::Normal,
            "Created",
            format!("Created container: {name}"),
        );
        if let Err(e) = self.k.runtime.start_container(&id).await {
            let _ = self.k.runtime.remove_container(&id).await;
            return Err(NotStarted::soon("RunContainerError", e));
        }
        self.record(
            Some(&name),
            EventKind::Normal,
            "Started",
            format!("Started container {name}"),
        );
        Ok((id, restarts))
    }

    pub(super) async fn start(&mut self, idx: usize) {
        let Some(sb) = self.sandbox.clone() else {
            return;
        };
        let (id, restarts) = match self.launch(idx, &sb).await {
            Ok(started) => started,
            Err(n) => return self.waiting(idx, &n.reason, n.message, n.retry),
        };
        let spec = self.ctrs[idx].spec.clone();
        let c = &mut self.ctrs[idx];
        c.restarts = restarts;
        c.ever_ran = true;
        c.run += 1;
        c.id = Some(id.clone());
        c.retry_at = None;
        c.state = State::Running {
            started_at: Timestamp::now(),
        };
        c.started = spec.startup_probe.is_none();
        c.ready = c.started && spec.readiness_probe.is_none() && !c.init;
        let run = c.run;
        let runtime = self.k.runtime.clone();
        let tx = self.tx.clone();
        let wait_id = id.clone();
        tokio::spawn(async move {
            let status = loop {
                match runtime.wait_container(&wait_id).await {
                    Ok(s) => break s,
                    // Removed before it exited: the worker that removed it has recorded its end.
                    Err(shoal_runtime::RuntimeError::ContainerNotFound(_)) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, container = %wait_id, "cannot wait for container");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            };
            let _ = tx.send(Msg::Exited {
                idx,
                run,
                status: Box::new(status),
            });
        });
        if !c.init
            && (spec.liveness_probe.is_some()
                || spec.readiness_probe.is_some()
                || spec.startup_probe.is_some())
        {
            let (ptx, mut prx) = mpsc::unbounded_channel();
            let target = probe::Target {
                ip: sb.ip,
                runtime: self.k.runtime.clone(),
                container: id,
                spec,
            };
            let tx = self.tx.clone();
            let task = tokio::spawn(async move {
                let probes = tokio::spawn(probe::run(target, ptx));
                while let Some(report) = prx.recv().await {
                    if tx.send(Msg::Probe { idx, run, report }).is_err() {
                        break;
                    }
                }
                probes.abort();
            });
            c.probes = Some(task.abort_handle());
        }
        self.publish_index();
    }

    /// A container whose image was changed (`kubectl set image pod/...`, the one mutable part of
    /// a container) is killed and started again from the new image, as Kubernetes does.
    pub(super) fn images_changed(&mut self) {
        let spec = self.spec();
        let wanted: HashMap<&str, Option<&String>> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| (c.name.as_str(), c.image.as_ref()))
            .collect();
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        for i in 0..self.ctrs.len() {
            let Some(image) = wanted.get(self.ctrs[i].spec.name.as_str()) else {
                continue;
            };
            if self.ctrs[i].spec.image.as_ref() == *image
                || self.ctrs[i].init
                || self.ctrs[i].ephemeral
            {
                continue;
            }
            let name = self.ctrs[i].spec.name.clone();
            let c = &mut self.ctrs[i];
            c.spec.image = image.cloned();
            c.backoff = Duration::ZERO;
            c.retry_at = None;
            if c.running()
                && let Some(id) = c.id.clone()
            {
                let runtime = self.k.runtime.clone();
                tokio::spawn(async move {
                    let _ = runtime.stop_container(&id, grace).await;
                });
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Killing",
                    format!("Container {name} definition changed, will be restarted"),
                );
            }
        }
    }

    pub(super) async fn exited(&mut self, idx: usize, st: &ContainerStatus) {
        let policy = self.restart_policy();
        let runtime_name = self.k.runtime.version().name;
        let cfg = self.k.config.clone();
        let c = &mut self.ctrs[idx];
        if let Some(p) = c.probes.take() {
            p.abort();
        }
        let term = Term {
            exit_code: st.exit_code,
            reason: st.reason.clone(),
            message: st.message.clone(),
            started_at: nanos_to_ts(st.started_at),
            finished_at: nanos_to_ts(st.finished_at),
            container_id: Some(format!("{runtime_name}://{}", st.id)),
        };
        if let Some(id) = &c.id {
            let _ = self.k.runtime.remove_container(id).await;
        }
        c.ready = false;
        let restart = match (c.init, policy.as_str()) {
            _ if c.ephemeral => false,
            (true, "Never") => false,
            (true, _) => term.exit_code != 0,
            (false, "Always") => true,
            (false, "OnFailure") => term.exit_code != 0,
            _ => false,
        };
        let ran_for = term
            .finished_at
            .duration_since(term.started_at)
            .unsigned_abs();
        if !restart {
            c.done = true;
            c.state = State::Terminated(term);
            self.publish_index();
            return;
        }
        // A container that ran well for a while starts its back-off afresh, as Kubernetes does.
        if ran_for > cfg.backoff_max * 2 {
            c.backoff = Duration::ZERO;
        }
        let delay = c.backoff;
        c.backoff = next_backoff(c.backoff, &cfg);
        c.last = Some(term.clone());
        if delay.is_zero() {
            c.state = State::Terminated(term);
            c.retry_at = None;
        } else {
            let name = c.spec.name.clone();
            let message = format!(
                "back-off {} restarting failed container={name} pod={}_{}({})",
                go_duration(delay),
                self.name,
                self.ns,
                self.uid
            );
            c.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message,
            };
            c.retry_at = Some(Instant::now() + delay);
            self.record(
                Some(&name),
                EventKind::Warning,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    self.name, self.ns, self.uid
                ),
            );
        }
        self.publish_index();
    }

    pub(super) async fn probed(&mut self, idx: usize, report: Report) {
        let name = self.ctrs[idx].spec.name.clone();
        match report {
            Report::Failed(kind, msg) => self.record(
                Some(&name),
                EventKind::Warning,
                "Unhealthy",
                format!("{} probe failed: {msg}", kind.name()),
            ),
            Report::Verdict(ProbeKind::Readiness, ok) => {
                let c = &mut self.ctrs[idx];
                c.ready = ok && c.started;
            }
            Report::Verdict(ProbeKind::Startup, true) => {
                let c = &mut self.ctrs[idx];
                c.started = true;
                c.ready = c.spec.readiness_probe.is_none();
            }
            Report::Verdict(kind @ (ProbeKind::Startup | ProbeKind::Liveness), false) => {
                self.record(
                    Some(&name),
                    EventKind::Normal,
                    "Killing",
                    format!(
                        "Container {name} failed {} probe, will be restarted",
                        kind.name().to_lowercase()
                    ),
                );
                let c = &mut self.ctrs[idx];
                c.ready = false;
                if let Some(p) = c.probes.take() {
                    p.abort();
                }
                if let Some(id) = c.id.clone() {
                    let grace = self
                        .spec()
                        .termination_grace_period_seconds
                        .unwrap_or(30)
                        .max(0) as u64;
                    let runtime = self.k.runtime.clone();
                    // The exit arrives through the container's wait task.
                    tokio::spawn(async move {
                        let _ = runtime
                            .stop_container(&id, Duration::from_secs(grace))
                            .await;
                    });
                }
            }
            Report::Verdict(ProbeKind::Liveness, true) => {}
        }
    }
}
