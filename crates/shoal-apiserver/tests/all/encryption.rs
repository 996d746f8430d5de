//! Encryption at rest: Secrets reach the store encrypted, read back in clear through the API,
//! and a key rotation re-encrypts them when they are replaced unchanged.

use crate::{send, send_as};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_apiserver::encryption::EncryptionConfig;
use shoal_store::{RangeRequest, Store};
use std::sync::Arc;

const K1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=";
const K2: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY=";

fn config(keys: &[(&str, &str)]) -> EncryptionConfig {
    let keys: String = keys
        .iter()
        .map(|(n, k)| format!("      - name: {n}\n        secret: {k}\n"))
        .collect();
    EncryptionConfig::parse(&format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n{keys}  - identity: {{}}\n"
    ))
    .unwrap()
}

async fn server(
    store: &Arc<shoal_store::memory::MemoryStore>,
    c: EncryptionConfig,
) -> axum::Router {
    let options = shoal_apiserver::Options {
        encryption: Some(c),
        ..Default::default()
    };
    let s = shoal_apiserver::ApiServer::start(store.clone(), options)
        .await
        .unwrap();
    shoal_apiserver::router(s)
}

async fn raw(store: &shoal_store::memory::MemoryStore) -> Vec<u8> {
    let r = store
        .range(RangeRequest::key("/registry/secrets/default/s"))
        .await
        .unwrap();
    r.kvs[0].value.to_vec()
}

#[tokio::test]
async fn secrets_are_stored_encrypted_and_rotate_on_replace() {
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let app = server(&store, config(&[("k1", K1)])).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "stringData": {"password": "correct-horse-battery"}});
    let r = send(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/secrets",
        secret,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let stored = raw(&store).await;
    assert!(stored.starts_with(b"k8s:enc:aescbc:v1:k1:"));
    let encoded = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "correct-horse-battery",
    );
    let text = String::from_utf8_lossy(&stored);
    assert!(!text.contains("correct-horse") && !text.contains(&encoded));
    // ConfigMaps are not covered: stored as they are.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
    send(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        cm,
    )
    .await;
    let r = store
        .range(RangeRequest::key("/registry/configmaps/default/c"))
        .await
        .unwrap();
    assert!(r.kvs[0].value.starts_with(b"{"));

    // A new first key: the old one still reads; replacing the Secret unchanged re-encrypts it.
    let app = server(&store, config(&[("k2", K2), ("k1", K1)])).await;
    let r = send(
        &app,
        Method::GET,
        "/api/v1/namespaces/default/secrets/s",
        Value::Null,
    )
    .await;
    assert_eq!(r.body["data"]["password"], encoded, "{}", r.body);
    let put = send_as(
        &app,
        Method::PUT,
        "/api/v1/namespaces/default/secrets/s",
        "application/json",
        r.body.to_string(),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert!(raw(&store).await.starts_with(b"k8s:enc:aescbc:v1:k2:"));
}
