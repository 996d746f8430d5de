//! A kubelet's own identity: joining with a bootstrap token (a client certificate for
//! `system:node:NAME` obtained through a CertificateSigningRequest, as Kubernetes' TLS
//! bootstrapping does) and the bootstrap kubeconfigs `shoal bootstrap-kubeconfig` hands out.

use anyhow::Context;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, PostParams};
use std::path::Path;
use std::time::Duration;

/// How long a kubelet waits for its certificate request to be approved and signed.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether the kubeconfig at `path` holds a client certificate still valid for a while (a
/// tenth of its life at least).
pub fn has_valid_certificate(path: &Path) -> bool {
    use base64::Engine;
    let Ok(kc) = kube::config::Kubeconfig::read_from(path) else {
        return false;
    };
    let pem = kc
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
        .find_map(|a| a.client_certificate_data.clone())
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
    let Some(pem) = pem else {
        // A kubeconfig with a token or a certificate file is the admin's business.
        return path.exists();
    };
    let Some((start, end)) = shoal_pki::validity(&pem) else {
        return false;
    };
    let now = jiff::Timestamp::now().as_second();
    now < end - (end - start) / 10
}

/// Obtains a client certificate for node `node` with the bootstrap kubeconfig `bootstrap`
/// and writes a kubeconfig holding it to `kubeconfig`.
pub async fn bootstrap(bootstrap: &Path, kubeconfig: &Path, node: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(bootstrap)
        .with_context(|| format!("cannot read {}", bootstrap.display()))?;
    let client = crate::node::client_from(bootstrap).await?;
    let user = format!("system:node:{node}");
    let (request, key) = shoal_pki::new_request(&user, &["system:nodes".to_owned()])?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request.into_bytes()),
            signer_name: shoal_pki::KUBELET_CLIENT_SIGNER.into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .context("cannot create the node's CertificateSigningRequest")?;
    let name = created.metadata.name.unwrap_or_default();
    println!("Asked for a client certificate for {user}: CertificateSigningRequest {name}");
    let deadline = tokio::time::Instant::now() + ISSUE_TIMEOUT;
    let cert = loop {
        let now = csrs.get(&name).await?;
        let status = now.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if c.type_ == "Denied" || c.type_ == "Failed" {
                anyhow::bail!(
                    "the certificate request {name} was {}: {}",
                    c.type_.to_lowercase(),
                    c.message.clone().unwrap_or_default()
                );
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            break String::from_utf8(cert.0).context("the issued certificate is not PEM")?;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the certificate request {name} was not approved and signed within {}s (is the controller-manager running with the cluster's signing CA?)",
            ISSUE_TIMEOUT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let config = crate::kubeconfig::for_user(&text, &user, &cert, &key)?;
    crate::kubeconfig::write_private(kubeconfig, &config)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    println!(
        "Node {node} joined: its credentials are in {}",
        kubeconfig.display()
    );
    Ok(())
}

/// Creates a bootstrap token valid for `ttl` with the admin kubeconfig `admin` and returns a
/// kubeconfig that joins a kubelet with it.
pub async fn bootstrap_kubeconfig(admin: &Path, ttl: Duration) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(admin)
        .with_context(|| format!("cannot read {}", admin.display()))?;
    let client = crate::node::client_from(admin).await?;
    let (token, secret) = shoal_controllers::certificates::new_bootstrap_token(ttl, &[]);
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "kube-system")
        .create(&PostParams::default(), &secret)
        .await
        .context("cannot create the bootstrap token")?;
    crate::kubeconfig::with_token(&text, "kubelet-bootstrap", &token)
}
