//! Service addresses and node ports: allocated from the configured ranges, claimed in the
//! store, refused with Kubernetes' words when asked for and taken or out of range, given back
//! on delete; and the `kubernetes` Service the API server publishes for itself.

use crate::{assert_status, send};
use http::Method;
use serde_json::{Value, json};
use std::sync::Arc;

const SERVICES: &str = "/api/v1/namespaces/default/services";

/// An API server whose Service range is a /28 (13 addresses after the network, the first
/// and the broadcast), as a router.
async fn small_range() -> (axum::Router, Arc<shoal_apiserver::ApiServer>) {
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let options = shoal_apiserver::Options {
        services: shoal_apiserver::ServiceNetwork {
            cidr: "127.96.7.0/28".parse().unwrap(),
            node_ports: 30000..=30002,
        },
        ..Default::default()
    };
    let server = shoal_apiserver::ApiServer::start(store, options)
        .await
        .unwrap();
    (shoal_apiserver::router(server.clone()), server)
}

fn service(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn addresses_come_from_the_range_until_it_is_full_and_come_back_on_delete() {
    let (app, server) = small_range().await;
    server
        .publish_endpoint("127.0.0.1:6443".parse().unwrap())
        .await
        .unwrap();
    let k = send(
        &app,
        Method::GET,
        &format!("{SERVICES}/kubernetes"),
        Value::Null,
    )
    .await;
    assert_eq!(k.body["spec"]["clusterIP"], "127.96.7.1", "{}", k.body);
    assert_eq!(k.body["spec"]["ports"][0]["targetPort"], 6443);
    let slice = send(
        &app,
        Method::GET,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        Value::Null,
    )
    .await;
    assert_eq!(slice.body["endpoints"][0]["addresses"][0], "127.0.0.1");

    let mut ips = std::collections::BTreeSet::new();
    for i in 0..13 {
        let r = send(
            &app,
            Method::POST,
            SERVICES,
            service(&format!("s{i}"), json!({})),
        )
        .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
        let ip = r.body["spec"]["clusterIP"].as_str().unwrap().to_owned();
        assert!(ip.starts_with("127.96.7.") && ip != "127.96.7.0" && ip != "127.96.7.15");
        assert_eq!(r.body["spec"]["clusterIPs"], json!([ip]));
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 13);
    let full = send(&app, Method::POST, SERVICES, service("more", json!({}))).await;
    assert_status(&full, 500, "InternalError");
    assert!(
        full.body["message"]
            .as_str()
            .unwrap()
            .contains("range 127.96.7.0/28 is full")
    );
    let r = send(&app, Method::DELETE, &format!("{SERVICES}/s3"), Value::Null).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let again = send(&app, Method::POST, SERVICES, service("more", json!({}))).await;
    assert_eq!(again.status.as_u16(), 201, "{}", again.body);
}

#[tokio::test]
async fn asked_for_addresses_and_ports_are_checked() {
    let (app, _server) = small_range().await;
    let out = send(
        &app,
        Method::POST,
        SERVICES,
        service("out", json!({"clusterIP": "127.96.8.5"})),
    )
    .await;
    assert_status(&out, 422, "Invalid");
    assert_eq!(out.body["details"]["causes"][0]["field"], "spec.clusterIPs");
    assert!(
        out.body["message"]
            .as_str()
            .unwrap()
            .contains("provided IP is not in the valid range"),
        "{}",
        out.body
    );
    let a = send(
        &app,
        Method::POST,
        SERVICES,
        service("a", json!({"clusterIP": "127.96.7.9"})),
    )
    .await;
    assert_eq!(a.status.as_u16(), 201, "{}", a.body);
    let b = send(
        &app,
        Method::POST,
        SERVICES,
        service("b", json!({"clusterIP": "127.96.7.9"})),
    )
    .await;
    assert_status(&b, 422, "Invalid");
    assert!(
        b.body["message"]
            .as_str()
            .unwrap()
            .contains("provided IP is already allocated"),
        "{}",
        b.body
    );
    let headless = send(
        &app,
        Method::POST,
        SERVICES,
        service("h", json!({"clusterIP": "None"})),
    )
    .await;
    assert_eq!(
        headless.body["spec"]["clusterIP"], "None",
        "{}",
        headless.body
    );

    let np = |name: &str, port: Option<i64>| {
        let mut p = json!({"port": 80});
        if let Some(port) = port {
            p["nodePort"] = json!(port);
        }
        service(name, json!({"type": "NodePort", "ports": [p]}))
    };
    let first = send(&app, Method::POST, SERVICES, np("n1", Some(30001))).await;
    assert_eq!(first.status.as_u16(), 201, "{}", first.body);
    let clash = send(&app, Method::POST, SERVICES, np("n2", Some(30001))).await;
    assert_status(&clash, 422, "Invalid");
    assert_eq!(
        clash.body["details"]["causes"][0]["field"],
        "spec.ports[0].nodePort"
    );
    let mut got = Vec::new();
    for name in ["n3", "n4"] {
        let r = send(&app, Method::POST, SERVICES, np(name, None)).await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
        got.push(r.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap());
    }
    got.sort();
    assert_eq!(got, [30000, 30002], "the two ports left");
    let full = send(&app, Method::POST, SERVICES, np("n5", None)).await;
    assert_status(&full, 500, "InternalError");
}
