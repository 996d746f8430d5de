//! Who a request is: the cluster's admin token (`shoal-admin` in `system:masters`) or a token
//! of the static token file (`--token-auth-file`, kube-apiserver's CSV: `token,user,uid,"group1,
//! group2"`); every authenticated user is also in `system:authenticated`, a request without
//! credentials is `system:anonymous` in `system:unauthenticated`. Impersonation headers
//! (`kubectl --as`, `--as-group`) act as another user when the `impersonate` verb allows it.
//! What a user may do is [`crate::rbac`]'s to say.

use crate::cache::WatchCache;
use crate::request::{RequestInfo, ResourceAttributes};
use serde_json::{Value, json};
use shoal_api::StatusError;

/// A bearer token that is no one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownToken;

/// An authenticated user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// What the authenticator adds (a service account token's pod, node and credential id).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn admin() -> Self {
        UserInfo {
            username: "shoal-admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    /// Who a request without credentials is.
    pub fn anonymous() -> Self {
        UserInfo {
            username: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    /// As `authentication.k8s.io/v1` `UserInfo`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// The user a verified client certificate names: CN is the user, each O a group.
pub fn user_of_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_owned();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_owned)
        .collect();
    groups.push("system:authenticated".into());
    Some(UserInfo {
        username,
        uid: String::new(),
        groups,
        ..Default::default()
    })
}

fn header_values(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// The user `user` acts as, given the request's `Impersonate-User`, `Impersonate-Group` and
/// `Impersonate-Uid` headers: each must be allowed by the `impersonate` verb on `users` (or the
/// service account), `groups` and `uids`, as Kubernetes' impersonation filter checks.
pub fn impersonate(
    cache: &WatchCache,
    user: UserInfo,
    headers: &http::HeaderMap,
) -> Result<UserInfo, StatusError> {
    let as_user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let groups = header_values(headers, "impersonate-group");
    let uid = headers
        .get("impersonate-uid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(name) = as_user else {
        if !groups.is_empty() || uid.is_some() {
            return Err(StatusError::bad_request(format!(
                "requested {groups:?} without impersonating a user"
            )));
        }
        return Ok(user);
    };
    let check = |group: &str, resource: &str, namespace: &str, object: &str| {
        let req = RequestInfo {
            verb: "impersonate".into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: namespace.into(),
                name: object.into(),
            }),
            path: String::new(),
        };
        let d = crate::rbac::authorize(cache, &user, &req);
        if d.allowed {
            Ok(())
        } else {
            Err(crate::rbac::forbidden(&user, &req, &d.reason))
        }
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, sa)) => check("", "serviceaccounts", ns, sa)?,
        None => check("", "users", "", &name)?,
    }
    for g in &groups {
        check("", "groups", "", g)?;
    }
    if let Some(uid) = &uid {
        check("authentication.k8s.io", "uids", "", uid)?;
    }
    let mut out = UserInfo {
        username: name.clone(),
        uid: uid.unwrap_or_default(),
        groups,
        ..Default::default()
    };
    if out.groups.is_empty()
        && let Some((ns, _)) = service_account
    {
        out.groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    let implied = if name == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !out.groups.iter().any(|g| g == implied) {
        out.groups.push(implied.into());
    }
    Ok(out)
}

/// The fields of one CSV line (quoted fields may hold commas).
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("one field at least").push(c),
        }
    }
    out.into_iter().map(|f| f.trim().to_owned()).collect()
}

/// Parses a static token file; the error names the line at fault.
pub fn parse_token_file(text: &str) -> Result<Vec<(String, UserInfo)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = fields(line);
        if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
            return Err(format!(
                "line {}: want token,user,uid[,\"group1,group2\"]",
                i + 1
            ));
        }
        let mut groups: Vec<String> = f
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        groups.push("system:authenticated".into());
        out.push((
            f[0].clone(),
            UserInfo {
                username: f[1].clone(),
                uid: f[2].clone(),
                groups,
                ..Default::default()
            },
        ));
    }
    Ok(out)
}

/// Compares tokens in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_read_as_kube_apiserver_reads_them() {
        let users =
            parse_token_file("# comment\nt1,alice,1001,\"dev,ops\"\nt2,bob,1002\n").unwrap();
        assert_eq!(users[0].1.username, "alice");
        assert_eq!(users[0].1.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(users[1].1.groups, ["system:authenticated"]);
        assert!(
            parse_token_file("t1,alice\n")
                .unwrap_err()
                .starts_with("line 1")
        );
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }
}
