//! The core group's kinds (`v1`): pods, nodes, namespaces, services, configuration, events.

use super::{
    AGE, Column, NAME, Printer, age, arr, count, created, i, map_selector, name, or_none, s,
};
use serde_json::{Value, json};

pub(super) static PRINTERS: &[Printer] = &[
    Printer {
        group: "",
        kinds: &["Pod"],
        columns: &[
            NAME,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            AGE,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        cells: pod_cells,
    },
    Printer {
        group: "",
        kinds: &["Namespace"],
        columns: &[NAME, ("Status", "string", 0), AGE],
        cells: |o, now| vec![name(o), json!(s(o, "/status/phase")), created(o, now)],
    },
    Printer {
        group: "",
        kinds: &["Node"],
        columns: &[
            NAME,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            AGE,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        cells: |o, now| {
            vec![
                name(o),
                json!(node_status(o)),
                json!(node_roles(o)),
                created(o, now),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(node_address(o, "InternalIP")),
                json!(node_address(o, "ExternalIP")),
                json!(s(o, "/status/nodeInfo/osImage")),
                json!(s(o, "/status/nodeInfo/kernelVersion")),
                json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        },
    },
    Printer {
        group: "",
        kinds: &["Service"],
        columns: &[
            NAME,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            AGE,
            ("Selector", "string", 1),
        ],
        cells: service_cells,
    },
    Printer {
        group: "",
        kinds: &["Endpoints"],
        columns: &[NAME, ("Endpoints", "string", 0), AGE],
        cells: |o, now| {
            let mut eps = Vec::new();
            for sub in arr(o, "/subsets") {
                for a in arr(sub, "/addresses") {
                    for p in arr(sub, "/ports") {
                        eps.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                    }
                }
            }
            vec![name(o), json!(or_none(eps.join(","))), created(o, now)]
        },
    },
    Printer {
        group: "",
        kinds: &["ConfigMap"],
        columns: &[NAME, ("Data", "string", 0), AGE],
        cells: |o, now| {
            let n = count(o, "/data") + count(o, "/binaryData");
            vec![name(o), json!(n), created(o, now)]
        },
    },
    Printer {
        group: "",
        kinds: &["Secret"],
        columns: &[NAME, ("Type", "string", 0), ("Data", "string", 0), AGE],
        cells: |o, now| {
            vec![
                name(o),
                json!(s(o, "/type")),
                json!(count(o, "/data")),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "",
        kinds: &["ResourceQuota"],
        columns: &[NAME, AGE, ("Request", "string", 0), ("Limit", "string", 0)],
        cells: |o, now| {
            // `resource: used/hard`, by resource name; limits.* in their own column.
            let hard = o.pointer("/status/hard").and_then(Value::as_object);
            let used = o.pointer("/status/used").and_then(Value::as_object);
            let (mut requests, mut limits) = (Vec::new(), Vec::new());
            let mut names: Vec<&String> = hard.into_iter().flatten().map(|(k, _)| k).collect();
            names.sort();
            for k in names {
                let h = hard
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let u = used
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                let cell = format!("{k}: {u}/{h}");
                if k.starts_with("limits.") {
                    limits.push(cell);
                } else {
                    requests.push(cell);
                }
            }
            vec![
                name(o),
                created(o, now),
                json!(requests.join(", ")),
                json!(limits.join(", ")),
            ]
        },
    },
    Printer {
        group: "",
        kinds: &["ServiceAccount"],
        columns: &[NAME, ("Secrets", "string", 0), AGE],
        cells: |o, now| vec![name(o), json!(arr(o, "/secrets").len()), created(o, now)],
    },
    Printer {
        group: "",
        kinds: &["Event"],
        columns: EVENT_COLUMNS,
        cells: |o, now| event_cells(o, now, "/involvedObject", "/message"),
    },
    Printer {
        group: "events.k8s.io",
        kinds: &["Event"],
        columns: EVENT_COLUMNS,
        cells: |o, now| event_cells(o, now, "/regarding", "/note"),
    },
];

const EVENT_COLUMNS: &[Column] = &[
    ("Last Seen", "string", 0),
    ("Type", "string", 0),
    ("Reason", "string", 0),
    ("Object", "string", 0),
    ("Message", "string", 0),
];

fn event_cells(o: &Value, now: i64, object: &str, message: &str) -> Vec<Value> {
    vec![
        json!(last_seen(o, now)),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(event_object(o, object)),
        json!(s(o, message)),
    ]
}

fn service_cells(o: &Value, now: i64) -> Vec<Value> {
    let ty = o
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let ext: Vec<&str> = arr(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // A load balancer's published addresses first (cut to 16 characters, as kubectl does
    // without `-o wide`), then the Service's external IPs.
    let mut lb = super::load_balancer_addresses(o).join(",");
    if lb.len() > 16 {
        lb = format!("{}...", &lb[..13]);
    }
    let ext = match ty {
        "ExternalName" => s(o, "/spec/externalName").to_owned(),
        "LoadBalancer" => {
            let all: Vec<&str> = lb
                .split(',')
                .filter(|a| !a.is_empty())
                .chain(ext.iter().copied())
                .collect();
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        _ if ext.is_empty() => "<none>".into(),
        _ => ext.join(","),
    };
    vec![
        name(o),
        json!(ty),
        json!(or_none(s(o, "/spec/clusterIP").to_owned())),
        json!(ext),
        json!(service_ports(o)),
        created(o, now),
        json!(map_selector(o.pointer("/spec/selector"))),
    ]
}

fn pod_cells(o: &Value, now: i64) -> Vec<Value> {
    let statuses = arr(o, "/status/containerStatuses");
    let total = arr(o, "/spec/containers").len();
    let mut reason = s(o, "/status/reason").to_owned();
    if reason.is_empty() {
        reason = s(o, "/status/phase").to_owned();
    }
    let init = arr(o, "/status/initContainerStatuses");
    let mut initializing = false;
    for (n, c) in init.iter().enumerate() {
        if s(c, "/state/terminated/reason") == "Completed"
            || (c.pointer("/state/terminated").is_some() && i(c, "/state/terminated/exitCode") == 0)
        {
            continue;
        }
        initializing = true;
        reason = if let Some(t) = c.pointer("/state/terminated") {
            let r = s(t, "/reason");
            if r.is_empty() {
                format!("Init:ExitCode:{}", i(t, "/exitCode"))
            } else {
                format!("Init:{r}")
            }
        } else if !s(c, "/state/waiting/reason").is_empty()
            && s(c, "/state/waiting/reason") != "PodInitializing"
        {
            format!("Init:{}", s(c, "/state/waiting/reason"))
        } else {
            format!("Init:{n}/{}", arr(o, "/spec/initContainers").len())
        };
        break;
    }
    let (mut restarts, mut ready, mut running) = (0, 0, false);
    let mut last_restart: Option<String> = None;
    for c in statuses.iter().rev() {
        restarts += i(c, "/restartCount");
        if let Some(f) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
        {
            last_restart = Some(f.to_owned());
        }
        if initializing {
            continue;
        }
        let waiting = s(c, "/state/waiting/reason");
        let term = c.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if let Some(t) = term {
            reason = if !s(t, "/reason").is_empty() {
                s(t, "/reason").to_owned()
            } else if i(t, "/signal") != 0 {
                format!("Signal:{}", i(t, "/signal"))
            } else {
                format!("ExitCode:{}", i(t, "/exitCode"))
            };
        } else if c.get("ready").and_then(Value::as_bool) == Some(true)
            && c.pointer("/state/running").is_some()
        {
            running = true;
            ready += 1;
        }
    }
    if !initializing && reason == "Completed" && running {
        let is_ready = arr(o, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
        reason = if is_ready {
            "Running".into()
        } else {
            "NotReady".into()
        };
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() && s(o, "/status/reason") != "NodeLost" {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", age(&t, now)),
        _ => restarts.to_string(),
    };
    let gates = arr(o, "/spec/readinessGates");
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(s(o, "/metadata/creationTimestamp"), now)),
        json!(or_none(s(o, "/status/podIP").to_owned())),
        json!(or_none(s(o, "/spec/nodeName").to_owned())),
        json!(or_none(s(o, "/status/nominatedNodeName").to_owned())),
        json!(if gates.is_empty() {
            "<none>".to_owned()
        } else {
            format!("0/{}", gates.len())
        }),
    ]
}
fn service_ports(o: &Value) -> String {
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", i(p, "/port")),
                None => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn node_status(o: &Value) -> String {
    let mut out = Vec::new();
    for c in arr(o, "/status/conditions") {
        if s(c, "/type") == "Ready" {
            out.push(if s(c, "/status") == "True" {
                "Ready"
            } else {
                "NotReady"
            });
        }
    }
    if out.is_empty() {
        out.push("Unknown");
    }
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        out.push("SchedulingDisabled");
    }
    out.join(",")
}

fn node_address(o: &Value, kind: &str) -> String {
    or_none(
        arr(o, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == kind)
            .map(|a| s(a, "/address").to_owned())
            .unwrap_or_default(),
    )
}

fn node_roles(o: &Value) -> String {
    let roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    or_none(roles.join(","))
}
fn event_object(o: &Value, ptr: &str) -> String {
    let kind = s(o, &format!("{ptr}/kind")).to_lowercase();
    format!("{kind}/{}", s(o, &format!("{ptr}/name")))
}

fn last_seen(o: &Value, now: i64) -> String {
    let t = [
        s(o, "/lastTimestamp"),
        s(o, "/eventTime"),
        s(o, "/series/lastObservedTime"),
        s(o, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or("");
    age(t, now)
}
