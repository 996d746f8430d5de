//! The wasmtime plumbing the pod runtime (`shoal-runtime-wasm`) and the plugin host
//! (`shoal-plugin-host`) share, so that neither reaches into the other:
//!
//! - [`ticker`]: the thread that advances an engine's epoch, which deadlines and CPU shares
//!   are built on;
//! - [`cache`]: compiled components by digest, in memory and optionally on disk, compiled off
//!   the async threads;
//! - [`oci`]: Wasm components as OCI artifacts (pull, bounded pull, push);
//! - [`digest`]: `sha256:<hex>` of bytes.
//!
//! What a component *means* (a pod's container, a plugin of a world) is the users' business.

pub mod cache;
pub mod oci;
pub mod ticker;

/// `sha256:<hex>` of `bytes`, as OCI and Kubernetes write digests.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}
