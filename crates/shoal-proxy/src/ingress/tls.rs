//! TLS for the ingress: the certificate of the Ingress TLS Secret covering the host a client
//! names (SNI), else the controller's own self-signed certificate, as ingress-nginx answers
//! with its "fake certificate".

use super::SharedTable;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Picks the certificate per connection from the current routing table.
#[derive(Debug)]
struct BySni {
    table: SharedTable,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            hello
                .server_name()
                .and_then(|name| self.table.get().certificate(name))
                .unwrap_or_else(|| self.fallback.clone()),
        )
    }
}

/// The ingress's TLS configuration (HTTP/2 and HTTP/1.1 offered by ALPN).
pub fn server_config(table: SharedTable) -> Result<Arc<rustls::ServerConfig>, String> {
    let fake = rcgen::generate_simple_self_signed(vec!["ingress.local".to_owned()])
        .map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        fake.signing_key.serialize_der(),
    ));
    let key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
    let fallback = Arc::new(CertifiedKey::new(
        vec![rustls::pki_types::CertificateDer::from(
            fake.cert.der().to_vec(),
        )],
        key,
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { table, fallback }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
