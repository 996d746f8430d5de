//! A runtime that runs nothing: containers are tokio tasks interpreting the exerciser's step
//! language (`print`, `env`, `read`, `alloc`, `sleep`, `spin`, `crash`, `exit`). It passes the
//! conformance suite, so the kubelet's lifecycle logic can be tested without wasmtime.

use crate::logs::{LogFile, Stream};
use crate::memory::{Accounts, ContainerMemory, MemoryBudget, Owner};
use crate::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

struct FakeContainer {
    sandbox: SandboxId,
    config: ContainerConfig,
    status: StatusCell,
    memory: Arc<ContainerMemory>,
    task: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct State {
    /// Sandboxes and the uid of their pod.
    sandboxes: HashMap<SandboxId, (Sandbox, String)>,
    containers: HashMap<ContainerId, FakeContainer>,
    next: u64,
    /// Digests of images removed from the node (its registry still has them).
    removed: std::collections::HashSet<String>,
}

/// See the module documentation.
pub struct FakeRuntime {
    handler: String,
    images: Vec<ImageRef>,
    pool: IpPool,
    budget: Arc<MemoryBudget>,
    accounts: Accounts,
    state: Mutex<State>,
}

/// Memory an interpreted container holds (its `alloc` steps), given back when it ends,
/// however it ends.
struct Held {
    memory: Arc<ContainerMemory>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.memory.release(self.bytes);
    }
}

impl FakeRuntime {
    /// A runtime on `cidr` where `images` are present (each gets a made-up digest).
    pub fn new(cidr: &str, images: &[&str]) -> Result<Self, IpPoolError> {
        let images = images
            .iter()
            .enumerate()
            .map(|(i, n)| ImageRef {
                names: vec![n.to_string()],
                digest: format!("sha256:{i:064x}"),
                size: 1,
            })
            .collect();
        Ok(FakeRuntime {
            handler: WASMTIME.into(),
            images,
            pool: IpPool::new(cidr)?,
            budget: MemoryBudget::new(None),
            accounts: Accounts::default(),
            state: Mutex::new(State::default()),
        })
    }

    /// The same runtime serving `handler` instead of [`WASMTIME`].
    pub fn with_handler(mut self, handler: &str) -> Self {
        self.handler = handler.to_owned();
        self
    }

    /// The node's memory for pods, which `alloc` steps are charged to.
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("fake runtime lock is never poisoned")
    }

    fn find_image(&self, image: &str) -> Option<ImageRef> {
        self.images
            .iter()
            .find(|i| i.digest == image || i.names.iter().any(|n| n == image))
            .cloned()
    }

    fn watcher(&self, id: &ContainerId) -> Result<watch::Receiver<ContainerStatus>> {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.status.subscribe())
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))
    }
}

/// Runs the step language against a fake "guest"; returns (exit code, reason, message).
async fn interpret(
    cfg: &ContainerConfig,
    args: &[String],
    out: &mut (dyn FnMut(Stream, String) + Send),
    held: &mut Held,
) -> (i32, &'static str, String) {
    let (code, why) = steps(cfg, args, out, held).await;
    match why {
        Err(exhausted) => (code, reason::OOM_KILLED, exhausted.message().to_owned()),
        Ok(why) => (code, why, String::new()),
    }
}

async fn steps(
    cfg: &ContainerConfig,
    args: &[String],
    out: &mut (dyn FnMut(Stream, String) + Send),
    held: &mut Held,
) -> (i32, Result<&'static str, crate::memory::Exhausted>) {
    let mut it = args.iter();
    if args.is_empty() {
        std::future::pending::<()>().await;
    }
    while let Some(step) = it.next() {
        let mut arg = || it.next().cloned().unwrap_or_default();
        match step.as_str() {
            "print" => out(Stream::Stdout, arg()),
            "env" => {
                let name = arg();
                match cfg.env.iter().rev().find(|(k, _)| *k == name) {
                    Some((_, v)) => out(Stream::Stdout, format!("{name}={v}")),
                    None => out(Stream::Stdout, format!("{name} is not set")),
                }
            }
            "read" => {
                let path = arg();
                let host = cfg.mounts.iter().find_map(|m| {
                    path.strip_prefix(&m.container_path)
                        .map(|rest| m.host_path.join(rest.trim_start_matches('/')))
                });
                match host.map(std::fs::read_to_string) {
                    Some(Ok(body)) => out(Stream::Stdout, body.trim_end_matches('\n').to_owned()),
                    _ => {
                        out(Stream::Stderr, format!("read {path}: not found"));
                        return (2, Ok(reason::ERROR));
                    }
                }
            }
            "alloc" => {
                let bytes = (arg().parse::<f64>().unwrap_or(0.0) * f64::from(1 << 20)) as u64;
                if let Err(e) = held.memory.grow(bytes) {
                    return (137, Err(e));
                }
                held.bytes += bytes;
            }
            "sleep" | "spin" => {
                let secs = arg().parse::<f64>().unwrap_or(0.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            "crash" => return (134, Ok(reason::ERROR)),
            "exit" => {
                let code = arg().parse().unwrap_or(1);
                return (
                    code,
                    Ok(if code == 0 {
                        reason::COMPLETED
                    } else {
                        reason::ERROR
                    }),
                );
            }
            other => {
                out(Stream::Stderr, format!("unknown step {other:?}"));
                return (2, Ok(reason::ERROR));
            }
        }
    }
    (0, Ok(reason::COMPLETED))
}

#[async_trait]
impl PodRuntime for FakeRuntime {
    fn version(&self) -> RuntimeVersion {
        RuntimeVersion {
            name: "fake".into(),
            version: "0.1.0".into(),
        }
    }

    /// As a registry would answer: present images pull; as a Wasm runtime, a missing
    /// `docker.io/` image stands for an OCI container image (the wasmtime runtime finds
    /// container layers in its manifest); anything else is not found.
    async fn pull_image_as(&self, image: &str, _auth: Option<&ImageAuth>) -> Result<ImageRef> {
        if let Some(found) = self.find_image(image) {
            self.lock().removed.remove(&found.digest);
        }
        self.find_image(image).ok_or_else(|| {
            if self.handler == WASMTIME && image.starts_with("docker.io/") {
                RuntimeError::ContainerImage {
                    image: image.to_owned(),
                    also: String::new(),
                }
            } else {
                RuntimeError::ImagePull {
                    image: image.to_owned(),
                    reason: "not found".into(),
                }
            }
        })
    }

    fn runtime_handlers(&self) -> Vec<String> {
        vec![self.handler.clone()]
    }

    async fn runs_image(&self, image: &str, _auth: Option<&ImageAuth>) -> bool {
        !matches!(
            self.pull_image(image).await,
            Err(RuntimeError::ContainerImage { .. })
        )
    }

    async fn image_status(&self, image: &str) -> Result<Option<ImageRef>> {
        let removed = &self.lock().removed;
        Ok(self
            .find_image(image)
            .filter(|i| !removed.contains(&i.digest)))
    }

    async fn list_images(&self) -> Result<Vec<ImageRef>> {
        let removed = &self.lock().removed;
        Ok(self
            .images
            .iter()
            .filter(|i| !removed.contains(&i.digest))
            .cloned()
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        if let Some(found) = self.find_image(image) {
            self.lock().removed.insert(found.digest);
        }
        Ok(())
    }

    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox> {
        let ip = self.pool.allocate()?;
        let mut s = self.lock();
        s.next += 1;
        let id = SandboxId(format!("fake-sandbox-{}-{}", config.name, s.next));
        let sb = Sandbox { id: id.clone(), ip };
        s.sandboxes.insert(id, (sb.clone(), config.uid.clone()));
        Ok(sb)
    }

    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        let ids: Vec<ContainerId> = {
            let s = self.lock();
            s.containers
                .iter()
                .filter(|(_, c)| c.sandbox == *id)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for c in ids {
            self.stop_container(&c, Duration::ZERO).await?;
        }
        if let Some((sb, _)) = self.lock().sandboxes.get(id) {
            self.pool.release(sb.ip);
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        let mut s = self.lock();
        s.containers.retain(|_, c| c.sandbox != *id);
        self.accounts.close_sandbox(id);
        if let Some((sb, _)) = s.sandboxes.remove(id) {
            self.pool.release(sb.ip);
        }
        Ok(())
    }

    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: ContainerConfig,
    ) -> Result<ContainerId> {
        let image =
            self.find_image(&config.image)
                .ok_or_else(|| RuntimeError::ImageNotPresent {
                    image: config.image.clone(),
                })?;
        let mut s = self.lock();
        let Some((_, uid)) = s.sandboxes.get(sandbox) else {
            return Err(RuntimeError::SandboxNotFound(sandbox.clone()));
        };
        let owner = Owner {
            sandbox: sandbox.clone(),
            uid: uid.clone(),
            container: config.name.clone(),
        };
        s.next += 1;
        let id = ContainerId(format!("fake-{}-{}", config.name, s.next));
        let status = StatusCell::created(&id, &config.name, image.digest);
        let memory = ContainerMemory::new(config.memory_limit, self.budget.clone());
        self.accounts.open(owner, memory.clone());
        s.containers.insert(
            id.clone(),
            FakeContainer {
                sandbox: sandbox.clone(),
                config,
                status,
                memory,
                task: None,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let mut s = self.lock();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))?;
        c.status.ensure_created()?;
        c.status.mark_running();
        let cfg = c.config.clone();
        let status = c.status.clone();
        let memory = c.memory.clone();
        let log = LogFile::create(&cfg.log_path)?;
        c.task = Some(
            tokio::spawn(async move {
                let mut out = |stream, line: String| {
                    let _ = log.write(stream, format!("{line}\n").as_bytes());
                };
                let mut held = Held { memory, bytes: 0 };
                let (code, why, msg) = interpret(&cfg, &cfg.argv(), &mut out, &mut held).await;
                drop(held);
                let _ = log.flush();
                status.finish(code, why, msg);
            })
            .abort_handle(),
        );
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, _timeout: Duration) -> Result<()> {
        let s = self.lock();
        if let Some(c) = s.containers.get(id) {
            if let Some(t) = &c.task {
                t.abort();
            }
            c.status.finish(143, reason::ERROR, String::new());
        }
        Ok(())
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        if let Some(c) = self.lock().containers.remove(id) {
            self.accounts.close(&c.memory);
            if let Some(t) = c.task {
                t.abort();
            }
        }
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        Ok(self.watcher(id)?.borrow().clone())
    }

    async fn wait_container(&self, id: &ContainerId) -> Result<ContainerStatus> {
        wait_exited(self.watcher(id)?, id).await
    }

    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        let (cfg, memory) = {
            let s = self.lock();
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.clone()))?;
            (c.config.clone(), c.memory.clone())
        };
        // The fake node has no toolbox.
        let ExecTarget::Image(cmd) = exec_target(&cfg.image, cmd, false) else {
            unreachable!("no toolbox")
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut out = |stream, line: String| {
            let buf = if stream == Stream::Stdout {
                &mut stdout
            } else {
                &mut stderr
            };
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        };
        let mut held = Held { memory, bytes: 0 };
        let (code, _, _) = tokio::time::timeout(timeout, interpret(&cfg, cmd, &mut out, &mut held))
            .await
            .map_err(|_| RuntimeError::ExecTimeout(timeout))?;
        Ok(ExecResult {
            exit_code: code,
            stdout,
            stderr,
        })
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String], mut io: ExecIo) -> Result<i32> {
        use tokio::io::AsyncWriteExt;
        let r = self.exec_sync(id, cmd, Duration::from_secs(3600)).await?;
        io.stdout.write_all(&r.stdout).await?;
        if let Some(err) = io.stderr.as_mut() {
            err.write_all(&r.stderr).await?;
        }
        io.stdout.flush().await?;
        Ok(r.exit_code)
    }

    async fn attach(&self, id: &ContainerId, _io: ExecIo) -> Result<()> {
        // The fake's containers write only to their logs: an attached client sees their end.
        self.wait_container(id).await.map(|_| ())
    }

    async fn list_pod_sandbox_stats(&self) -> Result<Vec<SandboxStats>> {
        Ok(self.accounts.stats())
    }

    fn node_memory(&self) -> Option<NodeMemory> {
        Some(self.budget.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::Harness;
    use std::sync::Arc;

    async fn harness() -> Harness {
        let dir = std::env::temp_dir().join(format!(
            "shoal-fake-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = FakeRuntime::new(
            "127.64.0.0/24",
            &["shoal.local/exerciser:latest", "shoal.local/spare:latest"],
        )
        .unwrap();
        Harness {
            budget: Some(runtime.memory_budget().clone()),
            pod_cidr: "127.64.0.0/24".into(),
            runtime: Arc::new(runtime),
            exerciser: "shoal.local/exerciser:latest".into(),
            spare: "shoal.local/spare:latest".into(),
            guard: Box::new(Cleanup(dir.clone())),
            dir,
        }
    }

    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    crate::runtime_conformance!(harness);
}
