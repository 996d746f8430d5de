//! `cargo xtask up [ARGS]`: installs or checks what the build needs, then runs `shoal up ARGS`.
//! `cargo xtask test`: installs or checks what the tests need, builds, and runs the whole suite.
//! `cargo xtask guests`: builds the sample Wasm workloads (adding the wasm32-wasip2 target).
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

/// A Debian package and the file that shows it is installed.
struct Need {
    file: &'static str,
    package: &'static str,
    why: &'static str,
}

/// What building Shoal needs: etcd-client compiles etcd's protobuf API at build time.
const BUILD: &[Need] = &[
    Need {
        file: "/usr/bin/protoc",
        package: "protobuf-compiler",
        why: "etcd-client compiles etcd's gRPC API with protoc",
    },
    Need {
        file: "/usr/include/google/protobuf/descriptor.proto",
        package: "libprotobuf-dev",
        why: "protoc needs the well-known .proto files",
    },
];

/// What the tests need beyond the build.
const TEST: &[Need] = &[
    Need {
        file: "/usr/bin/etcd",
        package: "etcd-server",
        why: "the store conformance suite and end-to-end tests run against a real etcd",
    },
    Need {
        file: "/usr/bin/docker-registry",
        package: "docker-registry",
        why: "the kubelet pulls Wasm components from a real OCI registry in its tests",
    },
    Need {
        file: "/usr/bin/containerd",
        package: "containerd",
        why: "container pods run through a real containerd (its CRI plugin) in the runtime's tests",
    },
    Need {
        file: "/usr/sbin/runc",
        package: "runc",
        why: "containerd runs containers with runc",
    },
    Need {
        file: "/usr/lib/cni/bridge",
        package: "containernetworking-plugins",
        why: "container pods get their network from the CNI bridge and host-local plugins",
    },
    Need {
        file: "/usr/sbin/nft",
        package: "nftables",
        why: "container pods' NetworkPolicies are nftables tables in their network namespaces",
    },
    Need {
        file: "/bin/busybox",
        package: "busybox-static",
        why: "the node's sandbox image and the tests' container images are built from static busybox",
    },
    Need {
        file: "/usr/bin/dig",
        package: "bind9-dnsutils",
        why: "the Services tests query the cluster DNS server with dig",
    },
];

/// Python with its venv module, for the end-to-end test that drives Shoal with the official
/// Python client (installed only when `python3 -m venv` does not work).
const PYTHON_VENV: Need = Need {
    file: "/usr/share/doc/python3-venv",
    package: "python3-venv",
    why: "one end-to-end test drives Shoal with the official Python client, in a virtualenv",
};

/// Installs missing packages with apt-get when running as root, or says exactly what to do.
fn ensure(needs: &[&Need]) -> anyhow::Result<()> {
    let missing: Vec<&&Need> = needs
        .iter()
        .filter(|n| !std::path::Path::new(n.file).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
    for n in &missing {
        eprintln!("missing {} ({}): {}", n.package, n.file, n.why);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !std::path::Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "install them first: sudo apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        );
    }
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("cannot install {}", packages.join(" ")))?;
    if let Some(n) = missing
        .iter()
        .find(|n| !std::path::Path::new(n.file).exists())
    {
        bail!(
            "{} was installed but {} is still missing",
            n.package,
            n.file
        );
    }
    Ok(())
}

/// Adds the `wasm32-wasip2` target if it is missing, then builds the sample workloads into
/// `target/guests` (where `shoal up` imports them from).
fn guests(cargo: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2") => {}
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"])).context(
            "the sample workloads are built for wasm32-wasip2, and adding the target failed",
        )?,
        Err(_) => eprintln!(
            "rustup is not installed; assuming the toolchain has the wasm32-wasip2 target (the build says so if not)"
        ),
    }
    for mut cmd in shoal_testkit::build_guests(cargo) {
        run(&mut cmd).context(
            "cannot build the sample workloads (wasm-workloads/) and plugins (policies/)",
        )?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    match task.as_str() {
        "up" => {
            ensure(&BUILD.iter().collect::<Vec<_>>())?;
            guests(&cargo)?;
            let args: Vec<String> = std::env::args().skip(2).collect();
            run(Command::new(&cargo)
                .args(["run", "--quiet", "-p", "shoal", "--", "up"])
                .args(&args))
        }
        "test" => {
            ensure(&BUILD.iter().chain(TEST).collect::<Vec<_>>())?;
            check_kubectl()?;
            // The Python client's virtualenv needs python3 with venv (Debian: python3-venv).
            let has_venv = Command::new("python3")
                .args(["-m", "venv", "--help"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !has_venv {
                ensure(&[&PYTHON_VENV])?;
            }
            let python = shoal_testkit::python::python_client()
                .context("the end-to-end suite drives Shoal with the official Python client too")?;
            eprintln!("Python client: {}", python.display());
            guests(&cargo)?;
            // The end-to-end tests start the real binary, so it is built first.
            run(Command::new(&cargo).args(["build", "-p", "shoal"]))?;
            run(Command::new(&cargo).args(["test", "--workspace"]))
        }
        "bench" => {
            ensure(&BUILD.iter().chain(TEST).collect::<Vec<_>>())?;
            guests(&cargo)?;
            run(Command::new(&cargo).args(["bench", "-p", "shoal-apiserver", "--bench", "api"]))?;
            run(Command::new(&cargo).args(["bench", "-p", "shoal-kubelet", "--bench", "pods"]))?;
            run(Command::new(&cargo).args([
                "bench",
                "-p",
                "shoal-kubelet",
                "--bench",
                "streaming",
            ]))?;
            run(Command::new(&cargo).args([
                "bench",
                "-p",
                "shoal-plugin-host",
                "--bench",
                "calls",
            ]))?;
            run(Command::new(&cargo).args([
                "bench",
                "-p",
                "shoal-apiserver",
                "--bench",
                "admission",
            ]))?;
            run(Command::new(&cargo).args([
                "bench",
                "-p",
                "shoal-scheduler",
                "--bench",
                "scheduling",
            ]))?;
            run(Command::new(&cargo).args(["bench", "-p", "shoal-proxy", "--bench", "services"]))?;
            // The front door drives the real binary, built optimized first.
            run(Command::new(&cargo).args(["build", "--release", "-p", "shoal"]))?;
            run(Command::new(&cargo).args(["bench", "-p", "shoal-e2e", "--bench", "frontdoor"]))?;
            run(Command::new(&cargo).args(["bench", "-p", "shoal-e2e", "--bench", "containers"]))
        }
        "guests" => guests(&cargo),
        _ => bail!(
            "usage: cargo xtask up [ARGS] | cargo xtask test | cargo xtask bench | cargo xtask guests"
        ),
    }
}
