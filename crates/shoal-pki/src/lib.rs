//! The cluster's certificates as Kubernetes' certificates API reads them: a
//! [`Request`] is a PKCS#10 certificate signing request whose subject names a user (CN) and
//! its groups (each O); a [`Signer`] holds a CA and issues client certificates, either made
//! here (`shoal kubeconfig`, the control plane's own identities) or from a request
//! (`certificates.k8s.io/v1` CertificateSigningRequests); [`new_request`] makes a request and
//! its key (a kubelet joining the cluster). The rules each Kubernetes signer applies to what it
//! signs are [`check_kubelet_client`] and [`check_client`].

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::net::IpAddr;
use std::time::Duration;
use x509_parser::prelude::FromDer;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate or sign a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("not a PEM-encoded certificate request")]
    NotPem,
    #[error("invalid certificate request: {0}")]
    Request(String),
    #[error("invalid CA certificate: {0}")]
    Ca(String),
    #[error("unknown key usage {0:?}")]
    Usage(String),
    #[error("a client certificate holds at most two groups; bind the user to the others' roles")]
    TooManyGroups,
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// The `kubernetes.io/kube-apiserver-client-kubelet` signer: kubelets' client certificates,
/// approved automatically by the approval controller.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The `kubernetes.io/kube-apiserver-client` signer: any client certificate, approved by hand
/// (`kubectl certificate approve`).
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// Kubernetes' own signers (a request to another is signed by whoever serves that name).
pub const KNOWN_SIGNERS: &[&str] = &[
    CLIENT_SIGNER,
    KUBELET_CLIENT_SIGNER,
    "kubernetes.io/kubelet-serving",
    "kubernetes.io/legacy-unknown",
];

/// Every key usage a `CertificateSigningRequest` may name (`certificates.k8s.io/v1` KeyUsage).
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// What a certificate request asks to be: its subject and alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

/// The DER of the first `CERTIFICATE REQUEST` block of `pem`.
fn request_der(pem: &[u8]) -> Result<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| PkiError::NotPem)?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(PkiError::NotPem);
    }
    Ok(block.contents)
}

/// Parses a PEM certificate request and checks its signature (the requester holds the key).
pub fn parse_request(pem: &[u8]) -> Result<Request> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let der = request_der(pem)?;
    let (_, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| PkiError::Request(e.to_string()))?;
    csr.verify_signature()
        .map_err(|_| PkiError::Request("its signature does not verify".into()))?;
    let info = &csr.certification_request_info;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        a.as_str()
            .map(str::to_owned)
            .map_err(|_| PkiError::Request("a subject attribute is not a string".into()))
    };
    let mut out = Request {
        common_name: match info.subject.iter_common_name().next() {
            Some(cn) => text(cn)?,
            None => String::new(),
        },
        organizations: info
            .subject
            .iter_organization()
            .map(text)
            .collect::<Result<_>>()?,
        ..Request::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns_names.push((*d).to_owned()),
                    GeneralName::RFC822Name(e) => out.emails.push((*e).to_owned()),
                    GeneralName::URI(u) => out.uris.push((*u).to_owned()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => out
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("four bytes"))),
                        16 => out
                            .ip_addresses
                            .push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                        _ => return Err(PkiError::Request("invalid IP address SAN".into())),
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// A subject naming `user` (CN) in `groups` (O).
fn subject(params: &mut CertificateParams, user: &str, groups: &[String]) -> Result<()> {
    params.distinguished_name = rcgen::DistinguishedName::new();
    if !user.is_empty() {
        params.distinguished_name.push(DnType::CommonName, user);
    }
    // rcgen keeps one value per attribute type: the second group goes in as the same OID
    // (2.5.4.10, organizationName) spelled as a custom type.
    match groups {
        [] => {}
        [g] => params
            .distinguished_name
            .push(DnType::OrganizationName, g.as_str()),
        [g, h] => {
            params
                .distinguished_name
                .push(DnType::OrganizationName, g.as_str());
            params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), h.as_str());
        }
        _ => return Err(PkiError::TooManyGroups),
    }
    Ok(())
}

/// A new ECDSA P-256 key and a request for a certificate naming `user` in `groups`: the
/// request's PEM and the key's.
pub fn new_request(user: &str, groups: &[String]) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    subject(&mut params, user, groups)?;
    let key = KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Sets the key usages a `CertificateSigningRequest` names.
fn set_usages(params: &mut CertificateParams, usages: &[String]) -> Result<()> {
    params.key_usages.clear();
    params.extended_key_usages.clear();
    for u in usages {
        let (ku, eku) = match u.as_str() {
            "signing" | "digital signature" => (Some(KeyUsagePurpose::DigitalSignature), None),
            "content commitment" => (Some(KeyUsagePurpose::ContentCommitment), None),
            "key encipherment" => (Some(KeyUsagePurpose::KeyEncipherment), None),
            "key agreement" => (Some(KeyUsagePurpose::KeyAgreement), None),
            "data encipherment" => (Some(KeyUsagePurpose::DataEncipherment), None),
            "cert sign" => (Some(KeyUsagePurpose::KeyCertSign), None),
            "crl sign" => (Some(KeyUsagePurpose::CrlSign), None),
            "encipher only" => (Some(KeyUsagePurpose::EncipherOnly), None),
            "decipher only" => (Some(KeyUsagePurpose::DecipherOnly), None),
            "any" => (None, Some(ExtendedKeyUsagePurpose::Any)),
            "server auth" => (None, Some(ExtendedKeyUsagePurpose::ServerAuth)),
            "client auth" => (None, Some(ExtendedKeyUsagePurpose::ClientAuth)),
            "code signing" => (None, Some(ExtendedKeyUsagePurpose::CodeSigning)),
            "email protection" | "s/mime" => (None, Some(ExtendedKeyUsagePurpose::EmailProtection)),
            "timestamping" => (None, Some(ExtendedKeyUsagePurpose::TimeStamping)),
            "ocsp signing" => (None, Some(ExtendedKeyUsagePurpose::OcspSigning)),
            other if USAGES.contains(&other) => (None, None),
            other => return Err(PkiError::Usage(other.to_owned())),
        };
        if let Some(k) = ku.filter(|k| !params.key_usages.contains(k)) {
            params.key_usages.push(k);
        }
        if let Some(e) = eku.filter(|e| !params.extended_key_usages.contains(e)) {
            params.extended_key_usages.push(e);
        }
    }
    Ok(())
}

/// A certificate authority that issues client certificates.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    /// When the CA's own certificate expires: nothing it signs outlives it.
    ca_not_after: time::OffsetDateTime,
}

impl Signer {
    /// The CA of a PEM certificate and its PEM private key.
    pub fn new(ca_pem: &str, ca_key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(ca_key_pem)?;
        let (_, block) =
            x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|_| PkiError::NotPem)?;
        let cert = block
            .parse_x509()
            .map_err(|e| PkiError::Ca(e.to_string()))?;
        let ca_not_after = cert.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_pem(ca_pem, key)?;
        Ok(Signer {
            issuer,
            ca_pem: ca_pem.to_owned(),
            ca_not_after,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn validity(&self, params: &mut CertificateParams, lifetime: Duration) {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        let wanted = now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX);
        params.not_after = wanted.min(self.ca_not_after);
        params.is_ca = IsCa::ExplicitNoCa;
    }

    /// Signs a PEM certificate request with the usages its `CertificateSigningRequest` names,
    /// valid for `lifetime` (and no longer than the CA): the certificate's PEM. The subject
    /// and alternative names are the request's; its other extensions are dropped.
    pub fn sign(
        &self,
        request_pem: &[u8],
        usages: &[String],
        lifetime: Duration,
    ) -> Result<String> {
        let wanted = parse_request(request_pem)?;
        let der = request_der(request_pem)?;
        let parsed = CertificateSigningRequestParams::from_der(&der.into())
            .map_err(|e| PkiError::Request(e.to_string()))?;
        let mut params = CertificateParams::new(wanted.dns_names.clone())?;
        for ip in &wanted.ip_addresses {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        subject(&mut params, &wanted.common_name, &wanted.organizations)?;
        set_usages(&mut params, usages)?;
        self.validity(&mut params, lifetime);
        let request = CertificateSigningRequestParams {
            params,
            public_key: parsed.public_key,
        };
        Ok(request.signed_by(&self.issuer)?.pem())
    }

    /// Issues a client certificate for `user` in `groups` with a new key: the certificate's
    /// PEM and the key's.
    pub fn issue_client(
        &self,
        user: &str,
        groups: &[String],
        lifetime: Duration,
    ) -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        subject(&mut params, user, groups)?;
        set_usages(
            &mut params,
            &[
                "digital signature".into(),
                "key encipherment".into(),
                "client auth".into(),
            ],
        )?;
        self.validity(&mut params, lifetime);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// When a PEM certificate starts and stops being valid, as seconds since the Unix epoch.
pub fn validity(cert_pem: &[u8]) -> Option<(i64, i64)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem).ok()?;
    let cert = block.parse_x509().ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn only_usages(usages: &[String], allowed: &[&str]) -> Result<(), String> {
    if !usages.iter().any(|u| u == "client auth") {
        return Err("usages must include \"client auth\"".into());
    }
    match usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        Some(u) => Err(format!(
            "usage {u:?} is not allowed, only {}",
            allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => Ok(()),
    }
}

const CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

/// What the `kubernetes.io/kube-apiserver-client-kubelet` signer signs: a node's client
/// certificate (`system:node:NAME` in `system:nodes` only, no alternative names).
pub fn check_kubelet_client(req: &Request, usages: &[String]) -> Result<(), String> {
    if req.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !req.common_name.starts_with("system:node:") || req.common_name.len() == 12 {
        return Err("subject common name does not begin with system:node:".into());
    }
    if !req.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !req.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !req.ip_addresses.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !req.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    only_usages(usages, CLIENT_USAGES)
}

/// What the `kubernetes.io/kube-apiserver-client` signer signs: a client certificate for any
/// subject.
pub fn check_client(_req: &Request, usages: &[String]) -> Result<(), String> {
    only_usages(usages, CLIENT_USAGES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> Signer {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "ca");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Signer::new(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    #[test]
    fn a_request_signed_carries_its_subject_and_the_usages_asked() {
        let groups = vec!["system:nodes".to_owned()];
        let (csr, _key) = new_request("system:node:n1", &groups).unwrap();
        let req = parse_request(csr.as_bytes()).unwrap();
        assert_eq!(req.common_name, "system:node:n1");
        assert_eq!(req.organizations, groups);
        let usages: Vec<String> = ["digital signature", "client auth"]
            .map(String::from)
            .to_vec();
        assert_eq!(check_kubelet_client(&req, &usages), Ok(()));
        let signer = ca();
        let pem = signer
            .sign(csr.as_bytes(), &usages, Duration::from_secs(3600))
            .unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(cn, ["system:node:n1"]);
        let o: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(o, ["system:nodes"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let (start, end) = validity(pem.as_bytes()).unwrap();
        assert_eq!(end - start, 3600 + 300);
    }

    #[test]
    fn the_kubelet_signer_refuses_what_is_not_a_node_client() {
        let usages: Vec<String> = vec!["client auth".into()];
        let req = |cn: &str, o: &[&str]| Request {
            common_name: cn.into(),
            organizations: o.iter().map(|s| s.to_string()).collect(),
            ..Request::default()
        };
        assert!(check_kubelet_client(&req("alice", &["system:nodes"]), &usages).is_err());
        assert!(check_kubelet_client(&req("system:node:a", &["system:masters"]), &usages).is_err());
        assert!(
            check_kubelet_client(
                &req("system:node:a", &["system:nodes"]),
                &["server auth".into()]
            )
            .is_err()
        );
        assert!(parse_request(b"not a request").is_err());
    }
}
