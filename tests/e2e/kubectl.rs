//! kubectl against `shoal up`, command by command, as a Kubernetes user runs it.

use shoal_testkit::{Cluster, eventually};

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: echo
        image: registry.local/echo:1.0
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: "1"
  flag: "on"
---
apiVersion: v1
kind: Secret
metadata:
  name: sec
stringData:
  password: hunter2
"#;

/// Runs each test against `shoal up` on the embedded store and on a real etcd.
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $test() {
                    super::$test(shoal_testkit::Cluster::start().unwrap());
                }
            )*
        }
        mod etcd {
            $(
                #[test]
                fn $test() {
                    super::$test(shoal_testkit::Cluster::start_on_etcd().unwrap());
                }
            )*
        }
    };
}

on_every_store!(
    discovery_commands_work,
    apply_twice_then_edit_is_unchanged_then_configured,
    server_side_apply_creates_merges_and_reports_conflicts,
    get_output_formats_selectors_and_paging,
    label_annotate_patch_scale_edit,
    delete_by_file_name_label_and_all,
    errors_read_like_kubernetes,
    get_watch_sees_later_changes,
    requests_without_the_token_get_401,
    typed_generators_send_protobuf_and_work,
    custom_resources_from_definition_to_deletion,
);

pub(crate) fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_string_lossy().into_owned()
}

fn discovery_commands_work(c: Cluster) {
    let v = c.ok(&["version"]);
    assert!(
        v.contains(&format!(
            "Server Version: {}",
            shoal_api::version::GIT_VERSION
        )),
        "{v}"
    );
    // The kubelet reports the same version as the API server, for itself and its proxy (once
    // it has registered: the cluster answers before its node is up).
    let v = shoal_api::version::GIT_VERSION;
    eventually("the node reports its versions", || {
        let out = c.kubectl(&[
            "get",
            "node",
            shoal_testkit::NODE,
            "-o",
            "jsonpath={.status.nodeInfo.kubeletVersion} {.status.nodeInfo.kubeProxyVersion}",
        ]);
        let got = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(got == format!("{v} {v}"), "{got}");
        Ok(())
    });
    let r = c.ok(&["api-resources"]);
    for line in [
        "deployments",
        "deploy",
        "apps/v1",
        "Deployment",
        "pods",
        "po",
        "leases",
        "runtimeclasses",
        "customresourcedefinitions",
        "persistentvolumeclaims",
        "storageclasses",
        "replicationcontrollers",
        "controllerrevisions",
        "poddisruptionbudgets",
        "priorityclasses",
        "resourcequotas",
        "limitranges",
    ] {
        assert!(r.contains(line), "api-resources lacks {line}:\n{r}");
    }
    let av = c.ok(&["api-versions"]);
    assert!(
        av.contains("apps/v1") && av.contains("batch/v1") && av.lines().any(|l| l == "v1"),
        "{av}"
    );
    assert!(
        c.ok(&["cluster-info"])
            .contains("is running at https://127.0.0.1:")
    );
    let ns = c.ok(&["get", "namespaces"]);
    for n in ["default", "kube-system", "kube-public"] {
        assert!(ns.contains(n), "{ns}");
    }
}

fn apply_twice_then_edit_is_unchanged_then_configured(c: Cluster) {
    let dir = tempfile_dir();
    let f = write(dir.path(), "app.yaml", APP);
    let first = c.ok(&["apply", "-f", &f]);
    assert_eq!(
        first.lines().collect::<Vec<_>>(),
        [
            "deployment.apps/web created",
            "service/web created",
            "configmap/cfg created",
            "secret/sec created"
        ]
    );
    let second = c.ok(&["apply", "-f", &f]);
    // As on Kubernetes, a Secret with `stringData` is always `configured`: it is never stored.
    assert!(
        second
            .lines()
            .filter(|l| !l.starts_with("secret/"))
            .all(|l| l.ends_with(" unchanged")),
        "{second}"
    );
    let f = write(
        dir.path(),
        "app.yaml",
        &APP.replace("replicas: 2", "replicas: 3"),
    );
    let third = c.ok(&["apply", "-f", &f]);
    assert!(
        third.contains("deployment.apps/web configured") && third.contains("service/web unchanged"),
        "{third}"
    );
    // Three-way merge: a field changed by someone else survives an apply that does not set it.
    c.ok(&["label", "deploy", "web", "owner=ops"]);
    c.ok(&["apply", "-f", &f]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.labels.owner} {.spec.replicas} {.metadata.generation}"
        ]),
        "ops 3 2"
    );
    // Strategic merge keeps list items' fields (ports) when the image changes.
    let f = write(dir.path(), "app.yaml", &APP.replace("echo:1.0", "echo:2.0"));
    c.ok(&["apply", "-f", &f]);
    let out = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"]);
    assert_eq!(out, "registry.local/echo:2.0 8080");
    assert_eq!(
        c.ok(&["get", "secret", "sec", "-o", "jsonpath={.data.password}"]),
        "aHVudGVyMg=="
    );
    // `yes`/`on` survive as strings.
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.flag}"]),
        "on"
    );
}

fn server_side_apply_creates_merges_and_reports_conflicts(c: Cluster) {
    let dir = tempfile_dir();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n";
    let f = write(dir.path(), "cm.yaml", cm);
    assert!(
        c.ok(&["apply", "--server-side", "-f", &f])
            .contains("configmap/ssa serverside-applied")
    );
    let managers = c.ok(&[
        "get",
        "cm",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers, "kubectl");
    let f2 = write(dir.path(), "cm2.yaml", &cm.replace("\"1\"", "\"2\""));
    let err = c.fails(&[
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "-f",
        &f2,
    ]);
    assert!(
        err.contains("conflict with \"kubectl\"") && err.contains(".data.a"),
        "{err}"
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "--force-conflicts",
        "-f",
        &f2,
    ]);
    assert_eq!(c.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]), "2");

    // Client-side apply first, then server-side apply of a change: the documented migration
    // takes the client-side-applied fields over without a conflict (and `diff` agrees).
    let csa = cm.replace("name: ssa", "name: csa");
    let f3 = write(dir.path(), "csa.yaml", &csa);
    c.ok(&["apply", "-f", &f3]);
    let f4 = write(dir.path(), "csa2.yaml", &csa.replace("\"1\"", "\"3\""));
    let out = c.kubectl(&["diff", "--server-side", "-f", &f4]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.ok(&["apply", "--server-side", "-f", &f4])
            .contains("configmap/csa serverside-applied")
    );
    assert_eq!(c.ok(&["get", "cm", "csa", "-o", "jsonpath={.data.a}"]), "3");
}

fn get_output_formats_selectors_and_paging(c: Cluster) {
    fn cm(name: &str, tier: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    tier: {tier}\ndata:\n  k: v\n"
        )
    }
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front")] {
        let out = c.kubectl_with(&["apply", "-f", "-"], Some(&cm(name, tier)), &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let table = c.ok(&["get", "cm", "-l", "tier=front"]);
    assert!(
        table.starts_with("NAME") && table.contains("DATA") && table.contains("AGE"),
        "{table}"
    );
    assert!(
        table.contains("a ") && table.contains("c ") && !table.contains("\nb "),
        "{table}"
    );
    assert_eq!(
        c.ok(&["get", "cm", "-l", "tier in (back)", "-o", "name"])
            .trim(),
        "configmap/b"
    );
    assert_eq!(
        c.ok(&["get", "cm", "-l", "tier!=front,tier", "-o", "name"])
            .trim(),
        "configmap/b"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=c",
            "-o",
            "name"
        ])
        .trim(),
        "configmap/c"
    );
    let paged = c.ok(&["get", "cm", "--chunk-size=1", "-l", "tier", "-o", "name"]);
    assert_eq!(
        paged.lines().collect::<Vec<_>>(),
        ["configmap/a", "configmap/b", "configmap/c"]
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "cm", "a", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "ConfigMap");
    assert!(
        json["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(
        c.ok(&["get", "cm", "a", "-o", "yaml"])
            .contains("tier: front")
    );
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "-o",
            "jsonpath={.items[*].metadata.name}",
            "-l",
            "tier=front"
        ]),
        "a c"
    );
    let wide = c.ok(&["get", "cm", "a", "-o", "wide"]);
    assert!(wide.contains("DATA"));
    let err = c.fails(&["get", "cm", "--field-selector", "spec.nope=1"]);
    assert!(
        err.contains("field label not supported: spec.nope"),
        "{err}"
    );
}

pub(crate) fn tempfile_dir() -> tempfile_shim::TempDir {
    tempfile_shim::TempDir::new()
}

/// A small temporary directory without pulling tempfile into this crate's dependencies.
pub(crate) mod tempfile_shim {
    pub struct TempDir(std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "shoal-e2e-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn label_annotate_patch_scale_edit(c: Cluster) {
    let dir = tempfile_dir();
    c.ok(&["apply", "-f", &write(dir.path(), "app.yaml", APP)]);
    assert!(
        c.ok(&["label", "cm", "cfg", "env=prod"])
            .contains("configmap/cfg labeled")
    );
    let err = c.fails(&["label", "cm", "cfg", "env=dev"]);
    assert!(err.contains("--overwrite is false"), "{err}");
    c.ok(&["label", "cm", "cfg", "env-"]);
    assert!(
        c.ok(&["annotate", "cm", "cfg", "note=hi"])
            .contains("annotated")
    );
    c.ok(&["patch", "cm", "cfg", "-p", r#"{"data":{"b":"2"}}"#]);
    c.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"c":"3"}}"#,
    ]);
    c.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/a"}]"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "cfg",
            "-o",
            "jsonpath={.data.b}{.data.c}{.data.a}{.metadata.labels.env}{.metadata.annotations.note}"
        ]),
        "23hi"
    );
    let err = c.fails(&[
        "patch",
        "cm",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/b","value":"9"}]"#,
    ]);
    assert!(err.contains("Invalid") || err.contains("invalid"), "{err}");
    assert!(
        c.ok(&["scale", "deploy", "web", "--replicas=5"])
            .contains("deployment.apps/web scaled")
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ]),
        "5 2"
    );
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/flag: \"on\"/flag: \"off\"/' \"$1\"\n",
    )
    .unwrap();
    make_executable(&editor);
    let out = c.kubectl_with(
        &["edit", "cm", "cfg"],
        None,
        &[("EDITOR", editor.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data.flag}"]),
        "off"
    );
    let described = c.ok(&["describe", "deploy", "web"]);
    for want in [
        "Name:                   web",
        "Replicas:               5 desired",
        "StrategyType:           RollingUpdate",
        "8080/TCP",
    ] {
        assert!(
            described.contains(want),
            "describe lacks {want:?}:\n{described}"
        );
    }
    assert!(c.ok(&["explain", "pod.spec"]).contains("containers"));
}

fn make_executable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn delete_by_file_name_label_and_all(c: Cluster) {
    let dir = tempfile_dir();
    let f = write(dir.path(), "app.yaml", APP);
    c.ok(&["apply", "-f", &f]);
    let out = c.ok(&["delete", "-f", &f, "--cascade=foreground"]);
    assert!(
        out.contains("deployment.apps \"web\" deleted") && out.contains("secret \"sec\" deleted"),
        "{out}"
    );
    c.ok(&["apply", "-f", &f]);
    // The Deployment's ReplicaSet exists before it is deleted as an orphan, and stays.
    eventually("the deployment has a replicaset", || {
        let rs = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
        anyhow::ensure!(!rs.is_empty(), "no replicaset yet");
        Ok(())
    });
    c.ok(&["delete", "deploy", "web", "--cascade=orphan"]);
    eventually("the replicaset is orphaned", || {
        let owners = c.ok(&[
            "get",
            "rs",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ]);
        anyhow::ensure!(!owners.contains("Deployment"), "{owners}");
        Ok(())
    });
    assert!(c.ok(&["get", "deploy", "-o", "name"]).is_empty());
    c.ok(&["delete", "svc", "web", "--cascade=background"]);
    c.ok(&["label", "cm", "cfg", "x=y"]);
    c.ok(&["delete", "cm", "-l", "x=y"]);
    // (kube-root-ca.crt, unlabelled, stays.)
    assert_eq!(c.ok(&["get", "cm", "-l", "x=y", "-o", "name"]), "");
    assert_eq!(
        c.ok(&["get", "cm", "cfg", "--ignore-not-found", "-o", "name"]),
        ""
    );
    c.ok(&["delete", "secrets", "--all"]);
    c.ok(&["delete", "rs", "--all"]);
    eventually("everything is gone", || {
        // As on Kubernetes, the API server's own `kubernetes` Service stays.
        let left = c.ok(&["get", "all", "-o", "name"]);
        anyhow::ensure!(left.trim() == "service/kubernetes", "{left}");
        Ok(())
    });
}

/// An operator's definition (a few thousand lines of schema) installed with kubectl, then its
/// objects applied, listed with the definition's columns, refused when invalid, patched,
/// applied server-side, scaled and explained, and deleted with the definition.
fn custom_resources_from_definition_to_deletion(c: Cluster) {
    let dir = tempfile_dir();
    let core: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/openapi/v3/api/v1"])).unwrap();
    let crd = shoal_testkit::crd::operator_crd(&core);
    let crd_file = write(
        dir.path(),
        "crd.json",
        &serde_json::to_string_pretty(&crd).unwrap(),
    );
    // Too large for client-side apply's last-applied annotation, as in Kubernetes (where
    // operators' install guides say to apply it server-side).
    let err = c.fails(&["apply", "-f", &crd_file]);
    assert!(
        err.contains("metadata.annotations: Too long: must have at most 262144 bytes"),
        "{err}"
    );
    assert!(c.ok(&["apply", "--server-side", "-f", &crd_file]).contains(
        "customresourcedefinition.apiextensions.k8s.io/appservers.operator.example.com serverside-applied"
    ));
    c.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/appservers.operator.example.com",
    ]);
    assert!(c.ok(&["api-resources"]).contains("appservers"));
    let obj = |name: &str, extra: &str| {
        format!(
            "apiVersion: operator.example.com/v1\nkind: AppServer\nmetadata:\n  name: {name}\nspec:\n  version: v1.2.3\n  replicas: 2\n{extra}"
        )
    };
    let created = c.ok(&["apply", "-f", &write(dir.path(), "a.yaml", &obj("a", ""))]);
    assert!(
        created.contains("appserver.operator.example.com/a created"),
        "{created}"
    );
    let table = c.ok(&["get", "appservers"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "VERSION", "REPLICAS", "READY", "AGE"],
        "{table}"
    );
    assert!(table.contains("v1.2.3"), "{table}");
    assert_eq!(
        c.ok(&[
            "get",
            "as",
            "a",
            "-o",
            "jsonpath={.spec.retention} {.spec.logLevel}"
        ]),
        "24h info"
    );
    let err = c.fails(&[
        "apply",
        "-f",
        &write(
            dir.path(),
            "b.yaml",
            &obj("b", "  logLevel: loud\n").replace("v1.2.3", "latest"),
        ),
    ]);
    assert!(err.contains("The AppServer \"b\" is invalid"), "{err}");
    assert!(
        err.contains("spec.version: Invalid value: \"latest\": spec.version in body should match"),
        "{err}"
    );
    assert!(
        err.contains("spec.logLevel: Unsupported value: \"loud\""),
        "{err}"
    );
    let err = c.fails(&[
        "apply",
        "-f",
        &write(dir.path(), "c.yaml", &obj("c", "  bogus: 1\n")),
    ]);
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    c.ok(&[
        "patch",
        "appserver",
        "a",
        "--type=merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ]);
    let err = c.fails(&[
        "patch",
        "appserver",
        "a",
        "-p",
        r#"{"spec":{"paused":false}}"#,
    ]);
    assert!(
        err.contains("the body of the request was in an unknown format"),
        "{err}"
    );
    let applied = c.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &write(dir.path(), "a2.yaml", &obj("a", "  logLevel: debug\n")),
    ]);
    assert!(applied.contains("serverside-applied"), "{applied}");
    assert!(
        c.ok(&["scale", "appserver", "a", "--replicas=4"])
            .contains("appserver.operator.example.com/a scaled")
    );
    assert_eq!(
        c.ok(&[
            "get",
            "appserver",
            "a",
            "-o",
            "jsonpath={.spec.replicas} {.spec.logLevel} {.spec.paused}"
        ]),
        "4 debug true"
    );
    let explained = c.ok(&[
        "explain",
        "appserver.spec.podTemplate.spec.containers.image",
    ]);
    assert!(explained.contains("FIELD: image <string>"), "{explained}");
    // Deleting the definition deletes its objects first; then the kind is gone (kubectl's
    // cached discovery still names it, so it says what the Kubernetes documentation shows).
    c.ok(&["delete", "crd", "appservers.operator.example.com"]);
    let err = c.fails(&["get", "appservers"]);
    assert!(
        err.contains("the server could not find the requested resource"),
        "{err}"
    );
    assert!(!c.ok(&["get", "crd"]).contains("appservers"));
}

fn errors_read_like_kubernetes(c: Cluster) {
    let dir = tempfile_dir();
    let err = c.fails(&["get", "cm", "nope"]);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): configmaps \"nope\" not found"
    );
    let err = c.fails(&["get", "deploy", "nope"]);
    assert!(err.contains("deployments.apps \"nope\" not found"), "{err}");
    let err = c.fails(&["delete", "namespace", "default"]);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): namespaces \"default\" is forbidden: this namespace may not be deleted"
    );
    let classes = c.ok(&["get", "priorityclasses"]);
    assert!(
        classes.starts_with("NAME")
            && classes.contains("VALUE")
            && classes.contains("system-node-critical      2000001000   false"),
        "{classes}"
    );
    let f = write(
        dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n",
    );
    c.ok(&["create", "-f", &f]);
    let err = c.fails(&["create", "-f", &f]);
    assert!(
        err.contains("Error from server (AlreadyExists): error when creating")
            && err.contains("configmaps \"dup\" already exists"),
        "{err}"
    );
    // A stale update: replace with an old resourceVersion.
    let rv = c.ok(&[
        "get",
        "cm",
        "dup",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    c.ok(&["label", "cm", "dup", "bump=1"]);
    let stale = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n  resourceVersion: \"{rv}\"\ndata:\n  k: v\n"
    );
    let err = c.fails(&["replace", "-f", &write(dir.path(), "stale.yaml", &stale)]);
    assert!(
        err.contains("Error from server (Conflict)")
            && err.contains("the object has been modified"),
        "{err}"
    );
    let bad =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n";
    let err = c.fails(&["apply", "-f", &write(dir.path(), "bad.yaml", bad)]);
    assert!(
        err.contains("The Pod \"bad\" is invalid: spec.containers[0].image: Required value"),
        "{err}"
    );
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\nspecc: {}\ndata:\n  k: v\nbogus: 1\n";
    let err = c.fails(&["create", "-f", &write(dir.path(), "u.yaml", unknown)]);
    assert!(err.contains("unknown field \"bogus\""), "{err}");
    // A pod posted to the namespaces endpoint, as Kubernetes' own kubectl tests do.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: x\n";
    let err = c.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces",
        "-f",
        &write(dir.path(), "pod.yaml", pod),
    ]);
    assert!(
        err.contains("the object provided is unrecognized (must be of type Namespace)"),
        "{err}"
    );
    // A kind nobody serves: kubectl looks for it in /openapi/v2 and then says it is unknown.
    let gizmo = "apiVersion: example.com/v1\nkind: Gizmo\nmetadata:\n  name: g\n";
    let err = c.fails(&["apply", "-f", &write(dir.path(), "gizmo.yaml", gizmo)]);
    assert!(
        err.contains("no matches for kind \"Gizmo\" in version \"example.com/v1\""),
        "{err}"
    );
    c.ok(&["create", "deployment", "typed", "--image=x"]);
    let err = c.fails(&[
        "patch",
        "deployment",
        "typed",
        "-p",
        r#"{"spec":{"replicas":"three"}}"#,
    ]);
    assert!(
        err.contains("cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"),
        "{err}"
    );
}

fn get_watch_sees_later_changes(c: Cluster) {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.args(["get", "cm", "-w", "--output-watch-events"])
        .env("KUBECONFIG", c.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut watcher = cmd.spawn().unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    eventually("watch starts", || {
        // Creating objects until the watcher reports one proves it is watching.
        let name = format!("w{}", seen.len());
        let out = c.kubectl_with(
            &["create", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
            )),
            &[],
        );
        anyhow::ensure!(out.status.success());
        seen.push(name);
        let line = rx.recv_timeout(std::time::Duration::from_secs(2))?;
        anyhow::ensure!(
            line.contains("ADDED") || line.starts_with("EVENT"),
            "{line}"
        );
        Ok(())
    });
    c.ok(&["label", "cm", "w0", "x=1"]);
    c.ok(&["delete", "cm", "w0"]);
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lines.iter().any(|l: &String| l.contains("DELETED"))
        && std::time::Instant::now() < deadline
    {
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            lines.push(l);
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("MODIFIED") && l.contains("w0")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DELETED") && l.contains("w0")),
        "{lines:?}"
    );
}

fn requests_without_the_token_get_401(c: Cluster) {
    let dir = tempfile_dir();
    let cfg = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let token_line = cfg
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .unwrap()
        .to_owned();
    let bad = cfg.replace(&token_line, "    token: wrong");
    let path = write(dir.path(), "bad-kubeconfig", &bad);
    let out = std::process::Command::new("kubectl")
        .args(["get", "cm", "--kubeconfig", &path])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Depending on what kubectl asks first it prints the Status reason or discovery's wording.
    assert!(
        err.contains("You must be logged in to the server")
            || err.contains("the server has asked for the client to provide credentials"),
        "{err}"
    );
}

fn typed_generators_send_protobuf_and_work(c: Cluster) {
    assert_eq!(
        c.ok(&["create", "namespace", "dev"]).trim(),
        "namespace/dev created"
    );
    c.ok(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=1",
        "-n",
        "dev",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=p=x",
        "-n",
        "dev",
    ]);
    c.ok(&[
        "create",
        "deployment",
        "hello",
        "--image=registry.local/hello:1",
        "--replicas=2",
        "-n",
        "dev",
    ]);
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "svc1",
        "--tcp=80:8080",
        "-n",
        "dev",
    ]);
    c.ok(&["create", "serviceaccount", "sa1", "-n", "dev"]);
    c.ok(&["create", "job", "j1", "--image=x:1", "-n", "dev"]);
    c.ok(&[
        "create",
        "cronjob",
        "cj1",
        "--image=x:1",
        "--schedule=*/5 * * * *",
        "-n",
        "dev",
    ]);
    assert_eq!(
        c.ok(&["get", "cm", "c1", "-n", "dev", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "secret",
            "s1",
            "-n",
            "dev",
            "-o",
            "jsonpath={.data.p}"
        ]),
        "eA=="
    );
    let d = c.ok(&["get", "deploy", "hello", "-n", "dev", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.selector.matchLabels.app}"]);
    assert_eq!(d, "2 registry.local/hello:1 hello");
    let svc = c.ok(&[
        "get",
        "svc",
        "svc1",
        "-n",
        "dev",
        "-o",
        "jsonpath={.spec.ports[0].port} {.spec.ports[0].targetPort}",
    ]);
    assert_eq!(svc, "80 8080");
    assert_eq!(
        c.ok(&[
            "get",
            "cj",
            "cj1",
            "-n",
            "dev",
            "-o",
            "jsonpath={.spec.schedule}"
        ]),
        "*/5 * * * *"
    );
    assert_eq!(c.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
}

/// Users of a static token file (`--token-auth-file`) authenticate as themselves:
/// `kubectl auth whoami` names them and their groups, and the audit log records them.
#[test]
fn static_token_users_are_who_they_say() {
    let dir = tempfile_dir();
    let tokens = write(
        dir.path(),
        "tokens.csv",
        "alice-token-0123456789,alice,1001,\"dev,ops\"\n",
    );
    let c = Cluster::start_with(&["--token-auth-file", &tokens]).unwrap();
    let me = c.ok(&["auth", "whoami", "--token=alice-token-0123456789"]);
    assert!(me.contains("alice"), "{me}");
    assert!(me.contains("[dev ops system:authenticated]"), "{me}");
    let admin = c.ok(&["auth", "whoami"]);
    assert!(
        admin.contains("shoal-admin") && admin.contains("system:masters"),
        "{admin}"
    );
    // Nobody may do more than RBAC grants: alice writes once she may edit.
    let refused = c.fails(&[
        "create",
        "configmap",
        "by-alice",
        "--token=alice-token-0123456789",
    ]);
    assert!(
        refused.contains(r#"configmaps is forbidden: User "alice" cannot create resource "configmaps" in API group "" in the namespace "default""#),
        "{refused}"
    );
    c.ok(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    c.ok(&[
        "create",
        "configmap",
        "by-alice",
        "--token=alice-token-0123456789",
    ]);
    eventually("alice in the audit log", || {
        let log = std::fs::read_to_string(c.data_dir.join("audit.log"))?;
        let by_alice = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| {
                e["user"]["username"] == "alice"
                    && e["verb"] == "create"
                    && e["objectRef"]["resource"] == "configmaps"
            });
        anyhow::ensure!(by_alice, "not yet");
        Ok(())
    });
    let err = c.fails(&["get", "cm", "--token=nobody"]);
    assert!(
        err.contains("You must be logged in to the server") || err.contains("provide credentials"),
        "{err}"
    );
}
