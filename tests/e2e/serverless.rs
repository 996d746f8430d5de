//! Scale to zero through the ingress, with kubectl and curl: a Deployment at zero answers its
//! first request (held while it wakes), goes back to zero when idle but never under a request
//! in flight, takes a burst of 200 concurrent requests from zero; concurrency drives replicas;
//! an HPA may have `minReplicas: 0`; bad annotations are refused naming the field.

use crate::ingress::curl;
use crate::services::{answered_by, echo_annotated};
use shoal_testkit::{Cluster, eventually};

/// A Deployment `name` of http-echo pods with `annotations` (a YAML flow map) starting at
/// `replicas`, a Service `name` and an Ingress routing host `name.fn.test` to it.
fn function(name: &str, replicas: u32, annotations: &str) -> String {
    echo_annotated(name, replicas, "ClusterIP", annotations)
        + &format!(
            r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  rules:
  - host: {name}.fn.test
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}
"#
        )
}

fn replicas(c: &Cluster, name: &str) -> String {
    c.ok(&["get", "deployment", name, "-o", "jsonpath={.spec.replicas}"])
}

fn pods(c: &Cluster, app: &str) -> usize {
    c.ok(&["get", "pods", "-l", &format!("app={app}"), "--no-headers"])
        .lines()
        .count()
}

/// GET `path` on `name`'s host through the ingress: curl's exit code and output.
fn get(c: &Cluster, name: &str, path: &str) -> (i32, String) {
    let url = format!("http://{}:{}{path}", c.node.node_ip, c.ingress_ports.0);
    curl(&["-H", &format!("Host: {name}.fn.test"), &url])
}

#[test]
fn a_deployment_at_zero_wakes_for_requests_and_sleeps_when_idle() {
    let c = Cluster::start().unwrap();
    c.apply(&function("fn", 0, "{shoal.dev/scale-to-zero-after: 4s}"));
    assert_eq!(replicas(&c, "fn"), "0");
    assert_eq!(pods(&c, "fn"), 0);
    // The first request is held while the Deployment scales to one, then answered.
    let (code, out) = get(&c, "fn", "/first");
    assert_eq!(code, 0, "{out}");
    let pod = answered_by(&out).unwrap_or_else(|| panic!("no pod answered: {out}"));
    assert!(pod.starts_with("fn-"), "{pod}");
    assert_eq!(replicas(&c, "fn"), "1");
    // Idle for 4 s: back to zero, with an event saying why.
    eventually("fn scales back to zero", || {
        let r = replicas(&c, "fn");
        anyhow::ensure!(r == "0", "replicas {r}");
        Ok(())
    });
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=fn,reason=ScaledToZero",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("without requests"), "{events}");
    eventually("fn's pod is gone", || {
        anyhow::ensure!(pods(&c, "fn") == 0);
        Ok(())
    });
    // 200 requests at once to the Deployment at zero: all held, all answered.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("burst.curl");
    let url = format!("http://{}:{}/burst", c.node.node_ip, c.ingress_ports.0);
    let lines: String = (0..200)
        .map(|_| format!("url = \"{url}\"\noutput = \"/dev/null\"\n"))
        .collect();
    std::fs::write(&config, lines).unwrap();
    let (code, out) = curl(&[
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "200",
        "--max-time",
        "60",
        "-H",
        "Host: fn.fn.test",
        "-w",
        "%{http_code}\n",
        "-K",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let ok = out.lines().filter(|l| *l == "200").count();
    assert_eq!(ok, 200, "{out}");
    // A request in flight longer than the idle period keeps the Deployment up.
    let (code, out) = get(&c, "fn", "/sleep/7000");
    assert_eq!(code, 0, "{out}");
    assert!(answered_by(&out).is_some(), "{out}");
    assert_eq!(replicas(&c, "fn"), "1", "scaled down under a request");
    // Bad annotations are refused, naming the field.
    let err = c.fails(&[
        "annotate",
        "--overwrite",
        "deployment",
        "fn",
        "shoal.dev/scale-to-zero-after=soon",
    ]);
    assert!(
        err.contains(
            "metadata.annotations[shoal.dev/scale-to-zero-after]: Invalid value: \"soon\": must be a duration such as 30s or 5m"
        ),
        "{err}"
    );
}

/// Without an Ingress: a connection to the Service's address (from the host) or its name (from
/// a Wasm pod) wakes the Deployment at zero and is held until its pod serves; connections
/// through the Service count as its activity.
#[test]
fn a_deployment_at_zero_wakes_for_its_service() {
    use crate::services::{echo_annotated, run_client};
    let c = Cluster::start().unwrap();
    c.apply(&echo_annotated(
        "quiet",
        0,
        "ClusterIP",
        "{shoal.dev/scale-to-zero-after: 4s}",
    ));
    let ip = c.ok(&[
        "get",
        "service",
        "quiet",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let url = |path: &str| format!("http://{ip}:80{path}");
    let (code, out) = curl(&[&url("/first")]);
    assert_eq!(code, 0, "{out}");
    let pod = answered_by(&out).unwrap_or_else(|| panic!("no pod answered: {out}"));
    assert!(pod.starts_with("quiet-"), "{pod}");
    assert_eq!(replicas(&c, "quiet"), "1");
    // A connection in flight longer than the idle period keeps it up.
    let (code, out) = curl(&[&url("/sleep/7000")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(replicas(&c, "quiet"), "1", "scaled down under a connection");
    eventually("quiet scales back to zero", || {
        let r = replicas(&c, "quiet");
        anyhow::ensure!(r == "0", "replicas {r}");
        Ok(())
    });
    eventually("quiet's pod is gone", || {
        anyhow::ensure!(pods(&c, "quiet") == 0);
        Ok(())
    });
    // From a Wasm pod, by name, over wasi:http.
    let (phase, logs) = run_client(
        &c,
        "caller",
        "role: client",
        &["fetch", "http://quiet/again"],
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(
        answered_by(&logs).is_some_and(|p| p.starts_with("quiet-")),
        "{logs}"
    );
    assert_eq!(replicas(&c, "quiet"), "1");
}

/// The standby counter of the node's ingress.
fn standby_answers(c: &Cluster) -> u64 {
    let metrics = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/metrics", shoal_testkit::NODE),
    ]);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_ingress_requests_total{handoff=\"standby\"} "))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

/// A Deployment that opts in is answered at zero by a standby instance of its component,
/// made from the template on the node, while its pod starts; then by its pod.
#[test]
fn a_deployment_that_opts_in_is_answered_by_a_standby_while_it_wakes() {
    let c = Cluster::start().unwrap();
    c.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: eager
  annotations: {shoal.dev/scale-to-zero-after: 1h, shoal.dev/answer-while-waking: "true"}
spec:
  replicas: 0
  selector: {matchLabels: {app: eager}}
  template:
    metadata: {labels: {app: eager}}
    spec:
      containers:
      - name: echo
        image: shoal.local/http-echo:latest
        ports: [{name: http, containerPort: 8080}]
        env: [{name: POD_NAME, value: from-the-template}]
        resources: {limits: {memory: 64Mi}}
        readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: eager}
spec:
  selector: {app: eager}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: eager}
spec:
  rules:
  - host: eager.fn.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: eager, port: {number: 80}}}}
"#,
    );
    let before = standby_answers(&c);
    // The first request the ingress routes (a 404 before its table has the Ingress).
    let (code, out) = eventually("the ingress routes eager", || {
        let (code, out) = get(&c, "eager", "/first");
        anyhow::ensure!(!out.starts_with("404"), "{out}");
        Ok((code, out))
    });
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("GET /first"), "{out}");
    assert_eq!(
        answered_by(&out).as_deref(),
        Some("from-the-template"),
        "{out}"
    );
    assert!(standby_answers(&c) > before, "not answered by the standby");
    // The Deployment woke all the same, and its pod serves once ready.
    assert_eq!(replicas(&c, "eager"), "1");
    c.wait_ready_replicas("eager", 1);
    let standby = standby_answers(&c);
    let (code, out) = get(&c, "eager", "/second");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("GET /second"), "{out}");
    assert_eq!(
        standby_answers(&c),
        standby,
        "answered by the standby with a pod ready"
    );
    // The annotation is checked.
    let err = c.fails(&[
        "annotate",
        "--overwrite",
        "deployment",
        "eager",
        "shoal.dev/answer-while-waking=maybe",
    ]);
    assert!(
        err.contains(
            "metadata.annotations[shoal.dev/answer-while-waking]: Invalid value: \"maybe\""
        ),
        "{err}"
    );
}

#[test]
fn concurrency_drives_replicas_and_an_hpa_may_scale_to_zero() {
    let c = Cluster::start().unwrap();
    c.apply(&function(
        "busy",
        1,
        "{shoal.dev/target-concurrency: \"2\", shoal.dev/max-scale: \"3\"}",
    ));
    eventually("busy has its pod", || {
        let (code, out) = get(&c, "busy", "/");
        anyhow::ensure!(code == 0 && answered_by(&out).is_some(), "{out}");
        Ok(())
    });
    // Eight requests in flight all the time: 8 / 2 per pod → the maximum, 3.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            let url = format!("http://{}:{}/sleep/1000", c.node.node_ip, c.ingress_ports.0);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    curl(&["-o", "/dev/null", "-H", "Host: busy.fn.test", &url]);
                }
            })
        })
        .collect();
    eventually("busy scales to 3 by concurrency", || {
        let r = replicas(&c, "busy");
        anyhow::ensure!(r == "3", "replicas {r}");
        Ok(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=busy,reason=ScaledByConcurrency",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("for a target of 2 per pod"), "{events}");
    // An HPA with minReplicas 0 is accepted, and its target at zero wakes for a request.
    c.apply(&function("lazy", 0, "{}"));
    c.apply(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: lazy}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: lazy}\n  minReplicas: 0\n  maxReplicas: 2\n",
    );
    let (code, out) = get(&c, "lazy", "/");
    assert_eq!(code, 0, "{out}");
    assert!(
        answered_by(&out).is_some_and(|p| p.starts_with("lazy-")),
        "{out}"
    );
    assert_eq!(replicas(&c, "lazy"), "1");
    let err = c.fails(&[
        "patch",
        "hpa",
        "lazy",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReplicas":-1}}"#,
    ]);
    assert!(
        err.contains("spec.minReplicas: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
}
