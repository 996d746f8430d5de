//! The cluster DNS server (the `kube-dns` Service's endpoint), on hickory-server: it answers
//! the same records the runtime resolves for Wasm pods ([`crate::names::Zone`]) to everything
//! else — host tools, `dig`, later container pods — over UDP and TCP. Authoritative for the
//! cluster domain; names outside it are refused (Shoal does not forward to an upstream
//! resolver, so no query leaves the machine).

use crate::names::{Records, Zone};
use crate::network::NodeNetwork;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::net::IpAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Answers' time to live, as CoreDNS's kubernetes plugin uses.
const TTL: u32 = 5;
/// How many CNAMEs inside the cluster an answer follows.
const MAX_CNAMES: usize = 8;

/// The request handler: reads the node's current names on every query.
pub struct ClusterDns {
    network: NodeNetwork,
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{s}.")).ok()
}

fn address(owner: &Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(owner.clone(), TTL, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(v6))),
    }
}

/// The answer and additional sections for `qname`/`qtype`, or `None` for NXDOMAIN.
fn answer(zone: &Zone, qname: &str, qtype: RecordType) -> Option<(Vec<Record>, Vec<Record>)> {
    let (mut answers, mut additionals) = (Vec::new(), Vec::new());
    let mut current = qname.to_owned();
    let mut records: Records = zone.records(&current)?;
    // Follow CNAMEs inside the cluster for address queries, as a resolver would ask.
    for _ in 0..MAX_CNAMES {
        let Some(target) = records.cname.clone() else {
            break;
        };
        answers.push(Record::from_rdata(
            name(&current)?,
            TTL,
            RData::CNAME(CNAME(name(&target)?)),
        ));
        if qtype == RecordType::CNAME || !zone.is_cluster(&target) {
            return Some((answers, additionals));
        }
        current = target;
        match zone.records(&current) {
            Some(r) => records = r,
            None => return Some((answers, additionals)),
        }
    }
    let owner = name(&current)?;
    match qtype {
        RecordType::A | RecordType::ANY => {
            answers.extend(
                records
                    .a
                    .iter()
                    .filter(|ip| ip.is_ipv4())
                    .map(|ip| address(&owner, *ip)),
            );
        }
        RecordType::AAAA => {
            answers.extend(
                records
                    .a
                    .iter()
                    .filter(|ip| ip.is_ipv6())
                    .map(|ip| address(&owner, *ip)),
            );
        }
        RecordType::SRV => {
            let weight = (100 / records.srv.len().max(1)) as u16;
            for srv in &records.srv {
                let target = name(&srv.target)?;
                answers.push(Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, weight, srv.port, target.clone())),
                ));
                if let Some(r) = zone.records(&srv.target) {
                    additionals.extend(r.a.iter().map(|ip| address(&target, *ip)));
                }
            }
        }
        _ => {}
    }
    Some((answers, additionals))
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;
        let failed = |metadata: Metadata| {
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        };
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            let r = builder.build_no_records(metadata);
            return response_handle
                .send_response(r)
                .await
                .unwrap_or(failed(metadata));
        };
        let qname = info
            .query
            .name()
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let qtype = info.query.query_type();
        let snapshot = self.network.snapshot();
        let zone = &snapshot.zone;
        if !zone.is_cluster(&qname) {
            metadata.response_code = ResponseCode::Refused;
            let r = builder.build_no_records(metadata);
            return response_handle
                .send_response(r)
                .await
                .unwrap_or(failed(metadata));
        }
        metadata.authoritative = true;
        match answer(zone, &qname, qtype) {
            Some((answers, additionals)) => {
                let r = builder.build(metadata, answers.iter(), [], [], additionals.iter());
                response_handle
                    .send_response(r)
                    .await
                    .unwrap_or(failed(metadata))
            }
            None => {
                metadata.response_code = ResponseCode::NXDomain;
                let r = builder.build_no_records(metadata);
                response_handle
                    .send_response(r)
                    .await
                    .unwrap_or(failed(metadata))
            }
        }
    }
}

/// Serves cluster DNS on `udp` and `tcp` until `stop`.
pub async fn serve(
    network: NodeNetwork,
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    stop: CancellationToken,
) {
    let mut server = hickory_server::Server::new(ClusterDns { network });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
    tokio::select! {
        _ = stop.cancelled() => {
            let _ = server.shutdown_gracefully().await;
        }
        r = server.block_until_done() => {
            if let Err(e) = r {
                tracing::error!(error = %e, "cluster DNS stopped");
            }
        }
    }
}

/// Binds UDP and TCP on the same port of `ip` (`port` 0: a free one).
pub async fn bind(
    ip: IpAddr,
    port: u16,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let tcp = tokio::net::TcpListener::bind((ip, port)).await?;
        let bound = tcp.local_addr()?.port();
        match tokio::net::UdpSocket::bind((ip, bound)).await {
            Ok(udp) => return Ok((udp, tcp)),
            // A free TCP port whose UDP twin is taken: try another.
            Err(e) if port == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for cluster DNS")))
}

/// Creates `obj` named `name`, or replaces what is there.
async fn put<K>(api: &kube::Api<K>, name: &str, obj: serde_json::Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut obj: K = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
    let pp = kube::api::PostParams::default();
    match api.get_opt(name).await? {
        None => api.create(&pp, &obj).await.map(drop),
        Some(current) => {
            obj.meta_mut().resource_version = current.meta().resource_version.clone();
            api.replace(name, &pp, &obj).await.map(drop)
        }
    }
}

/// Creates or updates the `kube-dns` Service in `kube-system` at `cluster_ip` (port 53, UDP
/// and TCP, as kubeadm's DNS add-on names them) with the DNS server at `server` as its only
/// endpoint, so pods and the node reach it through the Service.
pub async fn publish(
    client: &kube::Client,
    cluster_ip: IpAddr,
    server: std::net::SocketAddr,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::Api;
    let (ip, port) = (server.ip().to_string(), server.port());
    let labels = serde_json::json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"});
    let ns = "kube-system";
    let service = serde_json::json!({
        "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port}]},
    });
    let services = Api::<Service>::namespaced(client.clone(), ns);
    // A ClusterIP cannot change: if the range moved across a restart, make the Service again
    // (created directly: a read may still show the deleted one for a moment).
    let moved = services
        .get_opt("kube-dns")
        .await?
        .is_some_and(|old| old.spec.and_then(|s| s.cluster_ip) != Some(cluster_ip.to_string()));
    if moved {
        services
            .delete("kube-dns", &kube::api::DeleteParams::default())
            .await?;
        let fresh: Service = serde_json::from_value(service).map_err(kube::Error::SerdeError)?;
        let mut tries = 0;
        loop {
            match services.create(&Default::default(), &fresh).await {
                Err(kube::Error::Api(e)) if e.code == 409 && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => break other.map(drop)?,
            }
        }
    } else {
        put(&services, "kube-dns", service).await?;
    }
    let slice = serde_json::json!({
        "metadata": {"name": "kube-dns", "namespace": ns, "labels": {
            "kubernetes.io/service-name": "kube-dns",
            "endpointslice.kubernetes.io/managed-by": "shoal-dns"}},
        "addressType": if server.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"}],
    });
    put(
        &Api::<EndpointSlice>::namespaced(client.clone(), ns),
        "kube-dns",
        slice,
    )
    .await?;
    let endpoints = serde_json::json!({
        "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"}]}],
    });
    put(
        &Api::<Endpoints>::namespaced(client.clone(), ns),
        "kube-dns",
        endpoints,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    #[test]
    fn answers_follow_cluster_cnames_and_name_srv_targets() {
        let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).unwrap() };
        let web = svc(json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "127.96.0.20", "ports": [{"name": "http", "port": 80}]}}));
        let alias = svc(json!({"metadata": {"name": "front", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"}}));
        let zone = Zone::build("cluster.local", &[&web, &alias], &[]);
        let (a, _) = answer(&zone, "front.shop.svc.cluster.local", RecordType::A).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].record_type(), RecordType::CNAME);
        assert_eq!(a[1].record_type(), RecordType::A);
        let (srv, extra) = answer(
            &zone,
            "_http._tcp.web.shop.svc.cluster.local",
            RecordType::SRV,
        )
        .unwrap();
        assert_eq!((srv.len(), extra.len()), (1, 1));
        assert!(answer(&zone, "nope.shop.svc.cluster.local", RecordType::A).is_none());
    }
}
