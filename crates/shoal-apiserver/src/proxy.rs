//! The proxy subresources, as `kubectl proxy` users and dashboards use them:
//! `pods/[scheme:]NAME[:PORT]/proxy/PATH` to the pod's IP, `services/[scheme:]NAME[:PORT]/proxy/PATH`
//! to one ready endpoint of the Service (picked at random, as kube-apiserver does), and
//! `nodes/NAME[:PORT]/proxy/PATH` to the node's kubelet. The request (method, path, query,
//! headers but the client's credentials, body) goes upstream and the response streams back.
//!
//! Upstreams are reached over plain HTTP, or HTTPS when the scheme says so (the kubelet
//! always); as for the kubelet's logs, upstream certificates are not verified.

use crate::ApiServer;
use crate::error::ApiResult;
use crate::kubelet_proxy::{Upstream, hop_by_hop, kubelet_endpoint};
use bytes::Bytes;
use http::{HeaderMap, Method, header};
use shoal_api::{StatusError, resources};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What a proxy request names: `[scheme:]name[:port]`, split as Kubernetes'
/// `SplitSchemeNamePort` does.
#[derive(Debug, PartialEq, Eq)]
struct Id<'a> {
    scheme: &'a str,
    name: &'a str,
    port: &'a str,
}

fn split_id(id: &str) -> Option<Id<'_>> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] if matches!(*scheme, "http" | "https") => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty()).then_some(Id { scheme, name, port })
}

/// A proxy request, as routed: the resource's plural, namespace and id, and the rest.
pub struct ProxyRequest<'a> {
    pub plural: &'static str,
    pub namespace: Option<&'a str>,
    pub id: &'a str,
    /// The path after `/proxy`, with its leading `/` (or empty).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

pub async fn proxy(s: &Arc<ApiServer>, r: ProxyRequest<'_>) -> ApiResult<axum::response::Response> {
    let id = split_id(r.id).ok_or_else(|| {
        StatusError::bad_request(format!(
            "invalid request {:?}: expected [scheme:]name[:port]",
            r.id
        ))
    })?;
    let ns = r.namespace.unwrap_or("default");
    // A consistent read, as for a GET: the pod or endpoints just written are seen.
    s.cache.sync().await?;
    let upstream = match r.plural {
        "pods" => pod_upstream(s, ns, &id)?,
        "services" => service_upstream(s, ns, &id)?,
        _ => node_upstream(s, &id)?,
    };
    let mut path = if r.path.is_empty() {
        "/".to_owned()
    } else {
        r.path.to_owned()
    };
    if let Some(q) = r.query.filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    let mut req = http::Request::builder().method(r.method.clone()).uri(path);
    for (k, v) in r.headers {
        // The client's credentials are for the API server, not for the workload.
        if !hop_by_hop(k) && k != header::AUTHORIZATION && k != header::HOST {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(http_body_util::Full::new(r.body))
        .map_err(|e| StatusError::bad_request(format!("invalid proxy request: {e}")))?;
    upstream.send(req).await
}

fn cached(
    s: &ApiServer,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<Arc<crate::cache::CachedObject>> {
    let info = resources::find("", "v1", plural).expect("core kinds are served");
    s.cache
        .resource(info)
        .get(&info.storage_key(ns, name))
        .ok_or_else(|| StatusError::not_found(plural, "", name).into())
}

fn port_number(port: &str, what: &str) -> ApiResult<u16> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| StatusError::bad_request(format!("invalid {what} port {port:?}")).into())
}

fn pod_upstream(s: &ApiServer, ns: &str, id: &Id<'_>) -> ApiResult<Upstream> {
    let pod = cached(s, "pods", Some(ns), id.name)?;
    let ip: IpAddr = pod.value()["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            StatusError::service_unavailable(format!("pod {} has no IP address yet", id.name))
        })?;
    let tls = id.scheme == "https";
    let port = if id.port.is_empty() {
        if tls { 443 } else { 80 }
    } else {
        port_number(id.port, "pod")?
    };
    Ok(Upstream::new(SocketAddr::new(ip, port), tls, None))
}

/// The Service's port named (or numbered) `port`, then a ready endpoint address for it from
/// the Endpoints object, as kube-apiserver's service REST `ResourceLocation` does.
fn service_upstream(s: &ApiServer, ns: &str, id: &Id<'_>) -> ApiResult<Upstream> {
    let svc = cached(s, "services", Some(ns), id.name)?;
    let ports = svc.value()["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut port_name = id.port.to_owned();
    if let Ok(n) = id.port.parse::<i64>() {
        let p = ports
            .iter()
            .find(|p| p["port"].as_i64() == Some(n))
            .ok_or_else(|| {
                StatusError::service_unavailable(format!(
                    "no service port {n} found for service {:?}",
                    id.name
                ))
            })?;
        port_name = p["name"].as_str().unwrap_or("").to_owned();
    }
    let none = || {
        StatusError::service_unavailable(format!(
            "no endpoints available for service {:?}",
            id.name
        ))
    };
    let eps = cached(s, "endpoints", Some(ns), id.name).map_err(|_| none())?;
    let mut candidates: Vec<SocketAddr> = Vec::new();
    for subset in eps.value()["subsets"].as_array().into_iter().flatten() {
        let Some(port) = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        candidates.extend(
            subset["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["ip"].as_str()?.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, port)),
        );
    }
    if candidates.is_empty() {
        return Err(none().into());
    }
    let pick = uuid::Uuid::new_v4().as_u64_pair().0 as usize % candidates.len();
    Ok(Upstream::new(candidates[pick], id.scheme == "https", None))
}

fn node_upstream(s: &ApiServer, id: &Id<'_>) -> ApiResult<Upstream> {
    let node = cached(s, "nodes", None, id.name)?;
    let (ip, kubelet_port) = kubelet_endpoint(node.value()).ok_or_else(|| {
        StatusError::service_unavailable(format!(
            "node {} does not report a kubelet endpoint (InternalIP and daemonEndpoints.kubeletEndpoint.Port)",
            id.name
        ))
    })?;
    let port = if id.port.is_empty() {
        kubelet_port
    } else {
        port_number(id.port, "node")?
    };
    // The kubelet serves HTTPS and takes the cluster token, as for logs.
    Ok(Upstream::new(
        SocketAddr::new(ip, port),
        id.scheme != "http",
        s.token.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_as_kubernetes_splits_them() {
        assert_eq!(
            split_id("web"),
            Some(Id {
                scheme: "",
                name: "web",
                port: ""
            })
        );
        assert_eq!(
            split_id("web:8080"),
            Some(Id {
                scheme: "",
                name: "web",
                port: "8080"
            })
        );
        assert_eq!(
            split_id("https:web:443"),
            Some(Id {
                scheme: "https",
                name: "web",
                port: "443"
            })
        );
        assert_eq!(
            split_id("https:web:"),
            Some(Id {
                scheme: "https",
                name: "web",
                port: ""
            })
        );
        assert_eq!(split_id("ftp:web:21"), None);
        assert_eq!(split_id(":80"), None);
        assert_eq!(split_id("a:b:c:d"), None);
    }
}
