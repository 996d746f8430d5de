//! Untrusted plugins cannot hurt the cluster (issue 21): hostile scheduler plugins under
//! `Ignore` and `Fail`, the circuit breaker under load, and module references that try to
//! reach the host's files or services.

use shoal_testkit::{Cluster, NODE, SimulatedNodes, eventually, policy};

fn field(c: &Cluster, kind: &str, name: &str, expr: &str) -> String {
    let jp = format!("jsonpath={expr}");
    String::from_utf8_lossy(&c.kubectl(&["get", kind, name, "-o", &jp]).stdout).into_owned()
}

fn wait_phase(c: &Cluster, kind: &str, name: &str, phase: &str) -> String {
    eventually(&format!("{kind} {name} {phase}"), || {
        let got = field(c, kind, name, "{.status.phase}: {.status.message}");
        anyhow::ensure!(got.starts_with(phase), "is {got:?}");
        Ok(got)
    })
}

/// A SchedulerPlugin running the hostile fixture's `behaviour` in its filter.
fn hostile(name: &str, behaviour: &str, failure_policy: &str) -> String {
    format!(
        "apiVersion: policy.shoal.dev/v1\nkind: SchedulerPlugin\nmetadata: {{name: {name}}}\nspec:\n  module: file://{}\n  extensionPoints: [Filter]\n  failurePolicy: {failure_policy}\n  timeoutMilliseconds: 100\n  settings: {{behaviour: {behaviour}, iterations: 1000}}\n",
        policy("hostile-scheduler").display()
    )
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: c, image: shoal.local/hello:latest}}]\n"
    )
}

fn scheduled(c: &Cluster, pod: &str) {
    c.wait_pod(pod, "{.spec.nodeName}", NODE);
}

#[test]
fn under_ignore_no_hostile_scheduler_plugin_stops_scheduling() {
    let c = Cluster::start().unwrap();
    for behaviour in [
        "print",
        "panic",
        "trap",
        "loop",
        "allocate",
        "stack",
        "flood",
        "malformed",
        "slow",
    ] {
        let name = format!("hostile-{behaviour}");
        c.apply(&hostile(&name, behaviour, "Ignore"));
        wait_phase(&c, "schedulerplugin", &name, "Active");
        // Scheduled while the plugin is loaded ...
        let first = format!("{behaviour}-while-loaded");
        c.apply(&pod(&first));
        scheduled(&c, &first);
        if !matches!(behaviour, "print" | "flood" | "slow") {
            // ... its failure counted and recorded on it, with what it wrote ...
            eventually(&format!("{name} counts its failure"), || {
                let n = field(&c, "schedulerplugin", &name, "{.status.failures}");
                anyhow::ensure!(n.parse::<i64>().unwrap_or(0) >= 1, "failures {n:?}");
                Ok(())
            });
            let d = c.ok(&["describe", "schedulerplugin", &name]);
            assert!(d.contains("PluginFailed"), "{d}");
        }
        // ... and after it is removed.
        c.ok(&["delete", "schedulerplugin", &name]);
        let second = format!("{behaviour}-after");
        c.apply(&pod(&second));
        scheduled(&c, &second);
    }
    // The panic message reached the plugin's event, not the scheduler's stderr as a crash.
    let log = c.log();
    assert!(
        log.contains("hostile plugin looked at") && log.contains("hostile-print"),
        "the plugin's stderr line is in the scheduler's log, tagged with the plugin:\n{log}"
    );
    assert!(
        log.contains("hostile scheduler plugin panics on purpose"),
        "the panic message is logged with the failure:\n{log}"
    );
    assert!(!log.contains("Cannot start a runtime"), "{log}");
    // A flood is rate-limited in the log.
    let flood_lines = log.matches("hostile plugin flood line").count();
    assert!(flood_lines < 200, "{flood_lines} flood lines logged");
    assert_eq!(c.ok(&["get", "--raw", "/readyz"]), "ok");
}

#[test]
fn under_fail_a_hostile_plugin_fails_the_pods_it_filters_naming_itself_and_the_cause() {
    let c = Cluster::start().unwrap();
    for (behaviour, cause) in [
        ("panic", "plugin trapped"),
        ("loop", "plugin timed out after 100ms"),
        ("malformed", "filter returned 2 answers for 1 nodes"),
    ] {
        let name = format!("strict-{behaviour}");
        c.apply(&hostile(&name, behaviour, "Fail"));
        wait_phase(&c, "schedulerplugin", &name, "Active");
        let pod_name = format!("blocked-{behaviour}");
        c.apply(&pod(&pod_name));
        let message = eventually("the pod is unschedulable because of the plugin", || {
            let m = c.pod_field(
                &pod_name,
                "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
            )?;
            anyhow::ensure!(
                m.contains(&format!("plugin wasm/{name} failed")) && m.contains(cause),
                "{m}"
            );
            Ok(m)
        });
        if behaviour == "panic" {
            assert!(
                message.contains("hostile scheduler plugin panics on purpose"),
                "the plugin's stderr is in the failure: {message}"
            );
        }
        let events = c.ok(&["describe", "pod", &pod_name]);
        assert!(
            events.contains("FailedScheduling") && events.contains(&format!("wasm/{name}")),
            "{events}"
        );
        // The rest of the cluster carries on.
        c.ok(&["get", "namespaces"]);
        c.ok(&["delete", "schedulerplugin", &name]);
        scheduled(&c, &pod_name);
    }
}

#[test]
fn a_looping_plugin_is_benched_and_a_deployment_of_200_rolls_out() {
    let c = Cluster::start().unwrap();
    let _sim = SimulatedNodes::start(&c, 20).unwrap();
    c.apply(&hostile("spinner", "loop", "Ignore"));
    wait_phase(&c, "schedulerplugin", "spinner", "Active");
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: many}\nspec:\n  replicas: 200\n  selector: {matchLabels: {app: many}}\n  template:\n    metadata: {labels: {app: many}}\n    spec:\n      nodeSelector: {shoal.dev/simulated: 'true'}\n      containers: [{name: c, image: shoal.local/http-echo:latest}]\n",
    );
    c.ok(&["rollout", "status", "deployment/many", "--timeout=120s"]);
    let status = wait_phase(&c, "schedulerplugin", "spinner", "Degraded");
    assert!(
        status.contains("benched for 30s after 5 failures in a row")
            && status.contains("plugin timed out after 100ms"),
        "{status}"
    );
    // Without the breaker every one of the 200 cycles would have paid the timeout.
    let failures: i64 = field(&c, "schedulerplugin", "spinner", "{.status.failures}")
        .parse()
        .unwrap();
    assert!((5..20).contains(&failures), "{failures} failures");
    let table = c.ok(&["get", "schedulerplugins"]);
    assert!(table.contains("Degraded"), "{table}");
    let d = c.ok(&["describe", "schedulerplugin", "spinner"]);
    assert!(d.contains("PluginBenched"), "{d}");
}

/// Answers every connection with an HTTP 200 and `secret-response`, counting connections.
fn loopback_service() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\nsecret-response",
            );
        }
    });
    (port, hits)
}

#[test]
fn plugin_modules_cannot_reach_the_hosts_files_or_services() {
    let c = Cluster::start().unwrap();
    let (port, hits) = loopback_service();
    let cap = |name: &str, module: &str| {
        format!(
            "apiVersion: policy.shoal.dev/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: {name}}}\nspec:\n  module: {module}\n  moduleDigest: sha256:{}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], resources: [configmaps]}}]\n",
            "0".repeat(64)
        )
    };
    c.apply(&cap("passwd", "file:///etc/passwd"));
    let status = wait_phase(&c, "cap", "passwd", "Failed");
    assert!(
        status.contains("it is outside the plugin directories (--plugin-dir"),
        "{status}"
    );
    assert!(
        !status.contains("root") && !status.contains("0x"),
        "{status}"
    );

    c.apply(&cap("local", &format!("http://127.0.0.1:{port}/x.wasm")));
    let status = wait_phase(&c, "cap", "local", "Failed");
    assert!(
        status.contains("--allow-loopback-plugin-sources") && !status.contains("secret"),
        "{status}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the local service was not contacted"
    );

    // A file inside a plugin directory that is not a component is refused without quoting it
    // or naming its digest.
    let dep_info = shoal_testkit::guests_dir().join("hostile.d");
    c.apply(&cap("not-wasm", &format!("file://{}", dep_info.display())));
    let status = wait_phase(&c, "cap", "not-wasm", "Failed");
    assert!(
        status.contains("not WebAssembly")
            && !status.contains("plugin.wit")
            && !status.contains("sha256:"),
        "{status}"
    );

    c.apply(
        "apiVersion: policy.shoal.dev/v1\nkind: SchedulerPlugin\nmetadata: {name: passwd}\nspec:\n  module: file:///etc/passwd\n",
    );
    let status = wait_phase(&c, "schedulerplugin", "passwd", "Failed");
    assert!(
        status.contains("outside the plugin directories"),
        "{status}"
    );

    // A namespaced policy may not name files, plain HTTP or other namespaces' ConfigMaps.
    for module in [
        format!("file://{}", policy("deny-privileged").display()),
        format!("http://127.0.0.1:{port}/x.wasm"),
        "configmap://kube-system/modules/x.wasm".to_owned(),
    ] {
        let out = c.kubectl_with(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: policy.shoal.dev/v1\nkind: AdmissionPolicy\nmetadata: {{name: sneaky, namespace: default}}\nspec:\n  module: {module}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], resources: [configmaps]}}]\n"
            )),
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{module} was accepted");
        assert!(
            stderr.contains("spec.module: Invalid value")
                && stderr.contains("a namespaced policy may only take modules from"),
            "{stderr}"
        );
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
