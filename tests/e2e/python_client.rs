//! A second client in another language: the official Kubernetes Python client
//! (`python/client.py`) drives a real cluster. It sends booleans as `True`/`False`, reads
//! typed models that reject missing required fields, and uses the dynamic client's
//! discovery and server-side apply.

use shoal_testkit::Cluster;
use shoal_testkit::python::python_client;

#[test]
fn the_official_python_client_works_unchanged() {
    let python = python_client().expect("the Python client (cargo xtask test installs it)");
    let c = Cluster::start().unwrap();
    let script = shoal_testkit::workspace_root().join("tests/e2e/python/client.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(c.kubeconfig())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed:\n{stdout}\n{stderr}\n--- shoal log ---\n{}",
        c.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
