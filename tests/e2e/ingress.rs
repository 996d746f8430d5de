//! The Ingress API (`networking.k8s.io/v1`) with the real kubectl: `kubectl create ingress`,
//! kubectl's columns, the default IngressClass given to new Ingresses, validation naming the
//! field. (Routing requests by them is the ingress controller's, which is not built yet.)

use shoal_testkit::Cluster;

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
    assert_eq!(
        &cols[..5],
        ["web", "<none>", "a.example.com,b.example.com", "80,", "443"],
        "{row}"
    );
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
        classes.starts_with("edge") && classes.contains("example.com/edge"),
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
