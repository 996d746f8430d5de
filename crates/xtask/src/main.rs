//! `cargo xtask test`: checks what the tests need, builds, and runs the whole suite.
//! `cargo xtask bench`: runs the benchmarks in release mode and prints their figures.

use anyhow::{Context, bail};
use std::process::Command;

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn check_kubectl() -> anyhow::Result<()> {
    match Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!(
            "the end-to-end tests drive the real kubectl, which is missing: install kubectl 1.32 at /usr/bin/kubectl (Debian: the Google Cloud SDK's kubectl package, or the upstream binary)"
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    match task.as_str() {
        "test" => {
            check_kubectl()?;
            // The end-to-end tests start the real binary, so it is built first.
            run(Command::new(&cargo).args(["build", "-p", "shoal"]))?;
            run(Command::new(&cargo).args(["test", "--workspace"]))
        }
        "bench" => {
            run(Command::new(&cargo).args(["bench", "-p", "shoal-apiserver", "--bench", "api"]))
        }
        _ => bail!("usage: cargo xtask test | cargo xtask bench"),
    }
}
