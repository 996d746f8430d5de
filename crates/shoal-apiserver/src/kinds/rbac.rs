//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (`rbac.authorization.k8s.io/v1`):
//! names are path segments (`system:basic-user`), rules need verbs and either resources (with
//! API groups) or, in a ClusterRole, non-resource URLs; a binding's `roleRef` names a Role or
//! ClusterRole of the RBAC group and never changes; subjects are users, groups or service
//! accounts. Who may write them is checked in [`crate::rbac::check_write`].

use super::{NameRule, Strategy};
use crate::rbac::GROUP;
use serde_json::{Value, json};
use shoal_api::Cause;

pub(super) struct RoleStrategy;
pub(super) static ROLE: RoleStrategy = RoleStrategy;
pub(super) struct BindingStrategy;
pub(super) static BINDING: BindingStrategy = BindingStrategy;

fn kind(o: &Value) -> &str {
    o.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn list_len(v: &Value, key: &str) -> usize {
    v.get(key).and_then(Value::as_array).map_or(0, Vec::len)
}

/// Go's `%v` of a string slice in a field error: `[]string{"/a", "/b"}`.
fn go_strings(v: Option<&Value>) -> String {
    let items: Vec<String> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| format!("{:?}", s.as_str().unwrap_or("")))
        .collect();
    format!("[]string{{{}}}", items.join(", "))
}

fn invalid(field: String, value: String, detail: &str) -> Cause {
    Cause::invalid(field, "", detail).with_message(format!("Invalid value: {value}: {detail}"))
}

impl Strategy for RoleStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let namespaced = kind(o) == "Role";
        let rules = o.get("rules").and_then(Value::as_array);
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            if list_len(rule, "verbs") == 0 {
                out.push(
                    Cause::required(at("verbs"))
                        .with_message("Required value: verbs must contain at least one value"),
                );
            }
            if list_len(rule, "nonResourceURLs") > 0 {
                let urls = go_strings(rule.get("nonResourceURLs"));
                if namespaced {
                    out.push(invalid(
                        at("nonResourceURLs"),
                        urls.clone(),
                        "namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if list_len(rule, "apiGroups")
                    + list_len(rule, "resources")
                    + list_len(rule, "resourceNames")
                    > 0
                {
                    out.push(invalid(
                        at("nonResourceURLs"),
                        urls,
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
                continue;
            }
            if list_len(rule, "apiGroups") == 0 {
                out.push(Cause::required(at("apiGroups")).with_message(
                    "Required value: resource rules must supply at least one api group",
                ));
            }
            if list_len(rule, "resources") == 0 {
                out.push(Cause::required(at("resources")).with_message(
                    "Required value: resource rules must supply at least one resource",
                ));
            }
        }
    }
}

impl Strategy for BindingStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    /// The RBAC group for the role reference and for user and group subjects.
    fn default(&self, o: &mut Value) {
        if let Some(r) = o.get_mut("roleRef").and_then(Value::as_object_mut)
            && r.get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            r.insert("apiGroup".into(), json!(GROUP));
        }
        let subjects = o.get_mut("subjects").and_then(Value::as_array_mut);
        for s in subjects.into_iter().flatten() {
            let Some(s) = s.as_object_mut() else { continue };
            if s.get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                let group = match s.get("kind").and_then(Value::as_str) {
                    Some("User" | "Group") => GROUP,
                    _ => "",
                };
                if !group.is_empty() {
                    s.insert("apiGroup".into(), json!(group));
                }
            }
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        let cluster = kind(o) == "ClusterRoleBinding";
        let r = o.get("roleRef").unwrap_or(&Value::Null);
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        if s(r, "apiGroup") != GROUP {
            out.push(Cause::not_supported(
                "roleRef.apiGroup",
                s(r, "apiGroup"),
                &[GROUP],
            ));
        }
        let kinds: &[&str] = if cluster {
            &["ClusterRole"]
        } else {
            &["Role", "ClusterRole"]
        };
        if !kinds.contains(&s(r, "kind").as_str()) {
            out.push(Cause::not_supported("roleRef.kind", s(r, "kind"), kinds));
        }
        if s(r, "name").is_empty() {
            out.push(Cause::required("roleRef.name"));
        }
        let subjects = o.get("subjects").and_then(Value::as_array);
        for (i, sub) in subjects.into_iter().flatten().enumerate() {
            let at = |f: &str| format!("subjects[{i}].{f}");
            let name = s(sub, "name");
            if name.is_empty() {
                out.push(Cause::required(at("name")));
            }
            match s(sub, "kind").as_str() {
                "ServiceAccount" => {
                    if !s(sub, "apiGroup").is_empty() {
                        out.push(Cause::not_supported(
                            at("apiGroup"),
                            s(sub, "apiGroup"),
                            &[""],
                        ));
                    }
                    if !name.is_empty() && !shoal_api::resources::is_dns1123_subdomain(&name) {
                        out.push(Cause::invalid(
                            at("name"),
                            &name,
                            super::validation::DNS1123_SUBDOMAIN_MSG,
                        ));
                    }
                    if cluster && s(sub, "namespace").is_empty() {
                        out.push(Cause::required(at("namespace")));
                    }
                }
                "User" | "Group" => {
                    if s(sub, "apiGroup") != GROUP {
                        out.push(Cause::not_supported(
                            at("apiGroup"),
                            s(sub, "apiGroup"),
                            &[GROUP],
                        ));
                    }
                }
                other => out.push(Cause::not_supported(
                    at("kind"),
                    other,
                    &["ServiceAccount", "User", "Group"],
                )),
            }
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        if o.get("roleRef") != old.get("roleRef") {
            let r = o.get("roleRef").unwrap_or(&Value::Null);
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
            out.push(invalid(
                "roleRef".into(),
                format!(
                    "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
                    s("apiGroup"),
                    s("kind"),
                    s("name")
                ),
                "cannot change roleRef",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(s: &dyn Strategy, o: &Value) -> Vec<String> {
        let mut out = Vec::new();
        s.validate(o, &mut out);
        out.iter().map(Cause::to_line).collect()
    }

    #[test]
    fn rules_are_checked_as_kubernetes_checks_them() {
        let role = json!({"kind": "Role", "rules": [
            {"verbs": [], "apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"], "nonResourceURLs": ["/x"]},
            {"verbs": ["get"], "resources": ["pods"]}]});
        assert_eq!(
            causes(&ROLE, &role),
            [
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[1].nonResourceURLs: Invalid value: []string{\"/x\"}: namespaced rules cannot apply to non-resource URLs",
                "rules[2].apiGroups: Required value: resource rules must supply at least one api group",
            ]
        );
        let cluster = json!({"kind": "ClusterRole", "rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]});
        assert!(causes(&ROLE, &cluster).is_empty());
    }

    #[test]
    fn bindings_are_defaulted_and_checked() {
        let mut b = json!({"kind": "ClusterRoleBinding", "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "x"}]});
        BINDING.default(&mut b);
        assert_eq!(b["roleRef"]["apiGroup"], GROUP);
        assert_eq!(b["subjects"][0]["apiGroup"], GROUP);
        assert_eq!(
            causes(&BINDING, &b),
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[1].namespace: Required value",
                "subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
            ]
        );
        let mut out = Vec::new();
        let changed =
            json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "edit"}});
        let old = json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "view"}});
        BINDING.validate_update(&changed, &old, &mut out);
        assert_eq!(
            out[0].to_line(),
            "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"edit\"}: cannot change roleRef"
        );
    }
}
