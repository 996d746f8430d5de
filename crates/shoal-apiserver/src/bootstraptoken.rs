//! Bootstrap tokens, as Kubernetes authenticates them: a bearer token `ID.SECRET` (six and
//! sixteen characters of `[a-z0-9]`) is the Secret `kube-system/bootstrap-token-ID` of type
//! `bootstrap.kubernetes.io/token` whose `token-secret` matches, `usage-bootstrap-authentication`
//! is `true` and `expiration` (if any) has not passed. It authenticates as
//! `system:bootstrap:ID` in `system:bootstrappers` and the Secret's `auth-extra-groups`; that is
//! enough to ask for a kubelet certificate through a CertificateSigningRequest, nothing more.

use crate::auth::{UnknownToken, UserInfo};
use crate::cache::WatchCache;
use base64::Engine;
use serde_json::Value;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const GROUP: &str = "system:bootstrappers";

fn token_chars(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The ID and secret of a bearer token shaped as a bootstrap token.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (token_chars(id, 6) && token_chars(secret, 16)).then_some((id, secret))
}

/// One of the Secret's `data` values, decoded.
fn data(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// The user a bootstrap token is, if its Secret says it may authenticate.
pub fn authenticate(cache: &WatchCache, id: &str, secret: &str) -> Result<UserInfo, UnknownToken> {
    let info = shoal_api::resources::find("", "v1", "secrets").ok_or(UnknownToken)?;
    let key = info.storage_key(Some("kube-system"), &format!("{SECRET_PREFIX}{id}"));
    let stored = cache.resource(info).get(&key).ok_or(UnknownToken)?;
    let s = stored.value();
    let usable = s.get("type").and_then(Value::as_str) == Some(SECRET_TYPE)
        && !crate::meta::is_deleting(s)
        && data(s, "token-id").as_deref() == Some(id)
        && data(s, "token-secret").is_some_and(|t| crate::auth::same_token(&t, secret))
        && data(s, "usage-bootstrap-authentication").as_deref() == Some("true")
        && data(s, "expiration").is_none_or(|e| !expired(&e));
    if !usable {
        return Err(UnknownToken);
    }
    let mut groups = vec![GROUP.to_owned()];
    for g in data(s, "auth-extra-groups").unwrap_or_default().split(',') {
        let g = g.trim();
        // Only groups of the bootstrappers' own family may be added.
        if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
            groups.push(g.to_owned());
        }
    }
    groups.push("system:authenticated".into());
    Ok(UserInfo {
        username: format!("system:bootstrap:{id}"),
        uid: String::new(),
        groups,
        ..Default::default()
    })
}

/// Whether an RFC 3339 expiration has passed (one that does not parse has).
pub fn expired(expiration: &str) -> bool {
    match expiration.parse::<jiff::Timestamp>() {
        Ok(t) => t <= jiff::Timestamp::now(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_of_the_bootstrap_shape_parse() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("abcdef.0123456789ABCDEF"), None);
        assert_eq!(parse("abcde.0123456789abcdef"), None);
        assert_eq!(parse("eyJhbGciOi.x.y"), None);
        assert!(expired("2000-01-01T00:00:00Z") && expired("soon"));
        assert!(!expired("2999-01-01T00:00:00Z"));
    }
}
