//! RBAC's review APIs about someone else (SubjectAccessReview, LocalSubjectAccessReview) and
//! the reconciling of the default roles across restarts.

use super::*;

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

fn access(kind: &str, user: &str, ns: &str, verb: &str, resource: &str) -> Value {
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": {
        "user": user, "groups": ["system:authenticated"],
        "resourceAttributes": {"namespace": ns, "verb": verb, "resource": resource}}})
}

#[tokio::test]
async fn reviews_answer_for_another_user_as_the_server_would() {
    let (app, _) = app().await;
    let b = json!({"metadata": {"name": "bob-view", "namespace": "default"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "bob"}]});
    let r = send(
        &app,
        Method::POST,
        &format!("{RBAC}/namespaces/default/rolebindings"),
        b,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let r = send(
        &app,
        Method::POST,
        sar,
        access("SubjectAccessReview", "bob", "default", "list", "pods"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["status"]["allowed"], true);
    assert_eq!(
        r.body["status"]["reason"],
        r#"RBAC: allowed by RoleBinding "bob-view/default" of ClusterRole "view" to User "bob""#
    );
    let r = send(
        &app,
        Method::POST,
        sar,
        access("SubjectAccessReview", "bob", "default", "get", "secrets"),
    )
    .await;
    assert_eq!(r.body["status"]["allowed"], false);
    let r = send(
        &app,
        Method::POST,
        sar,
        access("SubjectAccessReview", "bob", "kube-system", "list", "pods"),
    )
    .await;
    assert_eq!(r.body["status"]["allowed"], false);
    // Nobody asked about: Invalid, naming the field.
    let nobody = json!({"spec": {"resourceAttributes": {"verb": "get"}}});
    let r = send(&app, Method::POST, sar, nobody).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(cause_fields(&r), ["spec.user"]);
    // A local review is about its own namespace only.
    let local = "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews";
    let r = send(
        &app,
        Method::POST,
        local,
        access(
            "LocalSubjectAccessReview",
            "bob",
            "default",
            "watch",
            "pods",
        ),
    )
    .await;
    assert_eq!(r.body["status"]["allowed"], true, "{}", r.body);
    let r = send(
        &app,
        Method::POST,
        local,
        access("LocalSubjectAccessReview", "bob", "other", "watch", "pods"),
    )
    .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(cause_fields(&r), ["spec.resourceAttributes.namespace"]);
}

#[tokio::test]
async fn default_roles_get_back_what_they_lost_unless_told_not_to() {
    let store = Arc::new(shoal_store::memory::MemoryStore::new());
    let start = || async {
        let server = shoal_apiserver::ApiServer::start(store.clone(), Default::default())
            .await
            .expect("the API server starts");
        shoal_apiserver::router(server)
    };
    let app = start().await;
    let role = |name: &str| format!("{RBAC}/clusterroles/{name}");
    for (name, autoupdate) in [("system:basic-user", "true"), ("system:discovery", "false")] {
        let mut r = send(&app, Method::GET, &role(name), Value::Null).await.body;
        r["rules"] = json!([]);
        r["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] =
            json!(autoupdate);
        let put = send(&app, Method::PUT, &role(name), r).await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    }
    drop(app);
    let app = start().await;
    let rules = |v: &Value| v["rules"].as_array().map_or(0, Vec::len);
    let basic = send(&app, Method::GET, &role("system:basic-user"), Value::Null)
        .await
        .body;
    assert!(rules(&basic) > 0, "restored: {basic}");
    let discovery = send(&app, Method::GET, &role("system:discovery"), Value::Null)
        .await
        .body;
    assert_eq!(rules(&discovery), 0, "left alone: {discovery}");
}
