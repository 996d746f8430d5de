//! The kubelet's HTTPS API, which the API server proxies `pods/log`, `pods/exec` and
//! `pods/portforward` to: `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`,
//! `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous` and `limitBytes`;
//! `GET|POST /exec/{namespace}/{pod}/{container}` with `command` (repeated), `stdin`, `stdout`,
//! `stderr` and `tty`, and `GET|POST /portForward/{namespace}/{pod}`, both upgraded to the
//! streaming protocols of `shoal-streaming`.

use crate::Kubelet;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use serde_json::json;
use shoal_runtime::logs::parse_record;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct AppState {
    kubelet: Arc<Kubelet>,
    auth: Arc<Auth>,
}

/// How the kubelet's API tells who calls it.
pub enum Auth {
    /// Anyone (tests).
    Open,
    /// Callers must send `Authorization: Bearer <token>` with this token (the API server's, when
    /// the kubelet runs in its process).
    Token(String),
    /// As Kubernetes' kubelet with `--authentication-token-webhook` and
    /// `--authorization-mode=Webhook`: the API server says who a bearer token is
    /// (TokenReview) and whether that user may `get` the node's subresource the path is
    /// (`nodes/proxy` for logs, `nodes/stats`, `nodes/metrics`: SubjectAccessReview). Answers
    /// are kept for two minutes (denials for thirty seconds).
    Webhook(Webhook),
}

/// Answers already had: per (token, subresource), the verdict and when it came.
type Answers = std::collections::HashMap<(String, &'static str), (Verdict, Instant)>;

pub struct Webhook {
    client: kube::Client,
    node: String,
    answers: std::sync::Mutex<Answers>,
}

impl Webhook {
    pub fn new(client: kube::Client, node: &str) -> Self {
        Webhook {
            client,
            node: node.to_owned(),
            answers: Default::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Allowed,
    Unauthenticated,
    Forbidden(String),
}

const ALLOWED_TTL: Duration = Duration::from_secs(120);
const DENIED_TTL: Duration = Duration::from_secs(30);

impl Webhook {
    async fn verdict(&self, token: &str, subresource: &'static str) -> Verdict {
        let key = (token.to_owned(), subresource);
        if let Some((v, at)) = self.answers.lock().expect("answers").get(&key).cloned() {
            let ttl = if v == Verdict::Allowed {
                ALLOWED_TTL
            } else {
                DENIED_TTL
            };
            if at.elapsed() < ttl {
                return v;
            }
        }
        let v = self.ask(token, subresource).await;
        let mut answers = self.answers.lock().expect("answers");
        if answers.len() > 10_000 {
            answers.clear();
        }
        answers.insert(key, (v.clone(), Instant::now()));
        v
    }

    async fn ask(&self, token: &str, subresource: &'static str) -> Verdict {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        use kube::api::{Api, PostParams};
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await;
        let Some(user) = reviewed
            .ok()
            .and_then(|r| r.status)
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
        else {
            return Verdict::Unauthenticated;
        };
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("get".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let allowed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .ok()
            .and_then(|r| r.status)
            .is_some_and(|s| s.allowed);
        if allowed {
            Verdict::Allowed
        } else {
            Verdict::Forbidden(format!(
                "Forbidden (user={}, verb=get, resource=nodes, subresource={subresource})",
                user.username.unwrap_or_default()
            ))
        }
    }
}

/// The router; who may call it is `auth`'s to say.
pub fn router(kubelet: Arc<Kubelet>, auth: Auth) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            axum::routing::get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            axum::routing::get(exec).post(exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            axum::routing::get(attach).post(attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            axum::routing::get(port_forward).post(port_forward),
        )
        .route("/healthz", axum::routing::get(healthz))
        .route("/stats/summary", axum::routing::get(stats_summary))
        .route("/metrics/resource", axum::routing::get(metrics_resource))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(AppState {
            kubelet,
            auth: Arc::new(auth),
        })
}

/// `None` if the caller may use the node's `subresource` (`proxy`, `stats`, `metrics`), else
/// the 401 or 403.
async fn unauthorized(
    s: &AppState,
    headers: &HeaderMap,
    subresource: &'static str,
) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let verdict = match (&*s.auth, given) {
        (Auth::Open, _) => Verdict::Allowed,
        (_, None) => Verdict::Unauthenticated,
        (Auth::Token(t), Some(g)) if t == g => Verdict::Allowed,
        (Auth::Token(_), Some(_)) => Verdict::Unauthenticated,
        (Auth::Webhook(w), Some(g)) => w.verdict(g, subresource).await,
    };
    match verdict {
        Verdict::Allowed => None,
        Verdict::Unauthenticated => Some(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        )),
        Verdict::Forbidden(why) => Some(status(StatusCode::FORBIDDEN, "Forbidden", why)),
    }
}

/// `command` values and the stream flags of an exec or attach query.
fn exec_query(query: Option<&str>) -> (Vec<String>, shoal_streaming::ExecOptions) {
    let mut command = Vec::new();
    let mut opts = shoal_streaming::ExecOptions::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let on = shoal_api::query::flag(Some(&v));
        match &*k {
            "command" => command.push(v.into_owned()),
            "stdin" => opts.stdin = on,
            "stdout" => opts.stdout = on,
            "stderr" => opts.stderr = on,
            "tty" => opts.tty = on,
            _ => {}
        }
    }
    (command, opts)
}

/// Runs a command in a running container of a pod this kubelet runs (`kubectl exec`, `cp`).
async fn exec(
    State(s): State<AppState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: axum::extract::Request,
) -> Response {
    if let Some(denied) = unauthorized(&s, req.headers(), "proxy").await {
        return denied;
    }
    let (command, opts) = exec_query(req.uri().query());
    if command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one command for the container".into(),
        );
    }
    let id = match running_container(&s.kubelet, &ns, &pod, &container) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let runtime = s.kubelet.runtime.clone();
    tracing::info!(pod = %format!("{ns}/{pod}"), %container, ?command, "exec");
    let run: shoal_streaming::Runner = Box::new(move |io| {
        Box::pin(async move {
            runtime
                .exec(&id, &command, io)
                .await
                .map_err(|e| e.to_string())
        })
    });
    shoal_streaming::exec(req, opts, run).await
}

/// Connects to a running container's own streams (`kubectl attach`, `kubectl run -i`).
async fn attach(
    State(s): State<AppState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    req: axum::extract::Request,
) -> Response {
    if let Some(denied) = unauthorized(&s, req.headers(), "proxy").await {
        return denied;
    }
    let (_, opts) = exec_query(req.uri().query());
    let id = match running_container(&s.kubelet, &ns, &pod, &container) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let runtime = s.kubelet.runtime.clone();
    let run: shoal_streaming::Runner = Box::new(move |io| {
        Box::pin(async move {
            runtime
                .attach(&id, io)
                .await
                .map(|()| 0)
                .map_err(|e| e.to_string())
        })
    });
    shoal_streaming::exec(req, opts, run).await
}

/// The runtime's id of a container running in a pod of this kubelet, or the refusal.
fn running_container(
    k: &Kubelet,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<shoal_runtime::ContainerId, Box<Response>> {
    let Some(entry) = k.index.get(ns, pod) else {
        return Err(Box::new(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {ns}/{pod} is not running on this node"),
        )));
    };
    entry.running.get(container).cloned().ok_or_else(|| {
        Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container:?} in pod {ns}/{pod} is not running"),
        ))
    })
}

/// Forwards connections to a pod's ports (`kubectl port-forward`).
async fn port_forward(
    State(s): State<AppState>,
    Path((ns, pod)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    if let Some(denied) = unauthorized(&s, req.headers(), "proxy").await {
        return denied;
    }
    let entry = s.kubelet.index.get(&ns, &pod);
    let (Some(ip), Some(container)) = (
        entry.as_ref().and_then(|e| e.ip),
        entry.and_then(|e| e.running.into_values().next()),
    ) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {ns}/{pod} is not running on this node"),
        );
    };
    // Through the runtime, as CRI's PortForward: inside the pod's own network.
    let runtime = s.kubelet.runtime.clone();
    let dial: shoal_streaming::Dialer = Arc::new(move |port| {
        let (runtime, container) = (runtime.clone(), container.clone());
        Box::pin(async move { runtime.port_forward(&container, ip, port).await })
    });
    shoal_streaming::port_forward(req, dial).await
}

/// The Summary API (`stats/v1alpha1`): node and per-pod memory as the runtime measures it.
async fn stats_summary(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&s, &headers, "stats").await {
        return denied;
    }
    let body = crate::stats::summary(&s.kubelet).await;
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Resource metrics in Prometheus' text format, as metrics-server reads them.
async fn metrics_resource(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&s, &headers, "metrics").await {
        return denied;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::stats::resource_metrics(&s.kubelet).await,
    )
        .into_response()
}

/// The process's Prometheus metrics (the kubelet's `kubelet_*`, the runtime's `shoal_wasm_*`).
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&s, &headers, "metrics").await {
        return denied;
    }
    (
        [(header::CONTENT_TYPE, shoal_metrics::CONTENT_TYPE)],
        shoal_metrics::render(),
    )
        .into_response()
}

/// Healthy while every supervised task of the kubelet (lease, pod manager, pod workers)
/// runs; otherwise 500 naming the failing tasks.
async fn healthz(State(s): State<AppState>) -> (StatusCode, String) {
    let (ok, body) = s.kubelet.supervisor.readyz(false);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (code, body)
}

/// A self-signed certificate for `names` (IPs or DNS names), as a kubelet without a serving
/// certificate makes one.
pub fn self_signed_tls(names: &[String]) -> crate::Result<Arc<rustls::ServerConfig>> {
    let cert = rcgen::generate_simple_self_signed(names.to_vec())?;
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    follow: Option<String>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    timestamps: Option<String>,
    previous: Option<String>,
    limit_bytes: Option<i64>,
}

fn flag(v: &Option<String>) -> bool {
    shoal_api::query::flag(v.as_deref())
}

/// The pod's directory: the one this kubelet runs, else the newest on disk.
fn pod_dir(k: &Kubelet, ns: &str, pod: &str) -> Option<PathBuf> {
    if let Some(e) = k.index.get(ns, pod) {
        return Some(e.dir);
    }
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(k.config.data_dir.join("pods"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The run numbers that have logs, ascending.
fn runs(dir: &std::path::Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// A run's files, oldest first (`N.log.4` ... `N.log.1`, `N.log`).
fn run_files(dir: &std::path::Path, run: i32) -> Vec<PathBuf> {
    let live = dir.join(format!("{run}.log"));
    let mut out: Vec<PathBuf> = (1..shoal_runtime::logs::MAX_FILES)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", live.display())))
        .filter(|p| p.exists())
        .collect();
    out.push(live);
    out
}

/// Turns CRI records into what `kubectl logs` prints.
struct Renderer {
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    /// Inside a line split into partial records.
    partial: bool,
}

impl Renderer {
    fn render(&mut self, text: &str, out: &mut Vec<u8>) {
        for line in text.lines() {
            let Some(r) = parse_record(line) else {
                continue;
            };
            if let Some(since) = self.since
                && r.timestamp
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t < since)
            {
                continue;
            }
            if self.timestamps && !self.partial {
                out.extend_from_slice(r.timestamp.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(r.content.as_bytes());
            if r.full {
                out.push(b'\n');
            }
            self.partial = !r.full;
        }
    }
}

/// Keeps the last `n` lines of `buf`.
fn tail(buf: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let mut seen = 0;
    let end = if buf.ends_with(b"\n") {
        buf.len() - 1
    } else {
        buf.len()
    };
    for i in (0..end).rev() {
        if buf[i] == b'\n' {
            seen += 1;
            if seen == n {
                return &buf[i + 1..];
            }
        }
    }
    buf
}

async fn container_logs(
    State(s): State<AppState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = unauthorized(&s, &headers, "proxy").await {
        return denied;
    }
    let k = s.kubelet.clone();
    let Some(dir) = pod_dir(&k, &ns, &pod) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {ns}/{pod} is not on node {}", k.config.node_name),
        );
    };
    let cdir = dir.join("logs").join(&container);
    let runs = runs(&cdir);
    let previous = flag(&q.previous);
    let run = if previous {
        runs.iter().rev().nth(1).copied()
    } else {
        runs.last().copied()
    };
    let Some(run) = run else {
        let msg = if previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} has no logs yet")
        };
        return status(StatusCode::BAD_REQUEST, "BadRequest", msg);
    };
    let since = match (&q.since_seconds, &q.since_time) {
        (Some(secs), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(*secs)),
        (None, Some(t)) => match t.parse() {
            Ok(t) => Some(t),
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("sinceTime: invalid RFC 3339 time {t:?}"),
                );
            }
        },
        _ => None,
    };
    let mut r = Renderer {
        timestamps: flag(&q.timestamps),
        since,
        partial: false,
    };
    let mut out = Vec::new();
    let files = run_files(&cdir, run);
    let mut offset = 0u64;
    for f in &files {
        let text = tokio::fs::read(f).await.unwrap_or_default();
        // Only whole lines; the rest is read again when following.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        r.render(&String::from_utf8_lossy(&text[..whole]), &mut out);
        offset = whole as u64;
    }
    if let Some(n) = q.tail_lines.filter(|n| *n >= 0) {
        out = tail(&out, n as usize).to_vec();
    }
    let mut limit = q.limit_bytes.filter(|n| *n > 0).map(|n| n as usize);
    if let Some(l) = limit {
        out.truncate(l);
        limit = Some(l - out.len());
    }
    let running = k
        .index
        .get(&ns, &pod)
        .and_then(|e| e.running.get(&container).cloned());
    let follow = flag(&q.follow) && !previous && running.is_some() && limit != Some(0);
    let plain = [(header::CONTENT_TYPE, "text/plain")];
    if !follow {
        return (plain, out).into_response();
    }
    let id = running.expect("checked above");
    let live = files.last().cloned().expect("a run has its live file");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
        let mut limit = limit;
        loop {
            let exited = k
                .runtime
                .container_status(&id)
                .await
                .map_or(true, |st| st.exited());
            let mut chunk = Vec::new();
            if let Ok(mut f) = tokio::fs::File::open(&live).await {
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    offset = 0; // rotated
                }
                if len > offset && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                    let mut buf = Vec::new();
                    let _ = f.read_to_end(&mut buf).await;
                    let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    offset += whole as u64;
                    r.render(&String::from_utf8_lossy(&buf[..whole]), &mut chunk);
                }
            }
            if let Some(l) = &mut limit {
                chunk.truncate(*l);
                *l -= chunk.len();
            }
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if exited || limit == Some(0) {
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (plain, Body::from_stream(stream)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cri_records() {
        let mut r = Renderer {
            timestamps: false,
            since: None,
            partial: false,
        };
        let mut out = Vec::new();
        r.render(
            "2024-05-01T10:00:00.000000001Z stdout F one\n2024-05-01T10:00:01Z stderr P tw\n2024-05-01T10:00:01Z stderr F o\n",
            &mut out,
        );
        assert_eq!(out, b"one\ntwo\n");
        let mut r = Renderer {
            timestamps: true,
            since: Some("2024-05-01T10:00:00.5Z".parse().unwrap()),
            partial: false,
        };
        let mut out = Vec::new();
        r.render(
            "2024-05-01T10:00:00Z stdout F old\n2024-05-01T10:00:01Z stdout F new\n",
            &mut out,
        );
        assert_eq!(out, b"2024-05-01T10:00:01Z new\n");
    }

    #[test]
    fn tails_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 0), b"");
    }
}
