//! One node, several runtimes: [`Runtimes`] is a [`PodRuntime`] that gives each pod to the
//! runtime of its handler (its RuntimeClass's, or the one its image calls for) and sends every
//! later call about its sandbox and containers to the same runtime, as CRI's runtime handlers
//! do inside one containerd.

use crate::*;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The node's runtimes, by handler; the first is the default.
pub struct Runtimes {
    runtimes: Vec<(String, Arc<dyn PodRuntime>)>,
    /// Why a handler the node knows of is missing (containerd could not start), for errors.
    missing: Vec<(String, String)>,
    sandboxes: Mutex<HashMap<SandboxId, usize>>,
    containers: Mutex<HashMap<ContainerId, usize>>,
    /// Images whose handler a pull has shown.
    images: Mutex<HashMap<String, usize>>,
}

impl Runtimes {
    /// `default` serves pods with no handler and images that are Wasm components.
    pub fn new(default: Arc<dyn PodRuntime>) -> Runtimes {
        Runtimes {
            runtimes: default
                .runtime_handlers()
                .into_iter()
                .map(|h| (h, default.clone()))
                .collect(),
            missing: Vec::new(),
            sandboxes: Mutex::default(),
            containers: Mutex::default(),
            images: Mutex::default(),
        }
    }

    /// Adds a runtime for its handlers.
    pub fn with(mut self, runtime: Arc<dyn PodRuntime>) -> Runtimes {
        for h in runtime.runtime_handlers() {
            self.runtimes.push((h, runtime.clone()));
        }
        self
    }

    /// Records that `handler` cannot be offered, and why (said in the errors of pods that need
    /// it).
    pub fn without(mut self, handler: &str, why: &str) -> Runtimes {
        self.missing.push((handler.to_owned(), why.to_owned()));
        self
    }

    fn index(&self, handler: &str) -> Result<usize> {
        if handler.is_empty() {
            return Ok(0);
        }
        self.runtimes
            .iter()
            .position(|(h, _)| h == handler)
            .ok_or_else(|| RuntimeError::NoHandler {
                handler: handler.to_owned(),
                why: self.why_missing(handler),
            })
    }

    fn why_missing(&self, handler: &str) -> String {
        self.missing
            .iter()
            .find(|(h, _)| h == handler)
            .map(|(_, why)| format!(": {why}"))
            .unwrap_or_default()
    }

    fn rt(&self, i: usize) -> &Arc<dyn PodRuntime> {
        &self.runtimes[i].1
    }

    fn of_sandbox(&self, id: &SandboxId) -> &Arc<dyn PodRuntime> {
        let i = lock(&self.sandboxes).get(id).copied().unwrap_or(0);
        self.rt(i)
    }

    fn of_container(&self, id: &ContainerId) -> &Arc<dyn PodRuntime> {
        let i = lock(&self.containers).get(id).copied().unwrap_or(0);
        self.rt(i)
    }

    /// The runtime that has `image` (or that its manifest showed it is for), if one has.
    async fn holder(&self, image: &str) -> Option<usize> {
        let known = lock(&self.images).get(image).copied();
        if known.is_some() {
            return known;
        }
        for (i, (_, rt)) in self.runtimes.iter().enumerate() {
            if let Ok(Some(_)) = rt.image_status(image).await {
                return Some(i);
            }
        }
        None
    }

    /// Each runtime once (one may serve several handlers).
    fn distinct(&self) -> impl Iterator<Item = &Arc<dyn PodRuntime>> {
        self.runtimes
            .iter()
            .enumerate()
            .filter(|(i, (_, rt))| !self.runtimes[..*i].iter().any(|(_, r)| Arc::ptr_eq(r, rt)))
            .map(|(_, (_, rt))| rt)
    }

    /// The first runtime that is not the default's: the one for container images.
    fn containers_index(&self) -> Option<usize> {
        let default = Arc::as_ptr(self.rt(0)) as *const ();
        self.runtimes
            .iter()
            .position(|(_, rt)| Arc::as_ptr(rt) as *const () != default)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl PodRuntime for Runtimes {
    fn version(&self) -> RuntimeVersion {
        self.rt(0).version()
    }

    /// Pulls with the runtime that holds the image or showed it is of its kind; otherwise with
    /// the default, and, when that finds an OCI container image, with the containers' runtime.
    async fn pull_image_as(&self, image: &str, auth: Option<&ImageAuth>) -> Result<ImageRef> {
        if let Some(i) = self.holder(image).await {
            return self.rt(i).pull_image_as(image, auth).await;
        }
        match self.rt(0).pull_image_as(image, auth).await {
            Err(RuntimeError::ContainerImage { image: img, .. }) => {
                let Some(i) = self.containers_index() else {
                    return Err(RuntimeError::ContainerImage {
                        image: img,
                        also: format!(
                            ", and this node cannot run containers{}",
                            self.why_missing(RUNC)
                        ),
                    });
                };
                let pulled = self.rt(i).pull_image_as(image, auth).await?;
                lock(&self.images).insert(image.to_owned(), i);
                Ok(pulled)
            }
            other => other,
        }
    }

    async fn image_status(&self, image: &str) -> Result<Option<ImageRef>> {
        match self.holder(image).await {
            Some(i) => self.rt(i).image_status(image).await,
            None => Ok(None),
        }
    }

    async fn list_images(&self) -> Result<Vec<ImageRef>> {
        let mut all = Vec::new();
        for rt in self.distinct() {
            all.extend(rt.list_images().await?);
        }
        Ok(all)
    }

    /// From every runtime that has it.
    async fn remove_image(&self, image: &str) -> Result<()> {
        for rt in self.distinct() {
            rt.remove_image(image).await?;
        }
        lock(&self.images).remove(image);
        Ok(())
    }

    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox> {
        let i = self.index(&config.runtime_handler)?;
        let sb = self.rt(i).run_pod_sandbox(config).await?;
        lock(&self.sandboxes).insert(sb.id.clone(), i);
        Ok(sb)
    }

    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.of_sandbox(id).stop_pod_sandbox(id).await
    }

    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.of_sandbox(id).remove_pod_sandbox(id).await?;
        lock(&self.sandboxes).remove(id);
        Ok(())
    }

    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: ContainerConfig,
    ) -> Result<ContainerId> {
        let i = lock(&self.sandboxes).get(sandbox).copied().unwrap_or(0);
        let id = self.rt(i).create_container(sandbox, config).await?;
        lock(&self.containers).insert(id.clone(), i);
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        self.of_container(id).start_container(id).await
    }

    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        self.of_container(id).stop_container(id, timeout).await
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        self.of_container(id).remove_container(id).await?;
        lock(&self.containers).remove(id);
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.of_container(id).container_status(id).await
    }

    async fn wait_container(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.of_container(id).wait_container(id).await
    }

    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        self.of_container(id).exec_sync(id, cmd, timeout).await
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String], io: ExecIo) -> Result<i32> {
        self.of_container(id).exec(id, cmd, io).await
    }

    async fn attach(&self, id: &ContainerId, io: ExecIo) -> Result<()> {
        self.of_container(id).attach(id, io).await
    }

    async fn port_forward(
        &self,
        id: &ContainerId,
        ip: std::net::IpAddr,
        port: u16,
    ) -> std::io::Result<tokio::net::TcpStream> {
        self.of_container(id).port_forward(id, ip, port).await
    }

    async fn list_pod_sandbox_stats(&self) -> Result<Vec<SandboxStats>> {
        let mut all = Vec::new();
        for rt in self.distinct() {
            all.extend(rt.list_pod_sandbox_stats().await?);
        }
        Ok(all)
    }

    fn node_memory(&self) -> Option<NodeMemory> {
        self.rt(0).node_memory()
    }

    fn runtime_handlers(&self) -> Vec<String> {
        self.runtimes.iter().map(|(h, _)| h.clone()).collect()
    }

    /// The handler of the runtime that holds `image`; else the default's, unless the image's
    /// manifest shows an OCI container image, which goes to the containers' runtime. Nothing
    /// is pulled here: the pod's containers pull (with their events) as usual.
    async fn image_handler(&self, image: &str, auth: Option<&ImageAuth>) -> Result<String> {
        if let Some(i) = self.holder(image).await {
            return Ok(self.runtimes[i].0.clone());
        }
        if self.rt(0).runs_image(image, auth).await {
            return Ok(self.runtimes[0].0.clone());
        }
        match self.containers_index() {
            Some(i) => {
                lock(&self.images).insert(image.to_owned(), i);
                Ok(self.runtimes[i].0.clone())
            }
            None => Err(RuntimeError::ContainerImage {
                image: image.to_owned(),
                also: format!(
                    ", and this node cannot run containers{}",
                    self.why_missing(RUNC)
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;

    /// A fake that calls every image a container image, under another handler.
    fn runtimes(with_containers: bool) -> (Runtimes, Arc<FakeRuntime>) {
        let wasm =
            Arc::new(FakeRuntime::new("127.64.0.0/24", &["shoal.local/exerciser:latest"]).unwrap());
        let oci = Arc::new(
            FakeRuntime::new("127.65.0.0/24", &["docker.io/library/busybox:latest"])
                .unwrap()
                .with_handler(RUNC),
        );
        let rts = Runtimes::new(wasm);
        let rts = if with_containers {
            rts.with(oci.clone())
        } else {
            rts.without(RUNC, "containers need root")
        };
        (rts, oci)
    }

    #[tokio::test]
    async fn pods_go_to_their_handlers_runtime_and_stay_there() {
        let (rts, oci) = runtimes(true);
        assert_eq!(rts.runtime_handlers(), [WASMTIME, RUNC]);
        let sb = rts
            .run_pod_sandbox(&SandboxConfig {
                name: "bb".into(),
                runtime_handler: RUNC.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(sb.ip.to_string().starts_with("127.65."), "{}", sb.ip);
        let id = rts
            .create_container(
                &sb.id,
                ContainerConfig {
                    name: "c".into(),
                    image: "docker.io/library/busybox:latest".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(oci.container_status(&id).await.is_ok());
        assert!(rts.container_status(&id).await.is_ok());
        let err = rts
            .run_pod_sandbox(&SandboxConfig {
                runtime_handler: "kata".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"kata\""), "{err}");
    }

    #[tokio::test]
    async fn an_images_kind_picks_the_handler() {
        let (rts, _) = runtimes(true);
        assert_eq!(
            rts.image_handler("shoal.local/exerciser:latest", None)
                .await
                .unwrap(),
            WASMTIME
        );
        assert_eq!(
            rts.image_handler("docker.io/library/busybox:latest", None)
                .await
                .unwrap(),
            RUNC
        );
        let (rts, _) = runtimes(false);
        let err = rts
            .image_handler("docker.io/library/busybox:latest", None)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot run containers: containers need root"),
            "{err}"
        );
    }
}
