//! Cluster plumbing and Shoal's own kinds: leases, endpoint slices, runtime classes, and
//! the admission and scheduler plugins.

use super::{AGE, NAME, Printer, arr, created, i, name, or_none, s};
use serde_json::{Value, json};

pub(super) static PRINTERS: &[Printer] = &[
    Printer {
        group: "networking.k8s.io",
        kinds: &["Ingress"],
        columns: &[
            NAME,
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            AGE,
        ],
        cells: |o, now| {
            let ports = if arr(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                name(o),
                json!(or_none(s(o, "/spec/ingressClassName").to_owned())),
                json!(ingress_hosts(o)),
                json!(ingress_address(o)),
                json!(ports),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "networking.k8s.io",
        kinds: &["IngressClass"],
        columns: &[
            NAME,
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            AGE,
        ],
        cells: |o, now| {
            let parameters = match o.pointer("/spec/parameters").filter(|p| p.is_object()) {
                Some(p) => {
                    let kind = match p.get("apiGroup").and_then(Value::as_str) {
                        Some(g) => format!("{}.{g}", s(p, "/kind")),
                        None => s(p, "/kind").to_owned(),
                    };
                    format!("{kind}/{}", s(p, "/name"))
                }
                None => "<none>".to_owned(),
            };
            vec![
                name(o),
                json!(s(o, "/spec/controller")),
                json!(parameters),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "networking.k8s.io",
        kinds: &["NetworkPolicy"],
        columns: &[NAME, ("Pod-Selector", "string", 0), AGE],
        cells: |o, now| {
            let sel = crate::selector::map_to_string(o.pointer("/spec/podSelector/matchLabels"));
            vec![name(o), json!(or_none(sel)), created(o, now)]
        },
    },
    Printer {
        group: "certificates.k8s.io",
        kinds: &["CertificateSigningRequest"],
        columns: &[
            NAME,
            AGE,
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ],
        cells: |o, now| {
            let has = |t: &str| {
                arr(o, "/status/conditions")
                    .iter()
                    .any(|c| s(c, "/type") == t)
            };
            let mut condition = if has("Denied") {
                "Denied".to_owned()
            } else if has("Approved") {
                "Approved".to_owned()
            } else {
                "Pending".to_owned()
            };
            if has("Failed") {
                condition.push_str(",Failed");
            }
            if !s(o, "/status/certificate").is_empty() {
                condition.push_str(",Issued");
            }
            let duration = match o.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
                Some(secs) => super::human_duration(secs),
                None => "<none>".into(),
            };
            vec![
                name(o),
                created(o, now),
                json!(s(o, "/spec/signerName")),
                json!(s(o, "/spec/username")),
                json!(duration),
                json!(condition),
            ]
        },
    },
    Printer {
        group: "flowcontrol.apiserver.k8s.io",
        kinds: &["FlowSchema"],
        columns: &[
            NAME,
            ("PriorityLevel", "string", 0),
            ("MatchingPrecedence", "string", 0),
            ("DistinguisherMethod", "string", 0),
            AGE,
            ("MissingPL", "string", 0),
        ],
        cells: |o, now| {
            let missing = arr(o, "/status/conditions")
                .iter()
                .find(|c| s(c, "/type") == "Dangling")
                .map_or("?", |c| s(c, "/status"));
            vec![
                name(o),
                json!(s(o, "/spec/priorityLevelConfiguration/name")),
                json!(i(o, "/spec/matchingPrecedence").to_string()),
                json!(or_none(s(o, "/spec/distinguisherMethod/type").to_owned())),
                created(o, now),
                json!(missing),
            ]
        },
    },
    Printer {
        group: "flowcontrol.apiserver.k8s.io",
        kinds: &["PriorityLevelConfiguration"],
        columns: &[
            NAME,
            ("Type", "string", 0),
            ("NominalConcurrencyShares", "string", 0),
            ("Queues", "string", 0),
            ("HandSize", "string", 0),
            ("QueueLengthLimit", "string", 0),
            AGE,
        ],
        cells: |o, now| {
            let limited = |p: &str| match o.pointer(&format!("/spec/limited{p}")) {
                Some(v) => v.to_string(),
                None => "<none>".into(),
            };
            vec![
                name(o),
                json!(s(o, "/spec/type")),
                json!(limited("/nominalConcurrencyShares")),
                json!(limited("/limitResponse/queuing/queues")),
                json!(limited("/limitResponse/queuing/handSize")),
                json!(limited("/limitResponse/queuing/queueLengthLimit")),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "coordination.k8s.io",
        kinds: &["Lease"],
        columns: &[NAME, ("Holder", "string", 0), AGE],
        cells: |o, now| {
            vec![
                name(o),
                json!(s(o, "/spec/holderIdentity")),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "discovery.k8s.io",
        kinds: &["EndpointSlice"],
        columns: &[
            NAME,
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            AGE,
        ],
        cells: |o, now| {
            let ports: Vec<String> = arr(o, "/ports")
                .iter()
                .map(|p| i(p, "/port").to_string())
                .collect();
            let eps: Vec<String> = arr(o, "/endpoints")
                .iter()
                .flat_map(|e| {
                    arr(e, "/addresses")
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            vec![
                name(o),
                json!(s(o, "/addressType")),
                json!(or_none(ports.join(","))),
                json!(or_none(eps.join(","))),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "policy",
        kinds: &["PodDisruptionBudget"],
        columns: &[
            NAME,
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            AGE,
        ],
        cells: |o, now| {
            let bound = |key: &str| match o.pointer(&format!("/spec/{key}")) {
                Some(Value::String(s)) => json!(s),
                Some(Value::Number(n)) => json!(n.to_string()),
                _ => json!("N/A"),
            };
            vec![
                name(o),
                bound("minAvailable"),
                bound("maxUnavailable"),
                json!(i(o, "/status/disruptionsAllowed")),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "scheduling.k8s.io",
        kinds: &["PriorityClass"],
        columns: &[
            NAME,
            ("Value", "integer", 0),
            ("Global-Default", "boolean", 0),
            AGE,
            ("PreemptionPolicy", "string", 0),
        ],
        cells: |o, now| {
            vec![
                name(o),
                json!(i(o, "/value")),
                json!(
                    o.get("globalDefault")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                created(o, now),
                json!(s(o, "/preemptionPolicy")),
            ]
        },
    },
    Printer {
        group: "",
        kinds: &["PersistentVolume"],
        columns: &[
            NAME,
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            AGE,
            ("VolumeMode", "string", 1),
        ],
        cells: |o, now| {
            let claim = match (
                s(o, "/spec/claimRef/namespace"),
                s(o, "/spec/claimRef/name"),
            ) {
                (_, "") => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            vec![
                name(o),
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(o)),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(o, "/status/phase")),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!(or_unset(s(o, "/spec/volumeAttributesClassName"))),
                json!(s(o, "/status/reason")),
                created(o, now),
                json!(s(o, "/spec/volumeMode")),
            ]
        },
    },
    Printer {
        group: "",
        kinds: &["PersistentVolumeClaim"],
        columns: &[
            NAME,
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            AGE,
            ("VolumeMode", "string", 1),
        ],
        cells: |o, now| {
            vec![
                name(o),
                json!(s(o, "/status/phase")),
                json!(s(o, "/spec/volumeName")),
                json!(s(o, "/status/capacity/storage")),
                json!(access_modes_of(o.pointer("/status/accessModes"))),
                json!(s(o, "/spec/storageClassName")),
                json!(or_unset(s(o, "/spec/volumeAttributesClassName"))),
                created(o, now),
                json!(s(o, "/spec/volumeMode")),
            ]
        },
    },
    Printer {
        group: "storage.k8s.io",
        kinds: &["StorageClass"],
        columns: &[
            NAME,
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            AGE,
        ],
        cells: |o, now| {
            let default = s(
                o,
                "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
            ) == "true";
            let n = s(o, "/metadata/name");
            vec![
                json!(if default {
                    format!("{n} (default)")
                } else {
                    n.to_owned()
                }),
                json!(s(o, "/provisioner")),
                json!(s(o, "/reclaimPolicy")),
                json!(s(o, "/volumeBindingMode")),
                json!(
                    o.get("allowVolumeExpansion")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "rbac.authorization.k8s.io",
        kinds: &["Role", "ClusterRole"],
        columns: &[NAME, ("Created At", "date", 0)],
        cells: |o, _| vec![name(o), json!(s(o, "/metadata/creationTimestamp"))],
    },
    Printer {
        group: "rbac.authorization.k8s.io",
        kinds: &["RoleBinding", "ClusterRoleBinding"],
        columns: &[
            NAME,
            ("Role", "string", 0),
            AGE,
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        cells: |o, now| {
            let of_kind = |kind: &str| -> String {
                arr(o, "/subjects")
                    .iter()
                    .filter(|sub| s(sub, "/kind") == kind)
                    .map(|sub| match kind {
                        "ServiceAccount" => format!("{}/{}", s(sub, "/namespace"), s(sub, "/name")),
                        _ => s(sub, "/name").to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name(o),
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                created(o, now),
                json!(of_kind("User")),
                json!(of_kind("Group")),
                json!(of_kind("ServiceAccount")),
            ]
        },
    },
    Printer {
        group: "",
        kinds: &["LimitRange"],
        columns: &[NAME, ("Created At", "date", 0)],
        cells: |o, _| vec![name(o), json!(s(o, "/metadata/creationTimestamp"))],
    },
    Printer {
        group: "apiextensions.k8s.io",
        kinds: &["CustomResourceDefinition"],
        columns: &[NAME, ("Created At", "date", 0)],
        cells: |o, _| vec![name(o), json!(s(o, "/metadata/creationTimestamp"))],
    },
    Printer {
        group: "node.k8s.io",
        kinds: &["RuntimeClass"],
        columns: &[NAME, ("Handler", "string", 0), AGE],
        cells: |o, now| vec![name(o), json!(s(o, "/handler")), created(o, now)],
    },
    Printer {
        group: crate::policy::GROUP,
        kinds: &["ClusterAdmissionPolicy", "AdmissionPolicy"],
        columns: &[
            NAME,
            ("Mode", "string", 0),
            ("Mutating", "boolean", 0),
            ("Status", "string", 0),
            ("Message", "string", 1),
            AGE,
        ],
        cells: |o, now| {
            vec![
                name(o),
                json!(match s(o, "/spec/mode") {
                    "" => "protect",
                    m => m,
                }),
                json!(
                    o.pointer("/spec/mutating")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(s(o, "/status/phase")),
                json!(s(o, "/status/message")),
                created(o, now),
            ]
        },
    },
    Printer {
        group: crate::policy::GROUP,
        kinds: &["SchedulerPlugin"],
        columns: &[
            NAME,
            ("Extension Points", "string", 0),
            ("Status", "string", 0),
            ("Message", "string", 1),
            AGE,
        ],
        cells: |o, now| {
            let points: Vec<&str> = arr(o, "/spec/extensionPoints")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            vec![
                name(o),
                json!(if points.is_empty() {
                    "PreFilter,Filter,Score".to_owned()
                } else {
                    points.join(",")
                }),
                json!(s(o, "/status/phase")),
                json!(s(o, "/status/message")),
                created(o, now),
            ]
        },
    },
];

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes_of(modes: Option<&Value>) -> String {
    let short: Vec<&str> = modes
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect()
        })
        .unwrap_or_default();
    short.join(",")
}

fn access_modes(o: &Value) -> String {
    access_modes_of(o.pointer("/spec/accessModes"))
}

fn or_unset(v: &str) -> &str {
    if v.is_empty() { "<unset>" } else { v }
}

/// An Ingress's `HOSTS` cell: its rules' hosts, three at most, `*` when none names one.
fn ingress_hosts(o: &Value) -> String {
    const SHOWN: usize = 3;
    let rules = arr(o, "/spec/rules");
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for r in rules {
        more |= hosts.len() == SHOWN;
        let host = s(r, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_owned();
    }
    let list = hosts.join(",");
    if more {
        format!("{list} + {} more...", rules.len() - SHOWN)
    } else {
        list
    }
}

/// An Ingress's `ADDRESS` cell: the addresses its controller published.
fn ingress_address(o: &Value) -> String {
    super::load_balancer_addresses(o).join(",")
}
