//! CustomResourceDefinitions: a definition is served the moment it is created (discovery,
//! OpenAPI, routes); its objects are pruned, defaulted and validated by its structural schema,
//! printed with its columns, patched (JSON, merge, apply; strategic merge refused as
//! kube-apiserver refuses it), scaled, watched, served in every version, and removed with it.

use crate::paging_and_watch::read_until;
use crate::{app, assert_status, cause_fields, get_accepting, send, send_as};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

fn schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "string", "enum": ["small", "large"]},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
            "colour": {"type": "string", "default": "blue"},
            "selector": {"type": "string"},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        }},
        "status": {"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "phase": {"type": "string"},
        }},
    }})
}

fn widget_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
        "versions": [
            {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema()},
             "selectableFields": [{"jsonPath": ".spec.size"}],
             "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".spec.selector"}},
             "additionalPrinterColumns": [
                {"name": "Size", "type": "string", "jsonPath": ".spec.size"},
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]},
            {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": schema()}},
        ]}})
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

async fn define(app: &axum::Router) -> Value {
    let r = send(app, Method::POST, CRDS, widget_crd()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

#[tokio::test]
async fn a_definition_is_established_and_served_at_once() {
    let (app, _) = app().await;
    let crd = define(&app).await;
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    let established = conditions
        .iter()
        .find(|c| c["type"] == "Established")
        .unwrap();
    assert_eq!(established["status"], "True");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(
        crd["metadata"]["finalizers"],
        json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    // Discovery, legacy and aggregated; the preferred version is the GA one.
    let g = send(&app, Method::GET, "/apis/example.com", Value::Null).await;
    assert_eq!(g.body["preferredVersion"]["version"], "v1");
    assert_eq!(g.body["versions"].as_array().unwrap().len(), 2);
    let list = send(&app, Method::GET, "/apis/example.com/v1", Value::Null).await;
    let names: Vec<&str> = list.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["widgets", "widgets/status", "widgets/scale"]);
    assert_eq!(list.body["resources"][0]["shortNames"], json!(["wd"]));
    let agg = get_accepting(
        &app,
        "/apis",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    )
    .await;
    let item = agg["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "example.com")
        .expect("the group is discovered");
    assert_eq!(item["versions"][0]["version"], "v1");
    assert_eq!(item["versions"][0]["resources"][0]["resource"], "widgets");
    // OpenAPI v3: the group version is listed and its document has the kind's schema and a
    // PATCH with fieldValidation (what kubectl's validation looks for).
    let root = send(&app, Method::GET, "/openapi/v3", Value::Null).await;
    assert!(root.body["paths"]["apis/example.com/v1"].is_object());
    let doc = send(
        &app,
        Method::GET,
        "/openapi/v3/apis/example.com/v1",
        Value::Null,
    )
    .await;
    let s = &doc.body["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        s["x-kubernetes-group-version-kind"][0]["kind"], "Widget",
        "{s}"
    );
    assert!(s["properties"]["spec"]["properties"]["size"].is_object());
    let patch =
        &doc.body["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert!(patch["parameters"].to_string().contains("fieldValidation"));
}

#[tokio::test]
async fn objects_are_pruned_defaulted_and_validated_by_the_schema() {
    let (app, _) = app().await;
    define(&app).await;
    let r = send(
        &app,
        Method::POST,
        WIDGETS,
        widget("a", json!({"size": "small"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body["spec"],
        json!({"size": "small", "replicas": 1, "colour": "blue"})
    );
    assert_eq!(r.body["metadata"]["generation"], 1);
    // Unknown fields: refused under Strict, dropped under Ignore, warned about under Warn.
    let extra = widget("b", json!({"size": "small", "bogus": 1}));
    let r = send(
        &app,
        Method::POST,
        &format!("{WIDGETS}?fieldValidation=Strict"),
        extra.clone(),
    )
    .await;
    assert_status(&r, 400, "BadRequest");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.bogus\""),
        "{}",
        r.body
    );
    let r = send(
        &app,
        Method::POST,
        &format!("{WIDGETS}?fieldValidation=Warn"),
        extra,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body["spec"].get("bogus").is_none());
    assert!(
        r.headers["warning"]
            .to_str()
            .unwrap()
            .contains(r#"unknown field \"spec.bogus\""#)
    );
    // Invalid values: 422 naming every field, in Kubernetes' words.
    let bad = widget("c", json!({"size": "huge", "replicas": 11}));
    let r = send(&app, Method::POST, WIDGETS, bad).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.body["message"],
        "Widget.example.com \"c\" is invalid: [spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10, spec.size: Unsupported value: \"huge\": supported values: \"small\", \"large\"]"
    );
    assert_eq!(r.body["details"]["group"], "example.com");
    assert_eq!(r.body["details"]["kind"], "Widget");
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.replicas");
    let r = send(&app, Method::POST, WIDGETS, widget("d", json!({}))).await;
    assert_eq!(
        r.body["details"]["causes"][0],
        json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"})
    );
    // Status is written through its subresource only.
    let mut with_status = widget("e", json!({"size": "large"}));
    with_status["status"] = json!({"phase": "Ready"});
    let r = send(&app, Method::POST, WIDGETS, with_status).await;
    assert!(r.body.get("status").is_none(), "{}", r.body);
    let mut st = r.body.clone();
    st["status"] = json!({"phase": "Ready", "replicas": 1});
    st["spec"]["size"] = json!("small");
    let r = send(&app, Method::PUT, &format!("{WIDGETS}/e/status"), st).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"]["phase"], "Ready");
    assert_eq!(r.body["spec"]["size"], "large");
}

#[tokio::test]
async fn tables_show_the_printer_columns() {
    let (app, _) = app().await;
    define(&app).await;
    send(
        &app,
        Method::POST,
        WIDGETS,
        widget("a", json!({"size": "large", "replicas": 3})),
    )
    .await;
    let t = get_accepting(
        &app,
        WIDGETS,
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .await;
    let cols: Vec<(&str, i64)> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        cols,
        [
            ("Name", 0),
            ("Size", 0),
            ("Replicas", 0),
            ("Phase", 1),
            ("Age", 0)
        ]
    );
    send(
        &app,
        Method::POST,
        WIDGETS,
        widget("b", json!({"size": "small"})),
    )
    .await;
    let small = send(
        &app,
        Method::GET,
        &format!("{WIDGETS}?fieldSelector=spec.size%3Dsmall"),
        Value::Null,
    )
    .await;
    assert_eq!(
        small.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        small.body
    );
    assert_eq!(small.body["items"][0]["metadata"]["name"], "b");
    let cells = &t["rows"][0]["cells"];
    assert_eq!(cells[0], "a");
    assert_eq!(cells[1], "large");
    assert_eq!(cells[2], 3);
    assert_eq!(cells[3], Value::Null);
    assert!(cells[4].as_str().unwrap().ends_with('s'), "{cells}");
}

#[tokio::test]
async fn patches_apply_scale_watch_and_versions() {
    let (app, _) = app().await;
    define(&app).await;
    let req = Request::get(format!("{WIDGETS}?watch=true"))
        .body(axum::body::Body::empty())
        .unwrap();
    let mut events = app.clone().oneshot(req).await.unwrap().into_body();
    send(
        &app,
        Method::POST,
        WIDGETS,
        widget("a", json!({"size": "small", "selector": "app=a"})),
    )
    .await;
    let path = format!("{WIDGETS}/a");
    let r = send_as(
        &app,
        Method::PATCH,
        &path,
        "application/merge-patch+json",
        r#"{"spec":{"replicas":2}}"#,
    )
    .await;
    assert_eq!(r.body["spec"]["replicas"], 2, "{}", r.body);
    assert_eq!(r.body["metadata"]["generation"], 2);
    let r = send_as(
        &app,
        Method::PATCH,
        &path,
        "application/json-patch+json",
        r#"[{"op":"replace","path":"/spec/colour","value":"red"}]"#,
    )
    .await;
    assert_eq!(r.body["spec"]["colour"], "red", "{}", r.body);
    let r = send_as(
        &app,
        Method::PATCH,
        &path,
        "application/strategic-merge-patch+json",
        r#"{"spec":{"replicas":3}}"#,
    )
    .await;
    assert_status(&r, 415, "UnsupportedMediaType");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("application/merge-patch+json")
    );
    let applied =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: a\nspec:\n  size: large\n";
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{path}?fieldManager=me&force=true"),
        "application/apply-patch+yaml",
        applied,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["spec"]["size"], "large");
    // The scale subresource reads and writes the definition's paths.
    let r = send(&app, Method::GET, &format!("{path}/scale"), Value::Null).await;
    assert_eq!(r.body["spec"]["replicas"], 2, "{}", r.body);
    assert_eq!(r.body["status"]["selector"], "app=a");
    let r = send_as(
        &app,
        Method::PATCH,
        &format!("{path}/scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":5}}"#,
    )
    .await;
    assert_eq!(r.body["spec"]["replicas"], 5, "{}", r.body);
    let r = send(&app, Method::GET, &path, Value::Null).await;
    assert_eq!(r.body["spec"]["replicas"], 5);
    // The watch saw it all.
    let seen = read_until(&mut events, |e| e["object"]["spec"]["replicas"] == 5).await;
    assert_eq!(seen[0]["type"], "ADDED");
    // Another served version: the same object, in that version.
    let r = send(
        &app,
        Method::GET,
        "/apis/example.com/v1beta1/namespaces/default/widgets/a",
        Value::Null,
    )
    .await;
    assert_eq!(r.body["apiVersion"], "example.com/v1beta1", "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 5);
    let r = send_as(
        &app,
        Method::PATCH,
        "/apis/example.com/v1beta1/namespaces/default/widgets/a",
        "application/merge-patch+json",
        r#"{"spec":{"replicas":6}}"#,
    )
    .await;
    assert_eq!(r.body["apiVersion"], "example.com/v1beta1", "{}", r.body);
    let r = send(
        &app,
        Method::GET,
        "/apis/example.com/v1beta1/namespaces/default/widgets",
        Value::Null,
    )
    .await;
    assert_eq!(
        r.body["items"][0]["apiVersion"], "example.com/v1beta1",
        "{}",
        r.body
    );
    let r = send(&app, Method::GET, &path, Value::Null).await;
    assert_eq!(r.body["apiVersion"], "example.com/v1");
    assert_eq!(r.body["spec"]["replicas"], 6);
}

#[tokio::test]
async fn deleting_a_definition_deletes_its_objects_then_stops_serving() {
    let (app, _) = app().await;
    define(&app).await;
    for n in ["a", "b"] {
        send(
            &app,
            Method::POST,
            WIDGETS,
            widget(n, json!({"size": "small"})),
        )
        .await;
    }
    let r = send(
        &app,
        Method::DELETE,
        &format!("{CRDS}/widgets.example.com"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = send(
            &app,
            Method::GET,
            &format!("{CRDS}/widgets.example.com"),
            Value::Null,
        )
        .await;
        if r.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still there: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = send(&app, Method::GET, WIDGETS, Value::Null).await;
    assert_status(&r, 404, "NotFound");
    // Defined again, it starts empty.
    define(&app).await;
    let r = send(&app, Method::GET, WIDGETS, Value::Null).await;
    assert_eq!(r.body["items"], json!([]), "{}", r.body);
}

#[tokio::test]
async fn bad_definitions_are_refused_naming_the_field() {
    let (app, _) = app().await;
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["loose"] =
        json!({"properties": {"x": {"type": "string"}}});
    crd["spec"]["versions"][1]["storage"] = json!(true);
    crd["metadata"]["name"] = json!("wrong.example.com");
    let r = send(&app, Method::POST, CRDS, crd).await;
    assert_status(&r, 422, "Invalid");
    let fields = cause_fields(&r);
    assert_eq!(
        fields,
        [
            "metadata.name",
            "spec.versions",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[loose].type"
        ]
    );
    let mut webhook = widget_crd();
    webhook["spec"]["conversion"] = json!({"strategy": "Webhook"});
    let r = send(&app, Method::POST, CRDS, webhook).await;
    assert_status(&r, 422, "Invalid");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("conversion webhooks are not supported")
    );
    // A second definition claiming a taken kind in the group is stored but not served.
    define(&app).await;
    let mut twin = widget_crd();
    twin["metadata"]["name"] = json!("gadgets.example.com");
    twin["spec"]["names"]["plural"] = json!("gadgets");
    twin["spec"]["names"]["singular"] = json!("gadget");
    twin["spec"]["names"]["shortNames"] = json!([]);
    let r = send(&app, Method::POST, CRDS, twin).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let accepted = r.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "NamesAccepted")
        .unwrap()
        .clone();
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["message"], "\"Widget\" is already in use");
    let r = send(
        &app,
        Method::GET,
        "/apis/example.com/v1/namespaces/default/gadgets",
        Value::Null,
    )
    .await;
    assert_status(&r, 404, "NotFound");
}

#[tokio::test]
async fn an_operator_sized_definition_installs_and_its_objects_validate() {
    let (app, _) = app().await;
    let core = send(&app, Method::GET, "/openapi/v3/api/v1", Value::Null).await;
    let crd = shoal_testkit::crd::operator_crd(&core.body);
    let lines = serde_json::to_string_pretty(&crd).unwrap().lines().count();
    assert!(lines > 3000, "{lines} lines of definition");
    let r = send(&app, Method::POST, CRDS, crd).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let path = "/apis/operator.example.com/v1/namespaces/default/appservers";
    let r = send(
        &app,
        Method::POST,
        path,
        shoal_testkit::crd::operator_object("a", 3),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["spec"]["retention"], "24h");
    assert_eq!(r.body["spec"]["logLevel"], "info");
    let c = &r.body["spec"]["podTemplate"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    // Errors deep in the embedded pod template name their field.
    let mut bad = shoal_testkit::crd::operator_object("b", 1);
    bad["spec"]["podTemplate"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        json!("http");
    bad["spec"]["version"] = json!("latest");
    let r = send(&app, Method::POST, path, bad).await;
    assert_status(&r, 422, "Invalid");
    let fields = cause_fields(&r);
    assert_eq!(
        fields,
        [
            "spec.podTemplate.spec.containers[0].ports[0].containerPort",
            "spec.version"
        ]
    );
}

#[tokio::test]
async fn server_side_apply_merges_map_lists_by_their_keys() {
    let (app, _) = app().await;
    define(&app).await;
    let path = format!("{WIDGETS}/m");
    let apply = |manager: &str, port: &str| {
        let body = format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: m\nspec:\n  size: small\n  ports:\n  - name: {port}\n    port: 80\n"
        );
        let url = format!("{path}?fieldManager={manager}");
        let app = app.clone();
        async move {
            send_as(
                &app,
                Method::PATCH,
                &url,
                "application/apply-patch+yaml",
                body,
            )
            .await
        }
    };
    let r = apply("a", "http").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Another manager's item joins the list (a `map` list merges by `name`); with an atomic
    // list it would conflict on `spec.ports`.
    let r = apply("b", "metrics").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let names: Vec<&str> = r.body["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http", "metrics"]);
    let owned = r.body["metadata"]["managedFields"].to_string();
    assert!(owned.contains(r#"k:{\"name\":\"metrics\"}"#), "{owned}");
}
