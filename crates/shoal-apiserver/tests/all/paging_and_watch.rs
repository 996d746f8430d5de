//! Reads: paging with `limit` and `continue` over a consistent snapshot; watches with
//! bookmarks; a watch from a compacted revision is `410 Gone`.

use crate::{CONFIGMAPS, app, assert_status, configmap, send};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

#[tokio::test]
async fn lists_page_through_a_snapshot_with_limit_and_continue() {
    let (app, _) = app().await;
    for i in 0..5 {
        send(
            &app,
            Method::POST,
            CONFIGMAPS,
            configmap(&format!("c{i}"), json!({})),
        )
        .await;
    }
    let first = send(
        &app,
        Method::GET,
        &format!("{CONFIGMAPS}?limit=2"),
        Value::Null,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["kind"], "ConfigMapList");
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["metadata"]["remainingItemCount"], 3);
    let snapshot_rv = first.body["metadata"]["resourceVersion"].clone();
    // A write between pages is not seen by the pages that follow.
    send(&app, Method::POST, CONFIGMAPS, configmap("late", json!({}))).await;
    let mut names: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        names.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        let Some(token) = page.body["metadata"]["continue"]
            .as_str()
            .filter(|t| !t.is_empty())
        else {
            break;
        };
        page = send(
            &app,
            Method::GET,
            &format!("{CONFIGMAPS}?limit=2&continue={token}"),
            Value::Null,
        )
        .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.body["metadata"]["resourceVersion"], snapshot_rv);
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    let r = send(
        &app,
        Method::GET,
        &format!("{CONFIGMAPS}?limit=2&continue=garbage"),
        Value::Null,
    )
    .await;
    assert_status(&r, 400, "BadRequest");
}

/// Reads watch lines from `body` until `f` returns true for one (or 10 s pass).
pub(crate) async fn read_until(
    body: &mut axum::body::Body,
    mut f: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the watch answers in time")
            .expect("the watch is open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let ev: Value = serde_json::from_slice(&line).expect("one JSON event per line");
            let done = f(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }
}

async fn watch(app: &axum::Router, query: &str) -> axum::body::Body {
    let req = Request::builder()
        .uri(format!("{CONFIGMAPS}?watch=true&{query}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

#[tokio::test]
async fn a_watch_sends_changes_and_bookmarks_its_progress_when_asked() {
    let (app, _) = app().await;
    let created = send(&app, Method::POST, CONFIGMAPS, configmap("w", json!({}))).await;
    let rv = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = watch(
        &app,
        &format!("resourceVersion={rv}&allowWatchBookmarks=true"),
    )
    .await;
    let mut cm = created.body.clone();
    cm["data"] = json!({"k": "v"});
    let r = send(&app, Method::PUT, &format!("{CONFIGMAPS}/w"), cm).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let events = read_until(&mut body, |e| e["type"] == "MODIFIED").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["object"]["data"]["k"], "v");
    // Writes elsewhere move the revision on; a bookmark tells the watcher it has seen all
    // of its resource up to there, so it can resume from it.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let s = send(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/secrets",
        secret,
    )
    .await;
    let events = read_until(&mut body, |e| e["type"] == "BOOKMARK").await;
    assert_eq!(events.len(), 1, "only the bookmark: {events:?}");
    let bookmark = &events[0]["object"];
    assert_eq!(bookmark["kind"], "ConfigMap");
    assert_eq!(
        bookmark["metadata"]["resourceVersion"],
        s.body["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_410_gone() {
    let (app, server) = app().await;
    for i in 0..3 {
        send(
            &app,
            Method::POST,
            CONFIGMAPS,
            configmap(&format!("c{i}"), json!({})),
        )
        .await;
    }
    let store = server.registry.store.clone();
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();
    let mut body = watch(&app, "resourceVersion=1").await;
    let events = read_until(&mut body, |e| e["type"] == "ERROR").await;
    let status = &events.last().unwrap()["object"];
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
}
