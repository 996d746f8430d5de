//! OCI containers beside Wasm pods on one node (`shoal up --containers on`, a private
//! containerd), driven with kubectl: `image: busybox` resolves through a registry mirror on
//! loopback to an image the test built from Debian's busybox-static; logs, restarts with
//! `--previous`, OOMKilled and graceful deletion behave as for Wasm pods; a Wasm pod calls a
//! container backend by Service name; a node without containers keeps `runc` pods Pending,
//! saying why. Needs root and the packages `cargo xtask test` installs. Container pods live on
//! the test's own CNI bridge in 198.18.0.0/15 (the range set aside for test networks).

use crate::services::run_client;
use shoal_runtime_cri::{containerd, oci};
use shoal_testkit::registry::Registry;
use shoal_testkit::{Cluster, eventually};

/// A registry on loopback holding `library/busybox:latest`, built from busybox-static.
fn registry_with_busybox() -> Registry {
    if let Err(e) = containerd::check() {
        panic!("the container tests need it: {e} (cargo xtask test installs the packages)");
    }
    let registry = Registry::start().unwrap();
    push_busybox(&registry, &["sh"]);
    registry
}

/// Pushes busybox with default command `cmd` as `library/busybox:latest` to `registry`.
fn push_busybox(registry: &Registry, cmd: &[&str]) {
    let image = oci::Image::busybox(std::path::Path::new(containerd::BUSYBOX))
        .unwrap()
        .cmd(cmd)
        .build();
    let name = format!("{}/library/busybox:latest", registry.host);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(shoal_wasm::oci::push_layer(
            &name,
            (image.layer.bytes, oci::LAYER),
            (image.config.bytes, oci::CONFIG),
        ))
        .unwrap();
}

/// The node's runtime handlers, once it has registered.
fn handlers(c: &Cluster) -> String {
    eventually("the node's runtime handlers", || {
        let out = c.kubectl(&[
            "get",
            "node",
            shoal_testkit::NODE,
            "-o",
            "jsonpath={.status.runtimeHandlers[*].name}",
        ]);
        let handlers = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success() && !handlers.is_empty(),
            "no node status yet"
        );
        Ok(handlers)
    })
}

/// The address of the first ready endpoint of Service `service`, once it has one.
fn ready_endpoint(c: &Cluster, service: &str) -> String {
    eventually(&format!("{service} has a ready endpoint"), || {
        let eps = c.ok(&[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service}"),
            "-o",
            "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
        ]);
        anyhow::ensure!(!eps.is_empty(), "no ready endpoint yet");
        Ok(eps.split_whitespace().next().unwrap_or_default().to_owned())
    })
}

fn mirror(registry: &Registry) -> String {
    format!("docker.io=http://{}", registry.host)
}

/// A /24 of 198.18.0.0/16 for a node's bridge: one of four of this test process (nodes
/// side by side on this machine must not share a subnet).
fn container_cidr() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
    format!("198.18.{}.0/24", std::process::id() % 50 * 4 + n + 20)
}

#[test]
fn busybox_runs_beside_wasm_pods_and_they_call_each_other() {
    let registry = registry_with_busybox();
    let cidr = container_cidr();
    let c = Cluster::start_with(&[
        "--containers",
        "on",
        "--registry-mirror",
        &mirror(&registry),
        "--container-pod-cidr",
        &cidr,
    ])
    .unwrap();
    assert_eq!(handlers(&c), "wasmtime runc");
    assert!(c.ok(&["get", "runtimeclass"]).contains("runc"));
    // A node that runs containers is the Linux machine it is, for manifests that select it.
    let os = c.ok(&[
        "get",
        "node",
        shoal_testkit::NODE,
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/os} {.status.nodeInfo.operatingSystem}",
    ]);
    assert_eq!(os, "linux linux");

    // The manifest every Kubernetes user knows, unchanged.
    c.ok(&[
        "run",
        "bb",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo hi; sleep 3600",
    ]);
    c.wait_pod("bb", "{.status.phase}", "Running");
    eventually("bb logs hi", || {
        let logs = c.ok(&["logs", "bb"]);
        anyhow::ensure!(logs == "hi\n", "{logs:?}");
        Ok(())
    });
    let ip = c.pod_field("bb", "{.status.podIP}").unwrap();
    let prefix = cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "{ip} in {cidr}");
    let image_id = c
        .pod_field("bb", "{.status.containerStatuses[0].imageID}")
        .unwrap();
    assert!(image_id.contains("sha256:"), "{image_id}");
    // kubectl exec, through CRI's streaming Exec, with the command's exit code.
    assert_eq!(
        c.ok(&["exec", "bb", "--", "sh", "-c", "echo in $(hostname)"]),
        "in bb\n"
    );
    let out = c.kubectl(&["exec", "bb", "--", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // Input that ends: the command sees its end (the kubelet speaks SPDY to containerd's
    // streaming server, which can half-close a stream), so `kubectl cp` works both ways.
    let out = c.kubectl_with(&["exec", "-i", "bb", "--", "wc", "-c"], Some("hello"), &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    let dir = tempfile::tempdir().unwrap();
    let (here, back) = (dir.path().join("here.txt"), dir.path().join("back.txt"));
    std::fs::write(&here, "copied into a container\n").unwrap();
    c.ok(&["cp", here.to_str().unwrap(), "bb:/tmp/here.txt"]);
    assert_eq!(
        c.ok(&["exec", "bb", "--", "cat", "/tmp/here.txt"]),
        "copied into a container\n"
    );
    c.ok(&["cp", "bb:/tmp/here.txt", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied into a container\n"
    );
    // `kubectl logs -f` follows a container until it exits.
    c.ok(&[
        "run",
        "talker",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo one; sleep 1; echo two; sleep 1; echo three",
    ]);
    c.wait_pod("talker", "{.status.phase}", "Running");
    assert_eq!(c.ok(&["logs", "-f", "talker"]), "one\ntwo\nthree\n");
    // `kubectl run -i`: attached to the container's own stdin, which it reads to its end.
    let out = c.kubectl_with(
        &[
            "run",
            "-i",
            "reader",
            "--image=busybox",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "while read l; do echo got $l; done; echo done",
        ],
        Some("one\ntwo\n"),
        &[],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("got one\ngot two\ndone"), "{out:?}");
    // Graceful deletion: sh ignores SIGTERM as PID 1; the grace period ends it.
    c.ok(&["delete", "pod", "bb", "--grace-period=1"]);

    // `busybox` means `:latest`, pulled `Always`: a new image under the tag is what the next
    // pod runs, although the node has the old one.
    push_busybox(&registry, &["sh", "-c", "echo newer"]);
    c.ok(&["run", "bb2", "--image=busybox", "--restart=Never"]);
    c.wait_pod("bb2", "{.status.phase}", "Succeeded");
    assert_eq!(c.ok(&["logs", "bb2"]), "newer\n");
    let newer = c
        .pod_field("bb2", "{.status.containerStatuses[0].imageID}")
        .unwrap();
    assert_ne!(newer, image_id);

    // A container backend behind a Service, called by name from a Wasm pod.
    c.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      runtimeClassName: runc
      containers:
      - name: httpd
        image: busybox
        command: [sh, -c, "mkdir /www && echo hello from busybox > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
    );
    let web_ip = ready_endpoint(&c, "web");
    assert!(web_ip.starts_with(prefix), "{web_ip} in {cidr}");
    let (phase, logs) = run_client(
        &c,
        "caller",
        "app: caller",
        &["connect", "web:80", "GET /index.html HTTP/1.0\r\n\r\n"],
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("hello from busybox"), "{logs}");

    // kubectl port-forward into a container reaches the pod's own localhost, as CRI's
    // PortForward does: a server bound to 127.0.0.1 inside the pod answers.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: local-only}
spec:
  containers:
  - name: httpd
    image: busybox
    command: [sh, -c, "mkdir /www && echo only on localhost > /www/index.html && exec httpd -f -p 127.0.0.1:9090 -h /www"]
"#,
    );
    c.wait_pod("local-only", "{.status.phase}", "Running");
    let mut pf = crate::day2::Running(
        c.kubectl_command(&[
            "port-forward",
            "pod/local-only",
            ":9090",
            "--address=127.0.0.1",
        ])
        .spawn()
        .unwrap(),
    );
    let line = crate::day2::line_where(&mut pf.0, "its local port", |l| {
        l.starts_with("Forwarding from")
    });
    let addr = line.split_whitespace().nth(2).unwrap().to_owned();
    eventually("the pod's localhost answers through port-forward", || {
        let answer = crate::day2::http_get(&addr, "/index.html")?;
        anyhow::ensure!(answer.contains("only on localhost"), "{answer:?}");
        Ok(())
    });
    drop(pf);

    // And back: a container calls a Wasm Deployment by its Service's DNS name (the cluster
    // DNS and the ClusterIP are loopback addresses of the node) and a Wasm pod by its IP.
    c.apply(&crate::services::echo("echo", 1, "ClusterIP"));
    let echo_ip = ready_endpoint(&c, "echo");
    let (phase, logs) = crate::services::run_pod(
        &c,
        "fetch",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: fetch}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/os: linux}}
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "wget -qO- http://echo.default.svc.cluster.local/by-name && wget -qO- http://{echo_ip}:8080/by-ip"]
"#
        ),
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("GET /by-name"), "{logs}");
    assert!(logs.contains("GET /by-ip"), "{logs}");

    // Restarts with back-off, and the previous run's logs.
    c.ok(&[
        "run",
        "crash",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo run at $(date +%s%N); exit 3",
    ]);
    eventually("crash restarts", || {
        let n = c.pod_field("crash", "{.status.containerStatuses[0].restartCount}")?;
        anyhow::ensure!(n.parse::<u32>().unwrap_or(0) >= 1, "{n:?}");
        Ok(())
    });
    let last = c.pod_field(
        "crash",
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last.unwrap(), "3");
    let previous = c.ok(&["logs", "crash", "--previous"]);
    assert!(previous.starts_with("run at "), "{previous:?}");

    // Past its memory limit, the kernel kills it: OOMKilled, as on Kubernetes.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    command: [sh, -c, "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"]
    resources: {limits: {memory: 16Mi}}
"#,
    );
    c.wait_pod("hog", "{.status.phase}", "Failed");
    assert_eq!(
        c.pod_field(
            "hog",
            "{.status.containerStatuses[0].state.terminated.reason}"
        )
        .unwrap(),
        "OOMKilled"
    );
    assert!(!c.ok(&["logs", "hog"]).contains("survived"));
}

#[test]
fn a_node_without_containers_says_so_for_pods_that_need_them() {
    let registry = registry_with_busybox();
    let c = Cluster::start_with(&[
        "--containers",
        "off",
        "--registry-mirror",
        &mirror(&registry),
    ])
    .unwrap();
    assert_eq!(handlers(&c), "wasmtime");
    let os = c.ok(&[
        "get",
        "node",
        shoal_testkit::NODE,
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/os}",
    ]);
    assert_eq!(os, "wasi");
    // A RuntimeClass nobody defined: unschedulable, saying so.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wants-nothing}\nspec:\n  runtimeClassName: gvisor\n  containers: [{name: c, image: busybox}]\n",
    );
    eventually("wants-nothing is unschedulable", || {
        let msg = c.pod_field(
            "wants-nothing",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )?;
        anyhow::ensure!(msg.contains("RuntimeClass \"gvisor\" not found"), "{msg:?}");
        Ok(())
    });
    // Asked for by RuntimeClass: the scheduler keeps it off the node, naming the handler.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wants-runc}\nspec:\n  runtimeClassName: runc\n  containers: [{name: c, image: busybox}]\n",
    );
    eventually("wants-runc is unschedulable", || {
        let msg = c.pod_field(
            "wants-runc",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        )?;
        anyhow::ensure!(
            msg.contains("1 node(s) had no runtime handler \"runc\""),
            "{msg:?}"
        );
        Ok(())
    });
    assert_eq!(
        c.pod_field("wants-runc", "{.status.phase}").unwrap(),
        "Pending"
    );
    // Called for by its image: an event saying the node runs no containers, not a pull error.
    c.ok(&["run", "bb", "--image=busybox"]);
    eventually("bb's event", || {
        let events = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=bb,reason=FailedCreatePodSandBox",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        anyhow::ensure!(
            events.contains("is an OCI container image")
                && events.contains("cannot run containers"),
            "{events:?}"
        );
        Ok(())
    });
    let waiting = c
        .pod_field("bb", "{.status.containerStatuses[0].state.waiting.reason}")
        .unwrap_or_default();
    assert_ne!(waiting, "ErrImagePull");
}

#[test]
fn image_pull_secrets_work_for_both_runtimes() {
    use shoal_testkit::registry::{PASSWORD, USER};
    if let Err(e) = containerd::check() {
        panic!("the container tests need it: {e} (cargo xtask test installs the packages)");
    }
    let registry = Registry::start_with_auth().unwrap();
    let host = registry.host.clone();
    let auth = (USER.to_owned(), PASSWORD.to_owned());
    let busybox = oci::Image::busybox(std::path::Path::new(containerd::BUSYBOX))
        .unwrap()
        .cmd(&["sh"])
        .build();
    let hello = std::fs::read(shoal_testkit::guest("hello")).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use shoal_wasm::oci::{WASM_CONFIG_TYPE, WASM_LAYER_TYPES, push_layer_as};
        push_layer_as(
            &format!("{host}/private/busybox:v1"),
            (busybox.layer.bytes, oci::LAYER),
            (busybox.config.bytes, oci::CONFIG),
            Some(&auth),
        )
        .await
        .unwrap();
        // v2 for the pod without the secret: v1 is on the node by then.
        for tag in ["v1", "v2", "v3"] {
            push_layer_as(
                &format!("{host}/private/hello:{tag}"),
                (hello.clone(), WASM_LAYER_TYPES[0]),
                (
                    br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec(),
                    WASM_CONFIG_TYPE,
                ),
                Some(&auth),
            )
            .await
            .unwrap();
        }
    });
    let c = Cluster::start_with(&[
        "--containers",
        "on",
        // containerd speaks plain HTTP to the test's registry through its hosts.toml.
        "--registry-mirror",
        &format!("{host}=http://{host}"),
        "--container-pod-cidr",
        &container_cidr(),
    ])
    .unwrap();
    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={host}"),
        &format!("--docker-username={USER}"),
        &format!("--docker-password={PASSWORD}"),
    ]);
    let pod = |name: &str, image: &str, secret: bool| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n{}  containers: [{{name: c, image: \"{host}/private/{image}\", args: [{}]}}]\n",
            if secret {
                "  imagePullSecrets: [{name: regcred}]\n"
            } else {
                ""
            },
            if image.starts_with("busybox") {
                "sh, -c, echo pulled with a secret"
            } else {
                ""
            },
        )
    };
    let (phase, logs) = crate::services::run_pod(&c, "wasm", &pod("wasm", "hello:v1", true));
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("Hello"), "{logs}");
    let (phase, logs) =
        crate::services::run_pod(&c, "container", &pod("container", "busybox:v1", true));
    assert_eq!(phase, "Succeeded", "{logs}");
    assert_eq!(logs, "pulled with a secret\n");
    // A ServiceAccount's pull secrets go to its pods that name none.
    c.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: puller}\nimagePullSecrets: [{name: regcred}]\n",
    );
    let via_account = pod("via-account", "hello:v3", false)
        .replace("spec:\n", "spec:\n  serviceAccountName: puller\n");
    let (phase, logs) = crate::services::run_pod(&c, "via-account", &via_account);
    assert_eq!(phase, "Succeeded", "{logs}");
    // Without the secret the registry says no.
    c.apply(&pod("anonymous", "hello:v2", false));
    eventually("anonymous cannot pull", || {
        let reason = c.pod_field(
            "anonymous",
            "{.status.containerStatuses[0].state.waiting.reason}",
        )?;
        anyhow::ensure!(
            reason == "ErrImagePull" || reason == "ImagePullBackOff",
            "{reason:?}"
        );
        Ok(())
    });
}

/// `yaml` (one pod or pod template) pinned to node `node`.
fn on_node(yaml: &str, node: &str) -> String {
    yaml.replacen(
        "\nspec:\n  restartPolicy",
        &format!("\nspec:\n  nodeName: {node}\n  restartPolicy"),
        1,
    )
}

/// A busybox httpd Deployment `name` on node `node`, saying `hello from NAME`, behind a
/// Service of that name.
fn httpd_on(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers:
      - name: httpd
        image: busybox
        command: [sh, -c, "mkdir /www && echo hello from {name} > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// A busybox pod on node `node` running `script` to its end: its phase and logs.
fn busybox_run(c: &Cluster, name: &str, node: &str, script: &str) -> (String, String) {
    crate::services::run_pod(
        c,
        name,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: [sh, -c, {script:?}]
"#
        ),
    )
}

/// Two machines: two network namespaces the test creates, joined by a veth pair; `shoal up`
/// (the control plane and node-1) in one, `shoal kubelet` (node-b) in the other, each running
/// containers on a subnet of its own. Each node routes the other's container subnet through
/// the other's address (host-gw, from the Node annotation); a pod on one node calls a Service
/// whose endpoints are on the other, by name, in both directions, and a container on one
/// node reaches a container on the other by pod IP. The API server reaches the far kubelet
/// (exec) across the link.
#[test]
fn two_nodes_in_two_network_namespaces_route_each_others_pods() {
    use shoal_testkit::netns::{self, NetNs};
    let registry = registry_with_busybox();
    let (a_ns, b_ns) = (NetNs::create("a").unwrap(), NetNs::create("b").unwrap());
    let x = std::process::id() % 100 + 100;
    let (a_ip, b_ip) = (format!("198.19.{x}.1"), format!("198.19.{x}.2"));
    netns::link(&a_ns, &format!("{a_ip}/24"), &b_ns, &format!("{b_ip}/24")).unwrap();
    // The nodes pull through a mirror on the link (the test's registry is on this
    // namespace's loopback).
    let link_registry = registry.serve_in(&a_ns, &format!("{a_ip}:5000")).unwrap();
    let mirror = format!("docker.io=http://{}", link_registry.host);
    let (cidr_a, cidr_b) = (format!("198.18.{x}.0/24"), format!("198.18.{}.0/24", x + 1));
    let c = Cluster::start_in_netns(
        &a_ns,
        &[
            "--listen",
            &format!("{a_ip}:0"),
            "--node-ip",
            &a_ip,
            "--containers",
            "on",
            "--registry-mirror",
            &mirror,
            "--container-pod-cidr",
            &cidr_a,
        ],
    )
    .unwrap();
    let b = shoal_testkit::Node::join_in_netns(
        &c,
        "node-b",
        &b_ns,
        &[
            "--node-ip",
            &b_ip,
            "--containers",
            "on",
            "--registry-mirror",
            &mirror,
            "--container-pod-cidr",
            &cidr_b,
        ],
    )
    .unwrap();
    let a = shoal_testkit::NODE;
    eventually("node-b publishes its container subnet", || {
        let got = c.ok(&[
            "get",
            "node",
            &b.name,
            "-o",
            "jsonpath={.metadata.annotations.node\\.shoal\\.dev/container-pod-cidr}",
        ]);
        anyhow::ensure!(got == cidr_b, "{got:?}");
        Ok(())
    });
    // Each node routes the other's subnet through the other's address.
    for (ns, cidr, via) in [(&a_ns, &cidr_b, &b_ip), (&b_ns, &cidr_a, &a_ip)] {
        eventually(&format!("{} routes {cidr}", ns.name), || {
            let out = ns.command("ip").args(["route", "show", cidr]).output()?;
            let routes = String::from_utf8_lossy(&out.stdout).into_owned();
            anyhow::ensure!(routes.contains(&format!("via {via}")), "{routes:?}");
            Ok(())
        });
    }

    // A container backend on node-b, called by name from a Wasm pod on node-1.
    c.apply(&httpd_on("web-b", &b.name));
    let web_b = ready_endpoint(&c, "web-b");
    assert!(
        web_b.starts_with(cidr_b.trim_end_matches("0/24")),
        "{web_b}"
    );
    let caller = crate::services::client(
        "caller",
        "app: caller",
        &["connect", "web-b:80", "GET /index.html HTTP/1.0\r\n\r\n"],
    );
    let (phase, logs) = crate::services::run_pod(&c, "caller", &on_node(&caller, a));
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("hello from web-b"), "{logs}");
    // A container on node-1: by Service name (cluster DNS on node-1's address, the Service
    // proxy of node-1) and by the far pod's IP (routed, not NATed).
    let (phase, logs) = busybox_run(
        &c,
        "fetch-a",
        a,
        &format!(
            "wget -qO- http://web-b.default.svc.cluster.local/index.html && wget -qO- http://{web_b}:8080/index.html"
        ),
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert_eq!(logs.matches("hello from web-b").count(), 2, "{logs}");

    // And the other way: a container on node-b calls a container backend on node-1 by name
    // (node-b's proxy, node-1's DNS across the link).
    c.apply(&httpd_on("web-a", a));
    let web_a = ready_endpoint(&c, "web-a");
    assert!(
        web_a.starts_with(cidr_a.trim_end_matches("0/24")),
        "{web_a}"
    );
    let (phase, logs) = busybox_run(
        &c,
        "fetch-b",
        &b.name,
        "wget -qO- http://web-a.default.svc.cluster.local/index.html",
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("hello from web-a"), "{logs}");

    // Wasm pods too: their addresses are in their node's container subnet (its upper half),
    // so a Wasm backend on node-b is called by name from a Wasm pod and a container on node-1.
    let echo = crate::services::echo("echo", 1, "ClusterIP").replacen(
        "    spec:\n      containers:",
        &format!(
            "    spec:\n      nodeSelector: {{kubernetes.io/hostname: {}}}\n      containers:",
            b.name
        ),
        1,
    );
    c.apply(&echo);
    let echo_ip = ready_endpoint(&c, "echo");
    assert!(
        echo_ip.starts_with(cidr_b.trim_end_matches("0/24")),
        "{echo_ip}"
    );
    let caller = crate::services::client(
        "wasm-caller",
        "app: caller",
        &["connect", "echo:80", "GET /from-wasm HTTP/1.0\r\n\r\n"],
    );
    let (phase, logs) = crate::services::run_pod(&c, "wasm-caller", &on_node(&caller, a));
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("GET /from-wasm"), "{logs}");
    let (phase, logs) = busybox_run(
        &c,
        "fetch-echo",
        a,
        "wget -qO- http://echo.default.svc.cluster.local/from-container",
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("GET /from-container"), "{logs}");

    // kubectl exec into node-b's pod: the API server reaches that kubelet across the link.
    let pod = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web-b",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    assert_eq!(
        c.ok(&["exec", &pod, "--", "cat", "/www/index.html"]),
        "hello from web-b\n"
    );
    c.ok(&["delete", "deployment", "web-a", "web-b", "echo"]);
    drop(b);
    drop(c);
    drop(link_registry);
}

/// `kubectl exec POD -- wget` of `url` within `secs` seconds: what it fetched, or `Err`
/// (busybox's `wget -T` crashes in Debian's busybox-static: `timeout` bounds it).
fn wget_from(c: &Cluster, pod: &str, url: &str, secs: u32) -> anyhow::Result<String> {
    let secs = secs.to_string();
    let out = c.kubectl(&["exec", pod, "--", "timeout", &secs, "wget", "-qO-", url]);
    anyhow::ensure!(
        out.status.success(),
        "wget {url} from {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// NetworkPolicy covers container pods as it covers Wasm pods: a container backend open only
/// to `role: friend` pods refuses a stranger container (by pod IP, and by Service address
/// through the node's proxy) and a stranger Wasm pod; a Wasm backend open only to friends
/// refuses a stranger container; a container whose egress is denied reaches nothing.
#[test]
fn network_policies_cover_container_pods() {
    let registry = registry_with_busybox();
    let c = Cluster::start_with(&[
        "--containers",
        "on",
        "--registry-mirror",
        &mirror(&registry),
        "--container-pod-cidr",
        &container_cidr(),
    ])
    .unwrap();
    let a = shoal_testkit::NODE;
    c.apply(&httpd_on("web", a));
    c.apply(&crate::services::echo("echo", 1, "ClusterIP"));
    let sleeper = |name: &str, role: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{role: {role}}}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, \"3600\"]\n"
        )
    };
    for (name, role) in [
        ("friend", "friend"),
        ("stranger", "stranger"),
        ("lonely", "lonely"),
    ] {
        c.apply(&sleeper(name, role));
    }
    let web = ready_endpoint(&c, "web");
    let echo = ready_endpoint(&c, "echo");
    for pod in ["friend", "stranger", "lonely"] {
        c.wait_pod(pod, "{.status.phase}", "Running");
    }
    let web_ip = format!("http://{web}:8080/index.html");
    let web_svc = "http://web.default.svc.cluster.local/index.html";
    let echo_ip = format!("http://{echo}:8080/hi");
    // Open before any policy.
    for pod in ["stranger", "lonely"] {
        eventually(&format!("{pod} reaches web"), || {
            wget_from(&c, pod, &web_ip, 10)
        });
    }
    c.apply(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-friends}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: friend}}}], ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: echo-friends}
spec:
  podSelector: {matchLabels: {app: echo}}
  ingress: [{from: [{podSelector: {matchLabels: {role: friend}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: lonely}
spec:
  podSelector: {matchLabels: {role: lonely}}
  policyTypes: [Egress]
"#,
    );
    for url in [web_ip.as_str(), web_svc, echo_ip.as_str()] {
        eventually(
            &format!("the stranger is refused {url}"),
            || match wget_from(&c, "stranger", url, 2) {
                Ok(body) => anyhow::bail!("fetched {body:?}"),
                Err(_) => Ok(()),
            },
        );
        let body = eventually(&format!("the friend fetches {url}"), || {
            wget_from(&c, "friend", url, 10)
        });
        assert!(
            body.contains("hello from web") || body.contains("GET /hi"),
            "{body}"
        );
    }
    eventually("lonely reaches nothing", || {
        match wget_from(&c, "lonely", &web_ip, 2) {
            Ok(body) => anyhow::bail!("fetched {body:?}"),
            Err(_) => Ok(()),
        }
    });
    // Wasm pods calling the container backend: policed in the runtime.
    let call = ["connect", "web:80", "GET /index.html HTTP/1.0\r\n\r\n"];
    let (phase, logs) = run_client(&c, "wasm-stranger", "role: stranger", &call);
    assert_eq!(phase, "Failed", "{logs}");
    let (phase, logs) = run_client(&c, "wasm-friend", "role: friend", &call);
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("hello from web"), "{logs}");
}
