//! Validation of the built-in kinds: every problem becomes a `Cause` naming its field, and the
//! request fails with 422 Invalid, as in Kubernetes.

use serde_json::Value;
use shoal_api::resources::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name_part,
};
use shoal_api::selector::{LabelSelector, labels_of};
use shoal_api::{Cause, ResourceInfo};

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn qualified_key_ok(k: &str) -> bool {
    match k.rsplit_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(k),
    }
}

fn metadata(info: &ResourceInfo, o: &Value, out: &mut Vec<Cause>) {
    let meta = o.get("metadata").cloned().unwrap_or(Value::Null);
    let name = s(&meta, "name").unwrap_or("");
    if name.is_empty() {
        out.push(Cause::required("metadata.name"));
    } else {
        let (ok, msg) = match info.kind {
            "Namespace" => (is_dns1123_label(name), DNS1123_LABEL_MSG),
            "Service" => (is_dns1035_label(name), DNS1035_MSG),
            _ => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG),
        };
        if !ok {
            out.push(Cause::invalid("metadata.name", name, msg));
        }
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !qualified_key_ok(k) {
                out.push(Cause::invalid("metadata.labels", k, QUALIFIED_NAME_MSG));
            }
            match v.as_str() {
                Some(v) if v.is_empty() || is_qualified_name_part(v) => {}
                _ => out.push(Cause::invalid(
                    "metadata.labels",
                    v.as_str().unwrap_or(&v.to_string()),
                    LABEL_VALUE_MSG,
                )),
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            if !qualified_key_ok(k) {
                out.push(Cause::invalid(
                    "metadata.annotations",
                    k,
                    QUALIFIED_NAME_MSG,
                ));
            }
        }
        if total > 256 * 1024 {
            out.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
    }
}

fn port_ok(p: &Value) -> bool {
    p.as_i64().is_some_and(|p| (1..=65535).contains(&p))
}

fn container(c: &Value, path: &str, names: &mut Vec<String>, out: &mut Vec<Cause>) {
    match s(c, "name") {
        None | Some("") => out.push(Cause::required(format!("{path}.name"))),
        Some(n) => {
            if !is_dns1123_label(n) {
                out.push(Cause::invalid(format!("{path}.name"), n, DNS1123_LABEL_MSG));
            }
            if names.iter().any(|x| x == n) {
                out.push(Cause::duplicate(format!("{path}.name"), n));
            }
            names.push(n.to_owned());
        }
    }
    if s(c, "image").is_none_or(str::is_empty) {
        out.push(Cause::required(format!("{path}.image")));
    }
    for (i, p) in items(c, "ports").iter().enumerate() {
        let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
        if cp.is_null() {
            out.push(Cause::required(format!("{path}.ports[{i}].containerPort")));
        } else if !port_ok(&cp) {
            out.push(Cause::invalid(
                format!("{path}.ports[{i}].containerPort"),
                &cp,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = s(p, "protocol")
            && !matches!(proto, "TCP" | "UDP" | "SCTP")
        {
            out.push(Cause::not_supported(
                format!("{path}.ports[{i}].protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    for (i, e) in items(c, "env").iter().enumerate() {
        if s(e, "name").is_none_or(str::is_empty) {
            out.push(Cause::required(format!("{path}.env[{i}].name")));
        }
    }
    if let Some(policy) = s(c, "imagePullPolicy")
        && !matches!(policy, "Always" | "IfNotPresent" | "Never")
    {
        out.push(Cause::not_supported(
            format!("{path}.imagePullPolicy"),
            policy,
            &["Always", "IfNotPresent", "Never"],
        ));
    }
}

/// Validates a pod spec at `path` (`spec` or `spec.template.spec`).
fn pod_spec(spec: &Value, path: &str, allowed_restart: &[&str], out: &mut Vec<Cause>) {
    let containers = items(spec, "containers");
    if containers.is_empty() {
        out.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = Vec::new();
    for (i, c) in items(spec, "initContainers").iter().enumerate() {
        container(c, &format!("{path}.initContainers[{i}]"), &mut names, out);
    }
    for (i, c) in containers.iter().enumerate() {
        container(c, &format!("{path}.containers[{i}]"), &mut names, out);
    }
    let mut vols = Vec::new();
    for (i, v) in items(spec, "volumes").iter().enumerate() {
        match s(v, "name") {
            None | Some("") => out.push(Cause::required(format!("{path}.volumes[{i}].name"))),
            Some(n) if vols.contains(&n) => {
                out.push(Cause::duplicate(format!("{path}.volumes[{i}].name"), n))
            }
            Some(n) => vols.push(n),
        }
    }
    if let Some(rp) = s(spec, "restartPolicy")
        && !allowed_restart.contains(&rp)
    {
        out.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            rp,
            allowed_restart,
        ));
    }
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        out.push(Cause::invalid(
            format!("{path}.activeDeadlineSeconds"),
            d,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
}

fn selector_and_template(o: &Value, template_path: &str, template: &Value, out: &mut Vec<Cause>) {
    let spec = o.get("spec").cloned().unwrap_or(Value::Null);
    match spec.get("selector") {
        None | Some(Value::Null) => out.push(Cause::required("spec.selector")),
        Some(sel) => match LabelSelector::from_object(sel) {
            Ok(ls) if ls.is_empty() => out.push(Cause::invalid(
                "spec.selector",
                "{}",
                "empty selector is invalid for deployment",
            )),
            Ok(ls) => {
                if !ls.matches(&labels_of(template)) {
                    let labels: Vec<String> = labels_of(template)
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    out.push(Cause::invalid(
                        format!("{template_path}.metadata.labels"),
                        format!("map[{}]", labels.join(" ")),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(e) => out.push(Cause::invalid("spec.selector", sel, &e.to_string())),
        },
    }
}

fn replicas(o: &Value, out: &mut Vec<Cause>) {
    if let Some(r) = o.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        out.push(Cause::invalid(
            "spec.replicas",
            r,
            "must be greater than or equal to 0",
        ));
    }
}

fn data_keys(o: &Value, out: &mut Vec<Cause>) {
    for field in ["data", "binaryData", "stringData"] {
        if let Some(m) = o.get(field).and_then(Value::as_object) {
            for k in m.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                if !ok {
                    out.push(Cause::invalid(format!("{field}[{k}]"), k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
                }
            }
        }
    }
}

fn service(o: &Value, out: &mut Vec<Cause>) {
    let spec = o.get("spec").cloned().unwrap_or(Value::Null);
    let ty = s(&spec, "type").unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        out.push(Cause::not_supported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = items(&spec, "ports");
    let headless = s(&spec, "clusterIP") == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        out.push(Cause::required("spec.ports"));
    }
    if ty == "ExternalName" && s(&spec, "externalName").is_none_or(str::is_empty) {
        out.push(Cause::required("spec.externalName"));
    }
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").cloned().unwrap_or(Value::Null);
        if port.is_null() {
            out.push(Cause::required(format!("spec.ports[{i}].port")));
        } else if !port_ok(&port) {
            out.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = s(p, "name").unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            out.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        if !name.is_empty() {
            if names.contains(&name) {
                out.push(Cause::duplicate(format!("spec.ports[{i}].name"), name));
            }
            names.push(name);
        }
        if let Some(np) = p.get("nodePort")
            && !np.is_null()
            && !np.as_i64().is_some_and(|n| (30000..=32767).contains(&n))
        {
            out.push(Cause::invalid(
                format!("spec.ports[{i}].nodePort"),
                np,
                "provided port is not in the valid range. The range of valid ports is 30000-32767",
            ));
        }
    }
}

/// Validates `o` as a new or updated object of `info`; `old` is the stored object on update.
pub fn validate(info: &ResourceInfo, o: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = Vec::new();
    metadata(info, o, &mut out);
    let empty = Value::Null;
    let tmpl = o.pointer("/spec/template").unwrap_or(&empty);
    let tspec = tmpl.get("spec").unwrap_or(&empty);
    match (info.group, info.kind) {
        ("", "Pod") => pod_spec(
            o.get("spec").unwrap_or(&empty),
            "spec",
            &["Always", "OnFailure", "Never"],
            &mut out,
        ),
        ("", "Service") => service(o, &mut out),
        ("", "ConfigMap") | ("", "Secret") => data_keys(o, &mut out),
        ("apps", "Deployment")
        | ("apps", "ReplicaSet")
        | ("apps", "StatefulSet")
        | ("apps", "DaemonSet") => {
            replicas(o, &mut out);
            selector_and_template(o, "spec.template", tmpl, &mut out);
            pod_spec(tspec, "spec.template.spec", &["Always"], &mut out);
        }
        ("batch", "Job") => {
            if o.pointer("/spec/selector").is_some()
                && o.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true)
            {
                selector_and_template(o, "spec.template", tmpl, &mut out);
            }
            pod_spec(
                tspec,
                "spec.template.spec",
                &["OnFailure", "Never"],
                &mut out,
            );
            for f in ["parallelism", "completions", "backoffLimit"] {
                if let Some(n) = o.pointer(&format!("/spec/{f}")).and_then(Value::as_i64)
                    && n < 0
                {
                    out.push(Cause::invalid(
                        format!("spec.{f}"),
                        n,
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        ("batch", "CronJob") => {
            match o.pointer("/spec/schedule").and_then(Value::as_str) {
                None | Some("") => out.push(Cause::required("spec.schedule")),
                Some(sched) => {
                    let fields = sched.split_whitespace().count();
                    if !(sched.starts_with('@') || fields == 5) {
                        out.push(Cause::invalid(
                            "spec.schedule",
                            sched,
                            &format!("expected exactly 5 fields, found {fields}: {sched}"),
                        ));
                    }
                }
            }
            let jt = o
                .pointer("/spec/jobTemplate/spec/template/spec")
                .unwrap_or(&empty);
            pod_spec(
                jt,
                "spec.jobTemplate.spec.template.spec",
                &["OnFailure", "Never"],
                &mut out,
            );
        }
        ("policy.shoal.dev", "ClusterAdmissionPolicy" | "AdmissionPolicy") => {
            plugin_common(o, &mut out);
            admission_policy(o, &mut out);
        }
        ("policy.shoal.dev", "SchedulerPlugin") => {
            plugin_common(o, &mut out);
            scheduler_plugin(o, &mut out);
        }
        _ => {}
    }
    if let Some(old) = old {
        immutable(info, o, old, &mut out);
    }
    out
}

/// `spec.module`, `spec.moduleDigest`, `spec.failurePolicy` of a plugin object. A namespaced
/// policy's module must come from a registry, `https://` or a ConfigMap of its namespace.
fn plugin_common(o: &Value, out: &mut Vec<Cause>) {
    use shoal_plugin_host::source::{Scope, Source};
    let scope = match o.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => Scope::Namespace(ns),
        _ => Scope::Cluster,
    };
    match o.pointer("/spec/module").and_then(Value::as_str) {
        None | Some("") => out.push(Cause::required("spec.module")),
        Some(m) => {
            if let Err(why) = Source::parse(m).and_then(|s| s.check_scope(scope)) {
                out.push(Cause::invalid("spec.module", m, &why));
            }
        }
    }
    if let Some(d) = o.pointer("/spec/moduleDigest").and_then(Value::as_str) {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push(Cause::invalid(
                "spec.moduleDigest",
                d,
                "must be sha256: followed by 64 hexadecimal digits",
            ));
        }
    }
    one_of(o, "failurePolicy", shoal_api::policy::FAILURE_POLICIES, out);
}

fn one_of(o: &Value, field: &str, allowed: &[&str], out: &mut Vec<Cause>) {
    if let Some(v) = o.pointer(&format!("/spec/{field}")).and_then(Value::as_str)
        && !allowed.contains(&v)
    {
        out.push(Cause::not_supported(format!("spec.{field}"), v, allowed));
    }
}

fn admission_policy(o: &Value, out: &mut Vec<Cause>) {
    one_of(o, "mode", shoal_api::policy::MODES, out);
    let rules = items(o.get("spec").unwrap_or(&Value::Null), "rules");
    if rules.is_empty() {
        out.push(
            Cause::required("spec.rules")
                .with_message("spec.rules: Required value: at least one rule is required"),
        );
    }
    for (i, r) in rules.iter().enumerate() {
        for f in ["operations", "apiGroups", "resources"] {
            if items(r, f).is_empty() {
                out.push(Cause::required(format!("spec.rules[{i}].{f}")));
            }
        }
        for (j, op) in items(r, "operations").iter().enumerate() {
            let op = op.as_str().unwrap_or("");
            if !shoal_api::policy::OPERATIONS.contains(&op) {
                out.push(Cause::not_supported(
                    format!("spec.rules[{i}].operations[{j}]"),
                    op,
                    shoal_api::policy::OPERATIONS,
                ));
            }
        }
    }
    if let Some(t) = o.pointer("/spec/timeoutSeconds").and_then(Value::as_i64)
        && !(1..=30).contains(&t)
    {
        out.push(Cause::invalid(
            "spec.timeoutSeconds",
            t,
            "must be between 1 and 30, inclusive",
        ));
    }
}

fn scheduler_plugin(o: &Value, out: &mut Vec<Cause>) {
    let points = items(o.get("spec").unwrap_or(&Value::Null), "extensionPoints");
    for (i, p) in points.iter().enumerate() {
        let p = p.as_str().unwrap_or("");
        if !shoal_api::policy::EXTENSION_POINTS.contains(&p) {
            out.push(Cause::not_supported(
                format!("spec.extensionPoints[{i}]"),
                p,
                shoal_api::policy::EXTENSION_POINTS,
            ));
        }
    }
    if let Some(w) = o.pointer("/spec/weight").and_then(Value::as_i64)
        && !(1..=100).contains(&w)
    {
        out.push(Cause::invalid(
            "spec.weight",
            w,
            "must be between 1 and 100, inclusive",
        ));
    }
    if let Some(t) = o
        .pointer("/spec/timeoutMilliseconds")
        .and_then(Value::as_i64)
        && !(1..=10_000).contains(&t)
    {
        out.push(Cause::invalid(
            "spec.timeoutMilliseconds",
            t,
            "must be between 1 and 10000, inclusive",
        ));
    }
}

fn immutable(info: &ResourceInfo, o: &Value, old: &Value, out: &mut Vec<Cause>) {
    let changed = |ptr: &str| o.pointer(ptr) != old.pointer(ptr);
    match (info.group, info.kind) {
        ("apps", "Deployment")
        | ("apps", "ReplicaSet")
        | ("apps", "StatefulSet")
        | ("apps", "DaemonSet")
            if changed("/spec/selector") =>
        {
            out.push(Cause::invalid(
                "spec.selector",
                o.pointer("/spec/selector").unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
        ("batch", "Job") if changed("/spec/template") || changed("/spec/completions") => {
            out.push(Cause::invalid("spec.template", "...", "field is immutable"));
        }
        ("", "Service") => {
            let old_ip = old
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            let new_ip = o
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
                out.push(Cause::invalid(
                    "spec.clusterIPs[0]",
                    new_ip,
                    "may not change once set",
                ));
            }
        }
        ("", "Pod") => {
            // Pods allow image, activeDeadlineSeconds and added tolerations to change.
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                for key in ["containers", "initContainers"] {
                    if let Some(Value::Array(cs)) = spec.get_mut(key) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = spec.as_object_mut() {
                    for k in ["activeDeadlineSeconds", "tolerations", "nodeName"] {
                        m.remove(k);
                    }
                }
                spec
            };
            if strip(o) != strip(old) {
                out.push(Cause::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
            }
            let old_node = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let new_node = o
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !old_node.is_empty() && old_node != new_node {
                out.push(Cause::forbidden(
                    "spec.nodeName",
                    "pod updates may not change nodeName once set",
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(group: &str, kind: &str) -> &'static ResourceInfo {
        shoal_api::resources::find_kind(group, kind).unwrap()
    }

    #[test]
    fn pod_without_image_names_the_field() {
        let pod = json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}});
        let causes = validate(info("", "Pod"), &pod, None);
        assert_eq!(causes, vec![Cause::required("spec.containers[0].image")]);
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate(info("apps", "Deployment"), &d, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn invalid_names_and_labels_are_reported() {
        let cm = json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "not ok"}}});
        let causes = validate(info("", "ConfigMap"), &cm, None);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "metadata.labels"]);
    }
}
