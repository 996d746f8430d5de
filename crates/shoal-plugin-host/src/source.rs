//! Where a plugin module comes from: a local file, an OCI registry, an HTTP(S) URL, or a
//! ConfigMap (which the caller resolves, since only it can read the API) — and where it may
//! not come from.
//!
//! A module reference is written by whoever may create the plugin object, and is fetched by a
//! component with the host's reach. So the operator decides ([`SourcePolicy`]): `file://`
//! modules only below the directories given with `--plugin-dir` (none by default), `http://`
//! URLs and registries on loopback addresses only when allowed (tests do); and a namespaced
//! object takes modules only from registries, `https://` URLs and ConfigMaps in its own
//! namespace ([`Source::check_scope`]). Fetches are bounded in size and time.

use crate::PluginError;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Modules larger than this are refused before compiling.
pub const MAX_MODULE_BYTES: usize = 16 << 20;
/// How long fetching one module may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the operator lets modules come from.
#[derive(Debug, Clone, Default)]
pub struct SourcePolicy {
    /// Directories `file://` modules may be read from, with everything below them; none: no
    /// file modules at all.
    pub plugin_dirs: Vec<PathBuf>,
    /// Whether `http://` URLs, and URLs and registries on loopback addresses, are allowed.
    pub allow_loopback: bool,
}

/// Who asks for a module: a cluster-scoped object, or a namespaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Cluster,
    Namespace(&'a str),
}

/// A parsed `module` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `file:///abs/path.wasm` or `/abs/path.wasm`.
    File(PathBuf),
    /// `registry://host[:port]/repo[:tag|@digest]`: a wasm OCI artifact.
    Registry(String),
    /// `https://...` (or `http://` for a loopback address, if the operator allows it).
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
            if is_loopback(rest.split('/').next().unwrap_or("")) {
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

    /// Whether an object of `scope` may name this module. A namespaced object may not reach
    /// the host's files, another namespace's ConfigMaps, or plain-HTTP URLs.
    pub fn check_scope(&self, scope: Scope<'_>) -> Result<(), String> {
        let Scope::Namespace(own) = scope else {
            return Ok(());
        };
        match self {
            Source::Registry(_) => Ok(()),
            Source::Url(u) if u.starts_with("https://") => Ok(()),
            Source::ConfigMap { namespace, .. } => match namespace.as_deref() {
                None => Ok(()),
                Some(ns) if ns == own => Ok(()),
                Some(ns) => Err(format!(
                    "a namespaced policy may only take modules from ConfigMaps in its own namespace ({own}), not {ns}"
                )),
            },
            Source::File(_) | Source::Url(_) => Err(
                "a namespaced policy may only take modules from registry://, https:// or configmap:// in its own namespace"
                    .into(),
            ),
        }
    }

    /// The host (and port) a remote module is fetched from.
    fn remote_host(&self) -> Option<&str> {
        let rest = match self {
            Source::Registry(r) => r.as_str(),
            Source::Url(u) => u.split_once("://").map_or(u.as_str(), |(_, r)| r),
            _ => return None,
        };
        Some(rest.split('/').next().unwrap_or(""))
    }
}

/// Whether `host` (`name`, `name:port`, `[v6]:port`) names this machine.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// `path` with `.` and `..` resolved by their names alone (no file system access), so a
/// reference cannot climb out of a plugin directory.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

impl SourcePolicy {
    /// Whether this host may fetch `src`; the error names the rule it breaks.
    pub fn check(&self, src: &Source) -> Result<(), String> {
        match src {
            Source::File(path) => {
                if self.plugin_dirs.is_empty() {
                    return Err(
                        "file modules are disabled: the operator lists the directories they may come from with --plugin-dir"
                            .into(),
                    );
                }
                let path = lexical(path);
                if !self.plugin_dirs.iter().any(|d| path.starts_with(lexical(d))) {
                    return Err(format!(
                        "it is outside the plugin directories (--plugin-dir {})",
                        self.dirs()
                    ));
                }
                Ok(())
            }
            Source::Url(u) if u.starts_with("http://") && !self.allow_loopback => Err(
                "plain http:// modules are only allowed from loopback addresses when the operator allows them (--allow-loopback-plugin-sources); use https://"
                    .into(),
            ),
            Source::Url(_) | Source::Registry(_)
                if !self.allow_loopback && src.remote_host().is_some_and(is_loopback) =>
            {
                Err(
                    "modules from loopback addresses are only allowed when the operator allows them (--allow-loopback-plugin-sources)"
                        .into(),
                )
            }
            _ => Ok(()),
        }
    }

    fn dirs(&self) -> String {
        self.plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Fetches the module's bytes after checking the rules, within [`MAX_MODULE_BYTES`] and
    /// [`FETCH_TIMEOUT`]. ConfigMaps are the caller's to resolve.
    pub async fn fetch(&self, src: &Source) -> Result<Vec<u8>, PluginError> {
        if let Err(rule) = self.check(src) {
            return Err(PluginError::Refused {
                reference: src.to_string(),
                rule,
            });
        }
        let fail = |message: String| PluginError::Fetch {
            reference: src.to_string(),
            message,
        };
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unchecked(src)).await {
            Ok(r) => r.map_err(fail),
            Err(_) => Err(fail(format!("no answer within {FETCH_TIMEOUT:?}"))),
        }
    }

    async fn fetch_unchecked(&self, src: &Source) -> Result<Vec<u8>, String> {
        let too_big =
            |n: u64| format!("module is {n} bytes, more than the {MAX_MODULE_BYTES} allowed");
        match src {
            Source::File(path) => {
                // Symbolic links are followed, then the rule is checked again on the target.
                let real = tokio::fs::canonicalize(path)
                    .await
                    .map_err(|e| e.kind().to_string())?;
                if let Err(rule) = self.check(&Source::File(real.clone())) {
                    return Err(format!("its target breaks a rule: {rule}"));
                }
                let meta = tokio::fs::metadata(&real)
                    .await
                    .map_err(|e| e.kind().to_string())?;
                if !meta.is_file() {
                    return Err("not a regular file".into());
                }
                if meta.len() > MAX_MODULE_BYTES as u64 {
                    return Err(too_big(meta.len()));
                }
                tokio::fs::read(&real)
                    .await
                    .map_err(|e| e.kind().to_string())
            }
            Source::Registry(image) => {
                shoal_wasm::oci::pull_limited(image, MAX_MODULE_BYTES as u64)
                    .await
                    .map_err(|e| e.to_string())
            }
            Source::Url(url) => {
                if !self.allow_loopback
                    && let Some(host) = src.remote_host()
                {
                    // A name may resolve to this machine even when it does not say so.
                    let with_port = if host.contains(':') && !host.ends_with(']') {
                        host.to_owned()
                    } else {
                        format!("{host}:443")
                    };
                    if let Ok(addrs) = tokio::net::lookup_host(with_port).await {
                        for a in addrs {
                            if a.ip().is_loopback() || a.ip().is_unspecified() {
                                return Err(format!(
                                    "{host} resolves to a loopback address, which is only allowed when the operator allows it (--allow-loopback-plugin-sources)"
                                ));
                            }
                        }
                    }
                }
                let mut resp = http_client()
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status()));
                }
                if let Some(n) = resp.content_length()
                    && n > MAX_MODULE_BYTES as u64
                {
                    return Err(too_big(n));
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{e:#}"))? {
                    if body.len() + chunk.len() > MAX_MODULE_BYTES {
                        return Err(too_big((body.len() + chunk.len()) as u64));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
            Source::ConfigMap { .. } => Err("ConfigMaps are read through the API".into()),
        }
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

    #[test]
    fn files_only_come_from_plugin_directories() {
        let none = SourcePolicy::default();
        let file = |p: &str| Source::File(p.into());
        let err = none.check(&file("/etc/passwd")).unwrap_err();
        assert!(err.contains("file modules are disabled"), "{err}");
        let dirs = SourcePolicy {
            plugin_dirs: vec!["/srv/plugins".into()],
            allow_loopback: false,
        };
        assert!(dirs.check(&file("/srv/plugins/a/x.wasm")).is_ok());
        let err = dirs.check(&file("/etc/passwd")).unwrap_err();
        assert_eq!(
            err,
            "it is outside the plugin directories (--plugin-dir /srv/plugins)"
        );
        assert!(dirs.check(&file("/srv/plugins/../../etc/passwd")).is_err());
        assert!(dirs.check(&file("/srv/plugins-evil/x.wasm")).is_err());
    }

    #[test]
    fn loopback_sources_need_the_operators_permission() {
        let strict = SourcePolicy::default();
        let open = SourcePolicy {
            plugin_dirs: Vec::new(),
            allow_loopback: true,
        };
        for r in [
            "http://127.0.0.1:8080/x.wasm",
            "https://localhost/x.wasm",
            "https://[::1]:8443/x.wasm",
            "registry://127.0.0.1:5000/p/x:v1",
            "registry://localhost:5000/p/x:v1",
        ] {
            let src = Source::parse(r).unwrap();
            let err = strict.check(&src).unwrap_err();
            assert!(
                err.contains("--allow-loopback-plugin-sources"),
                "{r}: {err}"
            );
            assert!(open.check(&src).is_ok(), "{r}");
        }
        let remote = Source::parse("registry://ghcr.io/p/x:v1").unwrap();
        assert!(strict.check(&remote).is_ok());
    }

    #[test]
    fn namespaced_policies_take_modules_from_registries_https_and_their_own_configmaps() {
        let ns = Scope::Namespace("team-a");
        let ok = [
            "registry://ghcr.io/p/x:v1",
            "https://example.com/x.wasm",
            "configmap://modules/x.wasm",
            "configmap://team-a/modules/x.wasm",
        ];
        for r in ok {
            assert!(Source::parse(r).unwrap().check_scope(ns).is_ok(), "{r}");
        }
        for r in [
            "file:///etc/passwd",
            "http://127.0.0.1/x.wasm",
            "configmap://kube-system/modules/x.wasm",
        ] {
            let src = Source::parse(r).unwrap();
            assert!(src.check_scope(ns).is_err(), "{r}");
            assert!(src.check_scope(Scope::Cluster).is_ok(), "{r}");
        }
    }

    #[tokio::test]
    async fn a_refused_file_is_never_read_and_errors_do_not_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"root:x:0:0").unwrap();
        let link = dir.path().join("link.wasm");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let policy = SourcePolicy {
            plugin_dirs: vec![dir.path().to_owned()],
            allow_loopback: false,
        };
        let err = policy
            .fetch(&Source::File(outside.path().to_owned()))
            .await
            .unwrap_err();
        assert!(matches!(err, PluginError::Refused { .. }), "{err}");
        // A link inside the directory to a file outside it is refused too.
        let err = policy
            .fetch(&Source::File(link))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the plugin directories"), "{err}");
        assert!(!err.contains("root"), "{err}");
    }
}
