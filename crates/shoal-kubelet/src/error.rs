//! What the kubelet's public operations can fail with.

/// Why registering, reporting or serving failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("cannot build an object: {0}")]
    Object(#[from] serde_json::Error),
    #[error("cannot register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("{count} simulated nodes could not be registered")]
    SimulatedNodes { count: usize },
    #[error("cannot make the kubelet's serving certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS")]
    Tls(#[from] rustls::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
