//! Pods run as Wasm components by the kubelet of `shoal up` (and a second `shoal kubelet`),
//! driven by kubectl as a Kubernetes user drives a cluster.

use shoal_testkit::{Cluster, NODE, Node, eventually};
use std::time::{Duration, Instant};

fn pod(name: &str, node: &str, policy: &str, container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  restartPolicy: {policy}\n  containers:\n{container}"
    )
}

fn exerciser(name: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "  - name: {name}\n    image: shoal.local/exerciser:latest\n    args: [{}]\n",
        args.join(", ")
    )
}

fn restarts(c: &Cluster, pod: &str) -> i64 {
    c.pod_field(pod, "{.status.containerStatuses[0].restartCount}")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// GET http://addr/path with a plain socket; the status line and the body.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn hello_completes_and_its_logs_come_through_the_api_server() {
    let c = Cluster::start().unwrap();
    eventually("node is Ready", || {
        let out = c.ok(&["get", "nodes"]);
        anyhow::ensure!(out.contains(NODE) && out.contains(" Ready "), "{out}");
        Ok(())
    });
    let wide = c.ok(&["get", "nodes", "-o", "wide"]);
    assert!(wide.contains("wasmtime://48."), "{wide}");
    eventually("the node's lease exists", || {
        let lease = c.ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            NODE,
            "--ignore-not-found",
        ]);
        anyhow::ensure!(lease.contains(NODE), "{lease}");
        Ok(())
    });

    c.apply(&pod(
        "hello",
        NODE,
        "Never",
        "  - name: hello\n    image: shoal.local/hello:latest\n    env: [{name: NAME, value: kubectl}]\n",
    ));
    c.wait_pod("hello", "{.status.phase}", "Succeeded");
    let get = c.ok(&["get", "pod", "hello"]);
    assert!(get.contains("Completed"), "{get}");
    let logs = c.ok(&["logs", "hello"]);
    assert!(logs.contains("Hello, kubectl!"), "{logs}");
    let ts = c.ok(&["logs", "hello", "--timestamps"]);
    assert!(
        ts.starts_with("20") && ts.contains("Z Hello, kubectl!"),
        "{ts}"
    );
    assert_eq!(
        c.pod_field(
            "hello",
            "{.status.containerStatuses[0].state.terminated.reason}"
        )
        .unwrap(),
        "Completed"
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hello",
    ]);
    for reason in ["Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "no {reason} event:\n{events}");
    }

    // Errors as Kubernetes words them.
    let err = c.fails(&["logs", "hello", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod hello"),
        "{err}"
    );
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: unbound}\nspec:\n  schedulerName: none-such\n  containers: [{name: a, image: shoal.local/hello:latest}]\n");
    let err = c.fails(&["logs", "unbound"]);
    assert!(err.contains("does not have a host assigned"), "{err}");
}

#[test]
fn http_echo_is_ready_answers_on_its_pod_ip_and_a_spinner_does_not_starve_it() {
    let c = Cluster::start().unwrap();
    c.apply(&pod(
        "echo",
        NODE,
        "Always",
        "  - name: echo\n    image: shoal.local/http-echo:latest\n    ports: [{name: http, containerPort: 8080}]\n    readinessProbe:\n      httpGet: {path: /ready, port: 8080}\n      periodSeconds: 1\n    startupProbe:\n      tcpSocket: {port: http}\n      periodSeconds: 1\n    livenessProbe:\n      tcpSocket: {port: 8080}\n      periodSeconds: 1\n      failureThreshold: 1\n",
    ));
    c.wait_pod(
        "echo",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
    );
    let ip = c.pod_field("echo", "{.status.podIP}").unwrap();
    assert!(ip.starts_with("127."), "pod IP {ip}");
    let reply = http_get(&format!("{ip}:8080"), "/hello?x=1").unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("GET /hello?x=1"), "{reply}");

    // A guest spinning with a 100m limit: the kubelet and the echo pod keep answering.
    c.apply(&pod(
        "spinner",
        NODE,
        "Never",
        &format!(
            "{}    resources: {{limits: {{cpu: 100m}}}}\n",
            exerciser("spin", &["spin", "30"])
        ),
    ));
    c.wait_pod("spinner", "{.status.phase}", "Running");
    for _ in 0..5 {
        let t = Instant::now();
        let reply = http_get(&format!("{ip}:8080"), "/during-spin").unwrap();
        assert!(reply.contains("GET /during-spin"), "{reply}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "echo took {:?} while the spinner ran",
            t.elapsed()
        );
        // The kubelet's own API stays responsive too.
        let logs = c.ok(&["logs", "spinner"]);
        assert!(logs.is_empty() || logs.contains("spun"), "{logs}");
    }

    // Deleting stops it within its grace period and the pod is gone.
    let t = Instant::now();
    // The startup probe (tcpSocket on a named port) passed, and the tcpSocket liveness probe,
    // which restarts on its first failure, never failed while the spinner ran.
    assert_eq!(
        c.pod_field("echo", "{.status.containerStatuses[0].started}")
            .unwrap(),
        "true"
    );
    assert_eq!(restarts(&c, "echo"), 0);
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=echo",
    ]);
    assert!(!events.contains("Unhealthy"), "{events}");

    c.ok(&["delete", "pod", "echo", "--grace-period=5"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let out = c.kubectl(&["get", "pod", "echo"]);
    assert!(!out.status.success(), "echo is still there");
    assert!(
        http_get(&format!("{ip}:8080"), "/").is_err(),
        "the pod IP still answers"
    );
}

#[test]
fn crash_loops_back_off_oom_kills_and_failing_liveness_restarts() {
    let c = Cluster::start().unwrap();
    c.apply(&pod(
        "crash",
        NODE,
        "Always",
        &exerciser("c", &["print", "about to crash", "crash"]),
    ));
    c.apply(&pod(
        "hog",
        NODE,
        "Never",
        &format!(
            "{}    resources: {{limits: {{memory: 32Mi}}}}\n",
            exerciser("hog", &["alloc", "64"])
        ),
    ));
    c.apply(&pod(
        "live",
        NODE,
        "Always",
        &format!(
            "{}    livenessProbe:\n      exec: {{command: [exit, \"1\"]}}\n      periodSeconds: 1\n      failureThreshold: 2\n",
            exerciser("c", &[])
        ),
    ));

    c.wait_pod(
        "hog",
        "{.status.containerStatuses[0].state.terminated.reason}",
        "OOMKilled",
    );
    assert_eq!(c.pod_field("hog", "{.status.phase}").unwrap(), "Failed");
    assert_eq!(
        c.pod_field(
            "hog",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        )
        .unwrap(),
        "137"
    );

    eventually("crash reaches CrashLoopBackOff", || {
        let reason = c.pod_field(
            "crash",
            "{.status.containerStatuses[0].state.waiting.reason}",
        )?;
        anyhow::ensure!(reason == "CrashLoopBackOff", "waiting reason {reason:?}");
        Ok(())
    });
    let first = restarts(&c, "crash");
    eventually("restart count grows", || {
        let now = restarts(&c, "crash");
        anyhow::ensure!(now > first, "still {now}");
        Ok(())
    });
    assert_eq!(
        c.pod_field(
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.reason}"
        )
        .unwrap(),
        "Error"
    );
    let prev = c.ok(&["logs", "crash", "--previous"]);
    assert!(prev.contains("about to crash"), "{prev}");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crash",
    ]);
    assert!(events.contains("BackOff"), "{events}");

    // A new image (the one mutable part of a container) restarts it from that image.
    c.ok(&["set", "image", "pod/crash", "c=shoal.local/hello:latest"]);
    eventually("the container runs the new image", || {
        let id = c.pod_field("crash", "{.status.containerStatuses[0].imageID}")?;
        anyhow::ensure!(id.starts_with("shoal.local/hello@sha256:"), "imageID {id}");
        let out = c.kubectl(&["logs", "crash"]);
        let logs = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(logs.contains("Hello"), "logs {logs:?}");
        Ok(())
    });

    eventually("failing liveness restarts the container", || {
        let n = restarts(&c, "live");
        anyhow::ensure!(n >= 1, "restarts {n}");
        Ok(())
    });
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
    ]);
    assert!(events.contains("Unhealthy"), "{events}");
    assert!(events.contains("failed liveness probe"), "{events}");
}

#[test]
fn env_volumes_init_containers_and_deadlines() {
    let c = Cluster::start().unwrap();
    c.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {GREETING: hi-from-configmap, settings.ini: "mode=fast"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {PASSWORD: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: envs, labels: {tier: test}}
spec:
  nodeName: node-1
  restartPolicy: Never
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: sec, secret: {secretName: sec}}
  - {name: shared, emptyDir: {}}
  - name: info
    downwardAPI:
      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
  initContainers:
  - name: init
    image: shoal.local/exerciser:latest
    args: [write, /shared/from-init, written-by-init]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: main
    image: shoal.local/exerciser:latest
    args: [env, GREETING, env, PASSWORD, env, POD_NAME, env, COMBINED, read, /etc/cfg/settings.ini, read, /etc/sec/PASSWORD, read, /shared/from-init, read, /info/labels, env, HOME]
    env:
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: PASSWORD}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: COMBINED, value: "$(POD_NAME)-$(GREETING)"}
    envFrom: [{configMapRef: {name: cfg}}]
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: shared, mountPath: /shared}
    - {name: info, mountPath: /info}
"#,
    );
    c.wait_pod("envs", "{.status.phase}", "Succeeded");
    let logs = c.ok(&["logs", "envs", "-c", "main"]);
    for want in [
        "GREETING=hi-from-configmap",
        "PASSWORD=s3cret",
        "POD_NAME=envs",
        "COMBINED=envs-hi-from-configmap",
        "mode=fast",
        "s3cret",
        "written-by-init",
        "tier=\"test\"",
    ] {
        assert!(logs.contains(want), "missing {want:?} in:\n{logs}");
    }
    // Nothing of the host leaks in: no ambient variables, no files outside the mounts.
    assert!(logs.contains("HOME is not set"), "{logs}");
    c.apply(&pod(
        "snoop",
        NODE,
        "Never",
        &exerciser("s", &["read", "/etc/hostname"]),
    ));
    c.wait_pod("snoop", "{.status.phase}", "Failed");
    let snoop = c.ok(&["logs", "snoop"]);
    assert!(snoop.contains("read /etc/hostname"), "{snoop}");
    assert_eq!(
        c.pod_field(
            "envs",
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        )
        .unwrap(),
        "Completed"
    );

    // A missing ConfigMap holds the container in CreateContainerConfigError.
    c.apply(&pod(
        "nocfg",
        NODE,
        "Never",
        "  - name: a\n    image: shoal.local/hello:latest\n    env: [{name: X, valueFrom: {configMapKeyRef: {name: absent, key: k}}}]\n",
    ));
    c.wait_pod(
        "nocfg",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerConfigError",
    );

    // activeDeadlineSeconds fails a pod that runs too long.
    c.apply(
        &pod("deadline", NODE, "Never", &exerciser("s", &["sleep", "60"])).replacen(
            "spec:\n",
            "spec:\n  activeDeadlineSeconds: 2\n",
            1,
        ),
    );
    c.wait_pod("deadline", "{.status.phase}", "Failed");
    assert_eq!(
        c.pod_field("deadline", "{.status.reason}").unwrap(),
        "DeadlineExceeded"
    );
}

#[test]
fn logs_follow_tail_and_a_second_node_with_an_imported_image() {
    let c = Cluster::start().unwrap();
    let node = Node::join_with(&c, "node-2", &["--max-pods", "2"]).unwrap();
    eventually("node-2 is Ready", || {
        let out = c.ok(&["get", "node", &node.name]);
        anyhow::ensure!(out.contains(" Ready "), "{out}");
        Ok(())
    });

    // `logs -f` streams until the container exits, then kubectl exits 0.
    c.apply(&pod(
        "talker",
        "node-2",
        "Never",
        &exerciser(
            "t",
            &[
                "print", "one", "sleep", "1", "print", "two", "sleep", "1", "print", "three",
            ],
        ),
    ));
    c.wait_pod("talker", "{.status.phase}", "Running");
    let follow = c.ok(&["logs", "-f", "talker"]);
    assert_eq!(follow, "one\ntwo\nthree\n");
    c.wait_pod("talker", "{.status.phase}", "Succeeded");
    assert_eq!(c.ok(&["logs", "talker", "--tail=1"]), "three\n");
    assert_eq!(c.ok(&["logs", "talker", "--since=1h"]), "one\ntwo\nthree\n");

    // node-2 takes two pods at a time: a third running one is rejected as Kubernetes does.
    c.apply(&pod("idle-1", "node-2", "Always", &exerciser("i", &[])));
    c.wait_pod("idle-1", "{.status.phase}", "Running");
    c.apply(&pod("idle-2", "node-2", "Always", &exerciser("i", &[])));
    c.wait_pod("idle-2", "{.status.phase}", "Running");
    c.apply(&pod("idle-3", "node-2", "Always", &exerciser("i", &[])));
    c.wait_pod("idle-3", "{.status.reason}", "OutOfpods");
    assert_eq!(c.pod_field("idle-3", "{.status.phase}").unwrap(), "Failed");
    let msg = c.pod_field("idle-3", "{.status.message}").unwrap();
    assert!(
        msg.contains("pods, requested: 1, used: 2, capacity: 2"),
        "{msg}"
    );
    c.ok(&["delete", "pod", "idle-1", "idle-2", "idle-3"]);

    // `shoal image import` on the first node, then `imagePullPolicy: Never`.
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .args(["image", "import"])
        .arg(shoal_testkit::guest("hello"))
        .args(["--name", "example.com/greeter:v1", "--data-dir"])
        .arg(&c.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ls = std::process::Command::new(shoal_testkit::shoal_bin())
        .args(["image", "ls", "--data-dir"])
        .arg(&c.data_dir)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("example.com/greeter:v1"), "{ls}");
    c.apply(&pod(
        "greeter",
        NODE,
        "Never",
        "  - name: g\n    image: example.com/greeter:v1\n    imagePullPolicy: Never\n",
    ));
    c.wait_pod("greeter", "{.status.phase}", "Succeeded");
    assert!(c.ok(&["logs", "greeter"]).contains("Hello"));
    // The second node does not have it.
    c.apply(&pod(
        "greeter2",
        "node-2",
        "Never",
        "  - name: g\n    image: example.com/greeter:v1\n    imagePullPolicy: Never\n",
    ));
    c.wait_pod(
        "greeter2",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "ErrImageNeverPull",
    );
}

#[test]
fn a_component_pushed_to_an_oci_registry_is_pulled_and_runs() {
    let registry = shoal_testkit::registry::Registry::start().unwrap();
    let image = format!("{}/samples/hello:v1", registry.host);
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .args(["image", "push"])
        .arg(shoal_testkit::guest("hello"))
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let c = Cluster::start().unwrap();
    c.apply(&pod(
        "pulled",
        NODE,
        "Never",
        &format!("  - name: hello\n    image: {image}\n    imagePullPolicy: IfNotPresent\n"),
    ));
    c.wait_pod("pulled", "{.status.phase}", "Succeeded");
    assert!(c.ok(&["logs", "pulled"]).contains("Hello"));
    let id = c
        .pod_field("pulled", "{.status.containerStatuses[0].imageID}")
        .unwrap();
    assert!(id.contains("@sha256:"), "{id}");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=pulled",
    ]);
    assert!(events.contains("Successfully pulled image"), "{events}");

    // An artifact the registry does not have: ErrImagePull, then ImagePullBackOff.
    c.apply(&pod(
        "missing",
        NODE,
        "Never",
        &format!(
            "  - name: m\n    image: {}/samples/absent:v1\n",
            registry.host
        ),
    ));
    eventually("pull back-off", || {
        let reason = c.pod_field(
            "missing",
            "{.status.containerStatuses[0].state.waiting.reason}",
        )?;
        anyhow::ensure!(reason == "ImagePullBackOff", "{reason:?}");
        Ok(())
    });
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=missing",
    ]);
    assert!(events.contains("Failed to pull image"), "{events}");
}
