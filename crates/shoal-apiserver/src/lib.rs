//! Shoal's Kubernetes-compatible API server.
//!
//! Owns the HTTP API kubectl and kube-rs speak: discovery, CRUD, watch, patch and apply,
//! tables, OpenAPI, the watch cache and `ApiError` → `Status`. It is the only component that
//! touches the [`shoal_store::Store`]. It does not run controllers, the scheduler or kubelets; `pods/log`
//! is proxied to the pod's kubelet.
//!
//! Start at [`ApiServer::start`] and [`router`]; requests enter at [`handlers::dispatch`].

mod admission;
mod apply;
mod body;
mod bootstrap;
pub mod cache;
pub mod canonical;
mod compactor;
pub mod crd;
mod discovery;
pub mod encryption;
mod error;
pub mod handlers;
mod kinds;
mod kubelet_proxy;
mod meta;
mod openapi;
mod patch;
mod protobuf;
mod proxy;
pub mod registry;
mod request;
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
    /// The plugin engine and module rules for admission policies; `None`: policy objects are
    /// stored but never loaded, so they stay `Pending` and apply to nothing.
    pub plugins: Option<PluginOptions>,
    /// Runs the server's background tasks and answers `/readyz` from their health.
    pub supervisor: Supervisor,
    /// The ranges Services take addresses and node ports from (`--service-cluster-ip-range`).
    pub services: kinds::ServiceNetwork,
    /// Encryption at rest (`--encryption-provider-config`); `None` stores values as they are.
    pub encryption: Option<encryption::EncryptionConfig>,
}

/// The API server's shared state.
pub struct ApiServer {
    pub registry: registry::Registry,
    pub cache: Arc<cache::WatchCache>,
    openapi: openapi::OpenApi,
    /// Bearer token every request must carry; `None` disables authentication (tests only).
    token: Option<String>,
    supervisor: Supervisor,
    /// Seats for writing list bodies (`handlers/stream.rs`).
    list_seats: Arc<tokio::sync::Semaphore>,
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
                ..registry::Registry::new(store, cache.clone())
            },
            cache,
            openapi: openapi::OpenApi::build(),
            token: options.token,
            supervisor: sup.clone(),
            list_seats: handlers::list_seats(),
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

/// Paths anyone may read, as Kubernetes' `system:public-info-viewer` allows.
fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
}

async fn authenticate(State(server): State<Arc<ApiServer>>, req: Request, next: Next) -> Response {
    if let Some(token) = &server.token
        && !is_public(req.uri().path())
    {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Constant-time comparison: the token is the cluster's only credential.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return error::status_response(&StatusError::unauthorized());
        }
    }
    next.run(req).await
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
            authenticate,
        ))
        .with_state(server)
}
