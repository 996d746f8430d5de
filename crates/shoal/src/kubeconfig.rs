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
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(addr, ca_pem, token))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    // Renamed into place so a reader never sees a half-written file.
    std::fs::rename(&tmp, path)
}

/// A kubeconfig for `user` with a client certificate, to the cluster of the admin kubeconfig
/// `admin` (same server and CA).
pub fn for_user(admin: &str, user: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<String> {
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
            .ok_or_else(|| anyhow::anyhow!("the admin kubeconfig has no {key}"))
    };
    let server = field("server:")?;
    let ca = field("certificate-authority-data:")?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // The user's name is quoted: it may hold characters YAML reads otherwise (`system:x`).
    let name = serde_json::to_string(user)?;
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: shoal\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: shoal\n  context:\n    cluster: shoal\n    user: {name}\n    namespace: default\ncurrent-context: shoal\n",
        cert = b64(cert_pem),
        key = b64(key_pem),
    ))
}
