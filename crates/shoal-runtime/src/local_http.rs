//! In-process HTTP: a runtime registers the request handler of each HTTP container under
//! its pod address and port, so that a front door on the same node (the ingress) hands a
//! request to it with no socket in between. A handler is registered while its container
//! accepts requests and removed when it stops (before its grace period), so a caller that
//! finds none falls back to the network like any other client.
//!
//! A runtime may also make **standby** handlers ([`LocalHttp::standby`]): a Deployment's HTTP
//! component run from its pod template with no pod, so that the node's front door answers
//! the first requests for a Deployment waking from zero while its pod starts (the durable
//! writes of the chain Deployment → ReplicaSet → pod → binding → status → endpoints cost tens
//! of milliseconds; a fresh instance costs well under one). A standby instance has the
//! template's command, arguments, literal environment and memory limit, and nothing a pod
//! would get from the node: no volumes, no network (its connects and outgoing requests are
//! refused), no logs (its output is discarded).

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// The error type of request and response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
pub type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// Answers one request (errors are answered as responses, as a server would).
pub type Handler =
    Arc<dyn Fn(http::Request<Body>) -> BoxFuture<'static, http::Response<Body>> + Send + Sync>;

/// What a standby handler runs: one container of a pod template, without a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Standby {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// Bytes.
    pub memory_limit: Option<u64>,
}

/// Makes the standby handler of a template; `None` when it cannot (the image is not on the
/// node, or is no HTTP component).
pub type StandbyMaker = Arc<dyn Fn(&Standby) -> Option<Handler> + Send + Sync>;

/// The handlers of one node, by address.
#[derive(Clone, Default)]
pub struct LocalHttp {
    handlers: Arc<RwLock<HashMap<SocketAddr, Handler>>>,
    standby: Arc<RwLock<Option<StandbyMaker>>>,
    home: Arc<RwLock<Option<tokio::runtime::Handle>>>,
}

impl std::fmt::Debug for LocalHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHttp").finish_non_exhaustive()
    }
}

/// Keeps a handler registered until dropped.
#[must_use = "the handler is removed when the registration drops"]
pub struct Registration {
    local: LocalHttp,
    addr: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.local
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.addr);
    }
}

impl LocalHttp {
    /// Serves requests for `addr` with `handler` until the registration drops.
    pub fn register(&self, addr: SocketAddr, handler: Handler) -> Registration {
        self.handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, handler);
        Registration {
            local: self.clone(),
            addr,
        }
    }

    /// The async runtime the handlers run on: a front door whose connections are served there
    /// calls them with no hop between runtimes.
    pub fn home(&self) -> Option<tokio::runtime::Handle> {
        self.home.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Says where the handlers run (the runtime registering them does).
    pub fn set_home(&self, handle: tokio::runtime::Handle) {
        *self.home.write().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Makes standby handlers with `maker` from now on.
    pub fn make_standby_with(&self, maker: StandbyMaker) {
        *self.standby.write().unwrap_or_else(|p| p.into_inner()) = Some(maker);
    }

    /// A handler running `template` with no pod, if this node's runtime can make one.
    pub fn standby(&self, template: &Standby) -> Option<Handler> {
        let maker = self
            .standby
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        maker(template)
    }

    /// The handler serving `addr` in this process, if any.
    pub fn get(&self, addr: &SocketAddr) -> Option<Handler> {
        self.handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_handler_serves_while_registered() {
        let local = LocalHttp::default();
        let addr: SocketAddr = "127.64.0.2:8080".parse().unwrap();
        let handler: Handler = Arc::new(|req: http::Request<Body>| {
            Box::pin(async move {
                let text = format!("{} {}", req.method(), req.uri().path());
                http::Response::new(
                    http_body_util::Full::new(bytes::Bytes::from(text))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
            })
        });
        let reg = local.register(addr, handler);
        let h = local.get(&addr).expect("registered");
        let empty = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut req = http::Request::new(empty);
        *req.uri_mut() = "/x".parse().unwrap();
        let body = h(req).await.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "GET /x");
        drop(reg);
        assert!(local.get(&addr).is_none());
    }
}
