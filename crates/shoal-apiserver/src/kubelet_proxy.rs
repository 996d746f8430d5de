//! `pods/log`: checked here as Kubernetes checks it, then proxied to the kubelet of the pod's
//! node over HTTPS and streamed back; and [`Upstream`], the one way the API server sends a
//! request on a client's behalf (logs here, the `proxy` subresources in `proxy.rs`).
//!
//! Like a Kubernetes API server started without `--kubelet-certificate-authority`, the kubelet's
//! serving certificate is not verified; the request carries the cluster token.

use crate::ApiServer;
use crate::error::ApiResult;
use crate::request::Query;
use axum::body::Body;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use shoal_api::{StatusError, resources};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Query parameters the kubelet understands, forwarded as given.
const FORWARDED: &[&str] = &[
    "follow",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "previous",
    "limitBytes",
];

fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Which container's log is wanted, checked against the pod.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let spec = &pod["spec"];
    let main = names(spec.get("containers"));
    let init = names(spec.get("initContainers"));
    let ephemeral = names(spec.get("ephemeralContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if main.iter().chain(&init).chain(&ephemeral).any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(StatusError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))
        .into()),
        None if main.len() == 1 => Ok(main[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                msg.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(StatusError::bad_request(msg).into())
        }
    }
}

/// Refuses, as Kubernetes does, a log of a container that has never started.
fn check_started(pod: &Value, name: &str, c: &str, previous: bool) -> ApiResult<()> {
    let status = &pod["status"];
    let entry = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|k| status[*k].as_array().into_iter().flatten())
    .find(|s| s["name"] == c);
    let waiting = match entry {
        None => Some("ContainerCreating".to_owned()),
        Some(s) => {
            let ran = s["restartCount"].as_i64().unwrap_or(0) > 0
                || s["lastState"].get("terminated").is_some();
            match s["state"].get("waiting") {
                Some(w) if !ran || previous && s["lastState"].get("terminated").is_none() => {
                    Some(w["reason"].as_str().unwrap_or("").to_owned())
                }
                _ => None,
            }
        }
    };
    match waiting {
        Some(_) if previous => Err(StatusError::bad_request(format!(
            "previous terminated container \"{c}\" in pod \"{name}\" not found"
        ))
        .into()),
        Some(reason) => Err(StatusError::bad_request(format!(
            "container \"{c}\" in pod \"{name}\" is waiting to start: {reason}"
        ))
        .into()),
        None => Ok(()),
    }
}

/// The node's kubelet endpoint: its InternalIP and `daemonEndpoints.kubeletEndpoint.Port`.
pub(crate) fn kubelet_endpoint(node: &Value) -> Option<(IpAddr, u16)> {
    let ip = node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .parse()
        .ok()?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
    Some((ip, u16::try_from(port).ok()?))
}

pub async fn pod_log(s: &Arc<ApiServer>, ns: &str, name: &str, q: &Query) -> ApiResult<Response> {
    let pods = resources::find("", "v1", "pods").expect("pods are served");
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let pod = s
        .cache
        .resource(pods)
        .get(&pods.storage_key(Some(ns), name))
        .ok_or_else(|| StatusError::not_found("pods", "", name))?;
    let pod = pod.value();
    let c = container(pod, name, q.get("container"))?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(
            StatusError::bad_request(format!("pod {name} does not have a host assigned")).into(),
        );
    }
    check_started(pod, name, &c, q.flag("previous"))?;
    let node = s
        .cache
        .resource(nodes)
        .get(&nodes.storage_key(None, node_name))
        .ok_or_else(|| StatusError::not_found("nodes", "", node_name))?;
    let (ip, port) = kubelet_endpoint(node.value()).ok_or_else(|| {
        StatusError::internal(format!(
            "node {node_name} does not report a kubelet endpoint (InternalIP and daemonEndpoints.kubeletEndpoint.Port)"
        ))
    })?;
    let mut path = format!("/containerLogs/{ns}/{name}/{c}");
    let forwarded: Vec<(&str, &str)> = FORWARDED
        .iter()
        .filter_map(|k| Some((*k, q.get(k)?)))
        .collect();
    if !forwarded.is_empty() {
        path.push('?');
        path.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(forwarded)
                .finish(),
        );
    }
    let req = http::Request::get(path)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| StatusError::internal(e.to_string()))?;
    Upstream::new(SocketAddr::new(ip, port), true, s.token.clone())
        .send(req)
        .await
}

/// `pods/exec`, `pods/attach` and `pods/portforward` of `path`: (namespace, pod, subresource).
pub(crate) fn streaming_target(path: &str) -> Option<(String, String, &'static str)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, sub] => {
            let sub = match *sub {
                "exec" => "exec",
                "attach" => "attach",
                "portforward" => "portforward",
                _ => return None,
            };
            Some(((*ns).to_owned(), (*name).to_owned(), sub))
        }
        _ => None,
    }
}

/// Headers of a streaming request that are not passed on to the kubelet: the client's
/// credentials and who it acts as (the kubelet trusts the API server's), and framing.
fn kept_for_kubelet(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    !(n == "authorization"
        || n == "host"
        || n == "content-length"
        || n == "transfer-encoding"
        || n.starts_with("impersonate-"))
}

/// exec, attach and port-forward: checked as Kubernetes checks them, then the upgrade request
/// goes to the pod's kubelet, and once the kubelet has switched protocols the two connections
/// are joined byte for byte (the kubelet speaks the streaming protocols; the client's WebSocket
/// or SPDY session runs end to end). A refusal by the kubelet is passed back as it is, so kubectl
/// falls back from WebSocket to SPDY as it does against Kubernetes.
pub async fn stream(
    s: &Arc<ApiServer>,
    mut req: axum::extract::Request,
    ns: &str,
    name: &str,
    sub: &'static str,
) -> ApiResult<Response> {
    let pods = resources::find("", "v1", "pods").expect("pods are served");
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let q = Query::parse(req.uri().query());
    let pod = s
        .cache
        .resource(pods)
        .get(&pods.storage_key(Some(ns), name))
        .ok_or_else(|| StatusError::not_found("pods", "", name))?;
    let pod = pod.value();
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(
            StatusError::bad_request(format!("pod {name} does not have a host assigned")).into(),
        );
    }
    let path = match sub {
        "portforward" => format!("/portForward/{ns}/{name}"),
        _ => {
            let c = container(pod, name, q.get("container"))?;
            let phase = pod["status"]["phase"].as_str().unwrap_or("");
            if matches!(phase, "Succeeded" | "Failed") {
                let what = if sub == "exec" {
                    "exec into"
                } else {
                    "attach to"
                };
                return Err(StatusError::bad_request(format!(
                    "cannot {what} a container in a completed pod; current phase is {phase}"
                ))
                .into());
            }
            format!("/{sub}/{ns}/{name}/{c}")
        }
    };
    let path = match req.uri().query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    };
    let node = s
        .cache
        .resource(nodes)
        .get(&nodes.storage_key(None, node_name))
        .ok_or_else(|| StatusError::not_found("nodes", "", node_name))?;
    let (ip, port) = kubelet_endpoint(node.value()).ok_or_else(|| {
        StatusError::internal(format!(
            "node {node_name} does not report a kubelet endpoint (InternalIP and daemonEndpoints.kubeletEndpoint.Port)"
        ))
    })?;
    let mut upstream = http::Request::builder()
        .method(req.method().clone())
        .uri(path)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| StatusError::internal(e.to_string()))?;
    for (k, v) in req.headers() {
        if kept_for_kubelet(k) {
            upstream.headers_mut().append(k, v.clone());
        }
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Upstream::new(SocketAddr::new(ip, port), true, s.token.clone())
        .upgrade(upstream)
        .await?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(relayed(resp));
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(Body::empty());
    *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(client_upgrade, kubelet_upgrade) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => {
                tracing::debug!(client = ?c.err(), kubelet = ?k.err(), "streaming upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut kubelet = TokioIo::new(kubelet);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await;
    });
    Ok(out)
}

/// Where the API server sends a request on someone's behalf: a kubelet (HTTPS, with the
/// cluster token) or a workload (HTTP, or HTTPS when asked).
pub(crate) struct Upstream {
    addr: SocketAddr,
    tls: bool,
    token: Option<String>,
}

/// Headers that belong to one connection, not to the request or answer forwarded.
pub(crate) fn hop_by_hop(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

impl Upstream {
    pub(crate) fn new(addr: SocketAddr, tls: bool, token: Option<String>) -> Self {
        Upstream { addr, tls, token }
    }

    /// Sends `req` (its URI a path and query) and streams the answer back. An upstream that
    /// cannot be reached is a 503, as kube-apiserver's proxy answers.
    pub(crate) async fn send(
        &self,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> ApiResult<Response> {
        Ok(relayed(self.exchange(req).await?))
    }

    /// Sends an upgrade request and returns the answer as it is, its connection kept for the
    /// upgrade (an upstream that cannot be reached is a 503).
    pub(crate) async fn upgrade(
        &self,
        req: http::Request<http_body_util::Empty<bytes::Bytes>>,
    ) -> ApiResult<http::Response<hyper::body::Incoming>> {
        self.exchange(req).await
    }

    /// Connects (over TLS when asked), names the upstream as `Host`, adds the token, and sends.
    async fn exchange<B>(
        &self,
        mut req: http::Request<B>,
    ) -> ApiResult<http::Response<hyper::body::Incoming>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let addr = self.addr;
        let unreachable = |e: &dyn std::fmt::Display| {
            StatusError::service_unavailable(format!("error trying to reach service: {e}"))
        };
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| unreachable(&format!("dial tcp {addr}: i/o timeout")))?
                .map_err(|e| unreachable(&format!("dial tcp {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let headers = req.headers_mut();
        if let Ok(host) = http::HeaderValue::from_str(&addr.to_string()) {
            headers.insert(http::header::HOST, host);
        }
        if let Some(token) = &self.token
            && let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        if self.tls {
            let connector = tokio_rustls::TlsConnector::from(client_config());
            let tls = connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .map_err(|e| unreachable(&e))?;
            exchange(tls, req).await
        } else {
            exchange(tcp, req).await
        }
        .map_err(|e| unreachable(&e).into())
    }
}

/// An upstream's answer as the client gets it: status, body, and the headers that are not
/// the upstream connection's own.
fn relayed(resp: http::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) && k != http::header::CONTENT_LENGTH {
            out.headers_mut().append(k, v.clone());
        }
    }
    out
}

/// One HTTP/1.1 request over `io`, the connection driven in the background.
/// The connection allows upgrades (exec, attach, port-forward); other requests are unaffected.
async fn exchange<IO, B>(
    io: IO,
    req: http::Request<B>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await
}

fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyKubeletCert(provider.clone()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// Accepts any kubelet certificate (Kubernetes' default without a kubelet CA), while still
/// checking the handshake signatures so the connection is encrypted to whoever holds the key.
#[derive(Debug)]
struct AnyKubeletCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyKubeletCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_is_checked_like_kubernetes() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = |r: ApiResult<String>| match r {
            Err(e) => format!("{e:?}"),
            Ok(c) => panic!("expected an error, got {c}"),
        };
        assert!(err(container(&pod, "p", None)).contains(
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        ));
        assert!(
            err(container(&pod, "p", Some("z"))).contains("container z is not valid for pod p")
        );
        assert_eq!(container(&pod, "p", Some("i")).unwrap(), "i");
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container(&one, "p", None).unwrap(), "only");
    }

    #[test]
    fn waiting_containers_have_no_logs() {
        let pod = json!({"status": {"containerStatuses": [
            {"name": "a", "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}},
            {"name": "b", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}},
        ]}});
        assert!(check_started(&pod, "p", "a", false).is_err());
        assert!(check_started(&pod, "p", "b", false).is_ok());
        assert!(check_started(&pod, "p", "b", true).is_ok());
        assert!(check_started(&pod, "p", "missing", false).is_err());
    }
}
