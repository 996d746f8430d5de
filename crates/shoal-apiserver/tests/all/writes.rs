//! Writes: create, read, update, delete with their status codes and `Status` bodies;
//! optimistic concurrency; validation; dry run; field validation; patches; server-side apply.

use crate::{CONFIGMAPS, app, assert_status, configmap, send, send_as};
use http::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn create_answers_201_get_200_and_a_missing_object_404() {
    let (app, _) = app().await;
    let r = send(
        &app,
        Method::POST,
        CONFIGMAPS,
        configmap("a", json!({"k": "v"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(
        r.body["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert!(r.body["metadata"]["resourceVersion"].as_str().is_some());
    assert_eq!(r.body["metadata"]["namespace"], "default");
    let r = send(&app, Method::GET, &format!("{CONFIGMAPS}/a"), Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["data"]["k"], "v");
    let r = send(
        &app,
        Method::GET,
        &format!("{CONFIGMAPS}/nope"),
        Value::Null,
    )
    .await;
    assert_status(&r, 404, "NotFound");
    assert_eq!(r.body["message"], "configmaps \"nope\" not found");
    assert_eq!(r.body["details"]["name"], "nope");
    assert_eq!(r.body["details"]["kind"], "configmaps");
}

#[tokio::test]
async fn a_second_create_is_409_already_exists_and_a_stale_update_409_conflict() {
    let (app, _) = app().await;
    let created = send(&app, Method::POST, CONFIGMAPS, configmap("a", json!({}))).await;
    let r = send(&app, Method::POST, CONFIGMAPS, configmap("a", json!({}))).await;
    assert_status(&r, 409, "AlreadyExists");
    assert_eq!(r.body["message"], "configmaps \"a\" already exists");

    let mut fresh = created.body.clone();
    fresh["data"] = json!({"x": "1"});
    let r = send(&app, Method::PUT, &format!("{CONFIGMAPS}/a"), fresh.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The same resourceVersion again is stale now.
    fresh["data"] = json!({"x": "2"});
    let r = send(&app, Method::PUT, &format!("{CONFIGMAPS}/a"), fresh).await;
    assert_status(&r, 409, "Conflict");
    assert_eq!(
        r.body["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn an_invalid_object_is_422_naming_each_field() {
    let (app, _) = app().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
        "spec": {"containers": [{"name": "c"}]}});
    let r = send(&app, Method::POST, "/api/v1/namespaces/default/pods", pod).await;
    assert_status(&r, 422, "Invalid");
    let fields: Vec<&str> = r.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(fields, ["metadata.name", "spec.containers[0].image"]);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Pod \"Bad_Name\" is invalid: ["),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_dry_run_answers_as_a_write_and_stores_nothing() {
    let (app, _) = app().await;
    let r = send(
        &app,
        Method::POST,
        &format!("{CONFIGMAPS}?dryRun=All"),
        configmap("dry", json!({"k": "v"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["metadata"]["name"], "dry");
    let r = send(&app, Method::GET, &format!("{CONFIGMAPS}/dry"), Value::Null).await;
    assert_status(&r, 404, "NotFound");
}

#[tokio::test]
async fn unknown_fields_are_refused_warned_about_or_ignored_as_asked() {
    let (app, _) = app().await;
    let mut cm = configmap("f", json!({}));
    cm["spec"] = json!({"oops": 1});
    let r = send(
        &app,
        Method::POST,
        &format!("{CONFIGMAPS}?fieldValidation=Strict"),
        cm.clone(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    assert_eq!(
        r.body["message"],
        "strict decoding error: unknown field \"spec\""
    );
    let r = send(
        &app,
        Method::POST,
        &format!("{CONFIGMAPS}?fieldValidation=Warn"),
        cm.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let warning = r.headers.get("warning").unwrap().to_str().unwrap();
    assert_eq!(warning, "299 - \"unknown field \\\"spec\\\"\"");
    let mut again = cm;
    again["metadata"]["name"] = json!("g");
    let r = send(
        &app,
        Method::POST,
        &format!("{CONFIGMAPS}?fieldValidation=Ignore"),
        again,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.headers.get("warning").is_none());
}

#[tokio::test]
async fn json_merge_and_strategic_merge_patches_apply() {
    let (app, _) = app().await;
    send(
        &app,
        Method::POST,
        CONFIGMAPS,
        configmap("p", json!({"a": "1", "b": "2"})),
    )
    .await;
    let path = format!("{CONFIGMAPS}/p");
    let r = send_as(
        &app,
        Method::PATCH,
        &path,
        "application/json-patch+json",
        r#"[{"op": "replace", "path": "/data/a", "value": "10"}, {"op": "remove", "path": "/data/b"}]"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"a": "10"}));
    let r = send_as(
        &app,
        Method::PATCH,
        &path,
        "application/merge-patch+json",
        r#"{"data": {"c": "3", "a": null}}"#,
    )
    .await;
    assert_eq!(r.body["data"], json!({"c": "3"}));

    // Strategic merge: containers are merged by name, not replaced.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let r = send(&app, Method::POST, deps, dep).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{deps}/d"),
        "application/strategic-merge-patch+json",
        r#"{"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let images: Vec<&str> = r.body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["a:1", "b:2"]);
    assert_eq!(r.body["metadata"]["generation"], 2);

    // A patch without a resourceVersion is not a precondition; one with a stale one is.
    let r = send_as(
        &app,
        Method::PATCH,
        &path,
        "application/merge-patch+json",
        r#"{"metadata": {"resourceVersion": "1"}, "data": {"d": "4"}}"#,
    )
    .await;
    assert_status(&r, 409, "Conflict");
    let r = send_as(&app, Method::PATCH, &path, "text/plain", "{}").await;
    assert_status(&r, 415, "UnsupportedMediaType");
}

#[tokio::test]
async fn server_side_apply_merges_managers_and_reports_conflicts() {
    let (app, _) = app().await;
    let path = format!("{CONFIGMAPS}/ssa");
    let apply = async |manager: &str, data: &str, force: bool| {
        let body =
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ssa}}\ndata: {data}\n");
        send_as(
            &app,
            Method::PATCH,
            &format!("{path}?fieldManager={manager}&force={force}"),
            "application/apply-patch+yaml",
            body,
        )
        .await
    };
    let r = apply("alice", "{a: '1'}", false).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = apply("bob", "{b: '2'}", false).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"], json!({"a": "1", "b": "2"}));
    let r = apply("bob", "{a: 'x'}", false).await;
    assert_status(&r, 409, "Conflict");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"alice\""),
        "{}",
        r.body
    );
    assert_eq!(r.body["details"]["causes"][0]["field"], ".data.a");
    let r = apply("bob", "{a: 'x'}", true).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Bob took `a` over and no longer applies `b`: it is his to remove.
    assert_eq!(r.body["data"], json!({"a": "x"}));
    let r = send_as(
        &app,
        Method::PATCH,
        &path,
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\n",
    )
    .await;
    assert_status(&r, 400, "BadRequest");
}

#[tokio::test]
async fn deletes_answer_a_success_status_and_preconditions_are_checked() {
    let (app, _) = app().await;
    let created = send(&app, Method::POST, CONFIGMAPS, configmap("d", json!({}))).await;
    let r = send(
        &app,
        Method::DELETE,
        &format!("{CONFIGMAPS}/d"),
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "other"}}),
    )
    .await;
    assert_status(&r, 409, "Conflict");
    let uid = created.body["metadata"]["uid"].clone();
    let r = send(
        &app,
        Method::DELETE,
        &format!("{CONFIGMAPS}/d"),
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "Success");
    assert_eq!(r.body["details"]["name"], "d");
    let r = send(
        &app,
        Method::DELETE,
        &format!("{CONFIGMAPS}/d"),
        Value::Null,
    )
    .await;
    assert_status(&r, 404, "NotFound");
    // A namespace is only marked Terminating: its finalizer waits for its content.
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}});
    send(&app, Method::POST, "/api/v1/namespaces", ns).await;
    let r = send(&app, Method::DELETE, "/api/v1/namespaces/gone", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"]["phase"], "Terminating");
    let r = send(
        &app,
        Method::POST,
        "/api/v1/namespaces/gone/configmaps",
        configmap("late", json!({})),
    )
    .await;
    assert_status(&r, 403, "Forbidden");
}
