//! Shoal's Kubernetes-compatible API server.
//!
//! Owns the HTTP API kubectl and kube-rs speak: discovery, CRUD, watch, patch and apply,
//! tables, OpenAPI, the watch cache and `ApiError` → `Status`. It is the only component that
//! touches the [`shoal_store::Store`]. It does not run controllers, the scheduler or kubelets; `pods/log`
//! is proxied to the pod's kubelet.
//!
//! Start at [`ApiServer::start`] and [`router`]; requests enter at [`handlers::dispatch`].

pub mod admission;
mod apply;
pub mod audit;
pub mod auth;
mod body;
mod bootstrap;
pub mod bootstraptoken;
pub mod cache;
pub mod canonical;
mod compactor;
mod conversion;
pub mod crd;
mod discovery;
pub mod encryption;
mod error;
pub mod flowcontrol;
#[cfg(test)]
mod fuzz;
pub mod handlers;
mod kinds;
mod kubelet_proxy;
mod meta;
mod metered;
mod openapi;
mod patch;
mod protobuf;
mod proxy;
pub mod rbac;
pub mod registry;
mod request;
mod resource_metrics;
pub mod serviceaccount;
mod table;
pub mod tls;
mod typed;

pub use error::{ApiError, ApiResult};

pub use admission::policies::PluginOptions;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
pub use kinds::ServiceNetwork;

use shoal_api::StatusError;
use shoal_store::{Store, StoreError};
use shoal_supervisor::{Restart, Supervisor};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How an API server runs, besides its store.
#[derive(Clone, Default)]
pub struct Options {
    /// Bearer token every request must carry; `None` disables authentication (tests only).
    pub token: Option<String>,
    /// More users by token (`--token-auth-file`).
    pub tokens: Vec<(String, auth::UserInfo)>,
    /// The plugin engine and module rules for admission policies; `None`: policy objects are
    /// stored but never loaded, so they stay `Pending` and apply to nothing.
    pub plugins: Option<PluginOptions>,
    /// Runs the server's background tasks and answers `/readyz` from their health.
    pub supervisor: Supervisor,
    /// The ranges Services take addresses and node ports from (`--service-cluster-ip-range`).
    pub services: kinds::ServiceNetwork,
    /// Encryption at rest (`--encryption-provider-config`); `None` stores values as they are.
    pub encryption: Option<encryption::EncryptionConfig>,
    /// The audit log (`--audit-policy-file`, `--audit-log-path`); `None`: nothing is logged.
    pub audit: Option<Arc<audit::Audit>>,
    /// Seats for read-only and mutating requests (`--max-requests-inflight`,
    /// `--max-mutating-requests-inflight`); `None`: Kubernetes' defaults (400, 200).
    pub max_in_flight: Option<(usize, usize)>,
    /// Signs and verifies ServiceAccount tokens (`--service-account-signing-key-file`);
    /// `None`: a key of the server's own, lost when it stops (tests).
    pub service_accounts: Option<Arc<serviceaccount::TokenIssuer>>,
    /// The PodSecurity plugin's defaults and exemptions (`--admission-control-config-file`).
    pub pod_security: admission::podsecurity::Config,
}

/// The API server's shared state.
pub struct ApiServer {
    pub registry: registry::Registry,
    pub cache: Arc<cache::WatchCache>,
    openapi: openapi::OpenApi,
    /// Bearer token every request must carry; `None` disables authentication (tests only).
    token: Option<String>,
    /// More users by token.
    tokens: Vec<(String, auth::UserInfo)>,
    /// ServiceAccount tokens: the TokenRequest API issues them, requests carry them.
    pub service_accounts: Arc<serviceaccount::TokenIssuer>,
    supervisor: Supervisor,
    /// Where audit events go, if anywhere.
    audit: Option<Arc<audit::Audit>>,
    /// Priority levels and their seats.
    flow: flowcontrol::FlowControl,
    /// Seats for writing list bodies (`handlers/stream.rs`).
    list_seats: Arc<tokio::sync::Semaphore>,
    /// Kubelet summaries fetched for `metrics.k8s.io`.
    summaries: resource_metrics::Summaries,
    /// Stops the background tasks when the server is dropped.
    stop: CancellationToken,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ApiServer {
    /// Loads the watch cache from `store`, creates the system namespaces if missing, and
    /// starts the background tasks (compaction, the admission policy loader) under the
    /// supervisor.
    pub async fn start(store: Arc<dyn Store>, options: Options) -> Result<Arc<Self>, StoreError> {
        shoal_metrics::install();
        let store: Arc<dyn Store> = Arc::new(metered::MeteredStore(store));
        let (store, encrypted) = match options.encryption {
            Some(config) => {
                let layer = Arc::new(encryption::EncryptedStore::new(store, config));
                (layer.clone() as Arc<dyn Store>, Some(layer))
            }
            None => (store, None),
        };
        let stop = CancellationToken::new();
        let sup = options.supervisor.clone();
        let cache = cache::WatchCache::start(store.clone(), &sup, stop.clone()).await?;
        let compacted = store.clone();
        sup.spawn(
            "apiserver/compactor",
            Restart::Always,
            stop.clone(),
            move || compactor::run(compacted.clone(), compactor::INTERVAL),
        );
        let server = Arc::new(ApiServer {
            registry: registry::Registry {
                network: options.services,
                encrypted,
                pod_security: options.pod_security,
                ..registry::Registry::new(store, cache.clone())
            },
            cache,
            openapi: openapi::OpenApi::build(),
            token: options.token,
            tokens: options.tokens,
            service_accounts: options
                .service_accounts
                .unwrap_or_else(|| Arc::new(serviceaccount::TokenIssuer::ephemeral())),
            audit: options.audit,
            supervisor: sup.clone(),
            flow: {
                let (readonly, mutating) = options
                    .max_in_flight
                    .unwrap_or((flowcontrol::DEFAULT_READONLY, flowcontrol::DEFAULT_MUTATING));
                flowcontrol::FlowControl::new(readonly, mutating)
            },
            list_seats: handlers::list_seats(),
            summaries: Default::default(),
            stop: stop.clone(),
        });
        server.bootstrap().await?;
        let weak = Arc::downgrade(&server);
        sup.spawn(
            "apiserver/crd-cleanup",
            Restart::Always,
            stop.clone(),
            move || crd::cleanup::run(weak.clone()),
        );
        if let Some(plugins) = options.plugins {
            let weak = Arc::downgrade(&server);
            sup.spawn(
                "apiserver/admission-policies",
                Restart::Always,
                stop,
                move || admission::policies::run(weak.clone(), plugins.clone()),
            );
        }
        Ok(server)
    }
}

/// Writes the audit events of a request as the policy asks (outside authentication, so
/// refused requests are audited too).
async fn audited(State(server): State<Arc<ApiServer>>, req: Request, next: Next) -> Response {
    let Some(audit) = server.audit.clone() else {
        return next.run(req).await;
    };
    let mut req = req;
    let attrs = audit_attributes(&server, &mut req);
    let (level, omit) = audit.policy.level(&attrs);
    if level == audit::Level::None {
        return next.run(req).await;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let received = meta::now_micro();
    let uri = req.uri().to_string();
    let agent = header_of(&req, http::header::USER_AGENT.as_str());
    let source = header_of(&req, "x-forwarded-for");
    let source = if source.is_empty() {
        "127.0.0.1".to_owned()
    } else {
        source
    };
    let (req, request_object) = if level >= audit::Level::Request {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, body::MAX_BODY + 1)
            .await
            .unwrap_or_default();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // JSON, YAML or protobuf, as the handler will read it (patches are JSON or YAML).
        let object = body::decode_object(&content_type, &bytes)
            .ok()
            .or_else(|| serde_json::from_slice(&bytes).ok())
            .or_else(|| body::from_yaml(&bytes).ok())
            .filter(|_| !bytes.is_empty());
        (
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            object,
        )
    } else {
        (req, None)
    };
    let ev = |stage: &str, code: Option<u16>, response: Option<&serde_json::Value>| {
        audit::event(
            &attrs,
            level,
            stage,
            &id,
            &uri,
            &source,
            &agent,
            &received,
            code,
            request_object.as_ref(),
            response,
        )
    };
    if !omit.iter().any(|s| s == "RequestReceived") {
        audit.send(ev("RequestReceived", None, None));
    }
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    // A watch goes on after its response starts: that is the stage it is logged at.
    let stage = if attrs.verb == "watch" {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    if omit.iter().any(|s| s == stage) {
        return resp;
    }
    // Response bodies are kept for RequestResponse when they are whole (not streamed).
    let small = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= body::MAX_BODY);
    if level == audit::Level::RequestResponse && small {
        let (parts, b) = resp.into_parts();
        let bytes = axum::body::to_bytes(b, body::MAX_BODY + 1)
            .await
            .unwrap_or_default();
        let object = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
        audit.send(ev(stage, Some(code), object.as_ref()));
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    audit.send(ev(stage, Some(code), None));
    resp
}

fn header_of(req: &Request, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Who asks and what, for the audit policy.
fn audit_attributes(server: &ApiServer, req: &mut Request) -> audit::Attributes {
    let user = server
        .user_of_request(req)
        .ok()
        .flatten()
        .unwrap_or_else(auth::UserInfo::anonymous);
    let info = request_info(req);
    audit::Attributes {
        user: user.username,
        groups: user.groups,
        verb: info.verb.clone(),
        resource: info.resource.as_ref().map(|r| {
            (
                r.group.clone(),
                r.combined(),
                r.namespace.clone(),
                r.name.clone(),
            )
        }),
        path: info.path,
    }
}

/// What a request asks (Kubernetes' `RequestInfo`), parsed once: the first middleware to ask
/// leaves it on the request for the others.
fn request_info(req: &mut Request) -> request::RequestInfo {
    if let Some(info) = req.extensions().get::<request::RequestInfo>() {
        return info.clone();
    }
    let info = request::RequestInfo::parse(
        req.method(),
        req.uri().path(),
        &request::Query::parse(req.uri().query()),
    );
    req.extensions_mut().insert(info.clone());
    info
}

/// Who a request's credentials say it is, once worked out.
#[derive(Clone)]
struct Authenticated(Result<Option<auth::UserInfo>, auth::UnknownToken>);

/// Paths anyone may read, as Kubernetes' `system:public-info-viewer` allows.
fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
}

impl ApiServer {
    /// Who sent a request with `headers` over a connection that presented `peer`: `Ok(None)` if it
    /// carries no credentials (anonymous),
    /// `Err` if its bearer token is no one's. Without an admin token (tests) everyone is the
    /// admin.
    pub fn user_of(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&tls::PeerCertificate>,
    ) -> Result<Option<auth::UserInfo>, auth::UnknownToken> {
        let Some(admin) = &self.token else {
            return Ok(Some(auth::UserInfo::admin()));
        };
        // A client certificate the TLS layer verified against the cluster CA comes first, as
        // in Kubernetes' chain of authenticators.
        if let Some(user) = peer.and_then(|p| auth::user_of_certificate(&p.0)) {
            return Ok(Some(user));
        }
        let Some(given) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Ok(None);
        };
        if auth::same_token(given, admin) {
            return Ok(Some(auth::UserInfo::admin()));
        }
        if let Some((_, u)) = self.tokens.iter().find(|(t, _)| auth::same_token(given, t)) {
            return Ok(Some(u.clone()));
        }
        if let Some((id, secret)) = bootstraptoken::parse(given) {
            return bootstraptoken::authenticate(&self.cache, id, secret).map(Some);
        }
        if serviceaccount::looks_like_jwt(given) {
            return self
                .service_accounts
                .authenticate(&self.cache, given)
                .map(Some);
        }
        Err(auth::UnknownToken)
    }

    /// Answers a TokenReview (`authentication.k8s.io/v1`): who the token of its spec is, as
    /// this server authenticates it (how a kubelet checks the callers of its own API).
    pub fn token_review(&self, mut review: serde_json::Value) -> serde_json::Value {
        use serde_json::json;
        let token = review
            .pointer("/spec/token")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let mut headers = http::HeaderMap::new();
        let user = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .ok()
            .filter(|_| !token.is_empty())
            .and_then(|v| {
                headers.insert(http::header::AUTHORIZATION, v);
                self.user_of(&headers, None).ok().flatten()
            });
        review["apiVersion"] = json!("authentication.k8s.io/v1");
        review["kind"] = json!("TokenReview");
        if !review
            .get("metadata")
            .is_some_and(serde_json::Value::is_object)
        {
            review["metadata"] = json!({});
        }
        review["metadata"]["creationTimestamp"] = serde_json::Value::Null;
        review["status"] = match user {
            Some(u) => json!({"authenticated": true, "user": u.to_json(),
                "audiences": self.service_accounts.audiences()}),
            None => json!({"user": {}, "error": "invalid bearer token"}),
        };
        review
    }

    /// [`Self::user_of`] for `req`, worked out once: the first middleware to ask leaves the
    /// answer on the request for the others.
    fn user_of_request(
        &self,
        req: &mut Request,
    ) -> Result<Option<auth::UserInfo>, auth::UnknownToken> {
        if let Some(Authenticated(known)) = req.extensions().get::<Authenticated>() {
            return known.clone();
        }
        let known = self.user_of(req.headers(), req.extensions().get());
        req.extensions_mut().insert(Authenticated(known.clone()));
        known
    }
}

/// Authenticates a request (a token nobody has: 401; none: `system:anonymous`), applies
/// impersonation headers the user may use, and authorizes what it asks (Kubernetes' message
/// when refused). The user it acts as goes with the request to the handlers.
async fn authenticate(
    State(server): State<Arc<ApiServer>>,
    mut req: Request,
    next: Next,
) -> Response {
    let user = match server.user_of_request(&mut req) {
        Ok(Some(u)) => u,
        Ok(None) => auth::UserInfo::anonymous(),
        Err(auth::UnknownToken) => return error::status_response(&StatusError::unauthorized()),
    };
    let user = match auth::impersonate(&server.cache, user, req.headers()) {
        Ok(u) => u,
        Err(e) => return error::status_response(&e),
    };
    let info = request_info(&mut req);
    if !is_public(req.uri().path()) {
        let decision = rbac::authorize(&server.cache, &user, &info);
        if !decision.allowed {
            return error::status_response(&rbac::forbidden(&user, &info, &decision.reason));
        }
    }
    req.extensions_mut().insert(Arc::new(user));
    next.run(req).await
}

/// Counts every request and times it to its response's head, as Kubernetes'
/// `apiserver_request_total` and `apiserver_request_duration_seconds` do (labels verb, group,
/// version, resource, subresource, scope, component, and the code for the count).
async fn metered(mut req: Request, next: Next) -> Response {
    let info = request_info(&mut req);
    let apply = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let upgrade = req.headers().contains_key(http::header::UPGRADE);
    let dry_run = request::Query::parse(req.uri().query())
        .get("dryRun")
        .unwrap_or("")
        .to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let verb = match info.verb.as_str() {
        _ if upgrade => "CONNECT",
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "create" => "POST",
        "update" => "PUT",
        "patch" if apply => "APPLY",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        other => match other {
            "head" => "HEAD",
            "options" => "OPTIONS",
            "post" => "POST",
            "put" => "PUT",
            _ => "GET",
        },
    };
    let r = info.resource.clone().unwrap_or_default();
    let scope = match (&info.resource, r.name.is_empty(), r.namespace.is_empty()) {
        (None, ..) => "",
        (Some(_), false, _) => "resource",
        (Some(_), true, false) => "namespace",
        (Some(_), true, true) => "cluster",
    };
    let labels = [
        ("verb", verb.to_owned()),
        ("dry_run", dry_run),
        ("group", r.group),
        ("version", r.version),
        ("resource", r.resource),
        ("subresource", r.subresource),
        ("scope", scope.to_owned()),
        ("component", "apiserver".to_owned()),
    ];
    metrics::histogram!("apiserver_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    let mut counted = labels.to_vec();
    counted.push(("code", resp.status().as_u16().to_string()));
    metrics::counter!("apiserver_request_total", &counted).increment(1);
    resp
}

/// Gives a request a seat of its priority level for as long as its response is being sent,
/// or answers 429 (see [`flowcontrol`]).
async fn flow_controlled(
    State(server): State<Arc<ApiServer>>,
    req: Request,
    next: Next,
) -> Response {
    let ext = req.extensions();
    let (Some(user), Some(info)) = (
        ext.get::<Arc<auth::UserInfo>>().cloned(),
        ext.get::<request::RequestInfo>(),
    ) else {
        return next.run(req).await;
    };
    let Some(seat) = server.flow.admit(&user, info).await else {
        return flowcontrol::too_many_requests();
    };
    let resp = next.run(req).await;
    if seat.is_exempt() {
        return resp;
    }
    // The seat goes with the body, so a long list holds it until it has been written.
    let (parts, body) = resp.into_parts();
    let body = axum::body::Body::new(flowcontrol::Held::new(body, seat));
    Response::from_parts(parts, body)
}

/// Starts an API server on `store` at a free loopback port, plain HTTP (for benchmarks and
/// in-process tests; `options.token` is normally `None`); it serves until the returned token
/// is cancelled.
pub async fn serve_loopback(
    store: Arc<dyn Store>,
    options: Options,
) -> std::io::Result<(std::net::SocketAddr, tokio_util::sync::CancellationToken)> {
    let server = ApiServer::start(store, options)
        .await
        .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    server
        .publish_endpoint(addr)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(tls::serve(listener, router(server), None, stop.clone()));
    Ok((addr, stop))
}

/// The API as an axum router.
pub fn router(server: Arc<ApiServer>) -> Router {
    Router::new()
        .fallback(handlers::dispatch)
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            flow_controlled,
        ))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            audited,
        ))
        .layer(axum::middleware::from_fn(metered))
        .with_state(server)
}
