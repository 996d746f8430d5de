//! Server-side printing: the Table columns kubectl shows for each kind, as Kubernetes prints
//! them (`NAME READY STATUS RESTARTS AGE` for pods; priority-1 columns only with `-o wide`).

use serde_json::{Value, json};

/// A column: name, type, priority (1 = wide only).
pub type Column = (&'static str, &'static str, u8);

const NAME: Column = ("Name", "string", 0);
const AGE: Column = ("Age", "string", 0);

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}
fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}
fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age of an RFC 3339 timestamp at `now` (unix seconds), or `<unknown>`.
pub fn age(ts: &str, now: i64) -> String {
    match ts.parse::<jiff_ts::Timestamp>() {
        Ok(t) => human_duration(now - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

mod jiff_ts {
    pub use k8s_openapi::jiff::Timestamp;
}

fn containers_images(spec: &Value) -> (String, String) {
    let cs = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let vals: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        let k = s(e, "/key");
        parts.push(match s(e, "/operator") {
            "In" => format!("{k} in ({})", vals.join(",")),
            "NotIn" => format!("{k} notin ({})", vals.join(",")),
            "Exists" => k.to_owned(),
            _ => format!("!{k}"),
        });
    }
    or_none(parts.join(","))
}

fn map_selector(m: Option<&Value>) -> String {
    let parts: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(parts.join(","))
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

fn count(o: &Value, ptr: &str) -> usize {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
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

fn job_status(o: &Value) -> String {
    for c in arr(o, "/status/conditions") {
        if s(c, "/status") == "True" {
            match s(c, "/type") {
                "Complete" => return "Complete".into(),
                "Failed" => return "Failed".into(),
                "Suspended" => return "Suspended".into(),
                _ => {}
            }
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".into()
    } else {
        "Running".into()
    }
}

/// The columns for `kind` in `group`.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    let wide_workload = [
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ];
    match (group, kind) {
        ("", "Pod") => vec![
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
        ("", "Namespace") => vec![NAME, ("Status", "string", 0), AGE],
        ("", "Node") => vec![
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
        ("", "Service") => vec![
            NAME,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            AGE,
            ("Selector", "string", 1),
        ],
        ("", "Endpoints") => vec![NAME, ("Endpoints", "string", 0), AGE],
        ("", "ConfigMap") => vec![NAME, ("Data", "string", 0), AGE],
        ("", "Secret") => vec![NAME, ("Type", "string", 0), ("Data", "string", 0), AGE],
        ("", "ServiceAccount") => vec![NAME, ("Secrets", "string", 0), AGE],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        ("apps", "Deployment") => [
            vec![
                NAME,
                ("Ready", "string", 0),
                ("Up-to-date", "string", 0),
                ("Available", "string", 0),
                AGE,
            ],
            wide_workload.to_vec(),
        ]
        .concat(),
        ("apps", "ReplicaSet") => [
            vec![
                NAME,
                ("Desired", "string", 0),
                ("Current", "string", 0),
                ("Ready", "string", 0),
                AGE,
            ],
            wide_workload.to_vec(),
        ]
        .concat(),
        ("apps", "StatefulSet") => vec![
            NAME,
            ("Ready", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        ("apps", "DaemonSet") => [
            vec![
                NAME,
                ("Desired", "string", 0),
                ("Current", "string", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "string", 0),
                ("Available", "string", 0),
                ("Node Selector", "string", 0),
                AGE,
            ],
            wide_workload.to_vec(),
        ]
        .concat(),
        ("batch", "Job") => [
            vec![
                NAME,
                ("Status", "string", 0),
                ("Completions", "string", 0),
                ("Duration", "string", 0),
                AGE,
            ],
            wide_workload.to_vec(),
        ]
        .concat(),
        ("batch", "CronJob") => [
            vec![
                NAME,
                ("Schedule", "string", 0),
                ("Timezone", "string", 0),
                ("Suspend", "string", 0),
                ("Active", "string", 0),
                ("Last Schedule", "string", 0),
                AGE,
            ],
            wide_workload.to_vec(),
        ]
        .concat(),
        ("coordination.k8s.io", "Lease") => vec![NAME, ("Holder", "string", 0), AGE],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            NAME,
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            AGE,
        ],
        ("node.k8s.io", "RuntimeClass") => vec![NAME, ("Handler", "string", 0), AGE],
        ("policy.shoal.dev", "ClusterAdmissionPolicy" | "AdmissionPolicy") => vec![
            NAME,
            ("Mode", "string", 0),
            ("Mutating", "boolean", 0),
            ("Status", "string", 0),
            ("Message", "string", 1),
            AGE,
        ],
        ("policy.shoal.dev", "SchedulerPlugin") => vec![
            NAME,
            ("Extension Points", "string", 0),
            ("Status", "string", 0),
            ("Message", "string", 1),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// The cells of one object's row, in the order of [`columns`].
pub fn cells(group: &str, kind: &str, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let created = json!(age(s(o, "/metadata/creationTimestamp"), now));
    let tmpl = o
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    let (cs, imgs) = containers_images(&tmpl);
    let sel = selector_string(o.pointer("/spec/selector"));
    match (group, kind) {
        ("", "Pod") => pod_cells(o, now),
        ("", "Namespace") => vec![name, json!(s(o, "/status/phase")), created],
        ("", "Node") => vec![
            name,
            json!(node_status(o)),
            json!(node_roles(o)),
            created,
            json!(s(o, "/status/nodeInfo/kubeletVersion")),
            json!(node_address(o, "InternalIP")),
            json!(node_address(o, "ExternalIP")),
            json!(s(o, "/status/nodeInfo/osImage")),
            json!(s(o, "/status/nodeInfo/kernelVersion")),
            json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
        ],
        ("", "Service") => {
            let ty = o
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ext: Vec<&str> = arr(o, "/spec/externalIPs")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let ext = if ty == "ExternalName" {
                s(o, "/spec/externalName").to_owned()
            } else if ext.is_empty() {
                if ty == "LoadBalancer" {
                    "<pending>".into()
                } else {
                    "<none>".into()
                }
            } else {
                ext.join(",")
            };
            vec![
                name,
                json!(ty),
                json!(or_none(s(o, "/spec/clusterIP").to_owned())),
                json!(ext),
                json!(service_ports(o)),
                created,
                json!(map_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for sub in arr(o, "/subsets") {
                for a in arr(sub, "/addresses") {
                    for p in arr(sub, "/ports") {
                        eps.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                    }
                }
            }
            vec![name, json!(or_none(eps.join(","))), created]
        }
        ("", "ConfigMap") => vec![
            name,
            json!(count(o, "/data") + count(o, "/binaryData")),
            created,
        ],
        ("", "Secret") => vec![
            name,
            json!(s(o, "/type")),
            json!(count(o, "/data")),
            created,
        ],
        ("", "ServiceAccount") => vec![name, json!(arr(o, "/secrets").len()), created],
        ("", "Event") => vec![
            json!(last_seen(o, now)),
            json!(s(o, "/type")),
            json!(s(o, "/reason")),
            json!(event_object(o, "/involvedObject")),
            json!(s(o, "/message")),
        ],
        ("events.k8s.io", "Event") => vec![
            json!(last_seen(o, now)),
            json!(s(o, "/type")),
            json!(s(o, "/reason")),
            json!(event_object(o, "/regarding")),
            json!(s(o, "/note")),
        ],
        ("apps", "Deployment") => vec![
            name,
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            )),
            json!(i(o, "/status/updatedReplicas")),
            json!(i(o, "/status/availableReplicas")),
            created,
            json!(cs),
            json!(imgs),
            json!(sel),
        ],
        ("apps", "ReplicaSet") => vec![
            name,
            json!(
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            ),
            json!(i(o, "/status/replicas")),
            json!(i(o, "/status/readyReplicas")),
            created,
            json!(cs),
            json!(imgs),
            json!(sel),
        ],
        ("apps", "StatefulSet") => vec![
            name,
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            )),
            created,
            json!(cs),
            json!(imgs),
        ],
        ("apps", "DaemonSet") => vec![
            name,
            json!(i(o, "/status/desiredNumberScheduled")),
            json!(i(o, "/status/currentNumberScheduled")),
            json!(i(o, "/status/numberReady")),
            json!(i(o, "/status/updatedNumberScheduled")),
            json!(i(o, "/status/numberAvailable")),
            json!(map_selector(o.pointer("/spec/template/spec/nodeSelector"))),
            created,
            json!(cs),
            json!(imgs),
            json!(sel),
        ],
        ("batch", "Job") => {
            let completions = o.pointer("/spec/completions").and_then(Value::as_i64);
            let comp = match completions {
                Some(c) => format!("{}/{c}", i(o, "/status/succeeded")),
                None => format!(
                    "{}/1 of {}",
                    i(o, "/status/succeeded"),
                    o.pointer("/spec/parallelism")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
            };
            let start = s(o, "/status/startTime");
            let dur = if start.is_empty() {
                String::new()
            } else {
                let end = s(o, "/status/completionTime");
                let st = start
                    .parse::<jiff_ts::Timestamp>()
                    .map(|t| t.as_second())
                    .unwrap_or(now);
                let en = if end.is_empty() {
                    now
                } else {
                    end.parse::<jiff_ts::Timestamp>()
                        .map(|t| t.as_second())
                        .unwrap_or(now)
                };
                human_duration(en - st)
            };
            vec![
                name,
                json!(job_status(o)),
                json!(comp),
                json!(dur),
                created,
                json!(cs),
                json!(imgs),
                json!(sel),
            ]
        }
        ("batch", "CronJob") => {
            let jt = o
                .pointer("/spec/jobTemplate/spec/template/spec")
                .cloned()
                .unwrap_or(Value::Null);
            let (cs, imgs) = containers_images(&jt);
            let last = s(o, "/status/lastScheduleTime");
            vec![
                name,
                json!(s(o, "/spec/schedule")),
                json!(or_none(s(o, "/spec/timeZone").to_owned())),
                json!(
                    o.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                        .to_string()
                        .replace("true", "True")
                        .replace("false", "False")
                ),
                json!(arr(o, "/status/active").len()),
                json!(if last.is_empty() {
                    "<none>".to_owned()
                } else {
                    age(last, now)
                }),
                created,
                json!(cs),
                json!(imgs),
                json!(selector_string(
                    o.pointer("/spec/jobTemplate/spec/selector")
                )),
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(o, "/spec/holderIdentity")), created]
        }
        ("discovery.k8s.io", "EndpointSlice") => {
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
                name,
                json!(s(o, "/addressType")),
                json!(or_none(ports.join(","))),
                json!(or_none(eps.join(","))),
                created,
            ]
        }
        ("node.k8s.io", "RuntimeClass") => vec![name, json!(s(o, "/handler")), created],
        ("policy.shoal.dev", "ClusterAdmissionPolicy" | "AdmissionPolicy") => vec![
            name,
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
            created,
        ],
        ("policy.shoal.dev", "SchedulerPlugin") => {
            let points: Vec<&str> = arr(o, "/spec/extensionPoints")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            vec![
                name,
                json!(if points.is_empty() {
                    "PreFilter,Filter,Score".to_owned()
                } else {
                    points.join(",")
                }),
                json!(s(o, "/status/phase")),
                json!(s(o, "/status/message")),
                created,
            ]
        }
        _ => vec![name, created],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(50 * 3600), "2d2h");
    }

    #[test]
    fn pod_row_shows_ready_status_restarts() {
        let pod = serde_json::json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "127.64.0.2", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        let c = cells("", "Pod", &pod, 1767225600 + 30);
        assert_eq!(
            c[..5],
            [
                json!("web"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("1"),
                json!("30s")
            ]
        );
        assert_eq!(c[5], json!("127.64.0.2"));
        assert_eq!(columns("", "Pod").len(), c.len());
    }
}
