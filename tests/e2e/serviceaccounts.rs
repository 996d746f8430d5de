//! ServiceAccount identities end to end: `kubectl create token` (TokenRequest) gives tokens the
//! API server authenticates as the account, RBAC decides what they may do, a pod finds its own
//! bound token, the cluster CA and its namespace at `/var/run/secrets/kubernetes.io/
//! serviceaccount` and calls the API server over HTTPS through the `kubernetes` Service, and a
//! token bound to a pod stops working once the pod is gone.

use shoal_testkit::{Cluster, eventually};

const DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn as_token(c: &Cluster, token: &str, args: &[&str]) -> std::process::Output {
    let flag = format!("--token={token}");
    c.kubectl(&[&[flag.as_str()], args].concat())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn service_accounts_authenticate_with_their_tokens_in_and_out_of_pods() {
    let c = Cluster::start().unwrap();
    eventually("default's ServiceAccount and kube-root-ca.crt", || {
        let out = c.kubectl(&[
            "get",
            "serviceaccount/default",
            "configmap/kube-root-ca.crt",
        ]);
        anyhow::ensure!(out.status.success(), "{}", stderr(&out));
        Ok(())
    });
    let ca = c.ok(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");

    // kubectl create token: who the token is, and what RBAC lets it do.
    let token = c.ok(&["create", "token", "default"]);
    let token = token.trim();
    let who = as_token(
        &c,
        token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(who.status.success(), "{}", stderr(&who));
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        "system:serviceaccount:default:default"
    );
    let refused = as_token(&c, token, &["get", "pods"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(
            "User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        stderr(&refused)
    );
    c.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    let allowed = as_token(&c, token, &["get", "pods"]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    let garbled = as_token(&c, &format!("{token}x"), &["get", "pods"]);
    assert!(
        stderr(&garbled).contains("Unauthorized"),
        "{}",
        stderr(&garbled)
    );
    let short = c.fails(&["create", "token", "default", "--duration=1m"]);
    assert!(
        short.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{short}"
    );
    let nobody = c.fails(&["create", "token", "nobody"]);
    assert!(
        nobody.contains("serviceaccounts \"nobody\" not found"),
        "{nobody}"
    );

    // A pod reads its projected credentials and calls the API server as its account.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: caller}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: shoal.local/exerciser:latest
    args: ["read", "{DIR}/namespace", "read", "{DIR}/ca.crt", "read", "{DIR}/token",
           "fetch-as", "{DIR}/token", "https://kubernetes.default.svc/api/v1/namespaces/default/pods?limit=1",
           "sleep", "3600"]
"#
    ));
    let logs = eventually("the pod calls the API server", || {
        let out = c.kubectl(&["logs", "caller"]);
        let logs = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(logs.contains("PodList"), "{logs}{}", stderr(&out));
        Ok(logs)
    });
    let mut lines = logs.lines();
    assert_eq!(lines.next(), Some("default"), "{logs}");
    assert!(logs.contains("BEGIN CERTIFICATE"), "{logs}");
    assert!(logs.contains("\n200\n"), "{logs}");
    let pod_token = logs
        .lines()
        .find(|l| l.starts_with("ey") && l.split('.').count() == 3)
        .expect("the pod's token in its log")
        .to_owned();
    let volume = c.ok(&[
        "get",
        "pod",
        "caller",
        "-o",
        "jsonpath={.spec.volumes[0].name} {.spec.containers[0].volumeMounts[0].mountPath}",
    ]);
    assert!(volume.starts_with("kube-api-access-"), "{volume}");
    assert!(volume.ends_with(DIR), "{volume}");
    let whoami = as_token(
        &c,
        &pod_token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.extra.authentication\\.kubernetes\\.io/pod-name} {.status.userInfo.extra.authentication\\.kubernetes\\.io/node-name}",
        ],
    );
    // The bound token names its pod and node, as Kubernetes' `extra` does.
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!(
            "system:serviceaccount:default:default [\"caller\"] [\"{}\"]",
            shoal_testkit::NODE
        ),
        "{}",
        stderr(&whoami)
    );

    // Issuer discovery, which RBAC lets every service account read: the key the token names.
    let jwks = as_token(&c, &pod_token, &["get", "--raw", "/openid/v1/jwks"]);
    assert!(jwks.status.success(), "{}", stderr(&jwks));
    let jwks: serde_json::Value = serde_json::from_slice(&jwks.stdout).unwrap();
    let header: serde_json::Value = {
        use base64::Engine;
        let part = pod_token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "ES256");
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"] && k["kty"] == "EC"),
        "{jwks} {header}"
    );
    let config = c.ok(&["get", "--raw", "/.well-known/openid-configuration"]);
    assert!(
        config.contains(r#""issuer":"https://kubernetes.default.svc.cluster.local""#),
        "{config}"
    );

    // The pod's token dies with the pod.
    c.ok(&["delete", "pod", "caller", "--grace-period=0", "--force"]);
    eventually("the pod's token stops working", || {
        let out = as_token(&c, &pod_token, &["get", "pods"]);
        anyhow::ensure!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
        Ok(())
    });
    // The unbound token lives on, as long as its account does.
    assert!(as_token(&c, token, &["get", "pods"]).status.success());
    c.ok(&["delete", "serviceaccount", "default"]);
    eventually("the account's token stops working", || {
        let out = as_token(&c, token, &["get", "pods"]);
        anyhow::ensure!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
        Ok(())
    });

    // automountServiceAccountToken: false keeps the credentials out.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: quiet}\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: c, image: shoal.local/exerciser:latest}]\n",
    );
    assert_eq!(
        c.ok(&["get", "pod", "quiet", "-o", "jsonpath={.spec.volumes}"]),
        ""
    );
}
