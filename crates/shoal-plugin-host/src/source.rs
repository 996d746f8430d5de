//! Where a plugin module comes from: a local file, an OCI registry, an HTTP(S) URL, or a
//! ConfigMap (which the caller resolves, since only it can read the API).

use crate::PluginError;
use std::path::PathBuf;

/// Modules larger than this are refused before compiling.
pub const MAX_MODULE_BYTES: usize = 16 << 20;

/// A parsed `module` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `file:///abs/path.wasm` or `/abs/path.wasm`.
    File(PathBuf),
    /// `registry://host[:port]/repo[:tag|@digest]`: a wasm OCI artifact.
    Registry(String),
    /// `https://...` (or `http://` for a loopback address).
    Url(String),
    /// `configmap://[namespace/]name/key`: the key in the ConfigMap's `binaryData` (or
    /// `data`); the namespace defaults to the policy's own (or `default`).
    ConfigMap {
        namespace: Option<String>,
        name: String,
        key: String,
    },
}

impl Source {
    pub fn parse(reference: &str) -> Result<Source, String> {
        let r = reference.trim();
        if r.is_empty() {
            return Err("module is required".into());
        }
        if let Some(path) = r.strip_prefix("file://") {
            return absolute(path);
        }
        if r.starts_with('/') {
            return absolute(r);
        }
        if let Some(rest) = r.strip_prefix("registry://") {
            if rest.is_empty() || !rest.contains('/') {
                return Err(format!(
                    "{reference}: a registry reference is registry://host/repository[:tag]"
                ));
            }
            return Ok(Source::Registry(rest.to_owned()));
        }
        if r.starts_with("https://") {
            return Ok(Source::Url(r.to_owned()));
        }
        if let Some(rest) = r.strip_prefix("http://") {
            let host = rest.split(['/', ':']).next().unwrap_or("");
            if host == "localhost" || host.starts_with("127.") || rest.starts_with("[::1]") {
                return Ok(Source::Url(r.to_owned()));
            }
            return Err(format!(
                "{reference}: plain http is only allowed for loopback addresses; use https://"
            ));
        }
        if let Some(rest) = r.strip_prefix("configmap://") {
            let parts: Vec<&str> = rest.split('/').collect();
            return match parts.as_slice() {
                [name, key] if !name.is_empty() && !key.is_empty() => Ok(Source::ConfigMap {
                    namespace: None,
                    name: (*name).to_owned(),
                    key: (*key).to_owned(),
                }),
                [ns, name, key] if !ns.is_empty() && !name.is_empty() && !key.is_empty() => {
                    Ok(Source::ConfigMap {
                        namespace: Some((*ns).to_owned()),
                        name: (*name).to_owned(),
                        key: (*key).to_owned(),
                    })
                }
                _ => Err(format!(
                    "{reference}: a ConfigMap reference is configmap://[namespace/]name/key"
                )),
            };
        }
        Err(format!(
            "{reference}: unsupported module reference; use registry://, https://, file:// or configmap://"
        ))
    }

    /// Fetches the module's bytes. ConfigMaps are the caller's to resolve.
    pub async fn fetch(&self) -> Result<Vec<u8>, PluginError> {
        let fail = |message: String| PluginError::Fetch {
            reference: self.to_string(),
            message,
        };
        let bytes = match self {
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| fail(e.to_string()))?,
            Source::Registry(image) => shoal_runtime_wasm::registry::pull(image)
                .await
                .map_err(|e| fail(e.to_string()))?,
            Source::Url(url) => {
                let resp = http_client()
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| fail(format!("{e:#}")))?;
                if !resp.status().is_success() {
                    return Err(fail(format!("HTTP {}", resp.status())));
                }
                resp.bytes()
                    .await
                    .map_err(|e| fail(format!("{e:#}")))?
                    .to_vec()
            }
            Source::ConfigMap { .. } => {
                return Err(fail("ConfigMaps are read through the API".into()));
            }
        };
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(fail(format!(
                "module is {} bytes, more than the {MAX_MODULE_BYTES} allowed",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "file://{}", p.display()),
            Source::Registry(r) => write!(f, "registry://{r}"),
            Source::Url(u) => f.write_str(u),
            Source::ConfigMap {
                namespace,
                name,
                key,
            } => match namespace {
                Some(ns) => write!(f, "configmap://{ns}/{name}/{key}"),
                None => write!(f, "configmap://{name}/{key}"),
            },
        }
    }
}

/// The module a ConfigMap (as JSON) holds under `key`: `binaryData` (base64) or `data`.
pub fn configmap_module(cm: &serde_json::Value, key: &str) -> Result<Vec<u8>, String> {
    let ns = cm
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let name = cm
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if let Some(b) = cm.pointer("/binaryData").and_then(|d| d.get(key)) {
        use base64::Engine as _;
        return base64::engine::general_purpose::STANDARD
            .decode(b.as_str().unwrap_or(""))
            .map_err(|e| format!("configmap {ns}/{name} binaryData.{key}: {e}"));
    }
    if let Some(s) = cm.pointer("/data").and_then(|d| d.get(key)) {
        return Ok(s.as_str().unwrap_or("").as_bytes().to_vec());
    }
    Err(format!("configmap {ns}/{name} has no key {key}"))
}

fn absolute(path: &str) -> Result<Source, String> {
    if !path.starts_with('/') {
        return Err(format!("{path}: a file module needs an absolute path"));
    }
    Ok(Source::File(PathBuf::from(path)))
}

fn http_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // reqwest is built without a TLS provider of its own; ring is the one Shoal uses.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default()
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            Source::parse("/p/x.wasm").unwrap(),
            Source::File("/p/x.wasm".into())
        );
        assert_eq!(
            Source::parse("file:///p/x.wasm").unwrap(),
            Source::File("/p/x.wasm".into())
        );
        assert_eq!(
            Source::parse("registry://127.0.0.1:5000/p/deny:v1").unwrap(),
            Source::Registry("127.0.0.1:5000/p/deny:v1".into())
        );
        assert_eq!(
            Source::parse("configmap://kube-system/policies/deny.wasm").unwrap(),
            Source::ConfigMap {
                namespace: Some("kube-system".into()),
                name: "policies".into(),
                key: "deny.wasm".into()
            }
        );
        assert!(Source::parse("http://example.com/x.wasm").is_err());
        assert!(Source::parse("http://127.0.0.1:8080/x.wasm").is_ok());
        assert!(Source::parse("x.wasm").is_err());
        assert!(Source::parse("configmap://a").is_err());
    }
}
