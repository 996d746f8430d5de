//! Every component with its own identity: a kubelet joins with a bootstrap token through a
//! CertificateSigningRequest and then reads only what its pods use (the Node authorizer) and
//! writes only its own objects (NodeRestriction); a user's certificate request is approved
//! with `kubectl certificate approve` and its certificate authenticates; `shoal up`'s
//! scheduler, controllers and kubelet act under their own names.

use base64::Engine;
use shoal_testkit::{Cluster, NODE, Node, eventually};

fn pod_with_secret(name: &str, node: &str, secret: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: shoal.local/hello:latest\n    volumeMounts: [{{name: s, mountPath: /s}}]\n  volumes: [{{name: s, secret: {{secretName: {secret}}}}}]\n"
    )
}

#[test]
fn a_kubelet_joins_through_a_csr_and_reads_only_the_secrets_of_its_own_pods() {
    let c = Cluster::start().unwrap();
    c.ok(&["create", "secret", "generic", "mine", "--from-literal=k=v"]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "theirs",
        "--from-literal=k=v",
    ]);
    let node = Node::join(&c, "node-2").unwrap();
    let as_node = |args: &[&str]| {
        let kc = node.kubeconfig();
        let mut all = vec!["--kubeconfig", kc.to_str().unwrap()];
        all.extend_from_slice(args);
        c.kubectl(&all)
    };

    // It asked with its bootstrap token, the controller approved and signed, and the node
    // is now itself.
    let csrs = c.ok(&["get", "csr"]);
    let row = csrs
        .lines()
        .find(|l| l.contains("kube-apiserver-client-kubelet"))
        .unwrap_or_else(|| panic!("no kubelet CSR in\n{csrs}"));
    assert!(row.contains("system:bootstrap:"), "{row}");
    assert!(row.contains("Approved,Issued"), "{row}");
    let whoami = as_node(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:node:node-2"
    );
    eventually("node-2 Ready", || {
        let s = c.ok(&["get", "node", "node-2"]);
        anyhow::ensure!(s.contains(" Ready"), "{s}");
        Ok(())
    });

    // A Secret of a pod bound to it: readable; of a pod on the other node: not.
    c.apply(&pod_with_secret("here", "node-2", "mine"));
    c.apply(&pod_with_secret("there", NODE, "theirs"));
    eventually("the node reads its pod's Secret", || {
        let out = as_node(&["get", "secret", "mine", "-o", "name"]);
        anyhow::ensure!(out.status.success(), "{out:?}");
        Ok(())
    });
    let refused = as_node(&["get", "secret", "theirs"]);
    assert!(!refused.status.success());
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "Error from server (Forbidden): secrets \"theirs\" is forbidden: User \"system:node:node-2\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'node-2' and this object"
    );
    let listed = as_node(&["get", "secrets"]);
    assert!(!listed.status.success(), "a node lists no Secrets");

    // It may write only its own objects.
    let relabel = as_node(&["label", "node", NODE, "x=y"]);
    assert!(
        String::from_utf8_lossy(&relabel.stderr).contains(&format!(
            "node \"node-2\" is not allowed to modify node \"{NODE}\""
        )),
        "{relabel:?}"
    );
    let delete = as_node(&["delete", "pod", "there", "--wait=false"]);
    assert!(
        String::from_utf8_lossy(&delete.stderr)
            .contains("can only modify pods with spec.nodeName set to itself"),
        "{delete:?}"
    );
    // It asks tokens only for its own pods.
    let unbound = as_node(&["create", "token", "default"]);
    assert!(
        String::from_utf8_lossy(&unbound.stderr)
            .contains("node requested token not bound to a pod"),
        "{unbound:?}"
    );
    let token_for_pod = |pod: &str| {
        as_node(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
        ])
    };
    let elsewhere = token_for_pod("there");
    assert!(
        String::from_utf8_lossy(&elsewhere.stderr)
            .contains("bound to a pod scheduled on a different node"),
        "{elsewhere:?}"
    );
    let own = token_for_pod("here");
    assert!(own.status.success(), "{own:?}");
    // Renewing: a request for its own name, made with its own certificate, is approved by the
    // controller (`selfnodeclient`) and signed.
    let (request, _key) =
        shoal_pki::new_request("system:node:node-2", &["system:nodes".to_owned()]).unwrap();
    let renewal = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: renew-node-2}}\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  usages: [digital signature, client auth]\n",
        base64::engine::general_purpose::STANDARD.encode(&request)
    );
    let kc = node.kubeconfig();
    let out = c.kubectl_with(
        &["--kubeconfig", kc.to_str().unwrap(), "apply", "-f", "-"],
        Some(&renewal),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    eventually("the renewal approved and signed", || {
        let row = c.ok(&["get", "csr", "renew-node-2"]);
        anyhow::ensure!(
            row.contains("system:node:node-2") && row.contains("Approved,Issued"),
            "{row}"
        );
        Ok(())
    });
    let reason = c.ok(&[
        "get",
        "csr",
        "renew-node-2",
        "-o",
        "jsonpath={.status.conditions[0].message}",
    ]);
    assert_eq!(
        reason,
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    );
    // Its pods' logs still come through the API server, which the node's kubelet API now
    // checks with TokenReview and SubjectAccessReview.
    eventually("logs of the pod on node-2", || {
        let out = c.kubectl(&["logs", "here"]);
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stdout).contains("Hello"),
            "{out:?}"
        );
        Ok(())
    });
}

#[test]
fn a_users_certificate_request_is_approved_by_hand_and_authenticates() {
    let c = Cluster::start().unwrap();
    let (request, key) = shoal_pki::new_request("bob", &["dev".to_owned()]).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let csr = |name: &str, request: &str| {
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [client auth]\n",
            b64(request)
        )
    };
    c.apply(&csr("bob", &request));
    let pending = c.ok(&["get", "csr", "bob"]);
    assert!(
        pending.contains("Pending") && pending.contains("24h"),
        "{pending}"
    );
    assert_eq!(
        c.ok(&["get", "csr", "bob", "-o", "jsonpath={.spec.username}"]),
        "shoal-admin"
    );
    c.ok(&["certificate", "approve", "bob"]);
    let cert = eventually("bob's certificate", || {
        let pem = c.ok(&["get", "csr", "bob", "-o", "jsonpath={.status.certificate}"]);
        anyhow::ensure!(!pem.is_empty(), "not issued yet");
        Ok(String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(pem)?,
        )?)
    });
    assert!(c.ok(&["get", "csr", "bob"]).contains("Approved,Issued"));

    // The certificate is bob's: a kubeconfig with it authenticates as bob in dev.
    let admin = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let server = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap();
    let ca = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: bob\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: bob}}\ncurrent-context: c\n",
        b64(&cert),
        b64(&key)
    );
    let path = c.data_dir.join("bob.conf");
    std::fs::write(&path, kubeconfig).unwrap();
    let whoami = c.kubectl(&[
        "--kubeconfig",
        path.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "bob [\"dev\",\"system:authenticated\"]"
    );

    // A request to the kubelet signer that is not a node's waits for a human; approved, the
    // signer refuses it and says why.
    let (carol, _) = shoal_pki::new_request("carol", &["system:nodes".to_owned()]).unwrap();
    c.apply(
        &csr("carol", &carol).replace("kube-apiserver-client\n", "kube-apiserver-client-kubelet\n"),
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(c.ok(&["get", "csr", "carol"]).contains("Pending"));
    c.ok(&["certificate", "approve", "carol"]);
    eventually("carol's request failed", || {
        let row = c.ok(&["get", "csr", "carol"]);
        anyhow::ensure!(row.contains("Approved,Failed"), "{row}");
        Ok(())
    });
    assert_eq!(
        c.ok(&[
            "get",
            "csr",
            "carol",
            "-o",
            "jsonpath={.status.conditions[1].message}"
        ]),
        "subject common name does not begin with system:node:"
    );

    // A decision once made stays; the client signer issues no system:masters; a request
    // that is not one is refused with the fields named.
    let again = c.fails(&["certificate", "deny", "bob"]);
    assert!(again.contains("already Approved"), "{again}");
    let (masters, _) = shoal_pki::new_request("eve", &["system:masters".to_owned()]).unwrap();
    let out = c.kubectl_with(&["apply", "-f", "-"], Some(&csr("eve", &masters)), &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
    );
    let bad = "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {name: bad}\nspec:\n  request: aGVsbG8=\n  signerName: nope\n  usages: [client auth, flying]\n";
    let out = c.kubectl_with(&["apply", "-f", "-"], Some(bad), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.request: Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST"
        ) && err.contains("spec.signerName: Invalid value: \"nope\"")
            && err.contains("spec.usages[1]: Unsupported value: \"flying\""),
        "{err}"
    );
}

#[test]
fn an_expired_bootstrap_token_authenticates_no_one_and_is_cleaned_up() {
    let c = Cluster::start().unwrap();
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: bootstrap-token-abcdef, namespace: kube-system}\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: abcdef\n  token-secret: 0123456789abcdef\n  usage-bootstrap-authentication: \"true\"\n  expiration: \"2020-01-01T00:00:00Z\"\n";
    c.apply(secret);
    let out = c.kubectl(&["--token", "abcdef.0123456789abcdef", "get", "csr"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{out:?}"
    );
    eventually("the expired token deleted", || {
        let out = c.kubectl(&[
            "get",
            "secret",
            "-n",
            "kube-system",
            "bootstrap-token-abcdef",
        ]);
        anyhow::ensure!(!out.status.success(), "still there");
        Ok(())
    });
    // A live token is a bootstrapper that may ask for certificates and do nothing else.
    let live = secret
        .replace("2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z")
        .replace("abcdef", "ghijkl");
    c.apply(&live);
    let token = "ghijkl.0123456789ghijkl";
    eventually("the bootstrap token authenticates", || {
        let out = c.kubectl(&["--token", token, "get", "csr"]);
        anyhow::ensure!(out.status.success(), "{out:?}");
        Ok(())
    });
    let out = c.kubectl(&["--token", token, "get", "pods"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("User \"system:bootstrap:ghijkl\" cannot list resource \"pods\""),
        "{out:?}"
    );
}

#[test]
fn the_control_plane_components_act_under_their_own_names() {
    let c = Cluster::start().unwrap();
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=shoal.local/hello:latest",
    ]);
    eventually("a pod scheduled", || {
        let n = c.ok(&["get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}"]);
        anyhow::ensure!(n.contains(NODE), "{n}");
        Ok(())
    });
    let audit = c.data_dir.join("audit.log");
    eventually("the components in the audit log", || {
        let log = std::fs::read_to_string(&audit)?;
        for who in [
            "system:kube-scheduler",
            "system:kube-controller-manager",
            &format!("system:node:{NODE}"),
        ] {
            anyhow::ensure!(
                log.contains(&format!("\"username\":\"{who}\"")),
                "no request from {who}"
            );
        }
        Ok(())
    });
    // The scheduler binds; it cannot read Secrets.
    let out = c.kubectl(&["get", "secrets", "--as", "system:kube-scheduler"]);
    assert!(!out.status.success(), "{out:?}");

    // Their requests take seats of their own, as the (read-only) flow control objects say.
    let schemas = c.ok(&["get", "flowschemas"]);
    let row = schemas
        .lines()
        .find(|l| l.starts_with("system-components "))
        .unwrap_or_else(|| panic!("{schemas}"));
    assert!(row.contains(" system ") && row.ends_with("False"), "{row}");
    let levels = c.ok(&[
        "get",
        "prioritylevelconfigurations",
        "system",
        "-o",
        "jsonpath={.spec.type}",
    ]);
    assert_eq!(levels, "Limited");
    let refused = c.fails(&["delete", "flowschema", "probes"]);
    assert!(
        refused
            .contains("(MethodNotAllowed): flowschemas.flowcontrol.apiserver.k8s.io are read-only"),
        "{refused}"
    );
}
