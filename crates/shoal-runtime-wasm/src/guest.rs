//! One guest instance's host state: WASI context built from the container's spec and nothing
//! else, its memory cap and its CPU share.

use crate::engine::TICK;
use crate::net::PodNet;
use shoal_runtime::ContainerConfig;
use shoal_runtime::logs::{LogFile, Stream};
use shoal_runtime::memory::{ContainerMemory, Exhausted};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Host state of one instance.
pub struct Guest {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Egress,
    pub(crate) net: Arc<PodNet>,
    pub memory: MemoryCap,
    cpu: Option<Arc<CpuBudget>>,
    resumed_at: Instant,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Outgoing HTTP, through the pod's network (see [`PodNet::send_request`]).
struct Egress(Arc<PodNet>);

impl wasmtime_wasi_http::WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(self.0.clone().send_request(request, options))
    }
}

/// What an instance costs the host before its memories and tables: the store, its WASI
/// context and resource table, stacks' bookkeeping. Charged (never refused) when the instance is
/// made, so thousands of idle instances cannot hide from the budget.
pub const INSTANCE_BYTES: u64 = 32 << 10;
/// Bytes a table element costs the host (a function reference).
const TABLE_ELEMENT_BYTES: u64 = 8;
/// Handles (streams, sockets, pollables, ...) one instance may hold at once: bounds the host
/// state a guest can make, sockets included.
pub const MAX_HANDLES: usize = 16_384;

/// Charges an instance's linear memories and tables to its container (`resources.limits.memory`,
/// across all the container's instances) and to the node's budget. A growth either refuses traps
/// the guest and marks the store, so the exit is reported as OOMKilled without matching error
/// text; everything is given back when the instance is dropped.
pub struct MemoryCap {
    memory: Arc<ContainerMemory>,
    /// What this instance has charged.
    used: u64,
    /// Why a growth was refused, if one was.
    pub exhausted: Option<Exhausted>,
}

impl MemoryCap {
    pub fn new(memory: Arc<ContainerMemory>) -> Self {
        memory.charge(INSTANCE_BYTES);
        MemoryCap {
            memory,
            used: INSTANCE_BYTES,
            exhausted: None,
        }
    }

    fn grow(&mut self, bytes: u64) -> wasmtime::Result<bool> {
        if let Err(why) = self.memory.grow(bytes) {
            self.exhausted = Some(why);
            wasmtime::bail!("{}: {bytes} more bytes wanted", why.message());
        }
        self.used += bytes;
        Ok(true)
    }
}

impl MemoryCap {
    /// Counts CPU time the instance ran toward its container's usage.
    fn charge_cpu(&self, ran: Duration) {
        self.memory.charge_cpu(ran);
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        self.memory.release(self.used);
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.grow(desired.saturating_sub(current) as u64)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) || desired > 1_000_000 {
            return Ok(false);
        }
        self.grow(desired.saturating_sub(current) as u64 * TABLE_ELEMENT_BYTES)
    }
}

/// `resources.limits.cpu` shared by every instance of a container: a virtual clock that runs
/// `1/share` times faster than the guest. When it gets ahead of real time the guest sleeps
/// until real time catches up, so a spinner with 100m runs ~10 ms in every 100 ms.
pub struct CpuBudget {
    share: f64,
    clock: Mutex<Instant>,
}

impl CpuBudget {
    pub fn new(millis: u64) -> Arc<Self> {
        Arc::new(CpuBudget {
            share: (millis.max(1) as f64 / 1000.0).min(64.0),
            // Starts in the past; `charge` raises it to the allowed floor.
            clock: Mutex::new(
                Instant::now()
                    .checked_sub(TICK * 100)
                    .unwrap_or_else(Instant::now),
            ),
        })
    }

    /// Charges `ran` of CPU; returns how long the guest must now sleep.
    fn charge(&self, ran: Duration) -> Duration {
        let now = Instant::now();
        let mut clock = self
            .clock
            .lock()
            .expect("cpu budget lock is never poisoned");
        // Idle time is not banked beyond one tick: a guest that slept cannot burst afterwards.
        let floor = now.checked_sub(ran + TICK).unwrap_or(now);
        if *clock < floor {
            *clock = floor;
        }
        *clock += ran.div_f64(self.share);
        clock.saturating_duration_since(now)
    }
}

/// What every instance of a container shares: its memory account, CPU share and network.
#[derive(Clone)]
pub struct Shares {
    pub memory: Arc<ContainerMemory>,
    pub cpu: Option<Arc<CpuBudget>>,
    pub net: Arc<PodNet>,
}

/// An instance's standard streams.
pub struct Stdio {
    /// Empty when `None`.
    pub stdin: Option<AsyncStdinStream>,
    pub stdout: AsyncStdoutStream,
    pub stderr: AsyncStdoutStream,
}

/// Builds the store for one instance of `cfg` running in a pod at `ip`.
pub fn new_store(
    engine: &wasmtime::Engine,
    cfg: &ContainerConfig,
    argv0: &str,
    args: &[String],
    ip: IpAddr,
    stdio: Stdio,
    shares: Shares,
) -> Result<Store<Guest>, std::io::Error> {
    let mut b = WasiCtxBuilder::new();
    b.arg(argv0)
        .args(args)
        .envs(&cfg.env)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr);
    if let Some(stdin) = stdio.stdin {
        b.stdin(stdin);
    }
    if let Some(dir) = &cfg.working_dir {
        b.initial_cwd(dir);
    }
    for m in &cfg.mounts {
        let perms = if m.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&m.host_path, &m.container_path, perms)
            .map_err(|e| std::io::Error::other(format!("mount {}: {e}", m.container_path)))?;
    }
    // Binding its own address; connecting and sending where the node's network routes.
    let net = shares.net.clone();
    debug_assert_eq!(net.ip, ip);
    b.socket_addr_check(move |addr, usage| {
        let ok = net.allows(addr, usage);
        Box::pin(async move { ok })
    });
    b.allow_ip_name_lookup(true).allow_tcp(true).allow_udp(true);
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HANDLES);
    let guest = Guest {
        wasi: b.build(),
        table,
        http: WasiHttpCtx::new(),
        hooks: Egress(shares.net.clone()),
        net: shares.net,
        memory: MemoryCap::new(shares.memory),
        cpu: shares.cpu,
        resumed_at: Instant::now(),
    };
    let mut store = Store::new(engine, guest);
    store.limiter(|g| &mut g.memory);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let now = Instant::now();
        let g = ctx.data_mut();
        let ran = now.saturating_duration_since(g.resumed_at).min(TICK);
        g.memory.charge_cpu(ran);
        match &g.cpu {
            Some(budget) => {
                let wait = budget.charge(ran);
                g.resumed_at = now + wait;
                if wait.is_zero() {
                    Ok(UpdateDeadline::Yield(1))
                } else {
                    Ok(UpdateDeadline::YieldCustom(
                        1,
                        Box::pin(tokio::time::sleep(wait)),
                    ))
                }
            }
            None => {
                g.resumed_at = now;
                // Yield every tick so guests share the runtime's threads fairly.
                Ok(UpdateDeadline::Yield(1))
            }
        }
    });
    Ok(store)
}

/// A container's output as attached clients see it: (stream, bytes) as written.
pub type Tee = tokio::sync::broadcast::Sender<(Stream, bytes::Bytes)>;

/// An `AsyncWrite` that appends to a CRI log file as one stream (and passes it to attached
/// clients, if any).
pub struct LogWriter {
    pub log: LogFile,
    pub stream: Stream,
    pub tee: Option<Tee>,
}

impl tokio::io::AsyncWrite for LogWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(tee) = &self.tee
            && tee.receiver_count() > 0
        {
            let _ = tee.send((self.stream, bytes::Bytes::copy_from_slice(buf)));
        }
        // Local appends are short; doing them inline keeps output ordered with exit.
        Poll::Ready(self.log.write(self.stream, buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An `AsyncWrite` into memory, capped (exec output).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

/// Exec output beyond this is dropped, as CRI's `ExecSync` caps it.
const CAPTURE_MAX: usize = 16 * 1024 * 1024;

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut v = self.0.lock().expect("capture lock is never poisoned");
        let room = CAPTURE_MAX.saturating_sub(v.len());
        v.extend_from_slice(&buf[..buf.len().min(room)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenth_of_a_cpu_sleeps_nine_ticks_per_tick_run() {
        let b = CpuBudget::new(100);
        let wait = b.charge(TICK);
        assert!(wait >= TICK * 7 && wait <= TICK * 9, "{wait:?}");
        let full = CpuBudget::new(1000);
        assert!(full.charge(TICK) <= Duration::from_millis(1));
    }

    #[test]
    fn memory_cap_counts_every_memory_and_table_and_gives_it_back() {
        use shoal_runtime::memory::MemoryBudget;
        use wasmtime::ResourceLimiter;
        let node = MemoryBudget::new(None);
        let container = ContainerMemory::new(Some(INSTANCE_BYTES + 110), node.clone());
        let mut cap = MemoryCap::new(container.clone());
        assert!(cap.memory_growing(0, 60, None).unwrap());
        assert!(cap.memory_growing(0, 30, None).unwrap());
        assert!(cap.memory_growing(60, 70, None).unwrap());
        assert!(cap.table_growing(0, 1, None).unwrap());
        assert!(cap.memory_growing(70, 80, None).is_err());
        assert_eq!(cap.exhausted, Some(Exhausted::Limit));
        assert_eq!(node.used(), INSTANCE_BYTES + 108);
        // A second instance of the same container shares its limit.
        let mut other = MemoryCap::new(container.clone());
        assert!(other.memory_growing(0, 1, None).is_err());
        drop(cap);
        drop(other);
        assert_eq!((container.used(), node.used()), (0, 0));
    }
}
