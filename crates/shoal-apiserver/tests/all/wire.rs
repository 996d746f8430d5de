//! Wire-exactness: what clients other than kubectl rely on. Boolean query parameters read
//! as Kubernetes reads them; `Status` bodies and objects byte for byte as kube-apiserver
//! writes them (the expected bytes are kube-apiserver's, for the same request); patches
//! without a resourceVersion never lose to a concurrent write; the status counters and
//! nested defaults typed clients need.

use crate::{CONFIGMAPS, Reply, app, configmap, send, send_as};
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "oci://x/y:1"}]}}}})
}

async fn get(app: &Router, path: &str) -> Reply {
    send(app, Method::GET, path, Value::Null).await
}

/// The first chunk of a GET's body within 2 s, or `None` if the body is still open with
/// nothing to read (a watch with no events yet).
async fn first_chunk(app: &Router, path: &str) -> (StatusCode, Option<Vec<u8>>) {
    let req = Request::builder()
        .uri(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let mut body = resp.into_body();
    match tokio::time::timeout(Duration::from_secs(2), body.frame()).await {
        Ok(Some(Ok(f))) => (status, f.into_data().ok().map(|b| b.to_vec())),
        _ => (status, None),
    }
}

#[tokio::test]
async fn boolean_parameters_read_false_and_0_as_false_in_any_case_and_the_rest_as_true() {
    let (app, _) = app().await;
    send(&app, Method::POST, CONFIGMAPS, configmap("b", json!({}))).await;
    // `watch=True` (Python's spelling) watches: the stream opens with the object ADDED.
    for on in ["True", "true", "1", "yes", ""] {
        let (status, chunk) = first_chunk(&app, &format!("{CONFIGMAPS}?watch={on}")).await;
        assert_eq!(status, StatusCode::OK);
        let line: Value = serde_json::from_slice(&chunk.expect("an event")).unwrap();
        assert_eq!(line["type"], "ADDED", "watch={on}");
    }
    for off in ["False", "false", "FALSE", "0"] {
        let r = get(&app, &format!("{CONFIGMAPS}?watch={off}")).await;
        assert_eq!(r.body["kind"], "ConfigMapList", "watch={off}");
    }
    // `force=True` on server-side apply takes the field over.
    let apply = |data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": data})
            .to_string()
    };
    let path = format!("{CONFIGMAPS}/b");
    let ct = "application/apply-patch+yaml";
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{path}?fieldManager=one"),
        ct,
        apply(json!({"k": "1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{path}?fieldManager=two&force=False"),
        ct,
        apply(json!({"k": "2"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{path}?fieldManager=two&force=True"),
        ct,
        apply(json!({"k": "2"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["k"], "2");
}

#[tokio::test]
async fn status_bodies_are_kube_apiservers_bytes() {
    let (app, _) = app().await;
    // Every body below is what kube-apiserver 1.32 answers to the same request.
    let r = get(&app, &format!("{CONFIGMAPS}/nope")).await;
    assert_eq!(
        r.text(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"configmaps\"},\"code\":404}\n"
    );
    let r = get(&app, &format!("{DEPLOYMENTS}/nope")).await;
    assert_eq!(
        r.text(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"deployments.apps \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n"
    );
    let r = get(&app, "/api/v1/nothings").await;
    assert_eq!(
        r.text(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"
    );
    let created = send(&app, Method::POST, CONFIGMAPS, configmap("a", json!({}))).await;
    let r = send(&app, Method::POST, CONFIGMAPS, configmap("a", json!({}))).await;
    assert_eq!(
        r.text(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"a\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"a\",\"kind\":\"configmaps\"},\"code\":409}\n"
    );
    let mut stale = created.body.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let r = send(&app, Method::PUT, &format!("{CONFIGMAPS}/a"), stale).await;
    assert_eq!(
        r.text(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Operation cannot be fulfilled on configmaps \\\"a\\\": the object has been modified; please apply your changes to the latest version and try again\",\"reason\":\"Conflict\",\"details\":{\"name\":\"a\",\"kind\":\"configmaps\"},\"code\":409}\n"
    );
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"a b": "x"}});
    let r = send(&app, Method::POST, CONFIGMAPS, bad).await;
    assert_eq!(
        r.text(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"ConfigMap \\\"a\\\" is invalid: data[a b]: Invalid value: \\\"a b\\\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')\",\"reason\":\"Invalid\",\"details\":{\"name\":\"a\",\"kind\":\"ConfigMap\",\"causes\":[{\"reason\":\"FieldValueInvalid\",\"message\":\"Invalid value: \\\"a b\\\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')\",\"field\":\"data[a b]\"}]},\"code\":422}\n"
    );
    let uid = created.body["metadata"]["uid"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        Method::DELETE,
        &format!("{CONFIGMAPS}/a"),
        Value::Null,
    )
    .await;
    assert_eq!(
        r.text(),
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Success\",\"details\":{{\"name\":\"a\",\"kind\":\"configmaps\",\"uid\":\"{uid}\"}}}}\n"
        )
    );
}

#[tokio::test]
async fn a_watch_from_a_future_resource_version_is_504_with_the_cause_clients_test_for() {
    let (app, server) = app().await;
    let current = server
        .registry
        .store
        .current_revision()
        .await
        .unwrap()
        .get();
    let future = current + 1000;
    let r = get(
        &app,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={future}"),
    )
    .await;
    assert_eq!(r.status.as_u16(), 504);
    assert_eq!(
        r.text(),
        format!(
            "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"Timeout: Too large resource version: {future}, current: {current}\",\"reason\":\"Timeout\",\"details\":{{\"causes\":[{{\"reason\":\"ResourceVersionTooLarge\",\"message\":\"Too large resource version\"}}],\"retryAfterSeconds\":1}},\"code\":504}}\n"
        )
    );
}

/// The keys of a JSON object, in order.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn objects_come_out_in_kubernetes_field_order_the_same_on_every_path() {
    let (app, _) = app().await;
    // Sent in the wrong order, with labels to be removed later.
    let body = json!({"data": {"b": "2", "a": "1"}, "metadata": {"labels": {"x": "y"}, "name": "o"},
        "kind": "ConfigMap", "apiVersion": "v1"});
    // No field manager: kube-apiserver would record one (named after the user agent) and
    // write `".": {}` for each map in its FieldsV1, which Shoal's managedFields do not yet
    // do; the comparison leaves managedFields out.
    let created = send(&app, Method::POST, CONFIGMAPS, body).await;
    let (uid, rv, ts) = (
        created.body["metadata"]["uid"].as_str().unwrap(),
        created.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap(),
        created.body["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap(),
    );
    let expected = format!(
        "{{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"o\",\"namespace\":\"default\",\"uid\":\"{uid}\",\"resourceVersion\":\"{rv}\",\"creationTimestamp\":\"{ts}\",\"labels\":{{\"x\":\"y\"}}}},\"data\":{{\"a\":\"1\",\"b\":\"2\"}}}}\n"
    );
    assert_eq!(created.text(), expected);
    assert_eq!(get(&app, &format!("{CONFIGMAPS}/o")).await.text(), expected);
    let (_, line) = first_chunk(&app, &format!("{CONFIGMAPS}?watch=1")).await;
    assert_eq!(
        String::from_utf8(line.unwrap()).unwrap(),
        format!(
            "{{\"type\":\"ADDED\",\"object\":{}}}\n",
            expected.trim_end()
        )
    );
    let list = get(&app, CONFIGMAPS).await;
    assert!(
        list.text()
            .ends_with(&format!("\"items\":[{}]}}\n", expected.trim_end()))
    );

    // Removing the last label leaves no `labels: {}` behind.
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{CONFIGMAPS}/o"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"x": null}}}).to_string(),
    )
    .await;
    assert_eq!(
        keys(&r.body["metadata"]),
        [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp"
        ]
    );

    // A Deployment: spec and status fields in Go order too.
    let d = send(&app, Method::POST, DEPLOYMENTS, deployment("d")).await;
    assert_eq!(
        keys(&d.body),
        ["kind", "apiVersion", "metadata", "spec", "status"]
    );
    assert_eq!(
        keys(&d.body["metadata"]),
        [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp"
        ]
    );
    assert_eq!(
        keys(&d.body["spec"]),
        [
            "replicas",
            "selector",
            "template",
            "strategy",
            "revisionHistoryLimit",
            "progressDeadlineSeconds"
        ]
    );
    assert_eq!(
        keys(&d.body["spec"]["template"]["spec"]["containers"][0]),
        [
            "name",
            "image",
            "resources",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "imagePullPolicy"
        ]
    );
}

/// One client of the concurrency test: patches without a resourceVersion for `for_how_long`,
/// each a label, an annotation or a scale; answers what it wrote last and any failure.
async fn patcher(
    app: Router,
    client: usize,
    for_how_long: Duration,
) -> (Vec<String>, Option<i64>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + for_how_long;
    let (mut written, mut replicas, mut failures) = (Vec::new(), None, Vec::new());
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        n += 1;
        let (path, body) = match client % 3 {
            0 => (
                format!("{DEPLOYMENTS}/race"),
                json!({"metadata": {"labels": {format!("l{client}-{n}"): "x"}}}),
            ),
            1 => (
                format!("{DEPLOYMENTS}/race"),
                json!({"metadata": {"annotations": {format!("a{client}-{n}"): "x"}}}),
            ),
            _ => (
                format!("{DEPLOYMENTS}/race/scale"),
                json!({"spec": {"replicas": (client * 1000 + n) % 50}}),
            ),
        };
        let r = send_as(
            &app,
            Method::PATCH,
            &path,
            "application/merge-patch+json",
            body.to_string(),
        )
        .await;
        if r.status != StatusCode::OK {
            failures.push(format!(
                "client {client} ({path}): {}: {}",
                r.status, r.body["message"]
            ));
            continue;
        }
        match client % 3 {
            0 => written.push(format!("l{client}-{n}")),
            1 => written.push(format!("a{client}-{n}")),
            _ => replicas = Some(((client * 1000 + n) % 50) as i64),
        }
    }
    (written, replicas, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_patching_one_deployment_for_10s_never_see_a_conflict() {
    let (app, _) = app().await;
    let r = send(&app, Method::POST, DEPLOYMENTS, deployment("race")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let tasks: Vec<_> = (0..8)
        .map(|c| tokio::spawn(patcher(app.clone(), c, Duration::from_secs(10))))
        .collect();
    let mut keys_written = Vec::new();
    let mut last_scales = Vec::new();
    for t in tasks {
        let (written, replicas, failures) = t.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        keys_written.extend(written);
        last_scales.extend(replicas);
    }
    let d = get(&app, &format!("{DEPLOYMENTS}/race")).await.body;
    eprintln!(
        "{} label and annotation patches and {} scalers, no conflict",
        keys_written.len(),
        last_scales.len()
    );
    let missing: Vec<&String> = keys_written
        .iter()
        .filter(|k| {
            let field = if k.starts_with('l') {
                "labels"
            } else {
                "annotations"
            };
            d["metadata"][field].get(k.as_str()).is_none()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} patches lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert!(
        keys_written.len() > 100,
        "only {} patches in 10 s",
        keys_written.len()
    );
    // The last scale to land is one of the scalers' last writes.
    assert!(
        last_scales.contains(&d["spec"]["replicas"].as_i64().unwrap()),
        "{last_scales:?} vs {}",
        d["spec"]["replicas"]
    );
}

/// A tiny HTTP server on a free loopback port answering `METHOD PATH` and the body it got.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let line = format!("{} {}", req.method(), req.uri());
                        let auth = req.headers().contains_key("authorization");
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let text =
                            format!("{line} auth={auth} body={}", String::from_utf8_lossy(&body));
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(201)
                                .header("x-upstream", "yes")
                                .body(http_body_util::Full::new(bytes::Bytes::from(text)))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    port
}

async fn raw(
    app: &Router,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", "Bearer secret")
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn pods_and_services_proxy_subresources_reach_the_workload() {
    let (app, _) = app().await;
    let port = echo_server().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "oci://x/y:1"}]}});
    let created = send(&app, Method::POST, pods, pod).await;
    let mut with_ip = created.body.clone();
    with_ip["status"]["podIP"] = json!("127.0.0.1");
    let r = send(&app, Method::PUT, &format!("{pods}/web/status"), with_ip).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let (status, headers, text) = raw(
        &app,
        Method::POST,
        &format!("{pods}/web:{port}/proxy/hello/?x=1"),
        "hi",
    )
    .await;
    assert_eq!(status.as_u16(), 201, "{text}");
    assert_eq!(headers["x-upstream"], "yes");
    // The path after `proxy` (trailing slash kept) and the query go upstream; the client's
    // credentials do not.
    assert_eq!(text, "POST /hello/?x=1 auth=false body=hi");

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": port}]}});
    let r = send(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/services",
        svc,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // No endpoints yet: 503, as kube-apiserver answers.
    let (status, _, text) = raw(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/services/web:http/proxy/",
        "",
    )
    .await;
    assert_eq!(status.as_u16(), 503, "{text}");
    assert!(
        text.contains("no endpoints available for service \\\"web\\\""),
        "{text}"
    );
    let eps = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": port}]}]});
    send(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/endpoints",
        eps,
    )
    .await;
    // A named port must be named (or numbered); without one, only an unnamed port matches.
    for id in ["web:http", "web:80", "http:web:http"] {
        let (status, _, text) = raw(
            &app,
            Method::GET,
            &format!("/api/v1/namespaces/default/services/{id}/proxy/x"),
            "",
        )
        .await;
        assert_eq!(status.as_u16(), 201, "{id}: {text}");
        assert_eq!(text, "GET /x auth=false body=", "{id}");
    }
    let (status, _, text) = raw(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/services/web:81/proxy/",
        "",
    )
    .await;
    assert_eq!(status.as_u16(), 503, "{text}");
    assert!(
        text.contains("no service port 81 found for service \\\"web\\\""),
        "{text}"
    );
    let (status, _, _) = raw(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/services/nope/proxy/",
        "",
    )
    .await;
    assert_eq!(status.as_u16(), 404);
}

/// Fields the OpenAPI schema (k8s-openapi's, generated from Kubernetes') marks required that
/// `v` lacks, wherever `v` has the object that requires them.
fn missing_required(root: &Value, schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or("");
            &root["$defs"][name]
        }
        None => schema,
    };
    match v {
        Value::Object(m) => {
            for req in schema["required"].as_array().into_iter().flatten() {
                let req = req.as_str().unwrap_or("");
                if !m.contains_key(req) {
                    out.push(format!("{path}.{req}"));
                }
            }
            for (k, child) in m {
                if let Some(sub) = schema["properties"].get(k) {
                    missing_required(root, sub, child, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                missing_required(root, &schema["items"], item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn schema_of<T: schemars::JsonSchema>() -> Value {
    schemars::SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value()
}

#[tokio::test]
async fn every_served_kind_comes_back_with_the_fields_its_schema_requires() {
    use k8s_openapi::api::{apps, batch, coordination, core, discovery, events, networking, node};
    let (app, _) = app().await;
    let tmpl = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "oci://x/y:1"}]}});
    let sel = json!({"matchLabels": {"a": "b"}});
    let ns = "/api/v1/namespaces/default";
    let g = |group: &str| format!("/apis/{group}/namespaces/default");
    let cases: Vec<(String, Value, Value)> = vec![
        (
            format!("{ns}/configmaps"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            schema_of::<core::v1::ConfigMap>(),
        ),
        (
            format!("{ns}/secrets"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
            schema_of::<core::v1::Secret>(),
        ),
        (
            format!("{ns}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}}),
            schema_of::<core::v1::ServiceAccount>(),
        ),
        (
            format!("{ns}/podtemplates"),
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": tmpl}),
            schema_of::<core::v1::PodTemplate>(),
        ),
        (
            g("apps/v1") + "/controllerrevisions",
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "x"}, "revision": 1, "data": {"spec": {}}}),
            schema_of::<apps::v1::ControllerRevision>(),
        ),
        (
            "/api/v1/namespaces".into(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
            schema_of::<core::v1::Namespace>(),
        ),
        (
            "/api/v1/nodes".into(),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "x"}}),
            schema_of::<core::v1::Node>(),
        ),
        (
            format!("{ns}/pods"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": tmpl["spec"]}),
            schema_of::<core::v1::Pod>(),
        ),
        (
            format!("{ns}/services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}}),
            schema_of::<core::v1::Service>(),
        ),
        (
            format!("{ns}/endpoints"),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "x"}}),
            schema_of::<core::v1::Endpoints>(),
        ),
        (
            format!("{ns}/events"),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x"}, "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"}}),
            schema_of::<core::v1::Event>(),
        ),
        (
            g("apps/v1") + "/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"selector": sel, "template": tmpl}}),
            schema_of::<apps::v1::Deployment>(),
        ),
        (
            g("apps/v1") + "/replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "x"}, "spec": {"selector": sel, "template": tmpl}}),
            schema_of::<apps::v1::ReplicaSet>(),
        ),
        (
            g("apps/v1") + "/statefulsets",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "x"}, "spec": {"selector": sel, "template": tmpl, "serviceName": "x"}}),
            schema_of::<apps::v1::StatefulSet>(),
        ),
        (
            g("apps/v1") + "/daemonsets",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}, "spec": {"selector": sel, "template": tmpl}}),
            schema_of::<apps::v1::DaemonSet>(),
        ),
        (
            g("batch/v1") + "/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": tmpl["spec"]["containers"]}}}}),
            schema_of::<batch::v1::Job>(),
        ),
        (
            g("batch/v1") + "/cronjobs",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": tmpl["spec"]["containers"]}}}}}}),
            schema_of::<batch::v1::CronJob>(),
        ),
        (
            g("coordination.k8s.io/v1") + "/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "x"}}),
            schema_of::<coordination::v1::Lease>(),
        ),
        (
            g("discovery.k8s.io/v1") + "/endpointslices",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "x"}, "addressType": "IPv4", "endpoints": []}),
            schema_of::<discovery::v1::EndpointSlice>(),
        ),
        (
            g("networking.k8s.io/v1") + "/networkpolicies",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "x"}, "spec": {"podSelector": {}}}),
            schema_of::<networking::v1::NetworkPolicy>(),
        ),
        (
            g("policy/v1") + "/poddisruptionbudgets",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"}, "spec": {"minAvailable": 1, "selector": sel}}),
            schema_of::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(),
        ),
        (
            "/apis/scheduling.k8s.io/v1/priorityclasses".into(),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "x"}, "value": 5}),
            schema_of::<k8s_openapi::api::scheduling::v1::PriorityClass>(),
        ),
        (
            "/apis/node.k8s.io/v1/runtimeclasses".into(),
            json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "x"}, "handler": "x"}),
            schema_of::<node::v1::RuntimeClass>(),
        ),
        (
            g("events.k8s.io/v1") + "/events",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "y"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "c", "reportingInstance": "i", "action": "a", "reason": "r", "type": "Normal"}),
            schema_of::<events::v1::Event>(),
        ),
    ];
    // The walker finds what Shoal used to answer: `"status": {}` on a new ReplicaSet.
    let rs = schema_of::<apps::v1::ReplicaSet>();
    let mut out = Vec::new();
    missing_required(
        &rs,
        &rs,
        &json!({"metadata": {}, "status": {}}),
        "ReplicaSet",
        &mut out,
    );
    assert_eq!(out, ["ReplicaSet.status.replicas"]);
    let mut problems = Vec::new();
    for (path, body, schema) in &cases {
        let created = send(&app, Method::POST, path, body.clone()).await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{path}: {}",
            created.body
        );
        let name = created.body["metadata"]["name"].as_str().unwrap();
        for (how, v) in [
            ("create", created.body.clone()),
            ("get", get(&app, &format!("{path}/{name}")).await.body),
        ] {
            let mut out = Vec::new();
            missing_required(schema, schema, &v, body["kind"].as_str().unwrap(), &mut out);
            problems.extend(out.into_iter().map(|m| format!("{how} {path}: {m}")));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
