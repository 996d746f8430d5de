//! Server-side printing: the Table columns kubectl shows for each kind, as Kubernetes prints
//! them (`NAME READY STATUS RESTARTS AGE` for pods; priority-1 columns only with `-o wide`).
//! One [`Printer`] per kind, kept in the file of its family (core group, workloads, cluster); a
//! kind without one prints `NAME AGE`.

mod cluster;
mod core_group;
mod workloads;

use serde_json::{Value, json};

/// A column: name, type, priority (1 = wide only).
pub type Column = (&'static str, &'static str, u8);

const NAME: Column = ("Name", "string", 0);
const AGE: Column = ("Age", "string", 0);

/// How one kind prints: its columns and the cells of an object's row, in the same order.
pub struct Printer {
    pub group: &'static str,
    /// The kinds of `group` printed this way.
    pub kinds: &'static [&'static str],
    pub columns: &'static [Column],
    pub cells: fn(&Value, i64) -> Vec<Value>,
}

static FAMILIES: [&[Printer]; 3] = [core_group::PRINTERS, workloads::PRINTERS, cluster::PRINTERS];

/// The printer of `kind` in `group`, if it has one of its own.
pub fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .find(|p| p.group == group && p.kinds.contains(&kind))
}

/// The columns for `kind` in `group`.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    printer(group, kind).map_or_else(|| vec![NAME, AGE], |p| p.columns.to_vec())
}

/// The cells of one object's row, in the order of [`columns`].
pub fn cells(group: &str, kind: &str, o: &Value, now: i64) -> Vec<Value> {
    match printer(group, kind) {
        Some(p) => (p.cells)(o, now),
        None => vec![name(o), created(o, now)],
    }
}

/// The `Name` cell.
fn name(o: &Value) -> Value {
    json!(s(o, "/metadata/name"))
}

/// The `Age` cell.
fn created(o: &Value, now: i64) -> Value {
    json!(age(s(o, "/metadata/creationTimestamp"), now))
}

/// The addresses in `status.loadBalancer.ingress` (an IP, or else a hostname, each), of a
/// Service or an Ingress.
fn load_balancer_addresses(o: &Value) -> Vec<&str> {
    arr(o, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| match s(i, "/ip") {
            "" => s(i, "/hostname"),
            ip => ip,
        })
        .filter(|a| !a.is_empty())
        .collect()
}

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

/// A `metav1.LabelSelector` object in query syntax, or `<none>`.
fn selector_string(sel: Option<&Value>) -> String {
    let parsed = sel.and_then(|s| crate::selector::LabelSelector::from_object(s).ok());
    or_none(parsed.map(|s| s.to_string()).unwrap_or_default())
}

fn map_selector(m: Option<&Value>) -> String {
    or_none(crate::selector::map_to_string(m))
}

fn count(o: &Value, ptr: &str) -> usize {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
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

    #[test]
    fn every_printer_has_as_many_cells_as_columns() {
        let o = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        for p in FAMILIES.iter().flat_map(|f| f.iter()) {
            assert_eq!(
                p.columns.len(),
                (p.cells)(&o, 0).len(),
                "{}/{:?}",
                p.group,
                p.kinds
            );
        }
        assert_eq!(
            cells("", "LimitRange", &o, 0).len(),
            columns("", "LimitRange").len()
        );
    }
}
