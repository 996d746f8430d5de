//! Services, cluster DNS and NetworkPolicy on `shoal up`, driven with kubectl: pods find and
//! call each other by name, the node reaches ClusterIPs and node ports, endpoints follow
//! readiness, and policies and the host boundary hold. Every address here is on loopback
//! (each test cluster has its own Service range and node address).

use shoal_testkit::{Cluster, NODE, Node, eventually};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

/// A Deployment `web` of `replicas` http-echo pods (answering with their name), behind a
/// NodePort Service `web` on port 80 → the named port `http`.
fn web(replicas: u32) -> String {
    echo("web", replicas, "NodePort")
}

/// A Deployment `name` of `replicas` http-echo pods (answering with their name), behind a
/// Service `name` of `service_type` on port 80 → the named port `http`.
pub(crate) fn echo(name: &str, replicas: u32, service_type: &str) -> String {
    echo_annotated(name, replicas, service_type, "{}")
}

/// [`echo`] with the Deployment's `annotations` (a YAML flow map).
pub(crate) fn echo_annotated(
    name: &str,
    replicas: u32,
    service_type: &str,
    annotations: &str,
) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, annotations: {annotations}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: echo
        image: shoal.local/http-echo:latest
        ports: [{{name: http, containerPort: 8080}}]
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
        readinessProbe: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: {service_type}
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// A pod running the exerciser with `args`, once.
pub(crate) fn client(name: &str, labels: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: shoal.local/exerciser:latest\n    args: [{}]\n",
        args.join(", ")
    )
}

/// Runs a client pod to its end; its phase and logs.
pub(crate) fn run_client(c: &Cluster, name: &str, labels: &str, args: &[&str]) -> (String, String) {
    run_pod(c, name, &client(name, labels, args))
}

/// Applies the pod `name` (`yaml`) and runs it to its end; its phase and logs.
pub(crate) fn run_pod(c: &Cluster, name: &str, yaml: &str) -> (String, String) {
    c.apply(yaml);
    let phase = eventually(&format!("{name} finishes"), || {
        let p = c.pod_field(name, "{.status.phase}")?;
        anyhow::ensure!(p == "Succeeded" || p == "Failed", "{p}");
        Ok(p)
    });
    let logs = c.ok(&["logs", name]);
    c.ok(&["delete", "pod", name, "--wait=false"]);
    (phase, logs)
}

/// GET http://addr/path from the host; the whole response.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("an address"),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The pod that answered an http-echo response.
pub(crate) fn answered_by(resp: &str) -> Option<String> {
    resp.lines()
        .find_map(|l| l.strip_prefix("pod: "))
        .map(str::to_owned)
}

fn ready_endpoints(c: &Cluster, svc: &str) -> usize {
    c.ok(&[
        "get",
        "endpoints",
        svc,
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ])
    .split_whitespace()
    .count()
}

#[test]
fn a_service_routes_by_name_cluster_ip_and_node_port_and_follows_readiness() {
    let c = Cluster::start().unwrap();
    c.apply(&web(2));
    eventually("two ready endpoints", || {
        let n = ready_endpoints(&c, "web");
        anyhow::ensure!(n == 2, "{n}");
        Ok(())
    });
    let slices = c.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    assert!(slices.contains("8080"), "{slices}");
    let describe = c.ok(&["describe", "service", "web"]);
    assert!(
        describe.contains("Endpoints:") && describe.contains(":8080"),
        "{describe}"
    );

    // From the node: the ClusterIP (on loopback, in the cluster's own range) and the node port.
    let ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let range_prefix = c.service_cidr.trim_end_matches("0/24");
    assert!(
        ip.starts_with(range_prefix),
        "{ip} not in {}",
        c.service_cidr
    );
    let node_port = c.ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let mut seen = HashSet::new();
    for _ in 0..12 {
        let r = eventually("the ClusterIP answers", || {
            Ok(http_get(&format!("{ip}:80"), "/x")?)
        });
        assert!(r.contains("GET /x HTTP/1.1"), "{r}");
        seen.extend(answered_by(&r));
    }
    assert_eq!(seen.len(), 2, "load spreads over both endpoints: {seen:?}");
    let r = http_get(&format!("{}:{node_port}", c.node.node_ip), "/np").unwrap();
    assert!(r.contains("GET /np"), "{r}");

    // As a LoadBalancer: the node's address is published (and printed as EXTERNAL-IP), the
    // service port answers on it; back to NodePort, the address is withdrawn.
    let lb_port = std::net::TcpListener::bind((c.node.node_ip.as_str(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let set_type = |ty: &str, port: u16| {
        c.ok(&[
            "patch",
            "svc",
            "web",
            "--type=json",
            "-p",
            &format!(
                r#"[{{"op":"replace","path":"/spec/type","value":"{ty}"}},{{"op":"replace","path":"/spec/ports/0/port","value":{port}}}]"#
            ),
        ])
    };
    set_type("LoadBalancer", lb_port);
    eventually("the load balancer address is published", || {
        let row = c.ok(&["get", "svc", "web", "--no-headers"]);
        let cols: Vec<&str> = row.split_whitespace().collect();
        anyhow::ensure!(cols.get(3) == Some(&c.node.node_ip.as_str()), "{row}");
        Ok(())
    });
    let r = eventually("the load balancer answers", || {
        Ok(http_get(&format!("{}:{lb_port}", c.node.node_ip), "/lb")?)
    });
    assert!(r.contains("GET /lb"), "{r}");
    set_type("NodePort", 80);
    eventually("the load balancer address is withdrawn", || {
        let lb = c.ok(&["get", "svc", "web", "-o", "jsonpath={.status.loadBalancer}"]);
        anyhow::ensure!(lb == "{}" || lb.is_empty(), "{lb}");
        Ok(())
    });

    // Through the API server's proxy subresources, as `kubectl proxy` users reach them: the
    // Service by port name, a pod by port number, the node's kubelet.
    let r = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/services/web:http/proxy/via-api?q=1",
    ]);
    assert!(r.contains("GET /via-api?q=1 HTTP/1.1"), "{r}");
    let pod = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let r = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{pod}:8080/proxy/to-pod"),
    ]);
    assert!(r.contains("GET /to-pod HTTP/1.1"), "{r}");
    assert!(r.contains(&format!("pod: {pod}")), "{r}");
    let summary = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/stats/summary", shoal_testkit::NODE),
    ]);
    assert!(summary.contains("\"nodeName\""), "{summary}");

    // From a pod: by name, through the runtime's resolver, over wasi:http and wasi:sockets.
    let (phase, logs) = run_client(
        &c,
        "caller",
        "role: client",
        &[
            "resolve",
            "web",
            "fetch",
            "http://web/hello",
            "connect",
            "web.default.svc.cluster.local:80",
            "GET /raw HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
            "env",
            "WEB_SERVICE_HOST",
            "env",
            "WEB_PORT_80_TCP_PORT",
            "env",
            "KUBERNETES_SERVICE_PORT",
        ],
    );
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.starts_with(&format!("{ip}\n200\n")), "{logs}");
    assert!(
        logs.contains("GET /hello HTTP/1.1") && logs.contains("GET /raw"),
        "{logs}"
    );
    assert!(logs.contains(&format!("WEB_SERVICE_HOST={ip}")), "{logs}");
    assert!(logs.contains("WEB_PORT_80_TCP_PORT=80"), "{logs}");
    assert!(logs.contains("KUBERNETES_SERVICE_PORT=443"), "{logs}");

    // The cluster DNS server gives host tools the same answers (when dig is installed).
    if std::process::Command::new("dig").arg("-v").output().is_ok() {
        let dns = shoal_testkit::dns_ip(&c.service_cidr);
        let dig = |args: &[&str]| -> String {
            let out = std::process::Command::new("dig")
                .args(["+short", "+time=2", "+tries=2", &format!("@{dns}")])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        eventually("dig answers through the kube-dns Service", || {
            let a = dig(&["web.default.svc.cluster.local"]);
            anyhow::ensure!(a == ip, "{a:?}");
            Ok(())
        });
        assert_eq!(dig(&["+tcp", "web.default.svc.cluster.local"]), ip);
        let srv = dig(&["SRV", "_http._tcp.web.default.svc.cluster.local"]);
        assert!(srv.ends_with("80 web.default.svc.cluster.local."), "{srv}");
    }

    // A pod that turns unready stops receiving traffic: its readiness fails 8 s from now.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 8;
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: fading, labels: {{app: web}}}}\nspec:\n  containers:\n  - name: echo\n    image: shoal.local/http-echo:latest\n    ports: [{{name: http, containerPort: 8080}}]\n    env:\n    - {{name: POD_NAME, value: fading}}\n    - {{name: READY_UNTIL, value: \"{until}\"}}\n    readinessProbe: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1, failureThreshold: 1}}\n"
    ));
    eventually(
        "the fading pod turns unready and leaves the endpoints",
        || {
            let ready = c.pod_field(
                "fading",
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            )?;
            anyhow::ensure!(ready == "False", "{ready}");
            let not_ready = c.ok(&[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].notReadyAddresses[*].ip}",
            ]);
            anyhow::ensure!(!not_ready.is_empty(), "not yet listed as not ready");
            anyhow::ensure!(ready_endpoints(&c, "web") == 2);
            Ok(())
        },
    );
    for _ in 0..10 {
        let r = http_get(&format!("{ip}:80"), "/").unwrap();
        assert_ne!(answered_by(&r).as_deref(), Some("fading"), "{r}");
    }

    // Scaled to zero, the Service refuses at once, from the node and from pods.
    c.ok(&["delete", "pod", "fading", "--wait=false"]);
    c.ok(&["scale", "deployment", "web", "--replicas=0"]);
    eventually("no endpoints", || {
        anyhow::ensure!(ready_endpoints(&c, "web") == 0);
        let e = http_get(&format!("{ip}:80"), "/").unwrap_err();
        anyhow::ensure!(e.kind() == std::io::ErrorKind::ConnectionRefused, "{e}");
        Ok(())
    });
    let (phase, logs) = run_client(&c, "refused", "role: client", &["connect", "web:80", "x"]);
    assert_eq!(phase, "Failed");
    assert!(logs.contains("Connection refused"), "{logs}");
}

#[test]
fn names_policies_and_the_host_boundary() {
    let c = Cluster::start().unwrap();
    c.apply(&web(1));
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: echo, image: shoal.local/http-echo:latest, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: alias}
spec:
  type: ExternalName
  externalName: web.default.svc.cluster.local
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: front}
spec:
  replicas: 1
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec:
      containers:
      - name: f
        image: shoal.local/frontend:latest
        env: [{name: BACKEND, value: "http://web"}]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: front}
spec:
  selector: {app: front}
  ports: [{port: 8081, targetPort: 8080}]
"#,
    );
    eventually("web, both db pods and front are endpoints", || {
        anyhow::ensure!(ready_endpoints(&c, "web") == 1);
        anyhow::ensure!(ready_endpoints(&c, "db") == 2);
        anyhow::ensure!(ready_endpoints(&c, "front") == 1);
        Ok(())
    });
    let web_ip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let db0 = c.pod_field("db-0", "{.status.podIP}").unwrap();
    let db1 = c.pod_field("db-1", "{.status.podIP}").unwrap();
    let (phase, logs) = run_client(
        &c,
        "names",
        "role: client",
        &[
            "resolve", "db", "print", "--", "resolve", "db-1.db", "print", "--", "resolve",
            "alias", "print", "--", "resolve", "nosuch",
        ],
    );
    assert_eq!(phase, "Failed", "nosuch does not resolve: {logs}");
    let parts: Vec<&str> = logs.split("--\n").collect();
    let mut headless: Vec<&str> = parts[0].lines().collect();
    headless.sort();
    let mut want = vec![db0.as_str(), db1.as_str()];
    want.sort();
    assert_eq!(headless, want, "{logs}");
    assert_eq!(parts[1].trim(), db1, "{logs}");
    assert_eq!(parts[2].trim(), web_ip, "{logs}");
    assert!(parts[3].contains("resolve nosuch"), "{logs}");

    // One pod calling another: front calls web by name and returns its answer.
    let front_ip = c.ok(&["get", "svc", "front", "-o", "jsonpath={.spec.clusterIP}"]);
    // Each node's view of the endpoints follows the API server's a moment later (the test
    // saw web ready through the API): retried until front's node routes to web.
    let r = eventually("front answers with web's answer", || {
        let r = http_get(&format!("{front_ip}:8081"), "/via")?;
        anyhow::ensure!(r.contains("backend: 200"), "{r}");
        Ok(r)
    });
    assert!(r.contains("GET /via"), "{r}");

    // Default deny on web, then an allow rule for pods labelled role=client.
    c.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-web}\nspec:\n  podSelector: {matchLabels: {app: web}}\n");
    let netpol = c.ok(&["get", "networkpolicy"]);
    assert!(
        netpol.contains("deny-web") && netpol.contains("app=web"),
        "{netpol}"
    );
    eventually("the policy denies", || {
        let (phase, logs) = run_client(&c, "denied", "role: client", &["fetch", "http://web/"]);
        anyhow::ensure!(phase == "Failed", "{logs}");
        Ok(())
    });
    c.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-clients}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{port: http}]\n");
    eventually("the allow rule admits clients", || {
        let (phase, logs) = run_client(&c, "allowed", "role: client", &["fetch", "http://web/"]);
        anyhow::ensure!(phase == "Succeeded", "{logs}");
        Ok(())
    });
    let (phase, _) = run_client(&c, "stranger", "role: other", &["fetch", "http://web/"]);
    assert_eq!(phase, "Failed", "a pod the rule does not name stays out");
    let r = http_get(&format!("{front_ip}:8081"), "/").unwrap();
    assert!(!r.contains("backend: 200"), "front is not a client: {r}");

    // The host boundary: the API server's port directly is refused; the kubernetes Service
    // reaches it.
    let api_port = c.ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].ports[0].port}",
    ]);
    let (phase, logs) = run_client(
        &c,
        "sneaky",
        "role: x",
        &["connect", &format!("127.0.0.1:{api_port}"), "x"],
    );
    assert_eq!(phase, "Failed");
    assert!(logs.contains("Connection refused"), "{logs}");
    let (phase, logs) = run_client(
        &c,
        "legit",
        "role: x",
        &[
            "connect",
            "kubernetes.default.svc.cluster.local:443",
            "GET / HTTP/1.0\r\n\r\n",
        ],
    );
    assert_eq!(phase, "Succeeded", "reached the API server's TLS: {logs}");
}

#[test]
fn a_pod_on_another_node_is_reached_through_its_service() {
    let c = Cluster::start().unwrap();
    let second = Node::join(&c, "node-2").unwrap();
    eventually("node-2 is Ready", || {
        let out = c.ok(&["get", "node", "node-2"]);
        anyhow::ensure!(out.contains(" Ready "), "{out}");
        Ok(())
    });
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: far, labels: {app: far}}\nspec:\n  nodeName: node-2\n  containers:\n  - name: echo\n    image: shoal.local/http-echo:latest\n    ports: [{containerPort: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec:\n  type: NodePort\n  selector: {app: far}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    eventually("far is an endpoint", || {
        anyhow::ensure!(ready_endpoints(&c, "far") == 1);
        Ok(())
    });
    let mut near = client(
        "near",
        "role: client",
        &["fetch", "http://far.default/near"],
    );
    near = near.replace("spec:\n", &format!("spec:\n  nodeName: {NODE}\n"));
    c.apply(&near);
    let phase = eventually("near finishes", || {
        let p = c.pod_field("near", "{.status.phase}")?;
        anyhow::ensure!(p == "Succeeded" || p == "Failed", "{p}");
        Ok(p)
    });
    let logs = c.ok(&["logs", "near"]);
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("GET /near"), "{logs}");
    // Node ports are open on every node's address.
    let np = c.ok(&[
        "get",
        "svc",
        "far",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for node_ip in [&c.node.node_ip, &second.net.node_ip] {
        let r = eventually("the node port answers", || {
            Ok(http_get(&format!("{node_ip}:{np}"), "/p")?)
        });
        assert!(r.contains("GET /p"), "{r}");
    }
}
