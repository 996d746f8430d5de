//! Startup, liveness and readiness probes: httpGet and tcpSocket against the pod IP, and exec
//! through the runtime.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shoal_runtime::{ContainerId, PodRuntime};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What a probe reports to its pod's worker.
#[derive(Debug)]
pub enum Report {
    /// One failed attempt (an `Unhealthy` event).
    Failed(Kind, String),
    /// The probe's verdict changed: `true` once successThreshold is met, `false` once
    /// failureThreshold is.
    Verdict(Kind, bool),
}

/// Where probes of one container run.
#[derive(Clone)]
pub struct Target {
    pub ip: IpAddr,
    pub runtime: Arc<dyn PodRuntime>,
    pub container: ContainerId,
    pub spec: Container,
}

fn port(spec: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => spec
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

async fn http_get(t: &Target, probe: &Probe, timeout: Duration) -> Result<(), String> {
    let h = probe.http_get.as_ref().ok_or("no httpGet")?;
    let port = port(&t.spec, &h.port)?;
    let path = h.path.as_deref().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let scheme = h.scheme.as_deref().unwrap_or("HTTP");
    let url = format!(
        "{}://{}{path}",
        scheme.to_lowercase(),
        SocketAddr::new(t.ip, port)
    );
    if !scheme.eq_ignore_ascii_case("HTTP") {
        return Err(format!("Get {url:?}: only HTTP probes are supported"));
    }
    let attempt = async {
        let mut sock = tokio::net::TcpStream::connect(SocketAddr::new(t.ip, port))
            .await
            .map_err(|e| format!("Get {url:?}: dial tcp {}:{port}: {e}", t.ip))?;
        let _ = sock.set_nodelay(true);
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{port}\r\nUser-Agent: kube-probe/{}\r\nAccept: */*\r\nConnection: close\r\n",
            t.ip,
            shoal_api::version::MAJOR_MINOR
        );
        for hd in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
        }
        req.push_str("\r\n");
        sock.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
            let n = sock
                .read(&mut buf)
                .await
                .map_err(|e| format!("Get {url:?}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )
    })?
}

async fn tcp(t: &Target, probe: &Probe, timeout: Duration) -> Result<(), String> {
    let s = probe.tcp_socket.as_ref().ok_or("no tcpSocket")?;
    let port = port(&t.spec, &s.port)?;
    let addr = SocketAddr::new(t.ip, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

async fn exec(t: &Target, probe: &Probe, timeout: Duration) -> Result<(), String> {
    let cmd = probe
        .exec
        .as_ref()
        .and_then(|e| e.command.clone())
        .unwrap_or_default();
    match t.runtime.exec_sync(&t.container, &cmd, timeout).await {
        Ok(r) if r.exit_code == 0 => Ok(()),
        Ok(r) => {
            let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&r.stderr));
            Err(if out.trim().is_empty() {
                format!("command {cmd:?} exited with {}", r.exit_code)
            } else {
                out.trim_end().to_owned()
            })
        }
        Err(e) => Err(format!("command {cmd:?} failed: {e}")),
    }
}

/// One attempt of `probe`.
pub async fn check(t: &Target, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if probe.http_get.is_some() {
        http_get(t, probe, timeout).await
    } else if probe.tcp_socket.is_some() {
        tcp(t, probe, timeout).await
    } else if probe.exec.is_some() {
        exec(t, probe, timeout).await
    } else {
        Err("probe has no handler (httpGet, tcpSocket or exec)".into())
    }
}

/// Runs `probe` until it reaches a verdict the caller stops on, or forever; reports go to `tx`.
/// Returns once `until` says the latest verdict ends this probe (startup probes end on success).
async fn run_one(
    t: &Target,
    kind: Kind,
    probe: &Probe,
    tx: &mpsc::UnboundedSender<Report>,
    stop_on_success: bool,
) {
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let need_ok = probe.success_threshold.unwrap_or(1).max(1);
    let need_fail = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut oks, mut fails) = (0, 0);
    let mut verdict: Option<bool> = None;
    loop {
        match check(t, probe).await {
            Ok(()) => {
                oks += 1;
                fails = 0;
                if oks >= need_ok && verdict != Some(true) {
                    verdict = Some(true);
                    if tx.send(Report::Verdict(kind, true)).is_err() {
                        return;
                    }
                    if stop_on_success {
                        return;
                    }
                }
            }
            Err(msg) => {
                oks = 0;
                fails += 1;
                if tx.send(Report::Failed(kind, msg)).is_err() {
                    return;
                }
                if fails >= need_fail && verdict != Some(false) {
                    verdict = Some(false);
                    if tx.send(Report::Verdict(kind, false)).is_err() {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Runs the container's probes: startup first, then liveness and readiness side by side.
/// Ends when `tx`'s receiver is gone.
pub async fn run(t: Target, tx: mpsc::UnboundedSender<Report>) {
    let spec = t.spec.clone();
    if let Some(p) = &spec.startup_probe {
        run_one(&t, Kind::Startup, p, &tx, true).await;
    }
    let live = async {
        if let Some(p) = &spec.liveness_probe {
            run_one(&t, Kind::Liveness, p, &tx, false).await;
        }
    };
    let ready = async {
        if let Some(p) = &spec.readiness_probe {
            run_one(&t, Kind::Readiness, p, &tx, false).await;
        }
    };
    tokio::join!(live, ready);
}
