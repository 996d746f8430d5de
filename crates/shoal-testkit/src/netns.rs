//! Network namespaces a test creates, standing for machines: processes run in one with
//! [`NetNs::command`], namespaces are joined by veth pairs ([`link`]). Deleting a namespace
//! (when its handle drops) takes its links, bridges and routes with it. Needs root.

use anyhow::{Context, bail};
use std::ffi::OsStr;
use std::process::Command;

/// A network namespace of this test process.
pub struct NetNs {
    pub name: String,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

impl NetNs {
    /// Creates `shoal-<pid>-<tag>` with its loopback up (a stale one of that name, from a
    /// killed run with the same process id, is deleted first).
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let name = format!("shoal-{}-{tag}", std::process::id());
        let _ = ip(&["netns", "delete", &name]);
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `program` to run in the namespace (`nsenter --net`, which execs it: the child's
    /// process id is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(Some(&self.name), program)
    }
}

/// `program` to run in namespace `netns`, or here without one. Only the network namespace
/// changes (`ip netns exec` would also remount `/sys` for it, hiding the cgroup mounts runc
/// needs).
pub fn command_in(netns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// Joins `a` and `b` with a veth pair named `eth0` on both sides, addressed `a_addr` and
/// `b_addr` (with their prefix, as `198.19.7.1/24`), and up.
pub fn link(a: &NetNs, a_addr: &str, b: &NetNs, b_addr: &str) -> anyhow::Result<()> {
    ip(&[
        "-n", &a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        &b.name,
    ])?;
    for (ns, addr) in [(a, a_addr), (b, b_addr)] {
        ip(&["-n", &ns.name, "addr", "add", addr, "dev", "eth0"])?;
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
    }
    Ok(())
}
