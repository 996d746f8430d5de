//! Encryption at rest, as kube-apiserver's `--encryption-provider-config` does it: an
//! `apiserver.config.k8s.io/v1` `EncryptionConfiguration` names, per resource, an ordered list
//! of providers (`aesgcm`, `aescbc`, `secretbox`, `identity`). The first encrypts what is
//! written; any of them decrypts what is read, found by the prefix Kubernetes writes
//! (`k8s:enc:aescbc:v1:<key name>:`), so a store file, a backup or an etcd snapshot holds no
//! value of those resources in clear, and values written before a key rotation stay readable.
//!
//! [`EncryptedStore`] applies it as a layer over any [`Store`]: values are encrypted on their
//! way in and decrypted on their way out (reads, transaction results, watches); keys,
//! revisions and everything else pass through. A value read under an older key or in clear is
//! *stale*: the registry writes it again on an update that changes nothing, so `kubectl get
//! secrets -A -o json | kubectl replace -f -` re-encrypts everything with the first key.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use crypto_secretbox::aead::{Aead, KeyInit};
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use shoal_store::{
    Op, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResult, WatchStream,
};
use std::sync::Arc;

const PREFIX: &str = "k8s:enc:";

#[derive(Debug, Clone)]
struct Key {
    name: String,
    secret: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Provider {
    Identity,
    AesGcm(Vec<Key>),
    AesCbc(Vec<Key>),
    Secretbox(Vec<Key>),
}

impl Provider {
    fn kind(&self) -> &'static str {
        match self {
            Provider::Identity => "identity",
            Provider::AesGcm(_) => "aesgcm",
            Provider::AesCbc(_) => "aescbc",
            Provider::Secretbox(_) => "secretbox",
        }
    }

    fn keys(&self) -> &[Key] {
        match self {
            Provider::Identity => &[],
            Provider::AesGcm(k) | Provider::AesCbc(k) | Provider::Secretbox(k) => k,
        }
    }
}

/// One `resources` entry: the store prefixes it covers and its providers, first one writing.
#[derive(Debug, Clone)]
struct Rule {
    prefixes: Vec<String>,
    providers: Vec<Provider>,
}

/// A parsed `EncryptionConfiguration`.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    rules: Vec<Rule>,
}

fn random(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the system's random number generator works");
    out
}

/// The store prefix of `resource` (`secrets`, `deployments.apps`).
fn prefix_of(resource: &str) -> Option<String> {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    shoal_api::resources::RESOURCES
        .iter()
        .find(|r| r.plural == plural && r.group == group)
        .map(|r| r.storage_prefix())
}

impl EncryptionConfig {
    /// Parses the YAML (or JSON) configuration; the error names the field at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_saphyr::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        if v.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
            return Err("kind: must be EncryptionConfiguration".into());
        }
        let mut rules = Vec::new();
        for (i, r) in v
            .get("resources")
            .and_then(Value::as_array)
            .ok_or("resources: Required value")?
            .iter()
            .enumerate()
        {
            let at = format!("resources[{i}]");
            let mut prefixes = Vec::new();
            for name in r
                .get("resources")
                .and_then(Value::as_array)
                .ok_or(format!("{at}.resources: Required value"))?
            {
                let name = name.as_str().unwrap_or("");
                prefixes.push(
                    prefix_of(name)
                        .ok_or(format!("{at}.resources: {name:?} is not a served resource"))?,
                );
            }
            let mut providers = Vec::new();
            for (j, p) in r
                .get("providers")
                .and_then(Value::as_array)
                .ok_or(format!("{at}.providers: Required value"))?
                .iter()
                .enumerate()
            {
                providers.push(parse_provider(p, &format!("{at}.providers[{j}]"))?);
            }
            if providers.is_empty() {
                return Err(format!("{at}.providers: Required value"));
            }
            rules.push(Rule {
                prefixes,
                providers,
            });
        }
        Ok(EncryptionConfig { rules })
    }

    /// A configuration encrypting Secrets with a fresh `aescbc` key (identity last, so data
    /// written before encryption was on stays readable).
    pub fn generate() -> String {
        let key = base64::engine::general_purpose::STANDARD.encode(random(32));
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: {key}\n  - identity: {{}}\n"
        )
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.prefixes.iter().any(|p| key.starts_with(p.as_str())))
    }

    /// What is stored for `value` at `key`.
    pub fn encrypt(&self, key: &str, value: Bytes) -> Result<Bytes, StoreError> {
        let Some(rule) = self.rule(key) else {
            return Ok(value);
        };
        let provider = &rule.providers[0];
        let Some(k) = provider.keys().first() else {
            return Ok(value);
        };
        let mut out = format!("{PREFIX}{}:v1:{}:", provider.kind(), k.name).into_bytes();
        match provider {
            Provider::Identity => return Ok(value),
            Provider::AesGcm(_) => {
                let nonce = random(12);
                let mut data = value.to_vec();
                gcm_key(&k.secret)?
                    .seal_in_place_append_tag(
                        aead::Nonce::try_assume_unique_for_key(&nonce).map_err(crypto)?,
                        aead::Aad::from(key.as_bytes()),
                        &mut data,
                    )
                    .map_err(crypto)?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&data);
            }
            Provider::AesCbc(_) => {
                let iv = random(16);
                let sealed = cbc::Encryptor::<aes::Aes256>::new_from_slices(&k.secret, &iv)
                    .map_err(crypto)?
                    .encrypt_padded_vec_mut::<Pkcs7>(&value);
                out.extend_from_slice(&iv);
                out.extend_from_slice(&sealed);
            }
            Provider::Secretbox(_) => {
                let nonce = random(24);
                let sealed = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&k.secret)
                    .map_err(crypto)?
                    .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), value.as_ref())
                    .map_err(crypto)?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
        }
        Ok(Bytes::from(out))
    }

    /// The value stored at `key`, decrypted, and whether it is stale (not written by the
    /// first provider's first key).
    pub fn decrypt(&self, key: &str, stored: Bytes) -> Result<(Bytes, bool), StoreError> {
        let Some(rule) = self.rule(key) else {
            return Ok((stored, false));
        };
        let first = &rule.providers[0];
        let first_tag = match first {
            Provider::Identity => String::new(),
            p => format!(
                "{PREFIX}{}:v1:{}:",
                p.kind(),
                p.keys().first().map_or("", |k| k.name.as_str())
            ),
        };
        if stored.is_empty() {
            return Ok((stored, false));
        }
        if !stored.starts_with(PREFIX.as_bytes()) {
            return if rule
                .providers
                .iter()
                .any(|p| matches!(p, Provider::Identity))
            {
                let stale = !first_tag.is_empty();
                Ok((stored, stale))
            } else {
                Err(undecryptable(key, "no matching prefix found"))
            };
        }
        for p in &rule.providers {
            for k in p.keys() {
                let tag = format!("{PREFIX}{}:v1:{}:", p.kind(), k.name);
                let Some(sealed) = stored.strip_prefix(tag.as_bytes()) else {
                    continue;
                };
                let plain = open(p, k, key, sealed).map_err(|e| undecryptable(key, &e))?;
                return Ok((Bytes::from(plain), tag != first_tag));
            }
        }
        Err(undecryptable(key, "no key of the configuration wrote it"))
    }
}

fn open(p: &Provider, k: &Key, key: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
    match p {
        Provider::Identity => Ok(sealed.to_vec()),
        Provider::AesGcm(_) => {
            let (nonce, rest) = sealed.split_at_checked(12).ok_or("data too short")?;
            let mut data = rest.to_vec();
            let plain = gcm_key(&k.secret)
                .map_err(|e| e.to_string())?
                .open_in_place(
                    aead::Nonce::try_assume_unique_for_key(nonce).map_err(|e| e.to_string())?,
                    aead::Aad::from(key.as_bytes()),
                    &mut data,
                )
                .map_err(|_| "authentication failed".to_owned())?;
            Ok(plain.to_vec())
        }
        Provider::AesCbc(_) => {
            let (iv, rest) = sealed.split_at_checked(16).ok_or("data too short")?;
            cbc::Decryptor::<aes::Aes256>::new_from_slices(&k.secret, iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_vec_mut::<Pkcs7>(rest)
                .map_err(|_| "invalid padding".to_owned())
        }
        Provider::Secretbox(_) => {
            let (nonce, rest) = sealed.split_at_checked(24).ok_or("data too short")?;
            crypto_secretbox::XSalsa20Poly1305::new_from_slice(&k.secret)
                .map_err(|e| e.to_string())?
                .decrypt(crypto_secretbox::Nonce::from_slice(nonce), rest)
                .map_err(|_| "authentication failed".to_owned())
        }
    }
}

fn gcm_key(secret: &[u8]) -> Result<aead::LessSafeKey, StoreError> {
    let alg = match secret.len() {
        16 => &aead::AES_128_GCM,
        _ => &aead::AES_256_GCM,
    };
    Ok(aead::LessSafeKey::new(
        aead::UnboundKey::new(alg, secret).map_err(crypto)?,
    ))
}

fn crypto(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("encryption: {e}").into())
}

fn undecryptable(key: &str, why: &str) -> StoreError {
    StoreError::Backend(format!("cannot decrypt {key}: {why}").into())
}

fn parse_provider(p: &Value, at: &str) -> Result<Provider, String> {
    let m = p.as_object().ok_or(format!("{at}: must be an object"))?;
    let (kind, body) = m
        .iter()
        .next()
        .filter(|_| m.len() == 1)
        .ok_or(format!("{at}: exactly one provider type per entry"))?;
    let sizes: &[usize] = match kind.as_str() {
        "identity" => return Ok(Provider::Identity),
        "aesgcm" => &[16, 32],
        "aescbc" | "secretbox" => &[32],
        other => {
            return Err(format!(
                "{at}: unsupported provider {other:?} (aesgcm, aescbc, secretbox and identity are)"
            ));
        }
    };
    let mut keys = Vec::new();
    for (i, k) in body
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(format!("{at}.{kind}.keys: Required value"))?
        .iter()
        .enumerate()
    {
        let kat = format!("{at}.{kind}.keys[{i}]");
        let name = k
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && !n.contains(':'))
            .ok_or(format!("{kat}.name: Required value (no ':')"))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(k.get("secret").and_then(Value::as_str).unwrap_or(""))
            .map_err(|e| format!("{kat}.secret: not base64: {e}"))?;
        if !sizes.contains(&secret.len()) {
            return Err(format!(
                "{kat}.secret: must be {sizes:?} bytes long, is {}",
                secret.len()
            ));
        }
        keys.push(Key {
            name: name.to_owned(),
            secret,
        });
    }
    if keys.is_empty() {
        return Err(format!("{at}.{kind}.keys: Required value"));
    }
    Ok(match kind.as_str() {
        "aesgcm" => Provider::AesGcm(keys),
        "aescbc" => Provider::AesCbc(keys),
        _ => Provider::Secretbox(keys),
    })
}

/// A [`Store`] that encrypts values on their way in and decrypts them on their way out.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    config: Arc<EncryptionConfig>,
}

impl EncryptedStore {
    pub fn new(inner: Arc<dyn Store>, config: EncryptionConfig) -> Self {
        EncryptedStore {
            inner,
            config: Arc::new(config),
        }
    }

    /// Whether the value at `key` is stored under an older key or in clear.
    pub async fn stale(&self, key: &str) -> Result<bool, StoreError> {
        let r = self.inner.range(RangeRequest::key(key)).await?;
        match r.kvs.into_iter().next() {
            Some(kv) => Ok(self.config.decrypt(key, kv.value)?.1),
            None => Ok(false),
        }
    }

    fn open_kv(&self, kv: &mut shoal_store::KeyValue) -> Result<(), StoreError> {
        kv.value = self
            .config
            .decrypt(&kv.key, std::mem::take(&mut kv.value))?
            .0;
        Ok(())
    }
}

#[async_trait]
impl Store for EncryptedStore {
    async fn txn(&self, mut txn: Txn) -> Result<TxnResult, StoreError> {
        for op in &mut txn.success {
            if let Op::Put { key, value } = op {
                *value = self.config.encrypt(key, std::mem::take(value))?;
            }
        }
        let mut r = self.inner.txn(txn).await?;
        for kv in r
            .results
            .iter_mut()
            .chain(r.prev.iter_mut())
            .chain(r.current.iter_mut())
            .flatten()
        {
            self.open_kv(kv)?;
        }
        Ok(r)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, StoreError> {
        let mut r = self.inner.range(req).await?;
        for kv in &mut r.kvs {
            self.open_kv(kv)?;
        }
        Ok(r)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let config = self.config.clone();
        Ok(self
            .inner
            .watch(prefix, from)
            .await?
            .map_values(move |key, value| Ok(config.decrypt(key, value)?.0)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compacted_revision().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(providers: &str) -> EncryptionConfig {
        EncryptionConfig::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        ))
        .unwrap()
    }

    const K1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="; // 32 bytes
    const K2: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY="; // 32 bytes

    #[test]
    fn every_provider_round_trips_and_leaves_nothing_in_clear() {
        let key = "/registry/secrets/default/s";
        for kind in ["aesgcm", "aescbc", "secretbox"] {
            let c = config(&format!(
                "  - {kind}:\n      keys:\n      - name: k1\n        secret: {K1}\n"
            ));
            let plain = Bytes::from_static(b"{\"data\":{\"password\":\"aHVudGVyMg==\"}}");
            let stored = c.encrypt(key, plain.clone()).unwrap();
            let tag = format!("k8s:enc:{kind}:v1:k1:");
            assert!(stored.starts_with(tag.as_bytes()), "{kind}");
            assert!(!stored.windows(8).any(|w| w == b"aHVudGVy"), "{kind}");
            assert_eq!(c.decrypt(key, stored).unwrap(), (plain, false), "{kind}");
        }
        // Other resources pass through.
        let c = config(&format!(
            "  - aescbc:\n      keys:\n      - name: k1\n        secret: {K1}\n"
        ));
        let cm = Bytes::from_static(b"{}");
        assert_eq!(
            c.encrypt("/registry/configmaps/d/c", cm.clone()).unwrap(),
            cm
        );
    }

    #[test]
    fn rotation_reads_old_keys_and_clear_data_as_stale() {
        let key = "/registry/secrets/default/s";
        let old = config(&format!(
            "  - aescbc:\n      keys:\n      - name: k1\n        secret: {K1}\n"
        ));
        let written = old.encrypt(key, Bytes::from_static(b"x")).unwrap();
        let new = config(&format!(
            "  - aescbc:\n      keys:\n      - name: k2\n        secret: {K2}\n      - name: k1\n        secret: {K1}\n  - identity: {{}}\n"
        ));
        assert_eq!(
            new.decrypt(key, written).unwrap(),
            (Bytes::from_static(b"x"), true)
        );
        assert_eq!(
            new.decrypt(key, Bytes::from_static(b"{}")).unwrap(),
            (Bytes::from_static(b"{}"), true)
        );
        // Without identity, clear data is an error; a wrong key is an error.
        assert!(old.decrypt(key, Bytes::from_static(b"{}")).is_err());
        let other = config(&format!(
            "  - aescbc:\n      keys:\n      - name: k1\n        secret: {K2}\n"
        ));
        assert!(
            other
                .decrypt(key, old.encrypt(key, Bytes::from_static(b"x")).unwrap())
                .is_err()
        );
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let err = EncryptionConfig::parse(
            "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("resources[0].providers[0].aescbc.keys[0].secret"),
            "{err}"
        );
        let err = EncryptionConfig::parse(
            "kind: EncryptionConfiguration\nresources:\n- resources: [widgets]\n  providers: [{identity: {}}]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("\"widgets\" is not a served resource"),
            "{err}"
        );
        assert!(EncryptionConfig::parse(&EncryptionConfig::generate()).is_ok());
    }
}
