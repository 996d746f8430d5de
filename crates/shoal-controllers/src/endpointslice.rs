//! Endpoints: for every Service with a selector, the EndpointSlices (`discovery.k8s.io/v1`) of
//! the pods it selects, and the core/v1 `Endpoints` object kept in step (as Kubernetes'
//! endpointslice and endpoints controllers do). Services without a selector are left to
//! whoever made their slices.
//!
//! Endpoints are grouped by the ports they resolve to (a named `targetPort` may resolve to a
//! different number in each pod), at most [`MAX_ENDPOINTS`] per slice. Conditions follow
//! Kubernetes: `ready` (the pod is Ready and not terminating, or the Service publishes
//! not-ready addresses), `serving` (Ready, terminating or not), `terminating` (deleted).

use crate::runner::Ctx;
use crate::{Error, controller_ref};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Node, ObjectReference,
    Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The most endpoints one slice holds (Kubernetes' default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS: usize = 100;
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// What reconciles read instead of asking the API server: pods, slices, Endpoints and nodes,
/// each kept by a reflector whose stream also triggers the reconciles (so a reconcile never
/// reads a store older than the event that caused it).
#[derive(Clone)]
struct Stores {
    /// Whether the slices' and the Endpoints' stores hold their first list.
    ready: [Arc<std::sync::atomic::AtomicBool>; 2],
    pods: Store<Pod>,
    index: Arc<std::sync::RwLock<PodIndex>>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    nodes: Store<Node>,
}

/// Pods by namespace and label, so a Service's pods are found without scanning every pod
/// (the role of an informer index).
#[derive(Default)]
struct PodIndex {
    /// `(namespace, key, value)` → names of the pods with that label.
    by_label: HashMap<(String, String, String), std::collections::HashSet<String>>,
    /// `(namespace, name)` → the labels indexed for that pod.
    labels: HashMap<(String, String), BTreeMap<String, String>>,
    /// Whether a complete list has been indexed.
    ready: bool,
}

impl PodIndex {
    fn remove(&mut self, ns: &str, name: &str) {
        if let Some(old) = self.labels.remove(&(ns.to_owned(), name.to_owned())) {
            for (k, v) in old {
                let key = (ns.to_owned(), k, v);
                if let Some(set) = self.by_label.get_mut(&key) {
                    set.remove(name);
                    if set.is_empty() {
                        self.by_label.remove(&key);
                    }
                }
            }
        }
    }

    fn insert(&mut self, pod: &Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.remove(&ns, &name);
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        for (k, v) in &labels {
            self.by_label
                .entry((ns.clone(), k.clone(), v.clone()))
                .or_default()
                .insert(name.clone());
        }
        self.labels.insert((ns, name), labels);
    }

    /// Names of the pods of `ns` whose labels include all of `sel`.
    fn select(&self, ns: &str, sel: &BTreeMap<String, String>) -> Vec<String> {
        let sets: Option<Vec<&std::collections::HashSet<String>>> = sel
            .iter()
            .map(|(k, v)| self.by_label.get(&(ns.to_owned(), k.clone(), v.clone())))
            .collect();
        let Some(mut sets) = sets else {
            return Vec::new();
        };
        sets.sort_by_key(|s| s.len());
        let Some((first, rest)) = sets.split_first() else {
            return Vec::new();
        };
        first
            .iter()
            .filter(|n| rest.iter().all(|s| s.contains(*n)))
            .cloned()
            .collect()
    }
}

/// A reflected watch of every `K`, as a trigger stream, and a flag raised once its first
/// list is in the store.
fn reflected<K>(
    client: &kube::Client,
) -> (
    Store<K>,
    Arc<std::sync::atomic::AtomicBool>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let ready: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let raised = ready.clone();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |e| {
            if matches!(e, Ok(watcher::Event::InitDone)) {
                raised.store(true, std::sync::atomic::Ordering::Release);
            }
        })
        .touched_objects();
    (store, ready, stream)
}

/// Runs the endpoints controller (forever): reconciles a Service when it changes, when one of
/// its slices or its Endpoints change, and when a pod it selects changes.
pub async fn run(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    let index: Arc<std::sync::RwLock<PodIndex>> = Arc::default();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let indexed = index.clone();
    let pod_store = pods.clone();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .inspect(move |e| {
            let mut idx = indexed.write().unwrap_or_else(|p| p.into_inner());
            match e {
                Ok(watcher::Event::Apply(p)) => idx.insert(p),
                Ok(watcher::Event::Delete(p)) => idx.remove(
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default(),
                ),
                // A (re)list is complete: index exactly what the store now holds.
                Ok(watcher::Event::InitDone) => {
                    *idx = PodIndex::default();
                    for p in pod_store.state() {
                        idx.insert(&p);
                    }
                    idx.ready = true;
                }
                _ => {}
            }
        })
        .touched_objects();
    let (slices, slices_ready, slice_events) = reflected::<EndpointSlice>(&client);
    let (endpoints, endpoints_ready, endpoint_events) = reflected::<Endpoints>(&client);
    let (nodes, _, node_events) = reflected::<Node>(&client);
    let controller = Controller::new(services, watcher::Config::default());
    let known = controller.store();
    let controller = controller
        .owns_stream(slice_events)
        .owns_stream(endpoint_events)
        .watches_stream(pod_events, move |pod: Pod| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            known
                .state()
                .into_iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
                .filter(|s| selects(s, &labels))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        });
    // Nodes only feed zones; they trigger nothing.
    let nodes_fed = tokio::spawn(node_events.for_each(|_| async {}));
    let stores = Stores {
        ready: [slices_ready, endpoints_ready],
        pods,
        index,
        slices,
        endpoints,
        nodes,
    };
    crate::runner::run("endpointslice", client, controller, move |svc, ctx| {
        reconcile(svc, ctx, stores.clone())
    })
    .await;
    nodes_fed.abort();
}

fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// Whether `svc` has a selector and it selects `labels`.
fn selects(svc: &Service, labels: &BTreeMap<String, String>) -> bool {
    selector(svc).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A pod's share of a Service: its address, conditions and the ports its targets resolve to.
#[derive(Debug, Clone, PartialEq)]
struct PodEndpoint {
    endpoint: Endpoint,
    ports: Vec<EndpointPort>,
}

/// The port a Service port's `targetPort` names in `pod`, if any.
fn resolve_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let proto = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.as_ref()?.iter().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

fn pod_endpoint(svc: &Service, pod: &Pod, zones: &HashMap<String, String>) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let mut ports = Vec::new();
    for sp in spec.ports.iter().flatten() {
        // A pod that lacks a named port is no endpoint of that port (Kubernetes skips it).
        let port = resolve_port(sp, pod)?;
        ports.push(EndpointPort {
            name: Some(sp.name.clone().unwrap_or_default()),
            port: Some(port),
            protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: sp.app_protocol.clone(),
        });
    }
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = crate::pod_ready(pod);
    let publish = spec.publish_not_ready_addresses == Some(true);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let svc_name = svc.metadata.name.as_deref().unwrap_or("");
    let hostname = pod.spec.as_ref().and_then(|s| {
        (s.subdomain.as_deref() == Some(svc_name))
            .then(|| s.hostname.clone())
            .flatten()
    });
    Some(PodEndpoint {
        endpoint: Endpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (serving && !terminating)),
                serving: Some(publish || serving),
                terminating: Some(terminating),
            }),
            hostname,
            zone: node.as_ref().and_then(|n| zones.get(n).cloned()),
            node_name: node,
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ports,
    })
}

/// The slices `svc` should have, by name: endpoints grouped by their ports, sorted by address,
/// [`MAX_ENDPOINTS`] per slice.
fn desired_slices(
    svc: &Service,
    owner: &OwnerReference,
    eps: Vec<PodEndpoint>,
) -> Vec<EndpointSlice> {
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for e in eps {
        let key = serde_json::to_string(&e.ports).unwrap_or_default();
        groups
            .entry(key)
            .or_insert_with(|| (e.ports.clone(), Vec::new()))
            .1
            .push(e.endpoint);
    }
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.to_owned());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let slice =
        |suffix: String, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{suffix}")),
                namespace: svc.metadata.namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(ports),
        };
    let mut out = Vec::new();
    for (key, (ports, mut endpoints)) in groups {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        let group = short_hash(&key);
        for (i, chunk) in endpoints.chunks(MAX_ENDPOINTS).enumerate() {
            out.push(slice(format!("{group}{i}"), ports.clone(), chunk.to_vec()));
        }
    }
    if out.is_empty() {
        // A Service with no endpoints still has a slice, with its ports (as Kubernetes keeps
        // one placeholder slice).
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|ps| {
                ps.iter()
                    .map(|sp| EndpointPort {
                        name: Some(sp.name.clone().unwrap_or_default()),
                        port: None,
                        protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                        app_protocol: sp.app_protocol.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(slice("empty".into(), ports, Vec::new()));
    }
    out
}

/// Eight hex digits naming a port group, stable across runs (FNV-1a).
fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The core/v1 Endpoints of the same endpoints: ready addresses, not-ready ones, terminating
/// ones left out, one subset per port group.
fn desired_endpoints(svc: &Service, owner: &OwnerReference, slices: &[EndpointSlice]) -> Endpoints {
    let mut subsets = Vec::new();
    for s in slices {
        let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            if c.terminating == Some(true) && c.ready != Some(true) {
                continue;
            }
            let addr = EndpointAddress {
                ip: e.addresses.first().cloned().unwrap_or_default(),
                hostname: e.hostname.clone(),
                node_name: e.node_name.clone(),
                target_ref: e.target_ref.clone(),
            };
            if c.ready == Some(true) {
                ready.push(addr);
            } else {
                not_ready.push(addr);
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        let ports = s
            .ports
            .iter()
            .flatten()
            .map(|p| CorePort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port.unwrap_or_default(),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(ports),
        });
    }
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// Node zones (`topology.kubernetes.io/zone`) of the nodes `pods` run on.
fn zones(nodes: &Store<Node>, pods: &[Arc<Pod>]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for p in pods {
        let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if out.contains_key(n) {
            continue;
        }
        if let Some(z) = nodes
            .get(&ObjectRef::new(n))
            .and_then(|node| node.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned())
        {
            out.insert(n.to_owned(), z);
        }
    }
    out
}

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>, stores: Stores) -> Result<Action, Error> {
    // Never judge from a store that has not listed yet (it would empty every Service's
    // endpoints for a moment when the controller starts); look again shortly.
    let listed = stores
        .ready
        .iter()
        .all(|r| r.load(std::sync::atomic::Ordering::Acquire));
    if !listed {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let Some(sel) = selector(&svc) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some()
        || svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
    {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let names = {
        let idx = stores.index.read().unwrap_or_else(|p| p.into_inner());
        if !idx.ready {
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        idx.select(ns, sel)
    };
    let selected: Vec<Arc<Pod>> = names
        .iter()
        .filter_map(|n| stores.pods.get(&ObjectRef::new(n).within(ns)))
        .collect();
    let zones = zones(&stores.nodes, &selected);
    let eps: Vec<PodEndpoint> = selected
        .iter()
        .filter_map(|p| pod_endpoint(&svc, p, &zones))
        .collect();
    let owner = OwnerReference {
        block_owner_deletion: Some(true),
        ..controller_ref("v1", "Service", &svc.metadata)
    };
    let want = desired_slices(&svc, &owner, eps);
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let have: Vec<Arc<EndpointSlice>> = stores
        .slices
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            let l = s.metadata.labels.as_ref();
            l.and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
                && l.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY)
        })
        .collect();
    for s in &want {
        let sname = s.metadata.name.as_deref().unwrap_or("");
        match have
            .iter()
            .find(|h| h.metadata.name.as_deref() == Some(sname))
        {
            None => match slices.create(&PostParams::default(), s).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            },
            Some(h) if same_slice(h, s) => {}
            Some(h) => {
                let rv = h.metadata.resource_version.clone();
                crate::replace_fresh(&slices, sname, s.clone(), rv).await?;
            }
        }
    }
    for h in &have {
        let hname = h.metadata.name.as_deref().unwrap_or("");
        if !want
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(hname))
        {
            crate::delete_quietly(&slices, hname).await?;
        }
    }
    let endpoints: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    let ep = desired_endpoints(&svc, &owner, &want);
    match stores
        .endpoints
        .get(&ObjectRef::new(name).within(ns))
        .map(|e| e.as_ref().clone())
    {
        None => match endpoints.create(&PostParams::default(), &ep).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        },
        Some(h) if h.subsets == ep.subsets && h.metadata.labels == ep.metadata.labels => {}
        Some(h) => {
            crate::replace_fresh(&endpoints, name, ep, h.metadata.resource_version.clone()).await?;
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn same_slice(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.endpoints == b.endpoints
        && a.ports == b.ports
        && a.metadata.labels == b.metadata.labels
        && a.address_type == b.address_type
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"selector": {"app": "web"}, "ports": ports},
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    fn owner(s: &Service) -> OwnerReference {
        controller_ref("v1", "Service", &s.metadata)
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_group_into_slices() {
        let s = svc(json!([{"name": "http", "port": 80, "targetPort": "web"}]));
        let pods = [
            pod("a", "127.64.0.2", true, "web", 8080),
            pod("b", "127.64.0.3", false, "web", 9090),
            pod("c", "127.64.0.4", true, "other", 8080),
        ];
        let eps: Vec<_> = pods
            .iter()
            .filter_map(|p| pod_endpoint(&s, p, &HashMap::new()))
            .collect();
        assert_eq!(
            eps.len(),
            2,
            "the pod without the named port is no endpoint"
        );
        let slices = desired_slices(&s, &owner(&s), eps);
        assert_eq!(slices.len(), 2);
        let ports: Vec<i32> = slices
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        assert!(ports.contains(&8080) && ports.contains(&9090));
        let ep = desired_endpoints(&s, &owner(&s), &slices);
        let subsets = ep.subsets.unwrap();
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!((ready, not_ready), (1, 1));
    }

    #[test]
    fn at_most_a_hundred_endpoints_per_slice_and_terminating_pods_are_not_ready() {
        let s = svc(json!([{"port": 80}]));
        let mut eps = Vec::new();
        for i in 0..250 {
            let p = pod(
                &format!("p{i}"),
                &format!("127.64.{}.{}", i / 200, i % 200 + 2),
                true,
                "x",
                80,
            );
            eps.push(pod_endpoint(&s, &p, &HashMap::new()).unwrap());
        }
        let slices = desired_slices(&s, &owner(&s), eps);
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let mut gone = pod("t", "127.64.9.9", true, "x", 80);
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let c = pod_endpoint(&s, &gone, &HashMap::new())
            .unwrap()
            .endpoint
            .conditions
            .unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn the_pod_index_follows_label_changes_and_deletions() {
        let mut idx = PodIndex::default();
        let mut a = pod("a", "127.64.0.2", true, "http", 80);
        let b = pod("b", "127.64.0.3", true, "http", 80);
        idx.insert(&a);
        idx.insert(&b);
        let web: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        let mut got = idx.select("default", &web);
        got.sort();
        assert_eq!(got, ["a", "b"]);
        assert!(idx.select("other", &web).is_empty());
        a.metadata.labels = Some([("app".to_owned(), "db".to_owned())].into());
        idx.insert(&a);
        assert_eq!(idx.select("default", &web), ["b"]);
        idx.remove("default", "b");
        assert!(idx.select("default", &web).is_empty());
        let both: BTreeMap<String, String> = [
            ("app".to_owned(), "db".to_owned()),
            ("tier".to_owned(), "x".to_owned()),
        ]
        .into();
        assert!(idx.select("default", &both).is_empty());
    }

    #[test]
    fn a_service_without_endpoints_keeps_one_empty_slice_and_no_subsets() {
        let s = svc(json!([{"name": "http", "port": 80}]));
        let slices = desired_slices(&s, &owner(&s), Vec::new());
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        assert!(desired_endpoints(&s, &owner(&s), &slices).subsets.is_none());
    }
}
