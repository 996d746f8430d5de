//! Overload protection, in the spirit of API Priority and Fairness: requests are sorted into
//! priority levels, each with its own seats, and within a level each user (a flow) may hold at
//! most half the seats and queue a few more requests; what does not fit is answered `429` with
//! `Retry-After`, as kube-apiserver does, so one client's flood cannot starve others.
//!
//! - `exempt`: `system:masters` (the admin, as Kubernetes' `exempt` level),
//!   health checks, and long-running requests (watches, logs, exec, proxies), which
//!   kube-apiserver also keeps out of its in-flight limits;
//! - `leases`: Lease reads and writes (node heartbeats, leader election), with seats of their
//!   own so a flood of other requests never delays them;
//! - `system`: the cluster's own components, each under its own identity (kubelets in
//!   `system:nodes`, `system:kube-scheduler`, `system:kube-controller-manager`,
//!   `system:kube-proxy`), as Kubernetes' `system` and `workload-high` levels;
//! - `readonly` and `mutating`: everything else, sized by `--max-requests-inflight` and
//!   `--max-mutating-requests-inflight`.

use crate::auth::UserInfo;
use crate::request::RequestInfo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The group of FlowSchemas and PriorityLevelConfigurations.
pub const GROUP: &str = "flowcontrol.apiserver.k8s.io";

/// Kubernetes' defaults for `--max-requests-inflight` and `--max-mutating-requests-inflight`.
pub const DEFAULT_READONLY: usize = 400;
pub const DEFAULT_MUTATING: usize = 200;
/// Seats of the Lease level.
const LEASE_SEATS: usize = 50;
/// Seats of the components' level.
const SYSTEM_SEATS: usize = 200;
/// The users and groups whose requests take the components' seats.
const SYSTEM_USERS: &[&str] = &[
    "system:kube-scheduler",
    "system:kube-controller-manager",
    "system:kube-proxy",
];
const SYSTEM_GROUPS: &[&str] = &["system:nodes"];
/// Requests a flow may have waiting beyond those it runs.
const QUEUE_PER_FLOW: usize = 16;
/// The longest a queued request waits for a seat.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// The seconds a refused client is told to wait.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// One priority level: its seats and the flows using them.
struct Level {
    seats: Arc<Semaphore>,
    /// The most seats one flow may hold.
    per_flow: usize,
    flows: Mutex<HashMap<String, Flow>>,
}

struct Flow {
    seats: Arc<Semaphore>,
    /// Requests of the flow running or waiting.
    pending: usize,
}

impl Level {
    fn new(seats: usize) -> Arc<Self> {
        let seats = seats.max(1);
        Arc::new(Level {
            seats: Arc::new(Semaphore::new(seats)),
            per_flow: seats.div_ceil(2),
            flows: Mutex::new(HashMap::new()),
        })
    }

    fn flows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flow>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request's place in its flow; leaving it (dropping) frees the place.
struct Pending {
    level: Arc<Level>,
    flow: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut flows = self.level.flows();
        if let Some(f) = flows.get_mut(&self.flow) {
            f.pending -= 1;
            if f.pending == 0 {
                flows.remove(&self.flow);
            }
        }
    }
}

/// The seat a request holds until its response has been sent.
/// (Held for their drops: the permits and the flow's count come back when it goes.)
pub struct Seat {
    _flow: Option<OwnedSemaphorePermit>,
    level: Option<OwnedSemaphorePermit>,
    _pending: Option<Pending>,
}

/// A response body that keeps its request's seat until it has been sent (or dropped).
pub struct Held {
    inner: axum::body::Body,
    _seat: Seat,
}

impl Held {
    pub fn new(inner: axum::body::Body, seat: Seat) -> Self {
        Held { inner, _seat: seat }
    }
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Seat {
    /// Whether the request needed no seat.
    pub fn is_exempt(&self) -> bool {
        self.level.is_none()
    }

    fn exempt() -> Self {
        Seat {
            _flow: None,
            level: None,
            _pending: None,
        }
    }
}

/// The API server's priority levels.
pub struct FlowControl {
    /// The seats of the read-only and mutating levels, as configured.
    sizes: (usize, usize),
    readonly: Arc<Level>,
    mutating: Arc<Level>,
    leases: Arc<Level>,
    system: Arc<Level>,
}

impl FlowControl {
    pub fn new(readonly: usize, mutating: usize) -> Self {
        FlowControl {
            sizes: (readonly, mutating),
            readonly: Level::new(readonly),
            mutating: Level::new(mutating),
            leases: Level::new(LEASE_SEATS),
            system: Level::new(SYSTEM_SEATS),
        }
    }

    /// This configuration as `flowcontrol.apiserver.k8s.io/v1` objects, which the API server
    /// serves read-only (`kubectl get flowschemas,prioritylevelconfigurations`): one
    /// PriorityLevelConfiguration per level (seats as `nominalConcurrencyShares`, a flow's
    /// queue as `queueLengthLimit`) and the FlowSchemas that send requests to them.
    pub fn objects(&self) -> Vec<(&'static str, serde_json::Value)> {
        use serde_json::json;
        let limited = |seats: usize| {
            json!({"type": "Limited", "limited": {
                "nominalConcurrencyShares": seats, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Queue", "queuing": {
                    "queues": 1, "handSize": 1, "queueLengthLimit": QUEUE_PER_FLOW}}}})
        };
        let levels = [
            ("exempt", json!({"type": "Exempt", "exempt": {}})),
            ("leases", limited(LEASE_SEATS)),
            ("system", limited(SYSTEM_SEATS)),
            ("readonly", limited(self.sizes.0)),
            ("mutating", limited(self.sizes.1)),
        ];
        let everyone = json!([
            {"kind": "Group", "group": {"name": "system:authenticated"}},
            {"kind": "Group", "group": {"name": "system:unauthenticated"}}]);
        let all = |verbs: &[&str]| {
            json!([{"verbs": verbs, "apiGroups": ["*"], "resources": ["*"],
                "clusterScope": true, "namespaces": ["*"]}])
        };
        let mut components: Vec<serde_json::Value> = SYSTEM_USERS
            .iter()
            .map(|u| json!({"kind": "User", "user": {"name": u}}))
            .collect();
        components.extend(
            SYSTEM_GROUPS
                .iter()
                .map(|g| json!({"kind": "Group", "group": {"name": g}})),
        );
        let schemas = [
            (
                "exempt",
                1,
                "exempt",
                json!([{"subjects": [
                {"kind": "Group", "group": {"name": crate::rbac::MASTERS}}],
                "resourceRules": all(&["*"]),
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]),
            ),
            (
                "probes",
                2,
                "exempt",
                json!([{"subjects": everyone,
                "nonResourceRules": [{"verbs": ["get"],
                    "nonResourceURLs": ["/healthz", "/livez", "/readyz"]}]}]),
            ),
            (
                "leases",
                100,
                "leases",
                json!([{"subjects": everyone,
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"], "namespaces": ["*"]}]}]),
            ),
            (
                "system-components",
                500,
                "system",
                json!([{"subjects": components,
                "resourceRules": all(&["*"]),
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]),
            ),
            (
                "global-readonly",
                9000,
                "readonly",
                json!([{"subjects": everyone,
                "resourceRules": all(&["get", "list"]),
                "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["*"]}]}]),
            ),
            (
                "global-mutating",
                9900,
                "mutating",
                json!([{"subjects": everyone,
                "resourceRules": all(&["*"]),
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]),
            ),
        ];
        let meta = |name: &str| {
            json!({"name": name, "annotations": {
                "apf.kubernetes.io/autoupdate-spec": "true",
                "shoal.dev/read-only": "Shoal's priority levels are fixed; --max-requests-inflight and --max-mutating-requests-inflight size them"}})
        };
        let mut out = Vec::new();
        for (name, spec) in levels {
            out.push((
                "prioritylevelconfigurations",
                json!({"apiVersion": format!("{GROUP}/v1"), "kind": "PriorityLevelConfiguration",
                    "metadata": meta(name), "spec": spec}),
            ));
        }
        for (name, precedence, level, rules) in schemas {
            out.push((
                "flowschemas",
                json!({"apiVersion": format!("{GROUP}/v1"), "kind": "FlowSchema",
                    "metadata": meta(name), "spec": {
                        "priorityLevelConfiguration": {"name": level},
                        "matchingPrecedence": precedence,
                        "distinguisherMethod": {"type": "ByUser"},
                        "rules": rules}}),
            ));
        }
        out
    }

    /// Whether `user` is one of the cluster's components.
    fn is_system(user: &UserInfo) -> bool {
        SYSTEM_USERS.contains(&user.username.as_str())
            || user
                .groups
                .iter()
                .any(|g| SYSTEM_GROUPS.contains(&g.as_str()))
    }

    fn level(&self, user: &UserInfo, req: &RequestInfo) -> Option<&Arc<Level>> {
        if user.groups.iter().any(|g| g == crate::rbac::MASTERS) {
            return None;
        }
        let resource = match &req.resource {
            None => {
                let health = ["/healthz", "/livez", "/readyz"]
                    .iter()
                    .any(|p| req.path == *p || req.path.starts_with(&format!("{p}/")));
                return (!health).then_some(&self.readonly);
            }
            Some(r) => r,
        };
        let long_running = req.verb == "watch"
            || matches!(
                resource.subresource.as_str(),
                "attach" | "exec" | "portforward" | "proxy" | "log"
            );
        if long_running {
            return None;
        }
        if resource.group == "coordination.k8s.io" && resource.resource == "leases" {
            return Some(&self.leases);
        }
        if Self::is_system(user) {
            return Some(&self.system);
        }
        match req.verb.as_str() {
            "get" | "list" => Some(&self.readonly),
            _ => Some(&self.mutating),
        }
    }

    /// A seat for `user`'s request, or `None` when its level is full for that user: the
    /// request is then refused with 429.
    pub async fn admit(&self, user: &UserInfo, req: &RequestInfo) -> Option<Seat> {
        let Some(level) = self.level(user, req) else {
            return Some(Seat::exempt());
        };
        let flow_seats = {
            let mut flows = level.flows();
            let f = flows.entry(user.username.clone()).or_insert_with(|| Flow {
                seats: Arc::new(Semaphore::new(level.per_flow)),
                pending: 0,
            });
            if f.pending >= level.per_flow + QUEUE_PER_FLOW {
                return None;
            }
            f.pending += 1;
            f.seats.clone()
        };
        let pending = Pending {
            level: level.clone(),
            flow: user.username.clone(),
        };
        let seats = level.seats.clone();
        let acquired = tokio::time::timeout(MAX_WAIT, async move {
            let flow = flow_seats.acquire_owned().await.ok()?;
            let level = seats.acquire_owned().await.ok()?;
            Some((flow, level))
        })
        .await
        .ok()
        .flatten()?;
        Some(Seat {
            _flow: Some(acquired.0),
            level: Some(acquired.1),
            _pending: Some(pending),
        })
    }
}

/// kube-apiserver's answer to a request it has no seat for: plain text with `Retry-After`,
/// which client-go waits for and retries.
pub fn too_many_requests() -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::from(
        "Too many requests, please try again later.\n",
    ));
    *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    let h = r.headers_mut();
    h.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Query;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            username: name.into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        }
    }

    fn req(method: http::Method, path: &str) -> RequestInfo {
        RequestInfo::parse(&method, path, &Query::default())
    }

    #[tokio::test]
    async fn one_flow_cannot_take_every_seat() {
        let fc = FlowControl::new(4, 4);
        let list = req(http::Method::GET, "/api/v1/namespaces/d/configmaps");
        let alice = user("alice");
        // Alice holds half the seats and queues a few more; beyond that she is refused.
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(fc.admit(&alice, &list).await.unwrap());
        }
        let mut waiting = Vec::new();
        for _ in 0..QUEUE_PER_FLOW {
            let fc = &fc;
            let alice = &alice;
            let list = &list;
            waiting.push(async move { fc.admit(alice, list).await.is_some() });
        }
        let queued = futures::future::join_all(waiting);
        tokio::pin!(queued);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut queued)
                .await
                .is_err(),
            "queued requests wait for a seat"
        );
        // Her queue is full now: refused at once.
        // (The queued futures are not polled here; their places were taken when first polled.)
        assert!(fc.admit(&alice, &list).await.is_none());
        // Bob still gets a seat, and leases have their own.
        assert!(fc.admit(&user("bob"), &list).await.is_some());
        let lease = req(
            http::Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
        );
        assert!(fc.admit(&alice, &lease).await.is_some());
        // The components have seats of their own.
        let mut kubelet = user("system:node:n1");
        kubelet.groups.push("system:nodes".into());
        assert!(fc.admit(&kubelet, &list).await.is_some());
        assert!(
            fc.admit(&user("system:kube-scheduler"), &list)
                .await
                .is_some()
        );
        // Masters, health checks and watches are exempt.
        assert!(fc.admit(&UserInfo::admin(), &list).await.is_some());
        assert!(
            fc.admit(&alice, &req(http::Method::GET, "/readyz"))
                .await
                .is_some()
        );
        // Alice's seats come back when her requests end.
        drop(held);
        let done = tokio::time::timeout(Duration::from_secs(2), queued)
            .await
            .unwrap();
        assert!(done.iter().all(|ok| *ok));
    }
}
