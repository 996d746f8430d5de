//! The one version the whole binary reports: `/version`, every Node's `kubeletVersion` and
//! `kubeProxyVersion`, the OpenAPI documents and the probes' user agent. The Kubernetes minor
//! is the API level served (the `k8s-openapi` types and the protobuf schema are v1.33); the
//! build metadata is Shoal's own version. A kubelet built from this tree never reports a
//! newer version than the API server built with it.

pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";
/// `v1.33.0-shoal.<crate version>`.
pub const GIT_VERSION: &str = concat!("v1.33.0-shoal.", env!("CARGO_PKG_VERSION"));
/// `1.33`, as the probes' user agent (`kube-probe/1.33`) carries it.
pub const MAJOR_MINOR: &str = "1.33";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_agree() {
        assert!(GIT_VERSION.starts_with(&format!("v{MAJOR}.{MINOR}.")));
        assert_eq!(MAJOR_MINOR, format!("{MAJOR}.{MINOR}"));
    }
}
