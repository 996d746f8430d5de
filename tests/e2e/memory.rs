//! No pod can take the node down (issue 22): pods without limits share a memory budget the
//! runtime enforces; the node reports pressure, taints itself and evicts in Kubernetes' order.

use shoal_testkit::{Cluster, NODE, eventually};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// What pods may use together; allocatable is this less the eviction threshold.
const BUDGET: u64 = 2560 * MIB;
const THRESHOLD: u64 = 600 * MIB;

fn total_memory() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn node_field(c: &Cluster, expr: &str) -> anyhow::Result<String> {
    let out = c.kubectl(&["get", "node", NODE, "-o", &format!("jsonpath={expr}")]);
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn exerciser(name: &str, args: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: hog\n    image: shoal.local/exerciser:latest\n    args: {args}\n    resources: {resources}\n"
    )
}

#[test]
fn pods_without_limits_share_a_budget_and_are_evicted_before_guaranteed_ones() {
    let kube_reserved = format!("memory={}Ki", (total_memory() - BUDGET) / 1024);
    let c = Cluster::start_with(&[
        "--kube-reserved",
        &kube_reserved,
        "--system-reserved",
        "memory=0",
        "--eviction-hard",
        "memory.available<600Mi",
        "--eviction-pressure-transition-period",
        "10",
    ])
    .unwrap();
    eventually("the node is Ready", || {
        let s = node_field(&c, "{.status.conditions[?(@.type==\"Ready\")].status}")?;
        anyhow::ensure!(s == "True", "{s}");
        Ok(())
    });
    // Allocatable is capacity less the reservations and the eviction threshold.
    assert_eq!(
        node_field(&c, "{.status.allocatable.memory}").unwrap(),
        format!("{}Ki", (BUDGET - THRESHOLD) / 1024)
    );

    // Watch the process's memory for the whole test.
    let pid = c.pid().unwrap();
    let baseline = rss(pid);
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    c.apply(&exerciser(
        "steady",
        "[alloc, '16', sleep, '600']",
        "{limits: {cpu: 100m, memory: 64Mi}}",
    ));
    c.wait_pod("steady", "{.status.phase}", "Running");
    let hogs: Vec<String> = (0..8)
        .map(|i| exerciser(&format!("hog-{i}"), "[alloc, '1024', sleep, '600']", "{}"))
        .collect();
    c.apply(&hogs.join("---\n"));

    // Two hogs fit the budget and push available memory under the threshold: the node
    // reports pressure, taints itself and evicts; a hog whose growth would pass the budget
    // fails in the guest (OOMKilled), and one that starts after an eviction may take the
    // room it freed.
    eventually("the node reports memory pressure and is tainted", || {
        let p = node_field(
            &c,
            "{.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        )?;
        let taints = node_field(&c, "{.spec.taints[*].key}")?;
        anyhow::ensure!(
            p == "True" && taints.contains("node.kubernetes.io/memory-pressure"),
            "MemoryPressure={p} taints={taints}"
        );
        Ok(())
    });
    // Meanwhile no BestEffort pod is placed (or admitted) there, and the API answers.
    c.apply(&exerciser("late", "[sleep, '600']", "{}"));
    eventually("a new BestEffort pod stays off the node", || {
        let scheduled = c.pod_field(
            "late",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )?;
        let rejected = c.pod_field("late", "{.status.reason} {.status.message}")?;
        anyhow::ensure!(
            scheduled.contains("untolerated taint {node.kubernetes.io/memory-pressure: }")
                || rejected.contains("Evicted The node had condition: [MemoryPressure]."),
            "scheduled: {scheduled:?} rejected: {rejected:?}"
        );
        Ok(())
    });
    c.ok(&["get", "namespaces"]);

    // The end: some hogs running, the rest OOMKilled or Evicted, the Guaranteed pod untouched.
    let outcomes = eventually("every hog has run or ended", || {
        let mut running = 0;
        let mut evicted = Vec::new();
        let mut oom = 0;
        for i in 0..8 {
            let name = format!("hog-{i}");
            let phase = c.pod_field(&name, "{.status.phase}")?;
            let reason = c.pod_field(&name, "{.status.reason}")?;
            let terminated = c.pod_field(
                &name,
                "{.status.containerStatuses[0].state.terminated.reason}",
            )?;
            match (phase.as_str(), reason.as_str(), terminated.as_str()) {
                ("Running", _, _) => running += 1,
                ("Failed", "Evicted", _) => evicted.push(name),
                ("Failed", _, "OOMKilled") => oom += 1,
                other => anyhow::bail!("{name} is {other:?}"),
            }
        }
        anyhow::ensure!(!evicted.is_empty(), "nobody evicted yet");
        // At most two hogs' gigabytes fit the budget (a third may still be starting).
        anyhow::ensure!((1..=2).contains(&running), "{running} running");
        Ok((running, evicted, oom))
    });
    let (running, evicted, oom) = outcomes;
    eprintln!(
        "hogs: {running} running, {} evicted, {oom} OOMKilled",
        evicted.len()
    );
    let message = c.pod_field(&evicted[0], "{.status.message}").unwrap();
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 600Mi, available: "
        ) && message.contains("Container hog was using"),
        "{message}"
    );
    let condition = c
        .pod_field(
            &evicted[0],
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}",
        )
        .unwrap();
    assert_eq!(condition, "TerminationByKubelet");
    let events = c.ok(&["describe", "pod", &evicted[0]]);
    assert!(events.contains("Evicted"), "{events}");
    assert_eq!(c.pod_field("steady", "{.status.phase}").unwrap(), "Running");

    // Pressure clears once the transition period has passed, and the taint goes.
    eventually("the pressure clears", || {
        let p = node_field(
            &c,
            "{.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        )?;
        let taints = node_field(&c, "{.spec.taints[*].key}")?;
        anyhow::ensure!(
            p == "False" && !taints.contains("memory-pressure"),
            "MemoryPressure={p} taints={taints}"
        );
        Ok(())
    });
    c.wait_pod("late", "{.spec.nodeName}", NODE);
    assert_eq!(
        node_field(&c, "{.status.conditions[?(@.type==\"Ready\")].status}").unwrap(),
        "True",
        "the node's lease was renewed throughout"
    );
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    // The process never held more than its budget for pods on top of what it had before
    // (plus room for the control plane's own churn).
    assert!(
        peak <= baseline + BUDGET + 256 * MIB,
        "peak RSS {} MiB, baseline {} MiB, budget {} MiB",
        peak / MIB,
        baseline / MIB,
        BUDGET / MIB
    );

    // Memory is visible where Kubernetes shows it: the kubelet's Summary API and resource
    // metrics.
    let summary = kubelet_get(&c, "/stats/summary");
    assert!(
        summary.contains("\"podRef\"") && summary.contains("\"workingSetBytes\""),
        "{summary}"
    );
    let metrics = kubelet_get(&c, "/metrics/resource");
    assert!(
        metrics.contains("pod_memory_working_set_bytes{namespace=\"default\",pod=\"steady\"}"),
        "{metrics}"
    );
}

/// GETs `path` from the node's kubelet (HTTPS, self-signed, with the cluster token).
fn kubelet_get(c: &Cluster, path: &str) -> String {
    let port = node_field(c, "{.status.daemonEndpoints.kubeletEndpoint.Port}").unwrap();
    let address = node_field(c, "{.status.addresses[?(@.type==\"InternalIP\")].address}").unwrap();
    let token = std::fs::read_to_string(c.kubeconfig())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_owned))
        .unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sk", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("https://{address}:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
