//! In-process HTTP: a runtime registers the request handler of each HTTP container under
//! its pod address and port, so that a front door on the same node (the ingress) hands a
//! request to it with no socket in between. A handler is registered while its container
//! accepts requests and removed when it stops (before its grace period), so a caller that
//! finds none falls back to the network like any other client.

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

/// The handlers of one node, by address.
#[derive(Clone, Default)]
pub struct LocalHttp {
    handlers: Arc<RwLock<HashMap<SocketAddr, Handler>>>,
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
