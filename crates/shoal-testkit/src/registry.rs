//! A CNCF distribution registry (Debian's `docker-registry`) on a free loopback port with a
//! temporary storage directory, stopped when dropped.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary, or an error saying how to get it.
pub fn registry_bin() -> anyhow::Result<PathBuf> {
    let p = PathBuf::from("/usr/bin/docker-registry");
    if p.exists() {
        Ok(p)
    } else {
        bail!("docker-registry is missing: apt-get install docker-registry (cargo xtask test does)")
    }
}

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, the registry part of image names.
    pub host: String,
    /// Its configuration and storage (a registry serving another's storage has none).
    dir: Option<tempfile::TempDir>,
}

/// The user of [`Registry::start_with_auth`].
pub const USER: &str = "puller";
/// Its password.
pub const PASSWORD: &str = "pull-secret";
/// `USER:bcrypt(PASSWORD)`, as an htpasswd file holds it (bcrypt is the only hash the registry
/// takes; computed once with Python's `bcrypt`, cost 5).
const HTPASSWD: &str = "puller:$2y$05$Sk85DVYyDyCoEvmnBrWvYOT1EKayF3EMUp4UEv1gQq2f7WLgJJFdC";

impl Registry {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_inner(false, false)
    }

    /// A registry that answers only [`USER`] with [`PASSWORD`] (HTTP basic authentication).
    pub fn start_with_auth() -> anyhow::Result<Self> {
        Self::start_inner(true, false)
    }

    /// A registry that is killed when the thread that started it ends (a parent-death
    /// signal), for one kept in a static, which is never dropped: start it from a thread that
    /// lives as long as the test process.
    pub fn start_tied() -> anyhow::Result<Self> {
        Self::start_inner(false, true)
    }

    fn start_inner(auth: bool, tied: bool) -> anyhow::Result<Self> {
        let bin = registry_bin()?;
        let dir = tempfile::tempdir()?;
        let auth = if auth {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{HTPASSWD}\n"))?;
            format!(
                "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                file.display()
            )
        } else {
            String::new()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = write_config(dir.path(), "config.yml", &host, &auth)?;
        let cmd = if tied {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let child = serve(cmd, &config)?;
        let mut r = Registry {
            child,
            host,
            dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&r.host).is_err() {
            if Instant::now() > deadline || r.child.try_wait()?.is_some() {
                bail!("docker-registry did not start on {}", r.host);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }
}

impl Registry {
    /// A second registry serving this one's storage (what was pushed to it, read-only in
    /// spirit) in network namespace `netns` on `addr` (`IP:PORT` of the namespace), for
    /// nodes that cannot reach this one's loopback address; stop it before this one.
    pub fn serve_in(&self, netns: &crate::netns::NetNs, addr: &str) -> anyhow::Result<Self> {
        let dir = self
            .dir
            .as_ref()
            .context("a registry with storage of its own")?;
        let config = write_config(dir.path(), &format!("config-{}.yml", netns.name), addr, "")?;
        let child = serve(netns.command(registry_bin()?), &config)?;
        let mut r = Registry {
            child,
            host: addr.to_owned(),
            dir: None,
        };
        let (ip, port) = addr.rsplit_once(':').context("IP:PORT")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = netns
                .command("bash")
                .args(["-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
                .stderr(Stdio::null())
                .status()?;
            if probe.success() {
                return Ok(r);
            }
            if Instant::now() > deadline || r.child.try_wait()?.is_some() {
                bail!("docker-registry did not start on {addr} in {}", netns.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes the configuration `file` in `dir` of a registry on `addr` storing under
/// `dir/data`, with the `auth` section given; its path.
fn write_config(
    dir: &std::path::Path,
    file: &str,
    addr: &str,
    auth: &str,
) -> anyhow::Result<PathBuf> {
    let config = dir.join(file);
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth}",
            dir.join("data").display()
        ),
    )?;
    Ok(config)
}

/// Runs `registry` (the docker-registry command) serving `config`.
fn serve(mut registry: Command, config: &std::path::Path) -> anyhow::Result<Child> {
    registry
        .arg("serve")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning docker-registry")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
