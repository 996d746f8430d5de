//! The official Kubernetes Python client, in a virtualenv under `target/python-client`, for
//! the end-to-end test that drives Shoal with a client other than kubectl. Created on first
//! use (`cargo xtask test` does it before the suite runs) from PyPI, pinned.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;

/// The pinned client: the release that matches kubectl 1.32.
pub const KUBERNETES_CLIENT: &str = "kubernetes==32.0.1";

/// The virtualenv's python, with the client importable; creates the virtualenv if needed.
pub fn python_client() -> anyhow::Result<PathBuf> {
    let venv = crate::workspace_root().join("target/python-client");
    let python = venv.join("bin/python");
    let importable = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", "import kubernetes"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable(&python) {
        return Ok(python);
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .context("python3 is missing: install python3 and python3-venv (apt-get install python3 python3-venv)")?;
    if !created.status.success() {
        bail!(
            "python3 -m venv {} failed (Debian: apt-get install python3-venv): {}",
            venv.display(),
            String::from_utf8_lossy(&created.stderr)
        );
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            KUBERNETES_CLIENT,
        ])
        .output()
        .context("the virtualenv has no pip")?;
    if !pip.status.success() {
        bail!(
            "pip install {KUBERNETES_CLIENT} failed (it needs PyPI): {}",
            String::from_utf8_lossy(&pip.stderr)
        );
    }
    if !importable(&python) {
        bail!("{KUBERNETES_CLIENT} installed but `import kubernetes` fails");
    }
    Ok(python)
}
