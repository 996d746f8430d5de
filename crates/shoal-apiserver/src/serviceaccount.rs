//! ServiceAccount tokens as Kubernetes issues them: ES256-signed JWTs with the `kubernetes.io`
//! claims (namespace, service account, and the pod, secret or node the token is bound to),
//! `iss` and `aud` checked on the way back in. `POST .../serviceaccounts/NAME/token` (the
//! TokenRequest API behind `kubectl create token`) issues them; the kubelet asks for one per pod
//! and projects it at `/var/run/secrets/kubernetes.io/serviceaccount/token`.
//!
//! A token is only as good as what it names: it stops working when its service account, or the
//! object it is bound to, is deleted (or replaced by one with another uid).

use crate::auth::{UnknownToken, UserInfo};
use crate::cache::WatchCache;
use crate::error::ApiResult;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_api::{Cause, StatusError};
use std::collections::HashMap;
use std::sync::Mutex;

/// Kubernetes' issuer (and audience) for a cluster whose domain is `cluster.local`.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long a token lives when the request does not say (TokenRequest's default).
const DEFAULT_EXPIRATION: i64 = 3600;
/// The shortest life a token may be given.
const MIN_EXPIRATION: i64 = 600;
/// Verified tokens remembered (their claims), so a client's repeated requests cost one
/// signature check; the whole memo is dropped when it reaches this size.
const MEMO: usize = 4096;

/// A reference to the object a token names (`{name, uid}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    pub serviceaccount: Ref,
}

/// A token's claims, in the order Kubernetes writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

/// Signs and verifies service account tokens.
pub struct TokenIssuer {
    issuer: String,
    audiences: Vec<String>,
    signing: EncodingKey,
    kid: String,
    /// Keys tokens may be signed with (the signing key's first), by key id.
    verifying: Vec<(String, DecodingKey)>,
    memo: Mutex<HashMap<String, Claims>>,
    /// The verifying keys as a JSON Web Key Set (`/openid/v1/jwks`).
    jwks: Value,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Kubernetes' key id: the unpadded base64url SHA-256 of the public key's DER.
fn key_id(public_der: &[u8]) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, public_der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

impl TokenIssuer {
    /// A new ECDSA P-256 signing key, as PKCS#8 PEM (`sa.key`).
    pub fn generate_key() -> Result<String, String> {
        rcgen::KeyPair::generate()
            .map(|k| k.serialize_pem())
            .map_err(|e| e.to_string())
    }

    /// An issuer signing with `signing_key_pem` (a PKCS#8 ECDSA P-256 private key) and
    /// accepting tokens signed by it or by any of `more_public_keys` (PEM public or private
    /// keys, for key rotation); `audiences` empty means the issuer itself.
    pub fn new(
        signing_key_pem: &str,
        more_public_keys: &[String],
        issuer: &str,
        audiences: Vec<String>,
    ) -> Result<Self, String> {
        let pair = rcgen::KeyPair::from_pem(signing_key_pem)
            .map_err(|e| format!("the service account signing key: {e}"))?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err("the service account signing key must be an ECDSA P-256 key".into());
        }
        let signing = EncodingKey::from_ec_pem(signing_key_pem.as_bytes())
            .map_err(|e| format!("the service account signing key: {e}"))?;
        let kid = key_id(&pem_body(&pair.public_key_pem()).unwrap_or_default());
        let mut verifying = vec![(
            kid.clone(),
            DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes())
                .map_err(|e| format!("the service account signing key: {e}"))?,
        )];
        let mut keys = vec![jwk(
            &kid,
            &pem_body(&pair.public_key_pem()).unwrap_or_default(),
        )];
        for pem in more_public_keys {
            // A private key file is accepted too: its public half verifies.
            let pem = &match rcgen::KeyPair::from_pem(pem) {
                Ok(pair) => pair.public_key_pem(),
                Err(_) => pem.clone(),
            };
            let key = DecodingKey::from_ec_pem(pem.as_bytes())
                .map_err(|e| format!("a service account key: {e}"))?;
            let der = pem_body(pem).unwrap_or_default();
            keys.push(jwk(&key_id(&der), &der));
            verifying.push((key_id(&der), key));
        }
        let audiences = if audiences.is_empty() {
            vec![issuer.to_owned()]
        } else {
            audiences
        };
        Ok(TokenIssuer {
            issuer: issuer.to_owned(),
            audiences,
            signing,
            kid,
            verifying,
            memo: Mutex::new(HashMap::new()),
            jwks: json!({"keys": keys}),
        })
    }

    /// An issuer with a key of its own, for servers started without one (tests).
    pub fn ephemeral() -> Self {
        let key = Self::generate_key().expect("generating a P-256 key");
        Self::new(&key, &[], DEFAULT_ISSUER, Vec::new()).expect("a key just generated")
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences tokens must name.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// `/.well-known/openid-configuration`: the issuer's OIDC discovery document, as
    /// kube-apiserver serves it (for systems that verify the cluster's tokens themselves).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`: the public keys tokens may be signed with.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, StatusError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing)
            .map_err(|e| StatusError::internal(format!("cannot sign a token: {e}")))
    }

    /// The claims of `token` if one of our keys signed it for one of our audiences, by our
    /// issuer, and it has not expired. `None` for anything else (not a JWT, someone else's).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let now = jiff::Timestamp::now().as_second();
        if let Some(c) = self.memo.lock().ok()?.get(token) {
            return (c.exp > now).then(|| c.clone());
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        let keys = self
            .verifying
            .iter()
            .filter(|(kid, _)| header.kid.as_deref().is_none_or(|k| k == kid));
        for (_, key) in keys {
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &validation) {
                let mut memo = self.memo.lock().ok()?;
                if memo.len() >= MEMO {
                    memo.clear();
                }
                memo.insert(token.to_owned(), data.claims.clone());
                return Some(data.claims);
            }
        }
        None
    }

    /// The service account `token` authenticates, if its signature and claims hold and what
    /// it names still exists.
    pub fn authenticate(&self, cache: &WatchCache, token: &str) -> Result<UserInfo, UnknownToken> {
        let claims = self.verify(token).ok_or(UnknownToken)?;
        let k = &claims.kubernetes;
        let (ns, sa) = (&k.namespace, &k.serviceaccount);
        if claims.sub != format!("system:serviceaccount:{ns}:{}", sa.name) {
            return Err(UnknownToken);
        }
        let live = |plural: &str, namespace: Option<&str>, r: &Ref| -> bool {
            cached(cache, plural, namespace, &r.name).is_some_and(|o| {
                let v = o.value();
                v.pointer("/metadata/uid").and_then(Value::as_str) == Some(r.uid.as_str())
                    && !crate::meta::is_deleting(v)
            })
        };
        let alive = live("serviceaccounts", Some(ns), sa)
            && k.pod.as_ref().is_none_or(|r| live("pods", Some(ns), r))
            && k.secret
                .as_ref()
                .is_none_or(|r| live("secrets", Some(ns), r));
        if !alive {
            tracing::debug!(sub = %claims.sub, "a service account token names what is gone");
            return Err(UnknownToken);
        }
        // What Kubernetes adds for a bound token: its pod and node, and the credential's id.
        let mut extra = std::collections::BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            if !value.is_empty() {
                extra.insert(
                    format!("authentication.kubernetes.io/{key}"),
                    vec![value.to_owned()],
                );
            }
        };
        if let Some(pod) = &k.pod {
            put("pod-name", &pod.name);
            put("pod-uid", &pod.uid);
        }
        if let Some(node) = &k.node {
            put("node-name", &node.name);
            put("node-uid", &node.uid);
        }
        if !claims.jti.is_empty() {
            put("credential-id", &format!("JTI={}", claims.jti));
        }
        Ok(UserInfo {
            username: claims.sub.clone(),
            uid: sa.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
            extra,
        })
    }
}

/// A P-256 public key (SPKI DER, whose last 64 bytes are the point's coordinates) as a JWK.
fn jwk(kid: &str, spki: &[u8]) -> Value {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let point = spki.len().checked_sub(64).map_or(&[][..], |i| &spki[i..]);
    let (x, y) = point.split_at(point.len() / 2);
    json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
        "x": b64(x), "y": b64(y)})
}

/// The DER inside a PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Whether `token` has the shape of a JWT (three dot-separated parts), so it is worth a
/// signature check.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("ey")
}

/// The core/v1 object `plural` `ns/name` in the watch cache.
fn cached(
    cache: &WatchCache,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<std::sync::Arc<crate::cache::CachedObject>> {
    let info = shoal_api::resources::find("", "v1", plural)?;
    cache.resource(info).get(&info.storage_key(ns, name))
}

fn object(cache: &WatchCache, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
    cached(cache, plural, ns, name).map(|o| o.value().clone())
}

fn uid_of(v: &Value) -> String {
    v.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: a token for the account, bound to
/// the object the request names (a Pod, Secret or Node), as a `TokenRequest` with its status.
pub async fn token_request(
    issuer: &TokenIssuer,
    cache: &WatchCache,
    ns: &str,
    name: &str,
    request: Value,
    user: Option<&UserInfo>,
) -> ApiResult<Value> {
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => v.as_i64().ok_or_else(|| {
            StatusError::bad_request("spec.expirationSeconds: must be an integer")
        })?,
    };
    let invalid = |detail: &str| {
        StatusError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            name,
            vec![Cause::invalid("spec.expirationSeconds", expiration, detail)],
        )
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid("may not specify a duration less than 10 minutes").into());
    }
    if expiration > 1 << 32 {
        return Err(invalid("may not specify a duration larger than 2^32 seconds").into());
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| issuer.audiences.clone());
    // What was just created may not have reached the watch cache yet: catch up once.
    let sa = match object(cache, "serviceaccounts", Some(ns), name) {
        Some(sa) => sa,
        None => {
            cache.sync().await?;
            object(cache, "serviceaccounts", Some(ns), name)
                .ok_or_else(|| StatusError::not_found("serviceaccounts", "", name))?
        }
    };
    let mut claims = KubernetesClaims {
        namespace: ns.to_owned(),
        serviceaccount: Ref {
            name: name.to_owned(),
            uid: uid_of(&sa),
        },
        ..Default::default()
    };
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null());
    if let (None, Some(node)) = (bound, user.and_then(crate::rbac::node::node_of)) {
        return Err(StatusError::forbidden(format!(
            "node requested token not bound to a pod (node {node:?})"
        ))
        .into());
    }
    if let Some(b) = bound {
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = b.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
        let target = b.get("name").and_then(Value::as_str).unwrap_or("");
        let (plural, scoped) = match (api_version, kind) {
            ("v1", "Pod") => ("pods", Some(ns)),
            ("v1", "Secret") => ("secrets", Some(ns)),
            ("v1", "Node") => ("nodes", None),
            _ => {
                return Err(StatusError::bad_request(format!(
                    "cannot bind token to object of type {kind}, Kind={api_version}"
                ))
                .into());
            }
        };
        let found = match object(cache, plural, scoped, target) {
            Some(o) => o,
            None => {
                cache.sync().await?;
                object(cache, plural, scoped, target)
                    .ok_or_else(|| StatusError::not_found(plural, "", target))?
            }
        };
        // NodeRestriction: a node asks tokens only for the pods bound to it.
        if let Some(node) = user.and_then(crate::rbac::node::node_of) {
            let on = found.pointer("/spec/nodeName").and_then(Value::as_str);
            if kind != "Pod" {
                return Err(StatusError::forbidden(format!(
                    "node requested token not bound to a pod (node {node:?})"
                ))
                .into());
            }
            if on != Some(node) {
                return Err(StatusError::forbidden(format!(
                    "node requested token bound to a pod scheduled on a different node (node {node:?})"
                ))
                .into());
            }
        }
        let uid = uid_of(&found);
        if let Some(want) = b
            .get("uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(StatusError::conflict(
                kind,
                "",
                target,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            )
            .into());
        }
        let r = Ref {
            name: target.to_owned(),
            uid,
        };
        match kind {
            "Pod" => {
                let runs_as = found
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                if runs_as != name {
                    return Err(StatusError::bad_request(format!(
                        "cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name."
                    ))
                    .into());
                }
                // The node the pod runs on goes into the token too, as Kubernetes 1.30+ does.
                if let Some(node) = found.pointer("/spec/nodeName").and_then(Value::as_str)
                    && let Some(n) = object(cache, "nodes", None, node)
                {
                    claims.node = Some(Ref {
                        name: node.to_owned(),
                        uid: uid_of(&n),
                    });
                }
                claims.pod = Some(r);
            }
            "Secret" => claims.secret = Some(r),
            _ => claims.node = Some(r),
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let c = Claims {
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        iss: issuer.issuer.clone(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: claims,
        nbf: now,
        sub: format!("system:serviceaccount:{ns}:{name}"),
    };
    let token = issuer.sign(&c)?;
    let expires = jiff::Timestamp::from_second(c.exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(b) = bound {
        out_spec["boundObjectRef"] = b.clone();
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(issuer: &TokenIssuer, exp_in: i64) -> Claims {
        let now = jiff::Timestamp::now().as_second();
        Claims {
            aud: issuer.audiences.clone(),
            exp: now + exp_in,
            iat: now,
            iss: issuer.issuer.clone(),
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "default".into(),
                serviceaccount: Ref {
                    name: "default".into(),
                    uid: "u".into(),
                },
                ..Default::default()
            },
            nbf: now,
            sub: "system:serviceaccount:default:default".into(),
        }
    }

    #[test]
    fn a_token_verifies_with_its_issuer_only() {
        let a = TokenIssuer::ephemeral();
        let b = TokenIssuer::ephemeral();
        let token = a.sign(&claims(&a, 600)).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(
            a.verify(&token).unwrap().sub,
            "system:serviceaccount:default:default"
        );
        assert!(b.verify(&token).is_none(), "another key");
        assert!(a.verify("not-a-token").is_none());
        let expired = a.sign(&claims(&a, -3600)).unwrap();
        assert!(a.verify(&expired).is_none(), "expired");
    }

    #[test]
    fn audiences_and_issuers_are_checked() {
        let key = TokenIssuer::generate_key().unwrap();
        let a = TokenIssuer::new(&key, &[], DEFAULT_ISSUER, vec![]).unwrap();
        let other = TokenIssuer::new(&key, &[], "https://elsewhere", vec![]).unwrap();
        let vault = TokenIssuer::new(&key, &[], DEFAULT_ISSUER, vec!["vault".into()]).unwrap();
        let token = a.sign(&claims(&a, 600)).unwrap();
        assert!(other.verify(&token).is_none(), "issuer");
        assert!(vault.verify(&token).is_none(), "audience");
        // The claims come out as Kubernetes writes them.
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        let json: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["kubernetes.io"]["serviceaccount"]["name"], "default");
        assert_eq!(json["aud"], json!([DEFAULT_ISSUER]));
    }

    #[test]
    fn rotated_keys_still_verify() {
        let old_key = TokenIssuer::generate_key().unwrap();
        let old = TokenIssuer::new(&old_key, &[], DEFAULT_ISSUER, vec![]).unwrap();
        let token = old.sign(&claims(&old, 600)).unwrap();
        let old_public = rcgen::KeyPair::from_pem(&old_key).unwrap().public_key_pem();
        let new_key = TokenIssuer::generate_key().unwrap();
        let new = TokenIssuer::new(&new_key, &[old_public], DEFAULT_ISSUER, vec![]).unwrap();
        assert!(new.verify(&token).is_some());
        assert!(TokenIssuer::new("garbage", &[], DEFAULT_ISSUER, vec![]).is_err());
        // Both keys are published, each with its coordinates.
        let keys = new.jwks()["keys"].as_array().unwrap().clone();
        assert_eq!(keys.len(), 2);
        for k in keys {
            assert_eq!(k["kty"], "EC");
            assert_eq!(k["x"].as_str().unwrap().len(), 43, "{k}");
            assert_eq!(k["y"].as_str().unwrap().len(), 43, "{k}");
        }
        assert_eq!(
            new.openid_configuration()["jwks_uri"],
            format!("{DEFAULT_ISSUER}/openid/v1/jwks")
        );
    }
}
