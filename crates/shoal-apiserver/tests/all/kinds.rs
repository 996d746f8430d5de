//! Kinds and built-in admission as kube-apiserver has them: the system namespaces cannot be
//! deleted; `resourceVersion: "0"` is an unconditional update; PriorityClasses and Priority
//! admission.

use crate::{CONFIGMAPS, app, assert_status, cause_fields, configmap, send, send_as};
use http::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn system_namespaces_may_not_be_deleted_others_may() {
    let (app, _) = app().await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let r = send(
            &app,
            Method::DELETE,
            &format!("/api/v1/namespaces/{ns}"),
            Value::Null,
        )
        .await;
        assert_eq!(
            r.text(),
            format!(
                "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"namespaces \\\"{ns}\\\" is forbidden: this namespace may not be deleted\",\"reason\":\"Forbidden\",\"details\":{{\"name\":\"{ns}\",\"kind\":\"namespaces\"}},\"code\":403}}\n"
            )
        );
    }
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mine"}});
    send(&app, Method::POST, "/api/v1/namespaces", ns).await;
    let r = send(&app, Method::DELETE, "/api/v1/namespaces/mine", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn resource_version_0_is_an_unconditional_update() {
    let (app, _) = app().await;
    send(
        &app,
        Method::POST,
        CONFIGMAPS,
        configmap("u", json!({"a": "1"})),
    )
    .await;
    let mut cm = configmap("u", json!({"a": "2"}));
    cm["metadata"]["resourceVersion"] = json!("0");
    let r = send(&app, Method::PUT, &format!("{CONFIGMAPS}/u"), cm).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["a"], "2");
}

const CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn class(name: &str, value: i64, default: bool) -> Value {
    json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
        "value": value, "globalDefault": default})
}

fn pod(name: &str, class: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "oci://x/y:1"}]}});
    if let Some(c) = class {
        p["spec"]["priorityClassName"] = json!(c);
    }
    p
}

#[tokio::test]
async fn priority_classes_set_pod_priorities_as_the_priority_admission_plugin_does() {
    let (app, _) = app().await;
    // The system classes exist from the start.
    let r = send(
        &app,
        Method::GET,
        &format!("{CLASSES}/system-node-critical"),
        Value::Null,
    )
    .await;
    assert_eq!(r.body["value"], 2_000_001_000);
    assert_eq!(r.body["preemptionPolicy"], "PreemptLowerPriority");

    // No class anywhere: priority 0.
    let r = send(&app, Method::POST, PODS, pod("plain", None)).await;
    assert_eq!(r.body["spec"]["priority"], 0, "{}", r.body);
    assert!(r.body["spec"].get("priorityClassName").is_none());

    let r = send(&app, Method::POST, CLASSES, class("high", 1000, true)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Admission reads classes from the watch cache, as Kubernetes' plugin reads its informer:
    // a class named by a pod is looked up again once the cache has caught up, but a new
    // global default applies once the cache has it (a consistent read makes sure here).
    send(&app, Method::GET, &format!("{CLASSES}/high"), Value::Null).await;
    let r = send(&app, Method::POST, PODS, pod("defaulted", None)).await;
    assert_eq!(r.body["spec"]["priority"], 1000);
    assert_eq!(r.body["spec"]["priorityClassName"], "high");
    let r = send(
        &app,
        Method::POST,
        PODS,
        pod("critical", Some("system-cluster-critical")),
    )
    .await;
    assert_eq!(r.body["spec"]["priority"], 2_000_000_000);

    let r = send(&app, Method::POST, PODS, pod("lost", Some("nope"))).await;
    assert_status(&r, 403, "Forbidden");
    assert_eq!(
        r.body["message"],
        "pods \"lost\" is forbidden: no PriorityClass with name nope was found"
    );
    let mut wrong = pod("wrong", Some("high"));
    wrong["spec"]["priority"] = json!(5);
    let r = send(&app, Method::POST, PODS, wrong).await;
    assert_status(&r, 403, "Forbidden");

    // One global default; user values up to 10^9; no `system-` names; value is immutable.
    let r = send(&app, Method::POST, CLASSES, class("other", 10, true)).await;
    assert_status(&r, 403, "Forbidden");
    assert_eq!(
        r.body["message"],
        "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass high is already marked as default. Only one default can exist"
    );
    let r = send(
        &app,
        Method::POST,
        CLASSES,
        class("huge", 1_000_000_001, false),
    )
    .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.body["details"]["causes"][0]["field"], "value");
    let r = send(&app, Method::POST, CLASSES, class("system-mine", 5, false)).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.body["details"]["causes"][0]["field"], "metadata.name");
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{CLASSES}/high"),
        "application/merge-patch+json",
        json!({"value": 7}).to_string(),
    )
    .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.body["details"]["causes"][0]["message"],
        "Forbidden: may not be changed in an update."
    );
}

#[tokio::test]
async fn an_eviction_spends_the_disruption_budget_and_is_refused_with_429_when_none_is_left() {
    let (app, _) = app().await;
    let mut p = pod("web-1", None);
    p["metadata"]["labels"] = json!({"app": "web"});
    let created = send(&app, Method::POST, PODS, p).await;
    let mut ready = created.body.clone();
    ready["status"]["phase"] = json!("Running");
    ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    let r = send(&app, Method::PUT, &format!("{PODS}/web-1/status"), ready).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
    let r = send(&app, Method::POST, pdbs, pdb).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body["status"],
        json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0})
    );
    // What the disruption controller would write: one healthy pod, one needed.
    let mut st = r.body.clone();
    st["status"] = json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1,
        "desiredHealthy": 1, "expectedPods": 1});
    let r = send(&app, Method::PUT, &format!("{pdbs}/web/status"), st.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let eviction =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-1"}});
    let evict = format!("{PODS}/web-1/eviction");
    let r = send(&app, Method::POST, &evict, eviction.clone()).await;
    assert_eq!(
        r.text(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Cannot evict pod as it would violate the pod's disruption budget.\",\"reason\":\"TooManyRequests\",\"details\":{\"causes\":[{\"reason\":\"DisruptionBudget\",\"message\":\"The disruption budget web needs 1 healthy pods and has 1 currently\"}]},\"code\":429}\n"
    );
    // One disruption allowed: the eviction spends it and the pod goes.
    st["status"]["disruptionsAllowed"] = json!(1);
    st["status"]["currentHealthy"] = json!(2);
    st["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let r = send(&app, Method::PUT, &format!("{pdbs}/web/status"), st).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(&app, Method::POST, &evict, eviction).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let after = send(&app, Method::GET, &format!("{pdbs}/web"), Value::Null).await;
    assert_eq!(after.body["status"]["disruptionsAllowed"], 0);
    assert!(
        after.body["status"]["disruptedPods"].get("web-1").is_some(),
        "{}",
        after.body
    );
    let gone = send(&app, Method::GET, &format!("{PODS}/web-1"), Value::Null).await;
    assert!(
        gone.status == StatusCode::NOT_FOUND
            || gone.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        gone.body
    );
}

#[tokio::test]
async fn pod_templates_are_defaulted_and_controller_revisions_keep_their_data() {
    let (app, _) = app().await;
    let t = json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}});
    let r = send(
        &app,
        Method::POST,
        "/api/v1/namespaces/default/podtemplates",
        t,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        r.body["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    let revs = "/apis/apps/v1/namespaces/default/controllerrevisions";
    let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "web-1"},
        "revision": 1, "data": {"spec": {"template": {"$patch": "replace"}}}});
    let r = send(&app, Method::POST, revs, cr.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{revs}/web-1"),
        "application/merge-patch+json",
        json!({"data": {"spec": {"template": null}}}).to_string(),
    )
    .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.body["details"]["causes"][0]["field"], "data");
    let mut no_rev = cr;
    no_rev["metadata"]["name"] = json!("web-2");
    no_rev.as_object_mut().unwrap().remove("revision");
    let r = send(&app, Method::POST, revs, no_rev).await;
    assert_status(&r, 422, "Invalid");
}

#[tokio::test]
async fn replication_controllers_default_their_selector_and_scale() {
    let (app, _) = app().await;
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"},
        "spec": {"template": {"metadata": {"labels": {"app": "r"}},
            "spec": {"containers": [{"name": "c", "image": "oci://x/y:1"}]}}}});
    let r = send(&app, Method::POST, rcs, rc).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["spec"]["selector"], json!({"app": "r"}));
    assert_eq!(r.body["spec"]["replicas"], 1);
    assert_eq!(r.body["metadata"]["labels"], json!({"app": "r"}));
    assert_eq!(r.body["status"]["replicas"], 0);
    let scale = send(&app, Method::GET, &format!("{rcs}/r/scale"), Value::Null).await;
    assert_eq!(scale.body["status"]["selector"], "app=r", "{}", scale.body);
    let bad = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "b"},
        "spec": {"selector": {"app": "other"}, "template": {"metadata": {"labels": {"app": "b"}},
            "spec": {"containers": [{"name": "c", "image": "oci://x/y:1"}]}}}});
    let r = send(&app, Method::POST, rcs, bad).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );
}

#[tokio::test]
async fn bodies_of_another_kind_or_wrongly_typed_read_as_kube_apiserver_words_them() {
    let (app, _) = app().await;
    // A pod posted to the namespaces endpoint (Kubernetes' own kubectl test greps this).
    let r = send(&app, Method::POST, "/api/v1/namespaces", pod("p", None)).await;
    assert_status(&r, 400, "BadRequest");
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("the object provided is unrecognized (must be of type Namespace): "),
        "{msg}"
    );
    // A strategic merge patch that gives a field the wrong type.
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "oci://x/y:1"}]}}}});
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    send(&app, Method::POST, deployments, d).await;
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{deployments}/d"),
        "application/strategic-merge-patch+json",
        r#"{"spec":{"replicas":"three"}}"#,
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    assert_eq!(
        r.body["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    );
}

#[tokio::test]
async fn openapi_v2_is_served_as_kubectl_asks_for_it() {
    let (app, _) = app().await;
    let json = send(&app, Method::GET, "/openapi/v2", Value::Null).await;
    assert_eq!(json.body["swagger"], "2.0");
    let pod = &json.body["definitions"]["io.k8s.api.core.v1.Pod"];
    assert!(
        pod["properties"]["spec"]
            .to_string()
            .contains("#/definitions/io.k8s.api.core.v1.PodSpec"),
        "{pod}"
    );
    let req = http::Request::get("/openapi/v2")
        .header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    // Field 1 (swagger) is "2.0".
    assert_eq!(&bytes[..5], b"\x0a\x032.0");
}

#[tokio::test]
async fn claims_get_the_default_class_and_volumes_are_checked() {
    let (app, _) = app().await;
    let sc = send(
        &app,
        Method::GET,
        "/apis/storage.k8s.io/v1/storageclasses/local-path",
        Value::Null,
    )
    .await;
    assert_eq!(
        sc.body["volumeBindingMode"], "WaitForFirstConsumer",
        "{}",
        sc.body
    );
    let claims = "/api/v1/namespaces/default/persistentvolumeclaims";
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let r = send(&app, Method::POST, claims, claim).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["spec"]["storageClassName"], "local-path");
    assert_eq!(r.body["spec"]["volumeMode"], "Filesystem");
    assert_eq!(r.body["status"]["phase"], "Pending");
    let bad = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "b"},
        "spec": {"accessModes": ["Sometimes"]}});
    let r = send(&app, Method::POST, claims, bad).await;
    assert_status(&r, 422, "Invalid");
    let fields = cause_fields(&r);
    assert_eq!(fields, ["spec.accessModes[0]", "spec.resources[storage]"]);
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{claims}/c"),
        "application/merge-patch+json",
        r#"{"spec":{"accessModes":["ReadOnlyMany"]}}"#,
    )
    .await;
    assert_status(&r, 422, "Invalid");
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/x"}}});
    let r = send(&app, Method::POST, "/api/v1/persistentvolumes", pv).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.nodeAffinity");
}
