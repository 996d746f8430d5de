//! Real etcd clusters for tests: one or more `etcd` members (Debian's `etcd-server`) on free
//! loopback ports with temporary data directories, stopped when the handle drops.

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `etcd` binary, or an error saying how to get it.
pub fn etcd_bin() -> anyhow::Result<PathBuf> {
    let candidates = std::env::var_os("SHOAL_ETCD")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/etcd", "/usr/local/bin/etcd"].map(PathBuf::from));
    for c in candidates {
        if c.exists() {
            return Ok(c);
        }
    }
    bail!(
        "etcd is not installed: `apt-get install etcd-server` (or run `cargo xtask test`, which \
         installs it), or set SHOAL_ETCD to an etcd binary"
    )
}

/// A loopback port free right now, chosen below Linux's ephemeral range (32768 and up) so
/// that no outgoing connection is handed it before etcd binds it; the kernel's choice if none
/// is found.
fn free_port() -> anyhow::Result<u16> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    for i in 0..200u32 {
        let port = 20_000 + (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7_919) % 12_000);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return Ok(l.local_addr()?.port());
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How many times a cluster is started afresh when a port it picked was taken meanwhile.
const START_ATTEMPTS: usize = 3;

struct Member {
    name: String,
    client_url: String,
    child: Option<Child>,
    log: PathBuf,
}

/// A running etcd cluster of one or more members.
pub struct Etcd {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// One member.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_cluster(1)
    }

    /// `n` members forming one cluster; returns once every member reports itself healthy.
    /// A port taken between being picked and being bound (another test's server) starts the
    /// cluster again on new ports.
    pub fn start_cluster(n: usize) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::try_start_cluster(n) {
                Err(e)
                    if attempt < START_ATTEMPTS
                        && format!("{e:#}").contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start_cluster(n: usize) -> anyhow::Result<Self> {
        let bin = etcd_bin()?;
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = dir.path().join(format!("{name}.log"));
            let child = Command::new(&bin)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.path().join(&name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "shoal-test"])
                // Loopback peers: elect quickly, notify watch progress often.
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--experimental-watch-progress-notify-interval", "1s"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            members.push(Member {
                name,
                client_url,
                child: Some(child),
                log,
            });
        }
        let mut etcd = Etcd { members, _dir: dir };
        for i in 0..n {
            etcd.wait_healthy(i)?;
        }
        Ok(etcd)
    }

    /// Client URLs of the members still running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect()
    }

    /// Client URLs of all members, running or not, comma-separated (`--etcd-endpoints`).
    pub fn endpoints_arg(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_healthy(&mut self, i: usize) -> anyhow::Result<()> {
        let addr = self.members[i]
            .client_url
            .trim_start_matches("http://")
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if health(&addr).unwrap_or(false) {
                return Ok(());
            }
            let m = &mut self.members[i];
            let exited = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let what = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => "did not become healthy in 30s".to_owned(),
                };
                bail!(
                    "etcd member {} at {} {what}; its log ends:\n{}",
                    m.name,
                    m.client_url,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Asks etcd's `/health` endpoint; `Ok(true)` once the member has a leader.
fn health(addr: &str) -> anyhow::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.contains("\"health\":\"true\""))
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
