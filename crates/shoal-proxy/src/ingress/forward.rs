//! Forwarding one request: its host and path pick a backend in the routing table, and the
//! request goes to one of that backend's endpoints — in process when the endpoint is an HTTP
//! container of this node ([`LocalHttp`]), else over a pooled HTTP/1.1 connection — with
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
use hyper_util::rt::{TokioExecutor, TokioIo};
use shoal_runtime::local_http::LocalHttp;
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
    /// This node's HTTP containers, called in process.
    local: LocalHttp,
    client: Client<HttpConnector, Body>,
    /// `http` or `https`: what the client used, for `X-Forwarded-Proto`.
    scheme: &'static str,
}

/// A router that forwards every request, for [`shoal_net::serve`].
pub fn router(
    table: SharedTable,
    activator: Option<Arc<Activator>>,
    local: LocalHttp,
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
        local,
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

/// Whether a request asks to switch protocols (`Connection: upgrade` and an `Upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Copies bytes both ways between a client and an endpoint once both switched protocols.
async fn splice_upgraded(client: hyper::upgrade::OnUpgrade, server: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, server) {
        Ok((c, s)) => {
            let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
        }
        Err(e) => tracing::debug!(error = %e, "an upgraded connection failed"),
    }
}

/// A request for a handler in this process: origin form (the guest takes its authority
/// from Host), HTTP/1.1.
fn in_process_request(
    method: http::Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Body,
) -> Request<Body> {
    let mut out = Request::new(body);
    *out.method_mut() = method;
    if let Ok(origin) = path_and_query.parse() {
        *out.uri_mut() = origin;
    }
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;
    out
}

/// Calls a handler in this process.
async fn in_process(
    handler: &shoal_runtime::local_http::Handler,
    req: Request<Body>,
) -> Response<Body> {
    use http_body_util::BodyExt;
    let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
    let (mut p, b) = handler(req).await.into_parts();
    strip_hop_by_hop(&mut p.headers);
    Response::from_parts(p, Body::new(b))
}

impl Forwarder {
    async fn forward(&self, mut req: Request<Body>) -> Response<Body> {
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
        // A protocol upgrade (WebSocket): kept, and sent over the network (wasi:http has none).
        let upgrade = is_upgrade(req.headers()).then(|| {
            let protocol = req.headers().get(header::UPGRADE).cloned();
            (hyper::upgrade::on(&mut req), protocol)
        });
        // At zero with a standby (opted in, image on this node): answered at once by the
        // component while its pod starts.
        let mut standby = None;
        if target.backends.is_empty()
            && upgrade.is_none()
            && let (Some(activator), Some(w)) = (&self.activator, &wake)
            && let Some(handler) = w.standby.as_ref().and_then(|t| self.local.standby(t))
        {
            activator.wake(w);
            standby = Some(handler);
        }
        if target.backends.is_empty() && standby.is_none() {
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
        if let Some((_, Some(protocol))) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
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
        if let Some(handler) = standby {
            metrics::counter!("shoal_ingress_requests_total", "handoff" => "standby").increment(1);
            let out = in_process_request(parts.method, &path_and_query, headers, body);
            return in_process(&handler, out).await;
        }
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
            if let Some(handler) = self.local.get(&addr).filter(|_| upgrade.is_none()) {
                // Origin form, as a server reads it: the guest takes its authority from Host.
                if let Ok(origin) = path_and_query.parse() {
                    *out.uri_mut() = origin;
                }
                metrics::counter!("shoal_ingress_requests_total", "handoff" => "in_process")
                    .increment(1);
                return in_process(&handler, out).await;
            }
            metrics::counter!("shoal_ingress_requests_total", "handoff" => "network").increment(1);
            match self.client.request(out).await {
                Ok(mut resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let Some((client_side, _)) = upgrade else {
                        return plain(StatusCode::BAD_GATEWAY);
                    };
                    let server_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(splice_upgraded(client_side, server_side));
                    // Its Connection and Upgrade headers stay: they are the answer.
                    let (p, _) = resp.into_parts();
                    return Response::from_parts(p, Body::empty());
                }
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
        metrics::counter!("shoal_ingress_held_requests_total").increment(1);
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
    use crate::ingress::routes::{Objects, build};
    use serde_json::json;
    use tower::ServiceExt;

    /// An HTTP/1.1 server answering `network <host>` on a free loopback port.
    async fn backend() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            let host = req.headers().get(header::HOST).cloned();
                            let proto = req.headers().get("x-forwarded-proto").cloned();
                            let text = format!("network {host:?} {proto:?}");
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(text)),
                            ))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// A loopback port nothing listens on.
    fn refused() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn table(endpoints: &[std::net::SocketAddr]) -> SharedTable {
        let class = serde_json::from_value(json!({"metadata": {"name": "shoal"},
            "spec": {"controller": shoal_api::net::INGRESS_CONTROLLER}}))
        .unwrap();
        let ing = serde_json::from_value(json!({"metadata": {"name": "i", "namespace": "default"},
            "spec": {"ingressClassName": "shoal", "rules": [{"host": "h.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}}))
        .unwrap();
        let svc = serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}))
        .unwrap();
        let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> = endpoints
            .iter()
            .enumerate()
            .map(|(i, a)| {
                serde_json::from_value(json!({
                    "metadata": {"name": format!("s-{i}"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "s"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": a.port(), "protocol": "TCP"}],
                    "endpoints": [{"addresses": [a.ip().to_string()], "conditions": {"ready": true}}],
                }))
                .unwrap()
            })
            .collect();
        let shared = SharedTable::default();
        shared.set(build(&Objects {
            ingresses: vec![&ing],
            classes: vec![&class],
            services: vec![&svc],
            slices: slices.iter().collect(),
            ..Default::default()
        }));
        shared
    }

    async fn get(app: &axum::Router, host: &str) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let code = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn requests_go_to_live_endpoints_past_refusing_ones_and_in_process_when_local() {
        let live = backend().await;
        let app = router(
            table(&[refused(), live]),
            None,
            LocalHttp::default(),
            "https",
        );
        for _ in 0..4 {
            let (code, body) = get(&app, "h.test").await;
            assert_eq!(code, StatusCode::OK, "{body}");
            assert_eq!(body, "network Some(\"h.test\") Some(\"https\")");
        }
        assert_eq!(get(&app, "other.test").await.0, StatusCode::NOT_FOUND);
        // The same endpoint served in process takes precedence over its socket.
        let local = LocalHttp::default();
        let handler: shoal_runtime::local_http::Handler = Arc::new(|req| {
            Box::pin(async move {
                use http_body_util::BodyExt;
                let text = format!("in process {}", req.uri());
                Response::new(
                    http_body_util::Full::new(bytes::Bytes::from(text))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
            })
        });
        let _reg = local.register(live, handler);
        let app = router(table(&[live]), None, local, "http");
        assert_eq!(get(&app, "h.test").await.1, "in process /x");
        // Every endpoint refusing: 502.
        let app = router(table(&[refused()]), None, LocalHttp::default(), "http");
        assert_eq!(get(&app, "h.test").await.0, StatusCode::BAD_GATEWAY);
        // No endpoint and nothing to wake: 503.
        let app = router(table(&[]), None, LocalHttp::default(), "http");
        assert_eq!(get(&app, "h.test").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Reads from `s` up to the end of an HTTP head.
    async fn read_head(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed mid-head");
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upgrade_is_passed_through_and_both_ways_spliced() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An endpoint switching to an echo protocol when asked.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let head = read_head(&mut s).await.to_lowercase();
            assert!(head.contains("upgrade: echo"), "{head}");
            assert!(head.contains("connection: upgrade"), "{head}");
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let app = router(table(&[endpoint]), None, LocalHttp::default(), "http");
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = front.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(shoal_net::serve(front, app, None, stop.clone()));
        let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
        c.write_all(
            b"GET /ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let head = read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_lowercase().contains("upgrade: echo"), "{head}");
        for word in ["ping", "pong"] {
            c.write_all(word.as_bytes()).await.unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, word.as_bytes());
        }
        stop.cancel();
    }

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
