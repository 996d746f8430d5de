//! The API server's HTTP semantics, in process: the router driven with
//! `tower::ServiceExt::oneshot` over the memory store, no sockets and no processes. Status
//! codes and `Status` bodies, paging, watches and bookmarks, dry run, field validation, the
//! three patch types and server-side apply conflicts. (What only kubectl shows is tested end
//! to end in `tests/`.) `wire.rs` pins the bytes and fields kube-apiserver answers with.

mod crd;
mod encryption;
mod kinds;
mod paging_and_watch;
mod rbac;
mod services;
mod wire;
mod writes;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

/// An API server on a fresh memory store, as a router.
pub async fn app() -> (Router, Arc<shoal_apiserver::ApiServer>) {
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let server = shoal_apiserver::ApiServer::start(store, Default::default())
        .await
        .expect("the API server starts");
    (shoal_apiserver::router(server.clone()), server)
}

/// A response: status, headers and body as JSON (`Null` if it is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Value,
    /// The body's bytes.
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.raw).expect("a UTF-8 body")
    }
}

/// Sends `method path` with `body` (JSON unless `content_type` says otherwise).
pub async fn send_as(
    app: &Router,
    method: Method,
    path: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.into())
        .expect("a valid request");
    let resp = app.clone().oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        raw: bytes.to_vec(),
    }
}

/// GETs `path` asking for `accept`; the body as JSON.
pub async fn get_accepting(app: &Router, path: &str, accept: &str) -> Value {
    let req = Request::get(path)
        .header("accept", accept)
        .body(Body::empty())
        .expect("a valid request");
    let resp = app.clone().oneshot(req).await.expect("the router answers");
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

pub async fn send(app: &Router, method: Method, path: &str, body: Value) -> Reply {
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    send_as(app, method, path, "application/json", body).await
}

pub const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

pub fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// The fields an `Invalid` reply's causes name, in order.
pub fn cause_fields(reply: &Reply) -> Vec<&str> {
    reply.body["details"]["causes"]
        .as_array()
        .map(|causes| causes.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default()
}

/// Asserts `reply` is a Kubernetes `Status` failure with `code` and `reason`.
pub fn assert_status(reply: &Reply, code: u16, reason: &str) {
    assert_eq!(reply.status.as_u16(), code, "{}", reply.body);
    assert_eq!(reply.body["kind"], "Status", "{}", reply.body);
    assert_eq!(reply.body["status"], "Failure", "{}", reply.body);
    assert_eq!(reply.body["code"], code, "{}", reply.body);
    assert_eq!(reply.body["reason"], reason, "{}", reply.body);
}
