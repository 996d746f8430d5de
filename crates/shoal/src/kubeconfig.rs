//! Writes the kubeconfig kubectl and kube-rs use as is.

use base64::Engine;
use std::net::SocketAddr;
use std::path::Path;

pub fn render(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: shoal\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: shoal-admin\n  user:\n    token: {token}\ncontexts:\n- name: shoal\n  context:\n    cluster: shoal\n    user: shoal-admin\n    namespace: default\ncurrent-context: shoal\n",
        port = addr.port()
    )
}

pub fn write(path: &Path, addr: SocketAddr, ca_pem: &str, token: &str) -> std::io::Result<()> {
    write_private(path, &render(addr, ca_pem, token))
}

/// Writes `content` to `path` (only its owner may read it), renamed into place.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)
}

/// A kubeconfig for `user` with the credentials `user_fields` (YAML lines under `user:`), to
/// the cluster of the kubeconfig `admin` (same server and CA).
fn to_cluster_of(admin: &str, user: &str, user_fields: &str) -> anyhow::Result<String> {
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
            .ok_or_else(|| anyhow::anyhow!("the kubeconfig has no {key}"))
    };
    let server = field("server:")?;
    let ca = field("certificate-authority-data:")?;
    // The user's name is quoted: it may hold characters YAML reads otherwise (`system:x`).
    let name = serde_json::to_string(user)?;
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: shoal\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n{user_fields}contexts:\n- name: shoal\n  context:\n    cluster: shoal\n    user: {name}\n    namespace: default\ncurrent-context: shoal\n",
    ))
}

/// A kubeconfig for `user` with a client certificate, to the cluster of the kubeconfig
/// `admin` (same server and CA).
pub fn for_user(admin: &str, user: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    to_cluster_of(
        admin,
        user,
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
    )
}

/// A kubeconfig for `user` authenticating with a bearer token, to the cluster of `admin`.
pub fn with_token(admin: &str, user: &str, token: &str) -> anyhow::Result<String> {
    to_cluster_of(admin, user, &format!("    token: {token}\n"))
}
