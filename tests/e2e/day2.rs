//! Day-2 operations against Wasm pods with the real kubectl: exec (WebSocket and the SPDY
//! fallback), cp, attach, `run -i`, and port-forward (SPDY tunnelled in WebSocket, and SPDY).

use shoal_testkit::{Cluster, eventually};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Child;
use std::time::Duration;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ex}
spec:
  containers:
  - name: main
    image: shoal.local/exerciser:latest
    env: [{name: WHO, value: e2e}]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: echo
    image: shoal.local/http-echo:latest
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: catter}
spec:
  containers:
  - name: cat
    image: shoal.local/toolbox:latest
    args: [cat]
    stdin: true
"#;

const NO_WEBSOCKETS: [(&str, &str); 2] = [
    ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
    ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
];

fn start() -> Cluster {
    let c = Cluster::start().unwrap();
    c.apply(PODS);
    for p in ["ex", "web", "catter"] {
        c.wait_pod(p, "{.status.phase}", "Running");
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Kills the child when dropped (a test that fails midway leaves no kubectl behind).
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `child`'s stdout lines until one satisfies `f`, within the test's patience.
pub(crate) fn line_where(
    child: &mut Child,
    what: &str,
    f: impl Fn(&str) -> bool + Send + 'static,
) -> String {
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end: kubectl dies of SIGPIPE when its stdout has no reader.
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if f(&line) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("kubectl never printed {what}"))
}

#[test]
fn exec_runs_commands_and_returns_exit_codes_over_websocket_and_spdy() {
    let c = start();
    for env in [&[][..], &NO_WEBSOCKETS[..]] {
        let out = c.kubectl_with(&["exec", "ex", "--", "print", "hi"], None, env);
        assert!(out.status.success(), "{env:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hi\n");
        // The image's own steps, named by its program (the toolbox also has `env`).
        let own = c.kubectl_with(&["exec", "ex", "--", "exerciser", "env", "WHO"], None, env);
        assert_eq!(text(&own.stdout), "WHO=e2e\n", "{env:?}");
        let failed = c.kubectl_with(&["exec", "ex", "--", "exit", "3"], None, env);
        assert_eq!(failed.status.code(), Some(3), "{env:?}");
        assert!(
            text(&failed.stderr).contains("command terminated with exit code 3"),
            "{env:?}: {}",
            text(&failed.stderr)
        );
        // `-i`: stdin goes to the command, its end is the command's end of input.
        let echoed = c.kubectl_with(
            &["exec", "-i", "ex", "--", "cat"],
            Some("hello stdin\nsecond line\n"),
            env,
        );
        assert!(echoed.status.success(), "{env:?}: {}", text(&echoed.stderr));
        assert_eq!(
            text(&echoed.stdout),
            "hello stdin\nsecond line\n",
            "{env:?}"
        );
    }
    // The toolbox sees the pod's environment and volumes.
    let env = c.ok(&["exec", "ex", "--", "env"]);
    assert!(env.lines().any(|l| l == "WHO=e2e"), "{env}");
    let ls = c.ok(&["exec", "ex", "--", "ls", "/"]);
    assert!(ls.lines().any(|l| l == "data"), "{ls}");
    // A wasi:http pod runs the toolbox too; its own component cannot run commands.
    let http = c.kubectl(&["exec", "web", "--", "serve-something"]);
    assert_eq!(http.status.code(), Some(126), "{}", text(&http.stderr));
    assert!(text(&http.stderr).contains("wasi:http server"));
    // Errors as Kubernetes words them.
    let missing = c.fails(&["exec", "ex", "-c", "nope", "--", "print", "x"]);
    assert!(
        missing.contains("container nope is not valid for pod ex"),
        "{missing}"
    );
    // A user who may read pods but not exec into them.
    c.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get",
        "--resource=pods",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "mallory-reads",
        "--role=pod-reader",
        "--user=mallory",
    ]);
    let forbidden = c.fails(&["exec", "ex", "--as=mallory", "--", "print", "x"]);
    assert!(
        forbidden.contains(
            r#"pods "ex" is forbidden: User "mallory" cannot create resource "pods/exec" in API group "" in the namespace "default""#
        ),
        "{forbidden}"
    );
}

#[test]
fn cp_copies_files_and_directories_both_ways() {
    let c = start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.txt");
    std::fs::write(&src, "copied in\n").unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/deep.txt"), "deep\n").unwrap();
    for (env, n) in [(&[][..], "1"), (&NO_WEBSOCKETS[..], "2")] {
        let to = format!("ex:/data/in{n}.txt");
        let up = c.kubectl_with(&["cp", src.to_str().unwrap(), &to], None, env);
        assert!(up.status.success(), "{env:?}: {}", text(&up.stderr));
        assert_eq!(
            c.ok(&["exec", "ex", "--", "cat", &format!("/data/in{n}.txt")]),
            "copied in\n"
        );
        let back = dir.path().join(format!("back{n}.txt"));
        let down = c.kubectl_with(&["cp", &to, back.to_str().unwrap()], None, env);
        assert!(down.status.success(), "{env:?}: {}", text(&down.stderr));
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    }
    // A directory, into a directory that exists (so it lands inside it), and back.
    c.ok(&["cp", tree.to_str().unwrap(), "ex:/data"]);
    assert_eq!(
        c.ok(&["exec", "ex", "--", "cat", "/data/tree/sub/deep.txt"]),
        "deep\n"
    );
    let whole = dir.path().join("whole");
    c.ok(&["cp", "ex:/data", whole.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(whole.join("tree/sub/deep.txt")).unwrap(),
        "deep\n"
    );
    assert!(whole.join("in1.txt").is_file());
}

#[test]
fn attach_and_run_i_talk_to_a_containers_own_stdin() {
    let c = start();
    let mut cmd = c.kubectl_command(&["attach", "-i", "catter"]);
    let mut attach = Running(cmd.spawn().unwrap());
    let mut stdin = attach.0.stdin.take().unwrap();
    // What is typed reaches the running container and comes back in its output.
    let writer = std::thread::spawn(move || {
        for _ in 0..60 {
            if stdin.write_all(b"ping from attach\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let line = line_where(&mut attach.0, "the echoed line", |l| {
        l.contains("ping from attach")
    });
    assert_eq!(line, "ping from attach");
    drop(attach);
    let _ = writer.join();
    let logs = c.ok(&["logs", "catter"]);
    assert!(logs.contains("ping from attach"), "{logs}");

    // `kubectl run -i --rm`: a stdinOnce container reads the input, ends, and is deleted.
    let out = c.kubectl_with(
        &[
            "run",
            "once",
            "-i",
            "--rm",
            "--restart=Never",
            "--image=shoal.local/toolbox:latest",
            "--",
            "cat",
        ],
        Some("alpha\nbeta\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("alpha\nbeta\n"), "{stdout}");
    eventually("the --rm pod is gone", || {
        let pods = c.ok(&["get", "pods", "-o", "name"]);
        anyhow::ensure!(!pods.contains("pod/once"), "{pods}");
        Ok(())
    });
}

/// GET http://addr/path; the whole answer.
pub(crate) fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn port_forward_serves_a_pod_port_on_loopback() {
    let c = start();
    for env in [&[][..], &NO_WEBSOCKETS[..]] {
        let mut cmd =
            c.kubectl_command(&["port-forward", "pod/web", ":8080", "--address=127.0.0.1"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut pf = Running(cmd.spawn().unwrap());
        let line = line_where(&mut pf.0, "its local port", |l| {
            l.starts_with("Forwarding from")
        });
        // `Forwarding from 127.0.0.1:NNNNN -> 8080`
        let addr = line
            .split_whitespace()
            .nth(2)
            .expect("an address")
            .to_owned();
        for i in 0..5 {
            let answer = http_get(&addr, &format!("/through-{i}")).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{env:?}: {answer}");
            assert!(answer.contains(&format!("GET /through-{i}")), "{answer}");
        }
        // Connections at once are streams of one session.
        let many: Vec<_> = (0..8)
            .map(|i| {
                let addr = addr.clone();
                std::thread::spawn(move || http_get(&addr, &format!("/p{i}")).unwrap())
            })
            .collect();
        for (i, h) in many.into_iter().enumerate() {
            assert!(h.join().unwrap().contains(&format!("GET /p{i}")));
        }
    }
    // A port nothing listens on: the connection fails, as Kubernetes' does.
    let mut cmd = c.kubectl_command(&["port-forward", "pod/web", ":9999", "--address=127.0.0.1"]);
    let mut pf = Running(cmd.spawn().unwrap());
    let line = line_where(&mut pf.0, "its local port", |l| {
        l.starts_with("Forwarding from")
    });
    let addr = line.split_whitespace().nth(2).unwrap().to_owned();
    let answer = http_get(&addr, "/").unwrap_or_default();
    assert!(answer.is_empty(), "{answer}");
}

/// The metric families of a Prometheus text answer, by name, checked by a Prometheus parser.
pub(crate) fn families(text: &str) -> std::collections::BTreeMap<String, prometheus_parse::Value> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    scrape
        .samples
        .into_iter()
        .map(|s| (s.metric, s.value))
        .collect()
}

#[test]
fn every_component_serves_prometheus_metrics_with_kubernetes_names() {
    let c = start();
    // Some work for the scheduler, the controllers and the runtime to count.
    c.ok(&[
        "create",
        "deployment",
        "metered",
        "--image=shoal.local/http-echo:latest",
    ]);
    c.ok(&["rollout", "status", "deployment/metered", "--timeout=60s"]);
    let text = c.ok(&["get", "--raw", "/metrics"]);
    let got = families(&text);
    for name in [
        "apiserver_request_total",
        "apiserver_request_duration_seconds",
        "apiserver_storage_objects",
        "etcd_request_duration_seconds",
        "scheduler_schedule_attempts_total",
        "scheduler_scheduling_attempt_duration_seconds",
        "workqueue_adds_total",
        "workqueue_work_duration_seconds",
        "kubelet_running_pods",
        "kubelet_pod_start_duration_seconds",
        "shoal_wasm_instantiations_total",
    ] {
        assert!(got.contains_key(name), "no {name} in:\n{text}");
    }
    assert!(
        matches!(
            got["apiserver_request_duration_seconds"],
            prometheus_parse::Value::Histogram(_)
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"apiserver_storage_objects{resource="deployments.apps"} 1"#),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("scheduler_schedule_attempts_total{")
                && l.contains(r#"result="scheduled""#)),
        "{text}"
    );
    // The kubelet's own endpoint, through the node proxy.
    let node = c.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let kubelet = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
    ]);
    assert!(
        families(&kubelet).contains_key("kubelet_running_pods"),
        "{kubelet}"
    );
    // Behind authorization, as Kubernetes' is.
    let denied = c.fails(&["get", "--raw", "/metrics", "--as=mallory"]);
    assert!(denied.contains("Forbidden"), "{denied}");
}

/// Millicores of a `kubectl top` CPU column (`201m`).
fn millicores(cell: &str) -> u64 {
    cell.trim_end_matches('m').parse().unwrap_or(u64::MAX)
}

#[test]
fn top_shows_a_spinner_near_its_limit_and_an_idle_pod_near_zero() {
    let c = start();
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: spinner, labels: {app: spin}}\nspec:\n  containers:\n  - name: spin\n    image: shoal.local/exerciser:latest\n    args: [spin, \"3600\"]\n    resources: {limits: {cpu: 300m}}\n",
    );
    c.wait_pod("spinner", "{.status.phase}", "Running");
    // The kubelet samples CPU every 5 s: the usage is known after two samples.
    let rows = eventually("the spinner has CPU metrics", || {
        let out = c.kubectl(&["top", "pods", "--no-headers"]);
        anyhow::ensure!(out.status.success(), "{}", text(&out.stderr));
        let rows: Vec<(String, u64)> = text(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_owned(), millicores(f[1]))
            })
            .collect();
        let spin = rows.iter().find(|(n, _)| n == "spinner").map(|r| r.1);
        anyhow::ensure!(spin.is_some_and(|m| m > 200), "{rows:?}");
        Ok(rows)
    });
    for (name, m) in &rows {
        match name.as_str() {
            "spinner" => assert!((200..=330).contains(m), "spinner at {m}m"),
            _ => assert!(*m <= 20, "{name} at {m}m while idle"),
        }
    }
    let one = c.ok(&["top", "pod", "spinner", "--containers"]);
    assert!(one.contains("spinner") && one.contains("spin"), "{one}");
    let selected = c.ok(&["top", "pods", "-l", "app=spin", "--no-headers"]);
    assert_eq!(selected.lines().count(), 1, "{selected}");
    let nodes = c.ok(&["top", "nodes", "--no-headers"]);
    let node_cpu = millicores(nodes.split_whitespace().nth(1).unwrap_or(""));
    assert!(node_cpu >= 200, "{nodes}");
    // The API behind it, as metrics-server's.
    let list = c.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/spinner",
    ]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["kind"], "PodMetrics");
    assert!(
        v["containers"][0]["usage"]["cpu"]
            .as_str()
            .unwrap()
            .ends_with('n')
    );
    let missing = c.fails(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
    ]);
    assert!(missing.contains("NotFound"), "{missing}");
}

#[test]
fn debug_runs_the_toolbox_in_a_running_pod_with_its_volumes() {
    let c = start();
    c.ok(&[
        "exec",
        "ex",
        "--",
        "exerciser",
        "write",
        "/data/note.txt",
        "from the pod",
    ]);
    let debug = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec![
            "debug",
            "ex",
            "--image=shoal.local/toolbox:latest",
            "--profile=general",
        ];
        all.extend_from_slice(args);
        let out = c.kubectl_with(&all, stdin, &[]);
        assert!(out.status.success(), "{all:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // Interactive: the toolbox reads commands from the attached stdin.
    let out = debug(&["-i"], Some("cat /data/note.txt\nls /data\nexit\n"));
    assert!(
        out.contains("from the pod") && out.contains("note.txt"),
        "{out}"
    );
    // A command of its own (kubectl falls back to its logs when it has already finished).
    let out = debug(&["-i", "--", "cat", "/data/note.txt"], None);
    assert!(out.contains("from the pod"), "{out}");
    eventually("both debug containers completed", || {
        let reasons = c.pod_field(
            "ex",
            "{.status.ephemeralContainerStatuses[*].state.terminated.reason}",
        )?;
        anyhow::ensure!(reasons == "Completed Completed", "{reasons:?}");
        Ok(())
    });
    // The pod itself is untouched.
    assert_eq!(c.pod_field("ex", "{.status.phase}").unwrap(), "Running");
    assert_eq!(
        c.pod_field("ex", "{.status.containerStatuses[0].restartCount}")
            .unwrap(),
        "0"
    );
    // What Kubernetes refuses through `ephemeralcontainers`.
    let pod: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "pod", "ex", "-o", "json"])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let put = |body: serde_json::Value| {
        let file = dir.path().join("pod.json");
        std::fs::write(&file, body.to_string()).unwrap();
        c.kubectl(&[
            "replace",
            "--raw",
            "/api/v1/namespaces/default/pods/ex/ephemeralcontainers",
            "-f",
            file.to_str().unwrap(),
        ])
    };
    let mut removed = pod.clone();
    removed["spec"]["ephemeralContainers"] = serde_json::json!([]);
    let out = put(removed);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("may not be removed"),
        "{}",
        text(&out.stderr)
    );
    let mut ported = pod.clone();
    ported["spec"]["ephemeralContainers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "dbg", "image": "shoal.local/toolbox:latest", "ports": [{"containerPort": 80}]}));
    let out = put(ported);
    assert!(
        text(&out.stderr).contains("cannot be set for an Ephemeral Container"),
        "{}",
        text(&out.stderr)
    );
}
