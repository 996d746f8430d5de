//! The workload kinds (`apps`, `batch`): their replica counts, and with `-o wide` the
//! containers, images and selector of their pod template.

use super::{
    AGE, NAME, Printer, age, arr, containers_images, created, human_duration, i, jiff_ts,
    map_selector, name, or_none, s, selector_string,
};
use serde_json::{Value, json};

/// The wide columns every workload ends with.
macro_rules! wide {
    ($($c:expr),* $(,)?) => {
        &[$($c,)* ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)]
    };
}

/// ReplicaSets and ReplicationControllers.
const REPLICA_COLUMNS: &[super::Column] = wide![
    NAME,
    ("Desired", "string", 0),
    ("Current", "string", 0),
    ("Ready", "string", 0),
    AGE,
];

fn replica_counts(o: &Value, now: i64) -> Vec<Value> {
    vec![
        name(o),
        json!(replicas(o)),
        json!(i(o, "/status/replicas")),
        json!(i(o, "/status/readyReplicas")),
        created(o, now),
    ]
}

pub(super) static PRINTERS: &[Printer] = &[
    Printer {
        group: "autoscaling",
        kinds: &["HorizontalPodAutoscaler"],
        columns: &[
            NAME,
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            AGE,
        ],
        cells: |o, now| {
            let min = match o.pointer("/spec/minReplicas").and_then(Value::as_i64) {
                Some(m) => m.to_string(),
                None => "<unset>".to_owned(),
            };
            vec![
                name(o),
                json!(format!(
                    "{}/{}",
                    s(o, "/spec/scaleTargetRef/kind"),
                    s(o, "/spec/scaleTargetRef/name")
                )),
                json!(hpa_targets(o)),
                json!(min),
                json!(i(o, "/spec/maxReplicas")),
                json!(i(o, "/status/currentReplicas")),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "",
        kinds: &["PodTemplate"],
        columns: &[
            NAME,
            ("Containers", "string", 0),
            ("Images", "string", 0),
            ("Pod Labels", "string", 0),
        ],
        cells: |o, _now| {
            let (containers, images) =
                containers_images(o.pointer("/template/spec").unwrap_or(&Value::Null));
            vec![
                name(o),
                json!(containers),
                json!(images),
                json!(map_selector(o.pointer("/template/metadata/labels"))),
            ]
        },
    },
    Printer {
        group: "apps",
        kinds: &["ControllerRevision"],
        columns: &[
            NAME,
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            AGE,
        ],
        cells: |o, now| {
            // `daemonset.apps/web`, from the controller owner reference.
            let controller = arr(o, "/metadata/ownerReferences")
                .iter()
                .find(|r| r["controller"] == true)
                .map(|r| {
                    let group = s(r, "/apiVersion").split_once('/').map_or("", |(g, _)| g);
                    let kind = s(r, "/kind").to_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", s(r, "/name"))
                })
                .unwrap_or_default();
            vec![
                name(o),
                json!(or_none(controller)),
                json!(i(o, "/revision")),
                created(o, now),
            ]
        },
    },
    Printer {
        group: "apps",
        kinds: &["Deployment"],
        columns: wide![
            NAME,
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            AGE,
        ],
        cells: |o, now| {
            with_template(
                o,
                vec![
                    name(o),
                    json!(format!("{}/{}", i(o, "/status/readyReplicas"), replicas(o))),
                    json!(i(o, "/status/updatedReplicas")),
                    json!(i(o, "/status/availableReplicas")),
                    created(o, now),
                ],
            )
        },
    },
    Printer {
        group: "apps",
        kinds: &["ReplicaSet"],
        columns: REPLICA_COLUMNS,
        cells: |o, now| with_template(o, replica_counts(o, now)),
    },
    Printer {
        group: "",
        kinds: &["ReplicationController"],
        columns: REPLICA_COLUMNS,
        cells: |o, now| {
            let tmpl = o.pointer("/spec/template/spec").unwrap_or(&Value::Null);
            let (cs, imgs) = containers_images(tmpl);
            let mut row = replica_counts(o, now);
            row.extend([
                json!(cs),
                json!(imgs),
                json!(map_selector(o.pointer("/spec/selector"))),
            ]);
            row
        },
    },
    Printer {
        group: "apps",
        kinds: &["StatefulSet"],
        columns: &[
            NAME,
            ("Ready", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        cells: |o, now| {
            let mut row = with_template(
                o,
                vec![
                    name(o),
                    json!(format!("{}/{}", i(o, "/status/readyReplicas"), replicas(o))),
                    created(o, now),
                ],
            );
            row.pop();
            row
        },
    },
    Printer {
        group: "apps",
        kinds: &["DaemonSet"],
        columns: wide![
            NAME,
            ("Desired", "string", 0),
            ("Current", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Node Selector", "string", 0),
            AGE,
        ],
        cells: |o, now| {
            with_template(
                o,
                vec![
                    name(o),
                    json!(i(o, "/status/desiredNumberScheduled")),
                    json!(i(o, "/status/currentNumberScheduled")),
                    json!(i(o, "/status/numberReady")),
                    json!(i(o, "/status/updatedNumberScheduled")),
                    json!(i(o, "/status/numberAvailable")),
                    json!(map_selector(o.pointer("/spec/template/spec/nodeSelector"))),
                    created(o, now),
                ],
            )
        },
    },
    Printer {
        group: "batch",
        kinds: &["Job"],
        columns: wide![
            NAME,
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            AGE,
        ],
        cells: job_cells,
    },
    Printer {
        group: "batch",
        kinds: &["CronJob"],
        columns: wide![
            NAME,
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "string", 0),
            ("Active", "string", 0),
            ("Last Schedule", "string", 0),
            AGE,
        ],
        cells: cron_job_cells,
    },
];

/// `spec.replicas`, 1 when unset.
fn replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// `row` followed by the pod template's containers and images and the workload's selector.
fn with_template(o: &Value, mut row: Vec<Value>) -> Vec<Value> {
    let tmpl = o.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    let (cs, imgs) = containers_images(tmpl);
    row.extend([
        json!(cs),
        json!(imgs),
        json!(selector_string(o.pointer("/spec/selector"))),
    ]);
    row
}

fn job_cells(o: &Value, now: i64) -> Vec<Value> {
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
    with_template(
        o,
        vec![
            name(o),
            json!(job_status(o)),
            json!(comp),
            json!(dur),
            created(o, now),
        ],
    )
}

fn cron_job_cells(o: &Value, now: i64) -> Vec<Value> {
    let jt = o
        .pointer("/spec/jobTemplate/spec/template/spec")
        .unwrap_or(&Value::Null);
    let (cs, imgs) = containers_images(jt);
    let last = s(o, "/status/lastScheduleTime");
    let suspend = o
        .pointer("/spec/suspend")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        name(o),
        json!(s(o, "/spec/schedule")),
        json!(or_none(s(o, "/spec/timeZone").to_owned())),
        json!(if suspend { "True" } else { "False" }),
        json!(arr(o, "/status/active").len()),
        json!(if last.is_empty() {
            "<none>".to_owned()
        } else {
            age(last, now)
        }),
        created(o, now),
        json!(cs),
        json!(imgs),
        json!(selector_string(
            o.pointer("/spec/jobTemplate/spec/selector")
        )),
    ]
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

fn field<'a>(v: Option<&'a Value>, f: &str) -> Option<&'a Value> {
    v.and_then(|v| v.get(f))
}

/// An autoscaler's `TARGETS` cell, as kubectl prints it: each metric's current value over its
/// target (`cpu: 45%/80%`, `<unknown>` before the first measurement), two at most.
fn hpa_targets(o: &Value) -> String {
    const SHOWN: usize = 2;
    let specs = arr(o, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".to_owned();
    }
    let statuses = arr(o, "/status/currentMetrics");
    let quantity = |v: Option<&Value>| match v {
        Some(Value::String(q)) => Some(q.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut list = Vec::new();
    for (n, spec) in specs.iter().enumerate() {
        let ty = s(spec, "/type");
        let key = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => {
                list.push("<unknown type>".to_owned());
                continue;
            }
        };
        let target = spec.pointer(&format!("/{key}/target"));
        let current = statuses
            .get(n)
            .and_then(|st| st.pointer(&format!("/{key}/current")));
        let unknown = || "<unknown>".to_owned();
        let cell = match key {
            "resource" | "containerResource" => {
                let name = s(spec, &format!("/{key}/name"));
                match quantity(field(target, "averageValue")) {
                    Some(t) => format!(
                        "{name}: {}/{t}",
                        quantity(field(current, "averageValue")).unwrap_or_else(unknown)
                    ),
                    None => {
                        let pct =
                            |v: Option<&Value>| v.and_then(Value::as_i64).map(|u| format!("{u}%"));
                        format!(
                            "{name}: {}/{}",
                            pct(field(current, "averageUtilization")).unwrap_or_else(unknown),
                            pct(field(target, "averageUtilization"))
                                .unwrap_or_else(|| "<auto>".to_owned())
                        )
                    }
                }
            }
            "pods" => format!(
                "{}/{}",
                quantity(field(current, "averageValue")).unwrap_or_else(unknown),
                quantity(field(target, "averageValue")).unwrap_or_default()
            ),
            _ => match quantity(field(target, "averageValue")) {
                Some(t) => format!(
                    "{}/{t} (avg)",
                    quantity(field(current, "averageValue")).unwrap_or_else(unknown)
                ),
                None => format!(
                    "{}/{}",
                    quantity(field(current, "value")).unwrap_or_else(unknown),
                    quantity(field(target, "value")).unwrap_or_default()
                ),
            },
        };
        list.push(cell);
    }
    let count = list.len();
    if count > SHOWN {
        list.truncate(SHOWN);
        return format!("{} + {} more...", list.join(", "), count - SHOWN);
    }
    list.join(", ")
}

#[cfg(test)]
mod hpa_tests {
    use super::*;

    #[test]
    fn hpa_targets_print_as_kubectl_prints_them() {
        let o = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]},
            "status": {"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "90m"}}}]}});
        assert_eq!(
            hpa_targets(&o),
            "cpu: 45%/80%, memory: <unknown>/100Mi + 1 more..."
        );
        assert_eq!(hpa_targets(&json!({"spec": {}})), "<none>");
    }
}
