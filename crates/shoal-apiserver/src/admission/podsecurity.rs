//! Pod Security admission: the Pod Security Standards (`privileged`, `baseline`,
//! `restricted`) a namespace asks for with its `pod-security.kubernetes.io/{enforce,audit,warn}`
//! labels (and `-version`), checked as Kubernetes' PodSecurity admission checks them, with its
//! messages. `enforce` refuses a pod that violates the level (403); `warn` answers with a
//! warning, for pods and for the pod templates of workloads; `audit` logs the violations (the
//! API server's log: Shoal's audit events carry no annotations yet). A level that is not one of
//! the three counts as `restricted`, as Kubernetes fails closed. Labelling a namespace with an
//! `enforce` level its pods violate warns about them.
//!
//! The cluster-wide [`Config`] (a `PodSecurityConfiguration`, in the AdmissionConfiguration
//! file of `--admission-control-config-file`) sets the levels of namespaces without labels
//! (`defaults`) and exempts requests by user, by RuntimeClass or by namespace (`exemptions`), as
//! Kubernetes' does.

use crate::cache::WatchCache;
use serde_json::Value;
use shoal_api::{ResourceInfo, StatusError};

const PREFIX: &str = "pod-security.kubernetes.io/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Level {
        match s {
            "privileged" => Level::Privileged,
            "baseline" => Level::Baseline,
            _ => Level::Restricted,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The PodSecurity plugin's configuration (`pod-security.admission.config.k8s.io/v1`
/// `PodSecurityConfiguration`): the levels of namespaces that do not say, and who is exempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// `enforce`, `audit`, `warn` and their `-version`s, as namespace labels say them.
    defaults: serde_json::Map<String, Value>,
    exempt_users: Vec<String>,
    exempt_runtime_classes: Vec<String>,
    exempt_namespaces: Vec<String>,
}

impl Config {
    /// Reads an `AdmissionConfiguration` (its `PodSecurity` plugin's `configuration`) or a
    /// `PodSecurityConfiguration` itself; the error names the field at fault.
    pub fn parse(text: &str) -> Result<Config, String> {
        let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let psa = match v.get("kind").and_then(Value::as_str) {
            Some("AdmissionConfiguration") => {
                let plugins = v.get("plugins").and_then(Value::as_array);
                match plugins
                    .into_iter()
                    .flatten()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some("PodSecurity"))
                {
                    None => return Ok(Config::default()),
                    Some(p) => {
                        if p.get("path").is_some() {
                            return Err(
                                "plugins[PodSecurity].path: give the configuration inline".into()
                            );
                        }
                        p.get("configuration").cloned().unwrap_or(Value::Null)
                    }
                }
            }
            Some("PodSecurityConfiguration") => v,
            _ => {
                return Err(
                    "kind: must be AdmissionConfiguration or PodSecurityConfiguration".into(),
                );
            }
        };
        if psa.get("kind").and_then(Value::as_str) != Some("PodSecurityConfiguration") {
            return Err("configuration.kind: must be PodSecurityConfiguration".into());
        }
        let mut defaults = serde_json::Map::new();
        for mode in ["enforce", "audit", "warn"] {
            let level = psa
                .pointer(&format!("/defaults/{mode}"))
                .and_then(Value::as_str);
            if let Some(level) = level {
                if !matches!(level, "privileged" | "baseline" | "restricted") {
                    return Err(format!(
                        "defaults.{mode}: Unsupported value: {level:?}: supported values: \"privileged\", \"baseline\", \"restricted\""
                    ));
                }
                defaults.insert(format!("{PREFIX}{mode}"), Value::from(level));
            }
            if let Some(version) = psa
                .pointer(&format!("/defaults/{mode}-version"))
                .and_then(Value::as_str)
            {
                defaults.insert(format!("{PREFIX}{mode}-version"), Value::from(version));
            }
        }
        let list = |key: &str| crate::meta::strings(psa.pointer(&format!("/exemptions/{key}")));
        Ok(Config {
            defaults,
            exempt_users: list("usernames"),
            exempt_runtime_classes: list("runtimeClasses"),
            exempt_namespaces: list("namespaces"),
        })
    }

    /// Whether a request is exempt: by the namespace, the requesting user or the pod's
    /// RuntimeClass.
    fn exempt(&self, namespace: &str, user: Option<&str>, spec: &Value) -> bool {
        self.exempt_namespaces.iter().any(|n| n == namespace)
            || user.is_some_and(|u| self.exempt_users.iter().any(|x| x == u))
            || spec
                .get("runtimeClassName")
                .and_then(Value::as_str)
                .is_some_and(|rc| self.exempt_runtime_classes.iter().any(|x| x == rc))
    }
}

/// A mode's level and version (`restricted:latest`), from the namespace's labels, else the
/// configured defaults.
fn policy(
    labels: &serde_json::Map<String, Value>,
    defaults: &serde_json::Map<String, Value>,
    mode: &str,
) -> Option<(Level, String)> {
    let key = format!("{PREFIX}{mode}");
    let level = labels.get(&key).or_else(|| defaults.get(&key))?.as_str()?;
    let key = format!("{PREFIX}{mode}-version");
    let version = labels
        .get(&key)
        .or_else(|| defaults.get(&key))
        .and_then(Value::as_str)
        .unwrap_or("latest");
    Some((Level::parse(level), version.to_owned()))
}

/// One failed check: why, and who.
struct Violation {
    reason: &'static str,
    detail: String,
}

/// `container "a"` or `containers "a", "b"`.
fn containers(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    if names.len() == 1 {
        format!("container {}", quoted[0])
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every container of the spec (containers, init containers, ephemeral containers) with its
/// name.
fn all_containers(spec: &Value) -> Vec<(String, &Value)> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec.get(*k).and_then(Value::as_array).into_iter().flatten())
        .map(|c| {
            (
                c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                c,
            )
        })
        .collect()
}

fn sc<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    v.pointer(&format!("/securityContext/{path}"))
}

/// The capabilities Kubernetes' baseline allows a container to add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The sysctls baseline allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The volume types restricted allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The violations of `spec` (a pod spec, with `metadata` for AppArmor annotations) at
/// `level`: baseline's checks in the order of their ids, then restricted's (each of which
/// replaces its baseline counterpart).
fn check(spec: &Value, level: Level) -> Vec<Violation> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let restricted = level == Level::Restricted;
    let ctrs = all_containers(spec);
    let names_where = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        ctrs.iter()
            .filter(|(_, c)| f(c))
            .map(|(n, _)| n.clone())
            .collect()
    };

    // appArmorProfile
    let unconfined =
        |v: &Value| sc(v, "appArmorProfile/type").and_then(Value::as_str) == Some("Unconfined");
    fail(
        &mut out,
        "forbidden AppArmor profile",
        must_not_set(
            spec,
            &ctrs,
            unconfined,
            "securityContext.appArmorProfile.type to \"Unconfined\"",
        ),
    );

    // capabilities_baseline (replaced by capabilities_restricted)
    let added = |c: &Value| -> Vec<String> {
        sc(c, "capabilities/add")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    if !restricted {
        let mut details = Vec::new();
        for (name, c) in &ctrs {
            let extra: Vec<String> = added(c)
                .into_iter()
                .filter(|cap| !BASELINE_CAPABILITIES.contains(&cap.as_str()))
                .collect();
            if !extra.is_empty() {
                details.push(format!(
                    "container {name:?} must not include {} in securityContext.capabilities.add",
                    quoted_list(&extra)
                ));
            }
        }
        fail(&mut out, "non-default capabilities", details);
    }

    // hostNamespaces
    let host: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|k| spec.get(*k).and_then(Value::as_bool) == Some(true))
        .collect();
    if !host.is_empty() {
        out.push(Violation {
            reason: "host namespaces",
            detail: host
                .iter()
                .map(|k| format!("{k}=true"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }

    let volumes: Vec<(String, &serde_json::Map<String, Value>)> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                v.as_object()?,
            ))
        })
        .collect();
    // hostPathVolumes (replaced by restrictedVolumes)
    if !restricted {
        let host_paths: Vec<String> = volumes
            .iter()
            .filter(|(_, v)| v.contains_key("hostPath"))
            .map(|(n, _)| n.clone())
            .collect();
        if !host_paths.is_empty() {
            let what = if host_paths.len() == 1 {
                "volume"
            } else {
                "volumes"
            };
            out.push(Violation {
                reason: "hostPath volumes",
                detail: format!("{what} {}", quoted_list(&host_paths)),
            });
        }
    }

    // hostPorts
    let mut port_users = Vec::new();
    let mut ports = Vec::new();
    for (name, c) in &ctrs {
        let mine: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
            .filter(|p| *p != 0)
            .map(|p| p.to_string())
            .collect();
        if !mine.is_empty() {
            port_users.push(name.clone());
            ports.extend(mine);
        }
    }
    if !port_users.is_empty() {
        let (verb, noun) = if port_users.len() == 1 && ports.len() == 1 {
            ("uses", "hostPort")
        } else if port_users.len() == 1 {
            ("uses", "hostPorts")
        } else {
            ("use", "hostPorts")
        };
        out.push(Violation {
            reason: "hostPort",
            detail: format!(
                "{} {verb} {noun} {}",
                containers(&port_users),
                ports.join(", ")
            ),
        });
    }

    // privileged
    let bad = names_where(&|c| sc(c, "privileged").and_then(Value::as_bool) == Some(true));
    if !bad.is_empty() {
        out.push(Violation {
            reason: "privileged",
            detail: format!(
                "{} must not set securityContext.privileged=true",
                containers(&bad)
            ),
        });
    }

    // procMount
    let bad = names_where(&|c| {
        sc(c, "procMount")
            .and_then(Value::as_str)
            .is_some_and(|m| m != "Default")
    });
    if !bad.is_empty() {
        out.push(Violation {
            reason: "procMount",
            detail: format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                containers(&bad)
            ),
        });
    }

    let seccomp = |v: &Value| {
        sc(v, "seccompProfile/type")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // seccompProfile_baseline (replaced by seccompProfile_restricted)
    if !restricted {
        let unconfined = |v: &Value| seccomp(v).as_deref() == Some("Unconfined");
        fail(
            &mut out,
            "seccompProfile",
            must_not_set(
                spec,
                &ctrs,
                unconfined,
                "securityContext.seccompProfile.type to \"Unconfined\"",
            ),
        );
    }

    // seLinuxOptions
    let selinux_bad = |v: &Value| {
        let Some(o) = sc(v, "seLinuxOptions") else {
            return false;
        };
        let t = o.get("type").and_then(Value::as_str).unwrap_or("");
        let type_ok = matches!(
            t,
            "" | "container_t" | "container_init_t" | "container_kvm_t" | "container_engine_t"
        );
        let set = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        !type_ok || set("user") || set("role")
    };
    fail(
        &mut out,
        "seLinuxOptions",
        must_not_set(spec, &ctrs, selinux_bad, "securityContext.seLinuxOptions"),
    );

    // sysctls
    let forbidden: Vec<String> = spec
        .pointer("/securityContext/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .map(str::to_owned)
        .collect();
    if !forbidden.is_empty() {
        out.push(Violation {
            reason: "forbidden sysctls",
            detail: forbidden.join(", "),
        });
    }

    if !restricted {
        return out;
    }

    // allowPrivilegeEscalation
    let bad =
        names_where(&|c| sc(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false));
    if !bad.is_empty() {
        out.push(Violation {
            reason: "allowPrivilegeEscalation != false",
            detail: format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers(&bad)
            ),
        });
    }

    // capabilities_restricted
    let mut details = Vec::new();
    let no_drop = names_where(&|c| {
        !sc(c, "capabilities/drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")))
    });
    if !no_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers(&no_drop)
        ));
    }
    for (name, c) in &ctrs {
        let extra: Vec<String> = added(c)
            .into_iter()
            .filter(|cap| cap != "NET_BIND_SERVICE")
            .collect();
        if !extra.is_empty() {
            details.push(format!(
                "container {name:?} must not include {} in securityContext.capabilities.add",
                quoted_list(&extra)
            ));
        }
    }
    fail(&mut out, "unrestricted capabilities", details);

    // restrictedVolumes
    let mut details = Vec::new();
    for (name, v) in &volumes {
        if let Some(kind) = v
            .keys()
            .find(|k| *k != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str()))
        {
            details.push(format!(
                "volume {name:?} uses restricted volume type {kind:?}"
            ));
        }
    }
    fail(&mut out, "restricted volume types", details);

    // runAsNonRoot
    let pod_non_root = sc(spec, "runAsNonRoot").and_then(Value::as_bool);
    let mut details = Vec::new();
    if pod_non_root == Some(false) {
        details.push("pod must not set securityContext.runAsNonRoot=false".to_owned());
    }
    let explicit_false =
        names_where(&|c| sc(c, "runAsNonRoot").and_then(Value::as_bool) == Some(false));
    if !explicit_false.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            containers(&explicit_false)
        ));
    }
    if pod_non_root != Some(true) {
        let unset = names_where(&|c| sc(c, "runAsNonRoot").is_none());
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers(&unset)
            ));
        }
    }
    fail(&mut out, "runAsNonRoot != true", details);

    // runAsUser
    let root = |v: &Value| sc(v, "runAsUser").and_then(Value::as_i64) == Some(0);
    fail(
        &mut out,
        "runAsUser=0",
        must_not_set(spec, &ctrs, root, "runAsUser=0"),
    );

    // seccompProfile_restricted
    let allowed = |t: Option<String>| matches!(t.as_deref(), Some("RuntimeDefault" | "Localhost"));
    let mut details = Vec::new();
    let pod_type = seccomp(spec);
    if pod_type.is_some() && !allowed(pod_type.clone()) {
        details.push(format!(
            "pod must not set securityContext.seccompProfile.type to {:?}",
            pod_type.clone().unwrap_or_default()
        ));
    }
    let wrong = names_where(&|c| seccomp(c).is_some() && !allowed(seccomp(c)));
    if !wrong.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to an unconfined value",
            containers(&wrong)
        ));
    }
    if !allowed(pod_type) {
        let unset = names_where(&|c| seccomp(c).is_none());
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers(&unset)
            ));
        }
    }
    fail(&mut out, "seccompProfile", details);
    out
}

/// `pod must not set WHAT` and `container(s) ... must not set WHAT`, for the pod and the
/// containers whose settings `bad` flags.
fn must_not_set(
    spec: &Value,
    ctrs: &[(String, &Value)],
    bad: impl Fn(&Value) -> bool,
    what: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if bad(spec) {
        out.push(format!("pod must not set {what}"));
    }
    let names: Vec<String> = ctrs
        .iter()
        .filter(|(_, c)| bad(c))
        .map(|(n, _)| n.clone())
        .collect();
    if !names.is_empty() {
        out.push(format!("{} must not set {what}", containers(&names)));
    }
    out
}

/// Records a check's failure, if its details say it failed.
fn fail(out: &mut Vec<Violation>, reason: &'static str, details: Vec<String>) {
    if !details.is_empty() {
        out.push(Violation {
            reason,
            detail: details.join("; "),
        });
    }
}

fn summary(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{} ({})", v.reason, v.detail))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod spec `o` carries: a pod's own, or a workload's template.
fn pod_spec<'a>(info: &ResourceInfo, o: &'a Value) -> Option<&'a Value> {
    match (info.group, info.kind) {
        ("", "Pod") => o.get("spec"),
        ("batch", "CronJob") => o.pointer("/spec/jobTemplate/spec/template/spec"),
        ("", "ReplicationController" | "PodTemplate")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => o
            .pointer("/spec/template/spec")
            .or_else(|| o.pointer("/template/spec")),
        _ => None,
    }
}

/// Checks a new pod (or workload) against its namespace's Pod Security labels: an error if
/// `enforce` refuses it, warnings for `warn` and `audit`.
pub fn admit(
    cache: &WatchCache,
    config: &Config,
    info: &ResourceInfo,
    o: &Value,
    user: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<(), StatusError> {
    let Some(spec) = pod_spec(info, o) else {
        return Ok(());
    };
    let Some(ns) = o.pointer("/metadata/namespace").and_then(Value::as_str) else {
        return Ok(());
    };
    let Some(namespaces) = shoal_api::resources::find("", "v1", "namespaces") else {
        return Ok(());
    };
    let Some(namespace) = cache
        .resource(namespaces)
        .get(&namespaces.storage_key(None, ns))
    else {
        return Ok(());
    };
    if config.exempt(ns, user, spec) {
        return Ok(());
    }
    let labels = namespace
        .value()
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let defaults = &config.defaults;
    let is_pod = info.kind == "Pod" && info.group.is_empty();
    if is_pod && let Some((level, version)) = policy(&labels, defaults, "enforce") {
        let v = check(spec, level);
        if !v.is_empty() {
            return Err(StatusError::forbidden_object(
                info.plural,
                info.group,
                crate::meta::name(o),
                &format!(
                    "violates PodSecurity \"{}:{version}\": {}",
                    level.name(),
                    summary(&v)
                ),
            ));
        }
    }
    if let Some((level, version)) = policy(&labels, defaults, "warn") {
        let v = check(spec, level);
        if !v.is_empty() {
            warnings.push(format!(
                "would violate PodSecurity \"{}:{version}\": {}",
                level.name(),
                summary(&v)
            ));
        }
    }
    if let Some((level, version)) = policy(&labels, defaults, "audit") {
        let v = check(spec, level);
        if !v.is_empty() {
            tracing::info!(
                namespace = ns,
                name = crate::meta::name(o),
                kind = info.kind,
                "would violate PodSecurity \"{}:{version}\": {}",
                level.name(),
                summary(&v)
            );
        }
    }
    Ok(())
}

/// The pods of namespace `ns` that a new `enforce` level would refuse, as the warnings
/// Kubernetes gives when a namespace is labelled.
pub fn existing_violations(
    cache: &WatchCache,
    config: &Config,
    ns: &str,
    labels: &Value,
) -> Vec<String> {
    let Some((level, version)) = labels
        .as_object()
        .and_then(|l| policy(l, &config.defaults, "enforce"))
    else {
        return Vec::new();
    };
    if config.exempt_namespaces.iter().any(|n| n == ns) {
        return Vec::new();
    }
    let Some(pods) = shoal_api::resources::find("", "v1", "pods") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in cache
        .resource(pods)
        .list(&pods.namespace_prefix(Some(ns)), None)
    {
        let v = p.value();
        let Some(spec) = v.get("spec") else { continue };
        let violations = check(spec, level);
        if !violations.is_empty() {
            out.push(format!(
                "existing pods in namespace {ns:?} violate the new PodSecurity enforce level \"{}:{version}\"",
                level.name()
            ));
            out.push(format!(
                "{}: {}",
                crate::meta::name(v),
                summary(&violations)
            ));
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restricted_refuses_what_kubernetes_refuses_in_its_words() {
        let spec = json!({"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]});
        let v = check(&spec, Level::Restricted);
        assert_eq!(
            summary(&v),
            "privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert!(check(&spec, Level::Privileged).is_empty());
        assert_eq!(
            summary(&check(&spec, Level::Baseline)),
            "privileged (container \"c\" must not set securityContext.privileged=true)"
        );
    }

    #[test]
    fn a_restricted_pod_passes() {
        let spec = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "t", "projected": {}}],
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]
        });
        assert!(check(&spec, Level::Restricted).is_empty());
    }

    #[test]
    fn baseline_checks_host_access() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true,
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}],
                 "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}},
            ]
        });
        assert_eq!(
            summary(&check(&spec, Level::Baseline)),
            "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add), host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volume \"h\"), hostPort (container \"a\" uses hostPort 8080)"
        );
        let restricted = summary(&check(&spec, Level::Restricted));
        assert!(
            restricted.contains(
                "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"
            ),
            "{restricted}"
        );
        assert!(!restricted.contains("hostPath volumes"), "{restricted}");
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_configuration_sets_defaults_and_exemptions() {
        let c = Config::parse(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults: {enforce: restricted, warn: baseline, warn-version: v1.30}\n    exemptions: {usernames: [ops], runtimeClasses: [trusted], namespaces: [tools]}\n",
        )
        .unwrap();
        let none = serde_json::Map::new();
        assert_eq!(
            policy(&none, &c.defaults, "enforce"),
            Some((Level::Restricted, "latest".into()))
        );
        assert_eq!(
            policy(&none, &c.defaults, "warn"),
            Some((Level::Baseline, "v1.30".into()))
        );
        assert_eq!(policy(&none, &c.defaults, "audit"), None);
        let labelled = json!({"pod-security.kubernetes.io/enforce": "privileged"});
        assert_eq!(
            policy(labelled.as_object().unwrap(), &c.defaults, "enforce"),
            Some((Level::Privileged, "latest".into()))
        );
        let spec = json!({"runtimeClassName": "trusted"});
        assert!(c.exempt("tools", None, &json!({})));
        assert!(c.exempt("x", Some("ops"), &json!({})));
        assert!(c.exempt("x", None, &spec));
        assert!(!c.exempt("x", Some("alice"), &json!({})));
        assert!(Config::parse("kind: Other").is_err());
        assert!(
            Config::parse("kind: PodSecurityConfiguration\ndefaults: {audit: loose}")
                .unwrap_err()
                .starts_with("defaults.audit: Unsupported value")
        );
    }
}
