//! Kubernetes' built-in admission with kubectl: Pod Security levels on namespaces, and
//! ResourceQuotas capping what a namespace holds (`kubectl describe quota`).

use shoal_testkit::{Cluster, eventually};

const PRIVILEGED_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: root, namespace: locked}\nspec:\n  containers:\n  - name: c\n    image: shoal.local/exerciser:latest\n    securityContext: {privileged: true}\n";

#[test]
fn pod_security_levels_refuse_and_warn_in_kubernetes_words() {
    let c = Cluster::start().unwrap();
    c.ok(&["create", "namespace", "locked"]);
    c.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let out = c.kubectl_with(&["apply", "-f", "-"], Some(PRIVILEGED_POD), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pods \"root\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"),
        "{err}"
    );
    // A pod that follows the restricted profile is admitted (and runs).
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: tidy, namespace: locked}\nspec:\n  restartPolicy: Never\n  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}\n  containers:\n  - name: c\n    image: shoal.local/exerciser:latest\n    args: [print, hi]\n    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n",
    );

    // warn: admitted, with Kubernetes' warning; the same for a Deployment's template.
    c.ok(&["create", "namespace", "loose"]);
    c.ok(&[
        "label",
        "namespace",
        "loose",
        "pod-security.kubernetes.io/warn=baseline",
    ]);
    let pod = PRIVILEGED_POD.replace("locked", "loose");
    let out = c.kubectl_with(&["apply", "-f", "-"], Some(&pod), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("Warning: would violate PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{warning}"
    );
    let out = c.kubectl(&[
        "create",
        "deployment",
        "hosted",
        "-n",
        "loose",
        "--image=shoal.local/exerciser:latest",
        "--port=80",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let deployment = String::from_utf8_lossy(&out.stdout).replace(
        "- containerPort: 80",
        "- containerPort: 80\n          hostPort: 8080",
    );
    let out = c.kubectl_with(&["apply", "-f", "-"], Some(&deployment), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("hostPort (container \"exerciser\" uses hostPort 8080)"),
        "{warning}"
    );

    // Labelling a namespace whose pods would be refused warns about them.
    let out = c.kubectl(&[
        "label",
        "namespace",
        "loose",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("existing pods in namespace \"loose\" violate the new PodSecurity enforce level \"baseline:latest\""),
        "{warning}"
    );
    eventually("the admitted pod runs", || {
        let phase = c.ok(&[
            "get",
            "pod",
            "tidy",
            "-n",
            "locked",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        anyhow::ensure!(phase == "Succeeded", "{phase}");
        Ok(())
    });
}

#[test]
fn pod_security_defaults_and_exemptions_come_from_the_admission_configuration() {
    let dir = crate::kubectl::tempfile_dir();
    let config = crate::kubectl::write(
        dir.path(),
        "admission.yaml",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults:\n      enforce: baseline\n      enforce-version: latest\n    exemptions:\n      namespaces: [tools]\n      usernames: [ops]\n",
    );
    let tokens = crate::kubectl::write(
        dir.path(),
        "tokens.csv",
        "ops-token-0123456789,ops,1,\"system:masters\"\n",
    );
    let c = Cluster::start_with(&[
        "--admission-control-config-file",
        &config,
        "--token-auth-file",
        &tokens,
    ])
    .unwrap();
    for ns in ["locked", "tools"] {
        c.ok(&["create", "namespace", ns]);
    }
    // An unlabelled namespace gets the default level...
    let err = refused(&c, PRIVILEGED_POD);
    assert!(
        err.contains("violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{err}"
    );
    // ...which its own label overrides; an exempt namespace or user is not checked.
    c.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    c.apply(PRIVILEGED_POD);
    c.apply(&PRIVILEGED_POD.replace("namespace: locked", "namespace: tools"));
    c.ok(&["create", "namespace", "plain"]);
    let as_ops = c.kubectl_with(
        &["--token", "ops-token-0123456789", "apply", "-f", "-"],
        Some(&PRIVILEGED_POD.replace("namespace: locked", "namespace: plain")),
        &[],
    );
    assert!(as_ops.status.success(), "{as_ops:?}");
    // A configuration that does not parse stops the server with the field named.
    let bad = crate::kubectl::write(
        dir.path(),
        "bad.yaml",
        "apiVersion: pod-security.admission.config.k8s.io/v1\nkind: PodSecurityConfiguration\ndefaults:\n  enforce: strict\n",
    );
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .args([
            "apiserver",
            "--admission-control-config-file",
            &bad,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("bad-server"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("defaults.enforce: Unsupported value: \"strict\""),
        "{out:?}"
    );
}

fn pod(name: &str, ns: &str, cpu: Option<&str>) -> String {
    let resources = cpu
        .map(|c| format!("\n    resources: {{requests: {{cpu: {c}}}}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  containers:\n  - name: c\n    image: shoal.local/exerciser:latest\n    args: [sleep, \"3600\"]{resources}\n"
    )
}

fn refused(c: &Cluster, yaml: &str) -> String {
    let out = c.kubectl_with(&["apply", "-f", "-"], Some(yaml), &[]);
    assert!(!out.status.success(), "admitted: {yaml}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `Used` and `Hard` columns of `kubectl describe quota` for `resource`.
fn described(c: &Cluster, quota: &str, ns: &str, resource: &str) -> Vec<String> {
    c.ok(&["describe", "quota", quota, "-n", ns])
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(resource))
        .map(|cols| cols[1..].to_vec())
        .unwrap_or_default()
}

#[test]
fn resource_quotas_cap_a_namespace_and_describe_shows_usage() {
    let c = Cluster::start().unwrap();
    c.ok(&["create", "namespace", "team"]);
    c.apply("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: counts, namespace: team}\nspec:\n  hard: {pods: \"2\", configmaps: \"10\"}\n");
    eventually("the controller counts", || {
        let used = described(&c, "counts", "team", "pods");
        anyhow::ensure!(used == ["0", "2"], "{used:?}");
        Ok(())
    });
    c.apply(&pod("a", "team", None));
    c.apply(&pod("b", "team", None));
    let err = refused(&c, &pod("x", "team", None));
    assert!(
        err.contains("pods \"x\" is forbidden: exceeded quota: counts, requested: pods=1, used: pods=2, limited: pods=2"),
        "{err}"
    );
    assert_eq!(described(&c, "counts", "team", "pods"), ["2", "2"]);
    let table = c.ok(&["get", "quota", "-n", "team"]);
    assert!(table.contains("pods: 2/2"), "{table}");
    // What a deleted pod held is given back.
    c.ok(&[
        "delete",
        "pod",
        "a",
        "-n",
        "team",
        "--grace-period=0",
        "--force",
    ]);
    eventually("the quota is recounted", || {
        let used = described(&c, "counts", "team", "pods");
        anyhow::ensure!(used == ["1", "2"], "{used:?}");
        Ok(())
    });
    c.apply(&pod("c", "team", None));

    // A quota on compute resources: pods must say what they request, and are held to it.
    c.ok(&["create", "namespace", "compute"]);
    c.apply("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: cpu, namespace: compute}\nspec:\n  hard: {requests.cpu: 500m}\n");
    let err = refused(&c, &pod("free", "compute", None));
    assert!(
        err.contains(
            "pods \"free\" is forbidden: failed quota: cpu: must specify requests.cpu for: c"
        ),
        "{err}"
    );
    c.apply(&pod("first", "compute", Some("300m")));
    let err = refused(&c, &pod("second", "compute", Some("300m")));
    assert!(
        err.contains("exceeded quota: cpu, requested: requests.cpu=300m, used: requests.cpu=300m, limited: requests.cpu=500m"),
        "{err}"
    );
    // Bad input is refused by field.
    let err = refused(
        &c,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: bad, namespace: compute}\nspec:\n  hard: {pods: lots}\n",
    );
    assert!(
        err.contains("spec.hard[pods]: Invalid value: \"lots\""),
        "{err}"
    );
}

#[test]
fn limit_ranges_default_and_bound_what_containers_ask_for() {
    let c = Cluster::start().unwrap();
    c.ok(&["create", "namespace", "sized"]);
    c.apply("apiVersion: v1\nkind: LimitRange\nmetadata: {name: sizes, namespace: sized}\nspec:\n  limits:\n  - type: Container\n    default: {memory: 256Mi}\n    defaultRequest: {memory: 128Mi, cpu: 100m}\n    max: {memory: 512Mi}\n    min: {cpu: 50m}\n");
    assert!(c.ok(&["get", "limits", "-n", "sized"]).contains("sizes"));
    c.apply(&pod("plain", "sized", None));
    let resources = c.ok(&[
        "get",
        "pod",
        "plain",
        "-n",
        "sized",
        "-o",
        "jsonpath={.spec.containers[0].resources}",
    ]);
    assert_eq!(
        resources,
        r#"{"limits":{"memory":"256Mi"},"requests":{"cpu":"100m","memory":"128Mi"}}"#
    );
    let note = c.ok(&[
        "get",
        "pod",
        "plain",
        "-n",
        "sized",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/limit-ranger}",
    ]);
    assert_eq!(
        note,
        "LimitRanger plugin set: cpu, memory request for container c; memory limit for container c"
    );
    let big = "apiVersion: v1\nkind: Pod\nmetadata: {name: big, namespace: sized}\nspec:\n  containers:\n  - name: c\n    image: shoal.local/exerciser:latest\n    resources: {limits: {memory: 1Gi}, requests: {cpu: 10m}}\n";
    let err = refused(&c, big);
    assert!(
        err.contains("pods \"big\" is forbidden: [minimum cpu usage per Container is 50m, but request is 10m, maximum memory usage per Container is 512Mi, but limit is 1Gi]"),
        "{err}"
    );
}
