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

/// Why a pull or push failed, in words for an event.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {0:?}: {1}")]
    Reference(String, String),
    #[error("{0}")]
    Registry(String),
    #[error("the artifact has {0} Wasm layers; exactly one is expected")]
    Layers(usize),
    #[error("layer digest mismatch: the manifest says {expected}, the content is {actual}")]
    Digest { expected: String, actual: String },
}

fn parse(image: &str) -> Result<Reference, RegistryError> {
    image.parse().map_err(|e: oci_client::ParseError| {
        RegistryError::Reference(image.to_owned(), e.to_string())
    })
}

/// Registries on the loopback interface are spoken to over plain HTTP, as a development
/// registry is; everything else over HTTPS.
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
            .is_ok_and(|ip| ip.is_loopback());
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
    let reference = parse(image)?;
    let client = client_for(&reference);
    let data = client
        .pull(
            &reference,
            &RegistryAuth::Anonymous,
            WASM_LAYER_TYPES.to_vec(),
        )
        .await
        .map_err(|e| RegistryError::Registry(format!("{:#}", anyhow::Error::new(e))))?;
    let layers = data.layers;
    if layers.len() != 1 {
        return Err(RegistryError::Layers(layers.len()));
    }
    let layer = layers.into_iter().next().expect("one layer");
    let actual = crate::images::sha256_digest(&layer.data);
    let expected = data
        .manifest
        .as_ref()
        .and_then(|m| {
            m.layers
                .iter()
                .find(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
        })
        .map(|l| l.digest.clone())
        .unwrap_or_default();
    if expected != actual {
        return Err(RegistryError::Digest { expected, actual });
    }
    Ok(layer.data.to_vec())
}

/// Pushes `bytes` as a wasm OCI artifact named `image`; returns the manifest URL.
pub async fn push(image: &str, bytes: Vec<u8>) -> Result<String, RegistryError> {
    let reference = parse(image)?;
    let client = client_for(&reference);
    let layer = ImageLayer::new(bytes, WASM_LAYER_TYPES[0].to_owned(), None);
    let config = Config::new(
        br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec(),
        WASM_CONFIG_TYPE.to_owned(),
        None,
    );
    let resp = client
        .push(&reference, &[layer], config, &RegistryAuth::Anonymous, None)
        .await
        .map_err(|e| RegistryError::Registry(format!("{:#}", anyhow::Error::new(e))))?;
    Ok(resp.manifest_url)
}
