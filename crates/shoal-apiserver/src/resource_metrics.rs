//! `metrics.k8s.io/v1beta1`, as metrics-server serves it (so `kubectl top` and the
//! HorizontalPodAutoscaler work): NodeMetrics and PodMetrics, read-only, made from each node's
//! kubelet Summary API (`/stats/summary`: CPU usage over the kubelet's last sampling period and
//! memory), fetched when asked and kept for [`FRESH`].

use crate::ApiServer;
use crate::error::ApiResult;
use crate::kubelet_proxy::{Upstream, kubelet_endpoint};
use crate::request::Query;
use serde_json::{Value, json};
use shoal_api::selector::LabelSelector;
use shoal_api::{StatusError, resources};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// How long fetched summaries answer before the kubelets are asked again.
const FRESH: Duration = Duration::from_secs(2);
/// The window of the usage figures: the kubelet's CPU sampling period.
const WINDOW: &str = "5s";

/// The two resources, as discovery lists them: (plural, singular, kind, namespaced).
const RESOURCES: [(&str, &str, &str, bool); 2] = [
    ("nodes", "", "NodeMetrics", false),
    ("pods", "", "PodMetrics", true),
];

/// The group's entry in aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn aggregated_group() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, singular, kind, ns)| {
            json!({
                "resource": plural,
                "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
                "scope": if *ns { "Namespaced" } else { "Cluster" },
                "singularResource": singular,
                "verbs": ["get", "list"],
            })
        })
        .collect();
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}],
    })
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, singular, kind, ns)| {
            json!({"name": plural, "singularName": singular, "namespaced": ns, "kind": kind, "verbs": ["get", "list"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"), "resources": resources})
}

/// Summaries fetched recently: when, and (node name, summary) for each node that answered.
pub type Summaries = tokio::sync::Mutex<Option<(Instant, Arc<Vec<(String, Value)>>)>>;

/// Every node's Summary, fetched at once from the kubelets that report an endpoint.
async fn summaries(s: &Arc<ApiServer>) -> Arc<Vec<(String, Value)>> {
    let mut cached = s.summaries.lock().await;
    if let Some((at, v)) = &*cached
        && at.elapsed() < FRESH
    {
        return v.clone();
    }
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let targets: Vec<(String, SocketAddr)> = s
        .cache
        .resource(nodes)
        .list(&nodes.storage_prefix(), None)
        .iter()
        .filter_map(|n| {
            let v = n.value();
            let (ip, port) = kubelet_endpoint(v)?;
            Some((crate::meta::name(v).to_owned(), SocketAddr::new(ip, port)))
        })
        .collect();
    let fetches = targets.into_iter().map(|(name, addr)| {
        let token = s.token.clone();
        async move {
            let req = http::Request::get("/stats/summary")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .ok()?;
            let resp = tokio::time::timeout(
                Duration::from_secs(5),
                Upstream::new(addr, true, token).send(req),
            )
            .await
            .ok()?
            .ok()?;
            if !resp.status().is_success() {
                tracing::debug!(node = %name, status = %resp.status(), "no summary from the kubelet");
                return None;
            }
            let body = axum::body::to_bytes(resp.into_body(), 64 << 20).await.ok()?;
            Some((name, serde_json::from_slice::<Value>(&body).ok()?))
        }
    });
    let got: Vec<(String, Value)> = futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect();
    let got = Arc::new(got);
    *cached = Some((Instant::now(), got.clone()));
    got
}

fn cpu(nanocores: u64) -> String {
    format!("{nanocores}n")
}

fn memory(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn usage(entry: &Value) -> Option<Value> {
    let cpu_now = entry["cpu"]["usageNanoCores"].as_u64()?;
    let mem = entry["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    Some(json!({"cpu": cpu(cpu_now), "memory": memory(mem)}))
}

fn metadata(name: &str, namespace: Option<&str>, labels: &Value) -> Value {
    let mut m = json!({"name": name, "creationTimestamp": crate::meta::now()});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if labels.is_object() {
        m["labels"] = labels.clone();
    }
    m
}

async fn node_metrics(s: &Arc<ApiServer>) -> Vec<Value> {
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let cache = s.cache.resource(nodes);
    summaries(s)
        .await
        .iter()
        .filter_map(|(name, summary)| {
            let node = &summary["node"];
            let labels = cache
                .get(&nodes.storage_key(None, name))
                .map(|n| n.value()["metadata"]["labels"].clone())
                .unwrap_or(Value::Null);
            Some(json!({
                "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": metadata(name, None, &labels),
                "timestamp": node["cpu"]["time"].as_str().unwrap_or(""),
                "window": WINDOW,
                "usage": usage(node)?,
            }))
        })
        .collect()
}

/// PodMetrics of pods in `namespace` (all if `None`) whose labels match `selector`; a pod is
/// left out until every container's CPU has been sampled twice, as metrics-server does.
async fn pod_metrics(
    s: &Arc<ApiServer>,
    namespace: Option<&str>,
    selector: &LabelSelector,
) -> Vec<Value> {
    let pods = resources::find("", "v1", "pods").expect("pods are served");
    let cache = s.cache.resource(pods);
    let mut out = Vec::new();
    for (_, summary) in summaries(s).await.iter() {
        for p in summary["pods"].as_array().into_iter().flatten() {
            let (name, ns) = (
                p["podRef"]["name"].as_str().unwrap_or(""),
                p["podRef"]["namespace"].as_str().unwrap_or(""),
            );
            if namespace.is_some_and(|want| want != ns) {
                continue;
            }
            let Some(pod) = cache.get(&pods.storage_key(Some(ns), name)) else {
                continue;
            };
            if pod.value()["metadata"]["uid"] != p["podRef"]["uid"]
                || !selector.matches_object(pod.value())
            {
                continue;
            }
            let containers: Option<Vec<Value>> = p["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Some(json!({"name": c["name"], "usage": usage(c)?})))
                .collect();
            let Some(containers) = containers.filter(|c| !c.is_empty()) else {
                continue;
            };
            out.push(json!({
                "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": metadata(name, Some(ns), &pod.value()["metadata"]["labels"]),
                "timestamp": p["cpu"]["time"].as_str().unwrap_or(""),
                "window": WINDOW,
                "containers": containers,
            }));
        }
    }
    out.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                v["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

/// Serves a request under `/apis/metrics.k8s.io/v1beta1/` (`rest` is the path after it).
pub async fn serve(
    s: &Arc<ApiServer>,
    method: &http::Method,
    rest: &[&str],
    q: &Query,
) -> ApiResult<Value> {
    if method != http::Method::GET {
        return Err(StatusError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {GROUP})"
        ))
        .into());
    }
    let selector = match q.get("labelSelector") {
        Some(sel) => LabelSelector::parse(sel)
            .map_err(|e| StatusError::bad_request(format!("unable to parse requirement: {e}")))?,
        None => LabelSelector::default(),
    };
    let body = match rest {
        [] => resource_list(),
        ["nodes"] => list("NodeMetrics", node_metrics(s).await),
        ["nodes", name] => node_metrics(s)
            .await
            .into_iter()
            .find(|n| n["metadata"]["name"] == *name)
            .ok_or_else(|| StatusError::not_found("nodes", GROUP, name))?,
        ["pods"] => list("PodMetrics", pod_metrics(s, None, &selector).await),
        ["namespaces", ns, "pods"] => list("PodMetrics", pod_metrics(s, Some(ns), &selector).await),
        ["namespaces", ns, "pods", name] => pod_metrics(s, Some(ns), &LabelSelector::default())
            .await
            .into_iter()
            .find(|p| p["metadata"]["name"] == *name)
            .ok_or_else(|| StatusError::not_found("pods", GROUP, name))?,
        _ => return Err(StatusError::path_not_found().into()),
    };
    Ok(body)
}
