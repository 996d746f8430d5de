//! CertificateSigningRequests (`certificates.k8s.io/v1`) as Kubernetes keeps them: the request
//! is a PEM PKCS#10 request whose signature verifies, the server records who asked
//! (`spec.username`, `uid`, `groups`, `extra`) whatever the body says, the spec never changes
//! after create, Approved and Denied are set only through the `approval` subresource (and never
//! removed, never both), the certificate only through `status` (and never changed once
//! issued). The admission checks that go with them: CertificateApproval (`approve` on the
//! `signers` resource named by the signer), CertificateSigning (`sign` on it) and
//! CertificateSubjectRestriction (no `system:masters` through the client signer).

use super::Strategy;
use crate::auth::UserInfo;
use crate::cache::WatchCache;
use crate::error::ApiResult;
use crate::request::{RequestInfo, ResourceAttributes};
use base64::Engine;
use serde_json::{Value, json};
use shoal_api::{Cause, StatusError, Subresource};

pub(super) struct CsrStrategy;
pub(super) static CSR: CsrStrategy = CsrStrategy;

pub const GROUP: &str = "certificates.k8s.io";
/// The conditions only the `approval` subresource sets.
const APPROVAL: &[&str] = &["Approved", "Denied"];

fn conditions(o: &Value) -> &[Value] {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn condition_type(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or("")
}

fn is_approval(c: &Value) -> bool {
    APPROVAL.contains(&condition_type(c))
}

/// The request's PEM (the spec carries it base64-encoded).
pub fn request_pem(o: &Value) -> Option<Vec<u8>> {
    let b64 = o.pointer("/spec/request").and_then(Value::as_str)?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Whether a condition of `kind` is on the request.
pub fn has_condition(o: &Value, kind: &str) -> bool {
    conditions(o).iter().any(|c| condition_type(c) == kind)
}

impl Strategy for CsrStrategy {
    fn default(&self, o: &mut Value) {
        let now = crate::meta::now();
        if let Some(cs) = o
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            for c in cs {
                if c.get("status").is_none_or(|s| s == "") {
                    c["status"] = json!("True");
                }
                for t in ["lastUpdateTime", "lastTransitionTime"] {
                    if c.get(t).is_none_or(Value::is_null) {
                        c[t] = json!(now);
                    }
                }
            }
        }
    }

    fn validate(&self, o: &Value, out: &mut Vec<Cause>) {
        match o.pointer("/spec/request").and_then(Value::as_str) {
            None | Some("") => out.push(Cause::required("spec.request")),
            Some(_) => {
                let why = match request_pem(o).map(|pem| shoal_pki::parse_request(&pem)) {
                    None => Some("must be base64-encoded".to_owned()),
                    Some(Err(shoal_pki::PkiError::NotPem)) => {
                        Some("PEM block type must be CERTIFICATE REQUEST".to_owned())
                    }
                    Some(Err(e)) => Some(e.to_string()),
                    Some(Ok(_)) => None,
                };
                if let Some(why) = why {
                    out.push(
                        Cause::invalid("spec.request", "", "")
                            .with_message(format!("Invalid value: []byte{{...}}: {why}")),
                    );
                }
            }
        }
        match o.pointer("/spec/signerName").and_then(Value::as_str) {
            None | Some("") => out.push(Cause::required("spec.signerName")),
            Some(s) => {
                let qualified = s.split_once('/').is_some_and(|(domain, path)| {
                    domain.contains('.')
                        && shoal_api::resources::is_dns1123_subdomain(domain)
                        && !path.is_empty()
                });
                if !qualified {
                    out.push(Cause::invalid(
                        "spec.signerName",
                        s,
                        "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                    ));
                }
            }
        }
        let usages = crate::meta::strings(o.pointer("/spec/usages"));
        if usages.is_empty() {
            out.push(Cause::required("spec.usages"));
        }
        for (i, u) in usages.iter().enumerate() {
            if !shoal_pki::USAGES.contains(&u.as_str()) {
                out.push(Cause::not_supported(
                    format!("spec.usages[{i}]"),
                    u,
                    shoal_pki::USAGES,
                ));
            } else if usages[..i].contains(u) {
                out.push(Cause::duplicate(
                    format!("spec.usages[{i}]"),
                    format!("{u:?}"),
                ));
            }
        }
        if let Some(secs) = o.pointer("/spec/expirationSeconds").and_then(Value::as_i64)
            && secs < 600
        {
            out.push(Cause::invalid(
                "spec.expirationSeconds",
                secs,
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
        let cs = conditions(o);
        if has_condition(o, "Approved") && has_condition(o, "Denied") {
            out.push(Cause::invalid(
                "status.conditions",
                "[...]",
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        for (i, c) in cs.iter().enumerate() {
            let t = condition_type(c);
            if t.is_empty() {
                out.push(Cause::required(format!("status.conditions[{i}].type")));
            } else if cs[..i].iter().any(|d| condition_type(d) == t) {
                out.push(Cause::duplicate(
                    format!("status.conditions[{i}].type"),
                    format!("{t:?}"),
                ));
            }
            let status = c.get("status").and_then(Value::as_str).unwrap_or("");
            let allowed: &[&str] = if is_approval(c) {
                &["True"]
            } else {
                &["True", "False", "Unknown"]
            };
            if !allowed.contains(&status) {
                out.push(Cause::not_supported(
                    format!("status.conditions[{i}].status"),
                    status,
                    allowed,
                ));
            }
        }
        if let Some(cert) = o.pointer("/status/certificate").and_then(Value::as_str)
            && !cert.is_empty()
        {
            let pem = base64::engine::general_purpose::STANDARD.decode(cert);
            if !pem.is_ok_and(|p| shoal_pki::validity(&p).is_some()) {
                out.push(Cause::invalid(
                    "status.certificate",
                    "<certificate data>",
                    "must contain at least one PEM-encoded CERTIFICATE block",
                ));
            }
        }
    }

    fn validate_update(&self, o: &Value, old: &Value, out: &mut Vec<Cause>) {
        for t in APPROVAL {
            if has_condition(old, t) && !has_condition(o, t) {
                out.push(Cause::forbidden(
                    "status.conditions",
                    format!("updates may not remove a condition of type {t:?}"),
                ));
            }
        }
        let cert = |v: &Value| {
            v.pointer("/status/certificate")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        if !cert(old).is_empty() && cert(o) != cert(old) {
            out.push(Cause::invalid(
                "status.certificate",
                "<certificate data>",
                "updates may not modify existing certificate content",
            ));
        }
    }

    fn prepare_update(&self, sub: Option<Subresource>, old: &Value, new: &mut Value) {
        // The spec is the requester's, for good.
        match old.get("spec") {
            Some(spec) => new["spec"] = spec.clone(),
            None => {
                if let Some(root) = new.as_object_mut() {
                    root.remove("spec");
                }
            }
        }
        let theirs: Vec<Value> = conditions(new).to_vec();
        let ours: Vec<Value> = conditions(old).to_vec();
        let (approval_from, rest_from) = match sub {
            Some(Subresource::Approval) => (&theirs, &ours),
            Some(Subresource::Status) => (&ours, &theirs),
            _ => return,
        };
        let merged: Vec<Value> = approval_from
            .iter()
            .filter(|c| is_approval(c))
            .chain(rest_from.iter().filter(|c| !is_approval(c)))
            .cloned()
            .collect();
        if sub == Some(Subresource::Approval) {
            // The certificate is the signer's, written through `status`.
            match old.pointer("/status/certificate") {
                Some(cert) => new["status"]["certificate"] = cert.clone(),
                None => {
                    if let Some(st) = new.get_mut("status").and_then(Value::as_object_mut) {
                        st.remove("certificate");
                    }
                }
            }
        }
        if merged.is_empty() {
            if let Some(st) = new.get_mut("status").and_then(Value::as_object_mut) {
                st.remove("conditions");
            }
        } else {
            new["status"]["conditions"] = json!(merged);
        }
    }
}

/// Records who asked on a new request, whatever the body says (Kubernetes'
/// `PrepareForCreate`).
pub fn set_requester(o: &mut Value, user: &UserInfo) {
    let spec = &mut o["spec"];
    spec["username"] = json!(user.username);
    spec["groups"] = json!(user.groups);
    if let Some(m) = spec.as_object_mut() {
        m.remove("uid");
        m.remove("extra");
    }
    if !user.uid.is_empty() {
        spec["uid"] = json!(user.uid);
    }
}

/// Whether `user` holds `verb` on the signer of `o` (`signers` in `certificates.k8s.io`,
/// named by the signer or by its domain with `/*`), as the certificate admission plugins ask.
fn may(cache: &WatchCache, user: &UserInfo, verb: &str, signer: &str) -> bool {
    let mut names = vec![signer.to_owned()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    names.into_iter().any(|name| {
        let req = RequestInfo {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: GROUP.into(),
                version: "v1".into(),
                resource: "signers".into(),
                subresource: String::new(),
                namespace: String::new(),
                name,
            }),
            path: String::new(),
        };
        crate::rbac::authorize(cache, user, &req).allowed
    })
}

/// The certificate admission plugins: who may approve or deny a request, who may issue its
/// certificate, and which subjects the client signer refuses.
pub fn admit(
    cache: &WatchCache,
    sub: Option<Subresource>,
    user: &UserInfo,
    o: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    let signer = o
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    match (sub, old) {
        (None, None) if signer == shoal_pki::CLIENT_SIGNER => {
            let masters = request_pem(o)
                .and_then(|pem| shoal_pki::parse_request(&pem).ok())
                .is_some_and(|r| r.organizations.iter().any(|g| g == crate::rbac::MASTERS));
            if masters {
                return Err(StatusError::forbidden(format!(
                    "use of {signer} signer with system:masters group is not allowed"
                ))
                .into());
            }
        }
        (Some(Subresource::Approval), Some(old)) => {
            let approvals = |v: &Value| -> Vec<Value> {
                conditions(v)
                    .iter()
                    .filter(|c| is_approval(c))
                    .cloned()
                    .collect()
            };
            if approvals(o) != approvals(old) && !may(cache, user, "approve", signer) {
                return Err(StatusError::forbidden(format!(
                    "user not permitted to approve requests with signerName {signer:?}"
                ))
                .into());
            }
        }
        (Some(Subresource::Status), Some(old)) => {
            let cert = |v: &Value| v.pointer("/status/certificate").cloned();
            if cert(o) != cert(old) && !may(cache, user, "sign", signer) {
                return Err(StatusError::forbidden(format!(
                    "user not permitted to sign requests with signerName {signer:?}"
                ))
                .into());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(conditions: Value, cert: Option<&str>) -> Value {
        let mut o = json!({"spec": {"signerName": "example.com/x", "username": "bob"},
            "status": {"conditions": conditions}});
        if let Some(c) = cert {
            o["status"]["certificate"] = json!(c);
        }
        o
    }

    #[test]
    fn approval_and_status_each_write_only_their_own_part() {
        let old = csr(json!([]), None);
        // Through approval: the Approved condition goes in; a certificate does not, nor a
        // changed spec.
        let mut new = csr(
            json!([{"type": "Approved", "status": "True"}, {"type": "Failed", "status": "True"}]),
            Some("Y2VydA=="),
        );
        new["spec"]["username"] = json!("mallory");
        CSR.prepare_update(Some(Subresource::Approval), &old, &mut new);
        assert_eq!(new["spec"]["username"], "bob");
        assert_eq!(new["status"]["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert!(new["status"].get("certificate").is_none());
        // Through status: the approval stays as it was, the rest is the writer's.
        let approved = new.clone();
        let mut st = csr(
            json!([{"type": "Failed", "status": "True"}]),
            Some("Y2VydA=="),
        );
        CSR.prepare_update(Some(Subresource::Status), &approved, &mut st);
        let types: Vec<&str> = conditions(&st).iter().map(condition_type).collect();
        assert_eq!(types, ["Approved", "Failed"]);
        // Removing an approval is refused.
        let mut out = Vec::new();
        CSR.validate_update(&csr(json!([]), None), &approved, &mut out);
        assert!(
            out[0]
                .to_line()
                .contains("may not remove a condition of type \"Approved\"")
        );
    }
}
