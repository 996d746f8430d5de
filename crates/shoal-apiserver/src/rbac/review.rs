//! The review APIs through which clients ask the authorizer (`authorization.k8s.io/v1`):
//! SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectRulesReview (`can-i --list`),
//! SubjectAccessReview and LocalSubjectAccessReview (about someone else); and
//! SelfSubjectReview (`authentication.k8s.io/v1`, `kubectl auth whoami`). Nothing is stored:
//! the answer is the created object's `status`.

use super::{Rule, authorize, rules_for};
use crate::auth::UserInfo;
use crate::cache::WatchCache;
use crate::error::ApiResult;
use crate::request::{RequestInfo, ResourceAttributes};
use serde_json::{Value, json};
use shoal_api::{Cause, StatusError};

/// The review kinds, by plural.
pub fn kind_of(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("authorization.k8s.io", "selfsubjectaccessreviews") => Some("SelfSubjectAccessReview"),
        ("authorization.k8s.io", "selfsubjectrulesreviews") => Some("SelfSubjectRulesReview"),
        ("authorization.k8s.io", "subjectaccessreviews") => Some("SubjectAccessReview"),
        ("authorization.k8s.io", "localsubjectaccessreviews") => Some("LocalSubjectAccessReview"),
        ("authentication.k8s.io", "selfsubjectreviews") => Some("SelfSubjectReview"),
        _ => None,
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn invalid(kind: &str, group: &str, causes: Vec<Cause>) -> crate::error::ApiError {
    StatusError::invalid(kind, group, "", causes).into()
}

/// What a review asks about, from its `spec`.
fn asked(kind: &str, spec: &Value) -> ApiResult<RequestInfo> {
    let res = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (res, non) {
        (Some(r), None) => Ok(RequestInfo {
            verb: s(r, "verb").to_owned(),
            resource: Some(ResourceAttributes {
                group: s(r, "group").to_owned(),
                version: s(r, "version").to_owned(),
                resource: s(r, "resource").to_owned(),
                subresource: s(r, "subresource").to_owned(),
                namespace: s(r, "namespace").to_owned(),
                name: s(r, "name").to_owned(),
            }),
            path: String::new(),
        }),
        (None, Some(n)) => Ok(RequestInfo {
            verb: s(n, "verb").to_owned(),
            resource: None,
            path: s(n, "path").to_owned(),
        }),
        (Some(_), Some(_)) => Err(invalid(
            kind,
            "authorization.k8s.io",
            vec![
                Cause::invalid("spec.nonResourceAttributes", "", "").with_message(
                    "Invalid value: \"\": cannot be specified in combination with resourceAttributes",
                ),
            ],
        )),
        (None, None) => Err(invalid(
            kind,
            "authorization.k8s.io",
            vec![
                Cause::required("spec.resourceAttributes").with_message(
                    "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ),
            ],
        )),
    }
}

fn answered(mut review: Value, kind: &str, group: &str, status: Value) -> Value {
    review["apiVersion"] = json!(format!("{group}/v1"));
    review["kind"] = json!(kind);
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = status;
    review
}

/// Answers a review `kind` posted by `user` (in `namespace` for a LocalSubjectAccessReview).
pub fn answer(
    cache: &WatchCache,
    kind: &str,
    user: &UserInfo,
    namespace: Option<&str>,
    review: Value,
) -> ApiResult<Value> {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    match kind {
        "SelfSubjectReview" => Ok(answered(
            review,
            kind,
            "authentication.k8s.io",
            json!({"userInfo": user.to_json()}),
        )),
        "SelfSubjectAccessReview" => {
            let req = asked(kind, &spec)?;
            let d = authorize(cache, user, &req);
            Ok(answered(
                review,
                kind,
                "authorization.k8s.io",
                decision_status(d.allowed, &d.reason),
            ))
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = UserInfo {
                username: s(&spec, "user").to_owned(),
                uid: s(&spec, "uid").to_owned(),
                groups: spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|g| {
                        g.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                extra: spec
                    .get("extra")
                    .and_then(|e| serde_json::from_value(e.clone()).ok())
                    .unwrap_or_default(),
            };
            if subject.username.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    kind,
                    "authorization.k8s.io",
                    vec![Cause::invalid(
                        "spec.user",
                        "",
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            let req = asked(kind, &spec)?;
            if let (Some(ns), Some(r)) = (namespace, &req.resource)
                && r.namespace != ns
            {
                return Err(invalid(
                    kind,
                    "authorization.k8s.io",
                    vec![Cause::invalid(
                        "spec.resourceAttributes.namespace",
                        &r.namespace,
                        "must match metadata.namespace",
                    )],
                ));
            }
            let d = authorize(cache, &subject, &req);
            Ok(answered(
                review,
                kind,
                "authorization.k8s.io",
                decision_status(d.allowed, &d.reason),
            ))
        }
        "SelfSubjectRulesReview" => {
            let ns = s(&spec, "namespace");
            if ns.is_empty() {
                return Err(StatusError::bad_request("no namespace on request").into());
            }
            let (rules, errors) = rules_for(cache, user, ns);
            let (non, res): (Vec<&Rule>, Vec<&Rule>) =
                rules.iter().partition(|r| !r.non_resource_urls.is_empty());
            let resource_rules: Vec<Value> = res
                .iter()
                .map(|r| {
                    let mut v = json!({"verbs": r.verbs});
                    if !r.api_groups.is_empty() {
                        v["apiGroups"] = json!(r.api_groups);
                    }
                    if !r.resources.is_empty() {
                        v["resources"] = json!(r.resources);
                    }
                    if !r.resource_names.is_empty() {
                        v["resourceNames"] = json!(r.resource_names);
                    }
                    v
                })
                .collect();
            let non_resource_rules: Vec<Value> = non
                .iter()
                .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
                .collect();
            let mut status = json!({"resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules, "incomplete": false});
            if !errors.is_empty() {
                status["evaluationError"] = json!(errors.join(", "));
            }
            Ok(answered(review, kind, "authorization.k8s.io", status))
        }
        _ => Err(StatusError::path_not_found().into()),
    }
}

fn decision_status(allowed: bool, reason: &str) -> Value {
    let mut st = json!({"allowed": allowed});
    if !reason.is_empty() {
        st["reason"] = json!(reason);
    }
    st
}
