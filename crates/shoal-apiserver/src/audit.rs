//! The audit log, as kube-apiserver writes it: an `audit.k8s.io/v1` `Policy` chooses per
//! request a level (`None`, `Metadata`, `Request`, `RequestResponse`) by the first rule that
//! matches its user, groups, verb, resource and namespace or non-resource URL; each audited
//! request becomes `Event` JSON lines (stages `RequestReceived` and `ResponseComplete`, unless
//! omitted) in a file rotated by size. Events go through a bounded queue to a writer task:
//! a request never waits for the disk; when the queue is full the event is dropped and counted.

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "None" => Level::None,
            "Metadata" => Level::Metadata,
            "Request" => Level::Request,
            "RequestResponse" => Level::RequestResponse,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    urls: Vec<String>,
    omit: Vec<String>,
}

/// A parsed audit `Policy`.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    omit: Vec<String>,
}

/// What a request is, as the policy sees it.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    /// `(group, plural[/subresource], namespace, name)` for a resource request.
    pub resource: Option<(String, String, String, String)>,
    pub path: String,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn any_or(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == v || x == "*")
}

impl Policy {
    /// Parses YAML; the error names the field at fault.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        if v.get("kind").and_then(Value::as_str) != Some("Policy") {
            return Err("kind: must be Policy".into());
        }
        let mut rules = Vec::new();
        for (i, r) in v
            .get("rules")
            .and_then(Value::as_array)
            .ok_or("rules: Required value")?
            .iter()
            .enumerate()
        {
            let level = r
                .get("level")
                .and_then(Value::as_str)
                .and_then(Level::parse)
                .ok_or(format!(
                    "rules[{i}].level: Unsupported value: must be None, Metadata, Request or RequestResponse"
                ))?;
            let resources = r
                .get("resources")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|g| GroupResources {
                            group: g.get("group").and_then(Value::as_str).unwrap_or("").into(),
                            resources: strings(g.get("resources")),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let rule = Rule {
                level,
                users: strings(r.get("users")),
                groups: strings(r.get("userGroups")),
                verbs: strings(r.get("verbs")),
                resources,
                namespaces: strings(r.get("namespaces")),
                urls: strings(r.get("nonResourceURLs")),
                omit: strings(r.get("omitStages")),
            };
            if !rule.urls.is_empty() && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
            {
                return Err(format!(
                    "rules[{i}].nonResourceURLs: may not be combined with resources or namespaces"
                ));
            }
            rules.push(rule);
        }
        Ok(Policy {
            rules,
            omit: strings(v.get("omitStages")),
        })
    }

    /// The policy `shoal up` uses: nothing for health and discovery, metadata only for Secrets
    /// and ConfigMaps (their values never reach the log), request bodies for other writes,
    /// metadata for other reads; lease renewals and event writes are left out.
    pub fn default_text() -> &'static str {
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  nonResourceURLs: [/healthz*, /livez*, /readyz*, /version, /openapi*, /api, /apis, /api/*, /apis/*]\n- level: None\n  resources: [{group: coordination.k8s.io, resources: [leases]}, {group: \"\", resources: [events]}]\n- level: Metadata\n  resources: [{group: \"\", resources: [secrets, configmaps]}]\n- level: Request\n  verbs: [create, update, patch, delete, deletecollection]\n- level: Metadata\n"
    }

    /// The level of a request and the stages left out.
    pub fn level(&self, a: &Attributes) -> (Level, Vec<String>) {
        for r in &self.rules {
            if !any_or(&r.users, &a.user)
                || !(r.groups.is_empty() || a.groups.iter().any(|g| r.groups.contains(g)))
                || !any_or(&r.verbs, &a.verb)
            {
                continue;
            }
            let matches = match &a.resource {
                Some((group, resource, ns, _)) => {
                    r.urls.is_empty()
                        && (r.resources.is_empty()
                            || r.resources.iter().any(|g| {
                                g.group == *group
                                    && (g.resources.is_empty()
                                        || g.resources
                                            .iter()
                                            .any(|x| resource_matches(x, resource)))
                            }))
                        && (r.namespaces.is_empty() || r.namespaces.contains(ns))
                }
                None => {
                    r.resources.is_empty()
                        && r.namespaces.is_empty()
                        && (r.urls.is_empty()
                            || r.urls.iter().any(|u| match u.strip_suffix('*') {
                                Some(prefix) => a.path.starts_with(prefix),
                                None => a.path == *u,
                            }))
                }
            };
            if matches {
                let mut omit = self.omit.clone();
                omit.extend(r.omit.iter().cloned());
                return (r.level, omit);
            }
        }
        (Level::None, Vec::new())
    }
}

/// Whether a rule's resource (`pods`, `pods/log`, `pods/*`, `*/scale`, `*`) names
/// `resource` (`pods`, or `pods/log` for a subresource).
fn resource_matches(rule: &str, resource: &str) -> bool {
    let (plural, sub) = resource.split_once('/').unwrap_or((resource, ""));
    rule == "*"
        || rule == resource
        || (!sub.is_empty() && (rule == format!("{plural}/*") || rule == format!("*/{sub}")))
}

/// Where events go: a bounded queue to the writer.
pub struct Audit {
    pub policy: Policy,
    tx: mpsc::Sender<Value>,
    pub dropped: Arc<AtomicU64>,
}

/// The log file, rotated when it reaches `max_bytes` (`audit.log` → `audit.log.1` ...).
pub struct LogFile {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub backups: usize,
}

impl Audit {
    /// Starts the writer; events queue up to `capacity`.
    pub fn start(policy: Policy, file: LogFile, capacity: usize) -> std::io::Result<Audit> {
        if let Some(dir) = file.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let (tx, mut rx) = mpsc::channel::<Value>(capacity);
        let mut out = open(&file.path)?;
        let mut written = out.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                while let Some(ev) = rx.blocking_recv() {
                    let mut line = serde_json::to_vec(&ev).unwrap_or_default();
                    line.push(b'\n');
                    if written + line.len() as u64 > file.max_bytes && written > 0 {
                        let _ = out.flush();
                        rotate(&file);
                        match open(&file.path) {
                            Ok(f) => {
                                out = f;
                                written = 0;
                            }
                            Err(e) => tracing::error!(error = %e, "cannot reopen the audit log"),
                        }
                    }
                    if out.write_all(&line).is_ok() {
                        written += line.len() as u64;
                    }
                    if rx.is_empty() {
                        let _ = out.flush();
                    }
                }
            })?;
        Ok(Audit {
            policy,
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues `event`; never waits.
    pub fn send(&self, event: Value) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open(path: &std::path::Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    Ok(std::io::BufWriter::new(f))
}

fn rotate(file: &LogFile) {
    let name = |i: usize| PathBuf::from(format!("{}.{i}", file.path.display()));
    let _ = std::fs::remove_file(name(file.backups.max(1)));
    for i in (1..file.backups.max(1)).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(&file.path, name(1));
}

/// One event.
#[allow(clippy::too_many_arguments)]
pub fn event(
    a: &Attributes,
    level: Level,
    stage: &str,
    id: &str,
    uri: &str,
    source: &str,
    agent: &str,
    received: &str,
    code: Option<u16>,
    request: Option<&Value>,
    response: Option<&Value>,
) -> Value {
    let mut ev = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level.name(), "auditID": id,
        "stage": stage, "requestURI": uri, "verb": a.verb,
        "user": {"username": a.user, "groups": a.groups},
        "sourceIPs": [source], "userAgent": agent,
        "requestReceivedTimestamp": received, "stageTimestamp": crate::meta::now_micro(),
    });
    if let Some((group, resource, ns, name)) = &a.resource {
        let (plural, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let mut r = json!({"resource": plural, "apiGroup": group});
        for (k, v) in [("namespace", ns), ("name", name)] {
            if !v.is_empty() {
                r[k] = json!(v);
            }
        }
        if !sub.is_empty() {
            r["subresource"] = json!(sub);
        }
        ev["objectRef"] = r;
    }
    if let Some(c) = code {
        ev["responseStatus"] = json!({"metadata": {}, "code": c});
    }
    if level >= Level::Request
        && let Some(b) = request
    {
        ev["requestObject"] = b.clone();
    }
    if level >= Level::RequestResponse
        && let Some(b) = response
    {
        ev["responseObject"] = b.clone();
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, resource: Option<(&str, &str, &str)>, path: &str) -> Attributes {
        Attributes {
            user: "alice".into(),
            groups: vec!["dev".into()],
            verb: verb.into(),
            resource: resource.map(|(g, r, ns)| (g.into(), r.into(), ns.into(), "x".into())),
            path: path.into(),
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = Policy::parse(Policy::default_text()).unwrap();
        let level = |a: &Attributes| p.level(a).0;
        assert_eq!(level(&attrs("get", None, "/healthz")), Level::None);
        assert_eq!(level(&attrs("get", None, "/readyz/ping")), Level::None);
        assert_eq!(
            level(&attrs("create", Some(("", "secrets", "d")), "")),
            Level::Metadata
        );
        assert_eq!(
            level(&attrs("create", Some(("apps", "deployments", "d")), "")),
            Level::Request
        );
        assert_eq!(
            level(&attrs("list", Some(("", "pods", "d")), "")),
            Level::Metadata
        );
        assert_eq!(
            level(&attrs(
                "update",
                Some(("coordination.k8s.io", "leases", "kube-node-lease")),
                ""
            )),
            Level::None
        );
        assert_eq!(
            p.level(&attrs("get", Some(("", "pods", "d")), "")).1,
            ["RequestReceived"]
        );
        let err = Policy::parse("kind: Policy\nrules:\n- level: Loud\n").unwrap_err();
        assert!(err.starts_with("rules[0].level"), "{err}");
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_its_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let file = LogFile {
            path: path.clone(),
            max_bytes: 300,
            backups: 2,
        };
        let audit =
            Audit::start(Policy::parse(Policy::default_text()).unwrap(), file, 100).unwrap();
        for i in 0..20 {
            audit.send(json!({"n": i, "pad": "x".repeat(80)}));
        }
        let backup = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let last = std::fs::read_to_string(&path).unwrap_or_default();
            if last.contains("\"n\":19") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the writer is stuck");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(backup(1).exists() && backup(2).exists());
        assert!(!backup(3).exists(), "only two backups are kept");
        for f in [path.clone(), backup(1), backup(2)] {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.len() <= 300, "{} is {} bytes", f.display(), text.len());
            for line in text.lines() {
                serde_json::from_str::<Value>(line).unwrap();
            }
        }
        assert_eq!(audit.dropped.load(Ordering::Relaxed), 0);
    }
}
