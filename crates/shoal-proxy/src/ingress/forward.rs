//! Forwarding one request: its host and path pick a backend in the routing table, and the
//! request goes to one of that backend's endpoints over a pooled HTTP/1.1 connection, with
//! the hop-by-hop headers removed and `X-Forwarded-*` added. A request without a body is
//! retried on the next endpoint when connecting fails (an endpoint that just went away),
//! so a rolling update drops none of those.

use super::SharedTable;
use super::activator::Activator;
use super::routes::{Target, Wake, host_of};
use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to one endpoint may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a request waits for a Deployment to wake from zero before it is answered 504.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(60);

/// The request handler of one listener (plain or TLS).
pub struct Forwarder {
    table: SharedTable,
    /// Holds and counts requests for scale-to-zero Deployments.
    activator: Option<Arc<Activator>>,
    client: Client<HttpConnector, Body>,
    /// `http` or `https`: what the client used, for `X-Forwarded-Proto`.
    scheme: &'static str,
}

/// A router that forwards every request, for [`shoal_net::serve`].
pub fn router(
    table: SharedTable,
    activator: Option<Arc<Activator>>,
    scheme: &'static str,
) -> axum::Router {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let f = Arc::new(Forwarder {
        table,
        activator,
        client,
        scheme,
    });
    axum::Router::new().fallback(move |req: Request<Body>| {
        let f = f.clone();
        async move { f.forward(req).await }
    })
}

fn plain(code: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or_default()
    );
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(n);
    }
}

impl Forwarder {
    async fn forward(&self, req: Request<Body>) -> Response<Body> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let host = host_of(&authority);
        let table = self.table.get();
        let path = req.uri().path().to_owned();
        let Some(mut target) = table.route(&host, &path).cloned() else {
            return plain(StatusCode::NOT_FOUND);
        };
        let wake = target.wakes.clone();
        let _in_flight = match (&self.activator, &wake) {
            (Some(a), Some(w)) => Some(a.begin(w)),
            _ => None,
        };
        if target.backends.is_empty() {
            match self.hold(wake.as_deref(), &host, &path).await {
                Ok(t) => target = t,
                Err(code) => {
                    tracing::debug!(host, backend = %target.service, problem = ?target.problem, "no endpoint for an ingress request");
                    return plain(code);
                }
            }
        }
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        if !headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&authority)
        {
            headers.insert(header::HOST, v);
        }
        if let Ok(v) = HeaderValue::from_str(&authority) {
            headers.insert(HeaderName::from_static("x-forwarded-host"), v);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(self.scheme),
        );
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        // Only a request without a body can be sent again.
        let replayable = body.size_hint().exact() == Some(0);
        let mut body = Some(body);
        let mut held = false;
        let mut candidates: Vec<_> = target.candidates().collect();
        while let Some(addr) = (!candidates.is_empty()).then(|| candidates.remove(0)) {
            let Ok(uri) = format!("http://{addr}{path_and_query}").parse::<http::Uri>() else {
                return plain(StatusCode::BAD_REQUEST);
            };
            let b = match body.take() {
                Some(b) => b,
                None if replayable => Body::empty(),
                None => break,
            };
            let mut out = Request::new(b);
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = uri;
            *out.version_mut() = Version::HTTP_11;
            *out.headers_mut() = headers.clone();
            match self.client.request(out).await {
                Ok(resp) => {
                    let (mut p, b) = resp.into_parts();
                    strip_hop_by_hop(&mut p.headers);
                    return Response::from_parts(p, Body::new(b));
                }
                Err(e) if e.is_connect() && replayable => {
                    tracing::debug!(%addr, backend = %target.service, error = %e, "endpoint refused; trying the next");
                    // Every endpoint went away (scaled to zero meanwhile): wait for new ones.
                    if candidates.is_empty() && wake.is_some() && !held {
                        held = true;
                        if let Ok(t) = self.hold(wake.as_deref(), &host, &path).await {
                            candidates = t.candidates().filter(|a| *a != addr).collect();
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%addr, backend = %target.service, error = %e, "ingress request failed");
                    return plain(StatusCode::BAD_GATEWAY);
                }
            }
        }
        plain(StatusCode::BAD_GATEWAY)
    }

    /// Waits until the route of `host` and `path` has endpoints, waking `wake` from zero;
    /// without a Deployment to wake, or past [`HOLD_TIMEOUT`], the status to answer.
    async fn hold(
        &self,
        wake: Option<&Wake>,
        host: &str,
        path: &str,
    ) -> Result<Arc<Target>, StatusCode> {
        let (Some(activator), Some(wake)) = (&self.activator, wake) else {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        };
        let mut tables = self.table.subscribe();
        activator.wake(wake);
        let deadline = tokio::time::Instant::now() + HOLD_TIMEOUT;
        loop {
            if let Some(t) = tables.borrow_and_update().route(host, path)
                && !t.backends.is_empty()
            {
                return Ok(t.clone());
            }
            match tokio::time::timeout_at(deadline, tables.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StatusCode::SERVICE_UNAVAILABLE),
                Err(_) => return Err(StatusCode::GATEWAY_TIMEOUT),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
