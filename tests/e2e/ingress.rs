//! The Ingress API (`networking.k8s.io/v1`) with the real kubectl and the node's ingress
//! controller with curl: `kubectl create ingress`, kubectl's columns, the default IngressClass
//! (`shoal`, or a newer default) given to new Ingresses, validation naming the field; hosts
//! and paths routed to their Deployments, TLS with each host's certificate, HTTP/2, the
//! status, and routes following changes. All on the cluster's loopback node address.

use crate::services::{answered_by, echo};
use shoal_testkit::{Cluster, eventually};
use std::process::Command;

#[test]
fn ingresses_are_served_validated_and_given_the_default_class() {
    let c = Cluster::start().unwrap();
    c.ok(&[
        "create",
        "ingress",
        "web",
        "--rule=a.example.com/api*=api:80",
        "--rule=b.example.com/=web:http,tls=web-cert",
    ]);
    let paths = c.ok(&[
        "get",
        "ing",
        "web",
        "-o",
        "jsonpath={.spec.rules[*].http.paths[*].pathType} {.spec.rules[1].http.paths[0].backend.service.port.name}",
    ]);
    assert_eq!(paths, "Prefix Exact http");
    let row = c.ok(&["get", "ingress", "web", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    // ADDRESS follows once the controller-manager has published the node's address.
    assert_eq!(
        &cols[..3],
        ["web", "shoal", "a.example.com,b.example.com"],
        "{row}"
    );
    assert!(row.contains(" 80, 443 "), "{row}");
    // A default class is given to Ingresses created without one.
    c.apply(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: edge\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec:\n  controller: example.com/edge\n",
    );
    c.ok(&[
        "create",
        "ingress",
        "second",
        "--rule=c.example.com/*=web:80",
    ]);
    let class = c.ok(&[
        "get",
        "ing",
        "second",
        "-o",
        "jsonpath={.spec.ingressClassName}",
    ]);
    assert_eq!(class, "edge");
    let classes = c.ok(&["get", "ingressclass", "--no-headers"]);
    assert!(
        classes.starts_with("edge")
            && classes.contains("example.com/edge")
            && classes.contains("shoal.dev/ingress-controller"),
        "{classes}"
    );
    let err = c.fails(&[
        "patch",
        "ingressclass",
        "edge",
        "--type=merge",
        "-p",
        r#"{"spec":{"controller":"example.com/other"}}"#,
    ]);
    assert!(
        err.contains("spec.controller: Invalid value: \"example.com/other\": field is immutable"),
        "{err}"
    );
    // Bad input names the field.
    let out = c.kubectl_with(
        &["apply", "-f", "-"],
        Some("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules:\n  - host: 127.0.0.9\n    http:\n      paths:\n      - path: api\n        backend: {service: {name: web, port: {number: 80}}}\n      - path: api\n        pathType: Prefix\n        backend: {service: {name: web}}\n"),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for line in [
        "spec.rules[0].host: Invalid value: \"127.0.0.9\": must be a DNS name, not an IP address",
        "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
        "spec.rules[0].http.paths[1].path: Invalid value: \"api\": must be an absolute path",
        "spec.rules[0].http.paths[1].backend: Required value: port name or number is required",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
}

/// The HTTP status curl got for GET `url` with `Host: host` (`000` if none).
pub(crate) fn status(host: &str, url: &str) -> String {
    curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Host: {host}"),
        url,
    ])
    .1
}

/// curl with `args`: its exit code and what it wrote (`-w` output included).
pub(crate) fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_ingress_controller_routes_hosts_and_paths_with_tls_and_http2() {
    let c = Cluster::start().unwrap();
    let ip = c.node.node_ip.clone();
    let (http, https) = c.ingress_ports;
    c.apply(&echo("alpha", 2, "ClusterIP"));
    c.apply(&echo("beta", 2, "ClusterIP"));
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["beta.shoal.test".to_owned()]).unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    c.ok(&[
        "create",
        "secret",
        "tls",
        "beta-cert",
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    // Two hosts with prefix paths; beta's with TLS. No class named: `shoal` is the default.
    c.ok(&[
        "create",
        "ingress",
        "web",
        "--rule=alpha.shoal.test/*=alpha:80",
        "--rule=beta.shoal.test/api*=beta:http,tls=beta-cert",
        "--rule=beta.shoal.test/exact=alpha:80",
    ]);
    let plain = format!("http://{ip}:{http}");
    let get =
        |host: &str, path: &str| curl(&["-H", &format!("Host: {host}"), &format!("{plain}{path}")]);
    let pod = eventually("alpha answers through the ingress", || {
        let (code, out) = get("alpha.shoal.test", "/anything");
        anyhow::ensure!(code == 0, "{out}");
        answered_by(&out).ok_or_else(|| anyhow::anyhow!("{out}"))
    });
    assert!(pod.starts_with("alpha-"), "{pod}");
    let pod = eventually("beta answers under /api", || {
        let (_, out) = get("beta.shoal.test", "/api/v1?x=1");
        answered_by(&out).ok_or_else(|| anyhow::anyhow!("{out}"))
    });
    assert!(pod.starts_with("beta-"), "{pod}");
    let (_, out) = get("beta.shoal.test", "/api/v1?x=1");
    assert!(out.contains("GET /api/v1?x=1 HTTP/1.1"), "{out}");
    assert!(out.contains("x-forwarded-proto: http"), "{out}");
    // Both pods are on this node: the ingress handed the requests to them in process.
    let metrics = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/metrics", shoal_testkit::NODE),
    ]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shoal_ingress_requests_total{handoff=\"in_process\"}")),
        "{metrics}"
    );
    // Exact and prefix paths, element-wise; unknown hosts and paths are 404.
    let (_, out) = get("beta.shoal.test", "/exact");
    assert!(answered_by(&out).unwrap().starts_with("alpha-"), "{out}");
    for (host, path) in [
        ("beta.shoal.test", "/apix"),
        ("beta.shoal.test", "/exact/more"),
        ("gamma.shoal.test", "/"),
    ] {
        let code = status(host, &format!("{plain}{path}"));
        assert_eq!(code, "404", "{host}{path}");
    }
    // HTTP/2 in clear text (prior knowledge) and over TLS with ALPN.
    let (_, version) = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "-H",
        "Host: alpha.shoal.test",
        &format!("{plain}/"),
    ]);
    assert_eq!(version, "2");
    // TLS: beta's own certificate for beta (verified against it), h2 offered.
    let resolve = |host: &str| format!("{host}:{https}:{ip}");
    let (code, out) = curl(&[
        "--cacert",
        crt.to_str().unwrap(),
        "--resolve",
        &resolve("beta.shoal.test"),
        "-w",
        "\nversion %{http_version}",
        &format!("https://beta.shoal.test:{https}/api/tls"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(answered_by(&out).unwrap().starts_with("beta-"), "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");
    assert!(out.ends_with("version 2"), "{out}");
    // Another host gets the controller's own certificate, which beta's does not verify.
    let (code, out) = curl(&[
        "--cacert",
        crt.to_str().unwrap(),
        "--resolve",
        &resolve("alpha.shoal.test"),
        &format!("https://alpha.shoal.test:{https}/"),
    ]);
    assert_eq!(code, 60, "{out}");
    // The status names the node's address; kubectl shows it.
    eventually("the ingress's address is published", || {
        let addr = c.ok(&[
            "get",
            "ingress",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        anyhow::ensure!(addr == ip, "{addr:?}");
        Ok(())
    });
    let row = c.ok(&["get", "ingress", "web", "--no-headers"]);
    assert!(row.contains(&format!(" {ip} ")), "{row}");
    // Routes follow changes: no endpoints → 503, a changed rule, a deleted Ingress → 404.
    c.ok(&["scale", "deployment", "beta", "--replicas=0"]);
    eventually("beta without endpoints answers 503", || {
        let out = status("beta.shoal.test", &format!("{plain}/api"));
        anyhow::ensure!(out == "503", "{out}");
        Ok(())
    });
    c.ok(&[
        "patch",
        "ingress",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/rules/1/http/paths/0/backend/service","value":{"name":"alpha","port":{"number":80}}}]"#,
    ]);
    eventually("beta's path now goes to alpha", || {
        let (_, out) = get("beta.shoal.test", "/api");
        let pod = answered_by(&out).ok_or_else(|| anyhow::anyhow!("{out}"))?;
        anyhow::ensure!(pod.starts_with("alpha-"), "{pod}");
        Ok(())
    });
    c.ok(&["delete", "ingress", "web"]);
    eventually("a deleted ingress routes nothing", || {
        let out = status("alpha.shoal.test", &format!("{plain}/"));
        anyhow::ensure!(out == "404", "{out}");
        Ok(())
    });
}

#[test]
fn a_rolling_update_under_constant_load_drops_no_request() {
    let c = Cluster::start().unwrap();
    c.apply(&echo("roll", 3, "ClusterIP"));
    c.ok(&[
        "create",
        "ingress",
        "roll",
        "--rule=roll.shoal.test/*=roll:80",
    ]);
    let url = format!("http://{}:{}/", c.node.node_ip, c.ingress_ports.0);
    eventually("roll answers through the ingress", || {
        let (code, out) = curl(&["-H", "Host: roll.shoal.test", &url]);
        anyhow::ensure!(code == 0 && answered_by(&out).is_some(), "{out}");
        Ok(())
    });
    c.ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    let before: std::collections::HashSet<String> = c
        .ok(&["get", "pods", "-l", "app=roll", "-o", "name"])
        .lines()
        .map(str::to_owned)
        .collect();
    // Four clients, each sending its next request as soon as the last is answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = status("roll.shoal.test", &url);
                    if out == "200" {
                        ok += 1;
                    } else {
                        failed.push(out);
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(1));
    c.ok(&["set", "env", "deployment/roll", "ROUND=2"]);
    c.ok(&["rollout", "status", "deployment/roll", "--timeout=120s"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for t in clients {
        let (o, f) = t.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 100, "only {ok} requests");
    // Every pod was replaced meanwhile.
    let after: std::collections::HashSet<String> = c
        .ok(&["get", "pods", "-l", "app=roll", "-o", "name"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(before.is_disjoint(&after), "{before:?} {after:?}");
}
