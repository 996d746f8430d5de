//! The cluster CA, the serving certificate and the admin token (serving HTTPS is
//! [`shoal_net::serve`], re-exported here).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate or key in {path}")]
    Pem { path: PathBuf },
    #[error(transparent)]
    Pki(#[from] shoal_pki::PkiError),
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
}

/// The files of a cluster's PKI under its data directory.
pub struct Pki {
    pub ca_pem: String,
    pub token: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

fn read(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, content: &str) -> Result<(), TlsError> {
    std::fs::write(path, content).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "shoal-ca");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Pki {
    /// Loads the CA, serving certificate and token from `dir`, creating what is missing.
    /// The serving certificate names localhost, every loopback address and `extra_names`
    /// (DNS names or IP addresses, such as the `kubernetes` Service's ClusterIP); it is
    /// issued again when they change.
    pub fn load_or_create(dir: &Path, extra_names: &[String]) -> Result<Self, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (ca_pem, ca_key_pem) = match (read(&ca_crt)?, read(&ca_key)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let params = ca_params()?;
                let key = KeyPair::generate()?;
                let cert = params.self_signed(&key)?;
                write(&ca_crt, &cert.pem())?;
                write(&ca_key, &key.serialize_pem())?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let (srv_crt, srv_key) = (dir.join("apiserver.crt"), dir.join("apiserver.key"));
        let sans_file = dir.join("apiserver.sans");
        // The fixed names below are part of what the certificate is for: the marker makes a
        // certificate made before `kubernetes.default.svc.cluster.local` was one of them anew.
        let sans = format!("v2\n{}", extra_names.join("\n"));
        let same_sans = read(&sans_file)?.is_some_and(|s| s == sans);
        let (cert_pem, key_pem) = match (read(&srv_crt)?, read(&srv_key)?) {
            (Some(c), Some(k)) if same_sans => (c, k),
            _ => {
                let ca_key = KeyPair::from_pem(&ca_key_pem)?;
                // The CA's parameters are fixed, so rebuilding them with its key gives the same
                // issuer name and key identifier as the stored certificate.
                let issuer = Issuer::new(ca_params()?, ca_key);
                let mut names = vec![
                    "localhost".to_owned(),
                    "kubernetes".to_owned(),
                    "kubernetes.default".to_owned(),
                    "kubernetes.default.svc".to_owned(),
                    "kubernetes.default.svc.cluster.local".to_owned(),
                ];
                let (ips, dns): (Vec<&String>, Vec<&String>) = extra_names
                    .iter()
                    .partition(|n| n.parse::<IpAddr>().is_ok());
                names.extend(dns.into_iter().cloned());
                let mut params = CertificateParams::new(names)?;
                params
                    .distinguished_name
                    .push(DnType::CommonName, "shoal-apiserver");
                for ip in ["127.0.0.1", "::1"]
                    .iter()
                    .copied()
                    .chain(ips.iter().map(|s| s.as_str()))
                {
                    if let Ok(ip) = ip.parse::<IpAddr>() {
                        params.subject_alt_names.push(SanType::IpAddress(ip));
                    }
                }
                let key = KeyPair::generate()?;
                let cert = params.signed_by(&key, &issuer)?;
                write(&srv_crt, &cert.pem())?;
                write(&srv_key, &key.serialize_pem())?;
                write(&sans_file, &sans)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let token_path = dir.join("admin.token");
        let token = match read(&token_path)? {
            Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => {
                let t = random_token();
                write(&token_path, &t)?;
                t
            }
        };
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TlsError::Pem {
                path: srv_crt.clone(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::Pem {
            path: srv_key.clone(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Client certificates signed by the cluster CA authenticate their subject; a client
        // without one goes on to the other authenticators.
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let ca = ca.map_err(|_| TlsError::Pem {
                path: ca_crt.clone(),
            })?;
            roots.add(ca)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Pki {
            ca_pem,
            token,
            server_config: Arc::new(config),
        })
    }
}

/// Issues a client certificate for `user` in `groups` (subject CN and O, as Kubernetes reads
/// them), signed by the CA under `dir`, valid for `days`: its PEM and its key's.
pub fn issue_client_certificate(
    dir: &Path,
    user: &str,
    groups: &[String],
    days: i64,
) -> Result<(String, String), TlsError> {
    let signer = signer(dir)?;
    let days = u64::try_from(days.max(1)).unwrap_or(1);
    Ok(signer.issue_client(user, groups, std::time::Duration::from_secs(days * 86_400))?)
}

/// The cluster CA under `dir` as a signer of client certificates.
pub fn signer(dir: &Path) -> Result<shoal_pki::Signer, TlsError> {
    let missing = |path: PathBuf| TlsError::Io {
        path,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no cluster CA"),
    };
    let ca = read(&dir.join("ca.crt"))?.ok_or_else(|| missing(dir.join("ca.crt")))?;
    let key = read(&dir.join("ca.key"))?.ok_or_else(|| missing(dir.join("ca.key")))?;
    Ok(shoal_pki::Signer::new(&ca, &key)?)
}

pub use shoal_net::{PeerCertificate, serve};
