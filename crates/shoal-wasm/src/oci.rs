//! Wasm components as OCI artifacts in a registry (oci-client): pulled by the runtime, pushed by
//! `shoal image push`.
//!
//! Accepted layouts: the wasm OCI artifact (`application/vnd.wasm.config.v0+json` config with one
//! `application/wasm` layer), `application/vnd.wasm.content.layer.v1+wasm`, and the
//! bytecodealliance component layer. The layer is checked against its manifest digest.

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// Layer media types that hold a Wasm component or module.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

/// The config media type of the wasm OCI artifact layout.
pub const WASM_CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";

/// Layer media types of OCI and Docker container images (compressed or not).
pub const CONTAINER_LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// Why a pull or push failed, in words for an event.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {0:?}: {1}")]
    Reference(String, String),
    #[error("{0}")]
    Registry(String),
    #[error("the artifact has {0} Wasm layers; exactly one is expected")]
    Layers(usize),
    /// An OCI (or Docker) container image: container layers, no Wasm one.
    #[error("an OCI container image (layers of type {0})")]
    ContainerImage(String),
    #[error("layer digest mismatch: the manifest says {expected}, the content is {actual}")]
    Digest { expected: String, actual: String },
    #[error("the Wasm layer is {size} bytes, more than the {max} allowed")]
    TooLarge { size: u64, max: u64 },
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The largest component a pod image may be.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// A registry failure in words. A server's error body is not repeated: it is whatever the
/// server at that address chose to send, and a module reference must not become a way to
/// read it.
fn registry_error(e: oci_client::errors::OciDistributionError) -> RegistryError {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::ServerError { code, url, .. } => {
            RegistryError::Registry(format!("{url} answered HTTP {code}"))
        }
        e => RegistryError::Registry(chain(&e)),
    }
}

fn parse(image: &str) -> Result<Reference, RegistryError> {
    image.parse().map_err(|e: oci_client::ParseError| {
        RegistryError::Reference(image.to_owned(), e.to_string())
    })
}

/// Registries (`host:port`) configured to be spoken to over plain HTTP: mirrors given with
/// an `http://` URL.
fn plain_http() -> &'static std::sync::RwLock<std::collections::BTreeSet<String>> {
    static HOSTS: std::sync::OnceLock<std::sync::RwLock<std::collections::BTreeSet<String>>> =
        std::sync::OnceLock::new();
    HOSTS.get_or_init(Default::default)
}

/// Speaks to the mirrors of `mirrors` with an `http://` URL over plain HTTP, as containerd
/// does with a `hosts.toml` saying so (for this process).
pub fn use_mirrors(mirrors: &Mirrors) {
    let mut hosts = plain_http().write().unwrap_or_else(|p| p.into_inner());
    for (_, url) in mirrors {
        if let Some(host) = url.strip_prefix("http://") {
            hosts.insert(host.trim_end_matches('/').to_owned());
        }
    }
}

/// Registries on the loopback interface are spoken to over plain HTTP, as a development
/// registry is, and so are mirrors configured with an `http://` URL; everything else over
/// HTTPS.
fn client_for(reference: &Reference) -> Client {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // oci-client is built without a TLS provider of its own; ring is the one Shoal uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let registry = reference.resolve_registry().to_owned();
    let host = registry
        .rsplit_once(':')
        .map_or(registry.as_str(), |(h, _)| h);
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || plain_http()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&registry);
    let protocol = if loopback {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        ..Default::default()
    })
}

/// Pulls the component `image` names; returns its bytes, checked against the manifest.
pub async fn pull(image: &str) -> Result<Vec<u8>, RegistryError> {
    pull_limited(image, MAX_IMAGE_BYTES).await
}

/// Registry mirrors: `(registry, url)`, pulls from `registry` (`docker.io`, as image names
/// mean it) going to the mirror at `url` (`http://127.0.0.1:5000`) instead.
pub type Mirrors = [(String, String)];

/// `image` as pulled through `mirrors`: the same repository and tag or digest on the mirror of
/// its registry, if it has one.
pub fn mirrored(image: &str, mirrors: &Mirrors) -> Result<String, RegistryError> {
    let reference = parse(image)?;
    let Some((_, url)) = mirrors.iter().find(|(r, _)| r == reference.registry()) else {
        return Ok(image.to_owned());
    };
    let host = url
        .split_once("://")
        .map_or(url.as_str(), |(_, h)| h)
        .trim_end_matches('/');
    let mut out = format!("{host}/{}", reference.repository());
    if let Some(tag) = reference.tag() {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = reference.digest() {
        out.push('@');
        out.push_str(digest);
    }
    Ok(out)
}

/// `Err(ContainerImage)` for the manifest of an OCI container image: container layers and no
/// Wasm one.
fn container_image(manifest: &oci_client::manifest::OciImageManifest) -> Result<(), RegistryError> {
    let wasm = manifest
        .layers
        .iter()
        .any(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()));
    let containers = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .filter(|t| CONTAINER_LAYER_TYPES.iter().any(|c| t.starts_with(c)))
        .collect::<std::collections::BTreeSet<_>>();
    if wasm || containers.is_empty() {
        return Ok(());
    }
    let types = containers.into_iter().collect::<Vec<_>>().join(", ");
    Err(RegistryError::ContainerImage(types))
}

/// Reads only `image`'s manifest: `Err(ContainerImage)` for an OCI container image, `Ok` for
/// anything else (whether it really is a component, the pull checks).
pub async fn inspect(image: &str, auth: Option<&Credentials>) -> Result<(), RegistryError> {
    container_image(&manifest(image, auth).await?.1)
}

/// A registry user name and password (an image pull secret's).
pub type Credentials = (String, String);

fn registry_auth(auth: Option<&Credentials>) -> RegistryAuth {
    match auth {
        Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// The client for `image`'s registry and its image manifest.
async fn manifest(
    image: &str,
    auth: Option<&Credentials>,
) -> Result<(Client, oci_client::manifest::OciImageManifest, Reference), RegistryError> {
    let reference = parse(image)?;
    let client = client_for(&reference);
    let (manifest, _) = client
        .pull_image_manifest(&reference, &registry_auth(auth))
        .await
        .map_err(registry_error)?;
    Ok((client, manifest, reference))
}

/// As [`pull`], refusing a layer of more than `max_bytes` (by its manifest, and while it
/// downloads, whatever the manifest said).
pub async fn pull_limited(image: &str, max_bytes: u64) -> Result<Vec<u8>, RegistryError> {
    pull_limited_as(image, max_bytes, None).await
}

/// As [`pull_limited`], with `auth` for the registry.
pub async fn pull_limited_as(
    image: &str,
    max_bytes: u64,
    auth: Option<&Credentials>,
) -> Result<Vec<u8>, RegistryError> {
    use futures::StreamExt;
    let (client, manifest, reference) = manifest(image, auth).await?;
    container_image(&manifest)?;
    let wasm: Vec<_> = manifest
        .layers
        .iter()
        .filter(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
        .collect();
    let [layer] = wasm[..] else {
        return Err(RegistryError::Layers(wasm.len()));
    };
    if manifest.layers.len() != 1 {
        return Err(RegistryError::Layers(manifest.layers.len()));
    }
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > max_bytes {
        return Err(RegistryError::TooLarge {
            size,
            max: max_bytes,
        });
    }
    let mut stream = client
        .pull_blob_stream(&reference, layer)
        .await
        .map_err(registry_error)?;
    let mut data = Vec::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Registry(e.to_string()))?;
        if (data.len() + chunk.len()) as u64 > max_bytes {
            return Err(RegistryError::TooLarge {
                size: (data.len() + chunk.len()) as u64,
                max: max_bytes,
            });
        }
        data.extend_from_slice(&chunk);
    }
    let actual = crate::digest(&data);
    if layer.digest != actual {
        return Err(RegistryError::Digest {
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok(data)
}

/// Pushes `bytes` as a wasm OCI artifact named `image`; returns the manifest URL.
pub async fn push(image: &str, bytes: Vec<u8>) -> Result<String, RegistryError> {
    push_layer(
        image,
        (bytes, WASM_LAYER_TYPES[0]),
        (
            br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec(),
            WASM_CONFIG_TYPE,
        ),
    )
    .await
}

/// Pushes a one-layer image: its layer and config, each with its media type (a container
/// image's, for tests of the containerd runtime). Returns the manifest's URL.
pub async fn push_layer(
    image: &str,
    layer: (Vec<u8>, &str),
    config: (Vec<u8>, &str),
) -> Result<String, RegistryError> {
    push_layer_as(image, layer, config, None).await
}

/// As [`push_layer`], with `auth` for the registry.
pub async fn push_layer_as(
    image: &str,
    layer: (Vec<u8>, &str),
    config: (Vec<u8>, &str),
    auth: Option<&Credentials>,
) -> Result<String, RegistryError> {
    let reference = parse(image)?;
    let client = client_for(&reference);
    let layer = ImageLayer::new(layer.0, layer.1.to_owned(), None);
    let config = Config::new(config.0, config.1.to_owned(), None);
    let resp = client
        .push(&reference, &[layer], config, &registry_auth(auth), None)
        .await
        .map_err(registry_error)?;
    Ok(resp.manifest_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_take_the_pulls_of_their_registry() {
        let mirrors = [("docker.io".to_owned(), "http://127.0.0.1:5000".to_owned())];
        assert_eq!(
            mirrored("busybox", &mirrors).unwrap(),
            "127.0.0.1:5000/library/busybox:latest"
        );
        assert_eq!(
            mirrored("docker.io/me/app:v2", &mirrors).unwrap(),
            "127.0.0.1:5000/me/app:v2"
        );
        assert_eq!(
            mirrored("ghcr.io/me/app:v2", &mirrors).unwrap(),
            "ghcr.io/me/app:v2"
        );
    }
}
