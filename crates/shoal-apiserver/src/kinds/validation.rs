//! Checks several kinds share: object metadata, selectors against templates, replicas,
//! container ports; every problem a `Cause` naming its field (the request then fails with 422
//! Invalid, as in Kubernetes).

use super::NameRule;
use serde_json::Value;
use shoal_api::Cause;
use shoal_api::resources::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name_part,
};
use shoal_api::selector::{LabelSelector, labels_of};

pub(crate) const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub(crate) const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
pub(crate) const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

pub(crate) fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub(crate) fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn qualified_key_ok(k: &str) -> bool {
    match k.rsplit_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(k),
    }
}

/// `metadata.name` by the kind's naming rule, labels and annotations.
pub(crate) fn metadata(rule: NameRule, o: &Value, out: &mut Vec<Cause>) {
    let meta = o.get("metadata").cloned().unwrap_or(Value::Null);
    let name = s(&meta, "name").unwrap_or("");
    if name.is_empty() {
        out.push(Cause::required("metadata.name"));
    } else {
        let (ok, msg) = match rule {
            NameRule::Label => (is_dns1123_label(name), DNS1123_LABEL_MSG),
            NameRule::Dns1035 => (is_dns1035_label(name), DNS1035_MSG),
            NameRule::Subdomain => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG),
            NameRule::PathSegment => match name {
                "." => (false, "may not be '.'"),
                ".." => (false, "may not be '..'"),
                n if n.contains('/') => (false, "may not contain '/'"),
                n if n.contains('%') => (false, "may not contain '%'"),
                _ => (true, ""),
            },
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

pub(crate) fn port_ok(p: &Value) -> bool {
    p.as_i64().is_some_and(|p| (1..=65535).contains(&p))
}

pub(crate) fn selector_and_template(
    o: &Value,
    template_path: &str,
    template: &Value,
    out: &mut Vec<Cause>,
) {
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

pub(crate) fn replicas(o: &Value, out: &mut Vec<Cause>) {
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

pub(crate) fn one_of(o: &Value, field: &str, allowed: &[&str], out: &mut Vec<Cause>) {
    if let Some(v) = o.pointer(&format!("/spec/{field}")).and_then(Value::as_str)
        && !allowed.contains(&v)
    {
        out.push(Cause::not_supported(format!("spec.{field}"), v, allowed));
    }
}
