//! The sample plugins in `policies/` against the real host: verdicts, mutation, settings
//! checks, the sandbox's limits, and scheduler handles.

use serde_json::json;
use shoal_plugin_host::admission::{self, AdmissionModule, GroupVersionKind};
use shoal_plugin_host::scheduler::{Amounts, NodeView, PodView, SchedulerModule};
use shoal_plugin_host::{DEFAULT_MEMORY_LIMIT, Host, PluginError};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn host() -> Host {
    static HOST: std::sync::OnceLock<Host> = std::sync::OnceLock::new();
    HOST.get_or_init(|| Host::new(DEFAULT_MEMORY_LIMIT).unwrap())
        .clone()
}

async fn module(name: &str, settings: &str) -> Result<AdmissionModule, PluginError> {
    let bytes = std::fs::read(shoal_testkit::policy(name)).unwrap();
    AdmissionModule::load(&host(), &bytes, None, settings).await
}

fn pod_request(pod: serde_json::Value, settings: &str) -> admission::AdmissionRequest {
    let mut r = admission::request(
        "CREATE",
        GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
        },
        settings,
    );
    r.resource.resource = "pods".into();
    r.namespace = "default".into();
    r.name = pod["metadata"]["name"].as_str().unwrap_or("").into();
    r.object = Some(pod.to_string());
    r
}

fn pod(privileged: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "127.0.0.1:5000/hello:v1",
            "securityContext": {"privileged": privileged}}]}})
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn deny_privileged_denies_with_its_message_and_allows_the_rest() {
    let m = module("deny-privileged", "{}").await.unwrap();
    let v = m
        .review(&pod_request(pod(true), "{}"), false, T)
        .await
        .unwrap();
    assert!(!v.allowed);
    assert_eq!(v.code, 403);
    assert!(
        v.message.contains("container c is privileged"),
        "{}",
        v.message
    );
    let v = m
        .review(&pod_request(pod(false), "{}"), false, T)
        .await
        .unwrap();
    assert!(v.allowed, "{v:?}");
    // hostPath is denied too, unless the settings allow it.
    let mut p = pod(false);
    p["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
    let v = m
        .review(&pod_request(p.clone(), "{}"), false, T)
        .await
        .unwrap();
    assert!(
        v.message.contains("volume root is a hostPath volume"),
        "{v:?}"
    );
    let s = r#"{"allowHostPath": true}"#;
    let v = m.review(&pod_request(p, s), false, T).await.unwrap();
    assert!(v.allowed);
}

#[tokio::test]
async fn settings_are_checked_when_loading() {
    match module("require-labels", "{}").await {
        Err(PluginError::Settings(m)) => assert!(m.contains("settings.labels"), "{m}"),
        other => panic!("expected a settings error, got {:?}", other.err()),
    }
    match module("require-labels", r#"{"labels": ["a"], "lables": 1}"#).await {
        Err(PluginError::Settings(m)) => assert!(m.contains("unknown field"), "{m}"),
        other => panic!("expected a settings error, got {:?}", other.err()),
    }
    let s = r#"{"labels": ["team"]}"#;
    let m = module("require-labels", s).await.unwrap();
    let v = m
        .review(&pod_request(pod(false), s), false, T)
        .await
        .unwrap();
    assert_eq!(v.message, "Pod p is missing required label(s): team");
}

#[tokio::test]
async fn allowed_registries_reads_docker_hub_names() {
    let s = r#"{"registries": ["127.0.0.1:5000"]}"#;
    let m = module("allowed-registries", s).await.unwrap();
    assert!(
        m.review(&pod_request(pod(false), s), false, T)
            .await
            .unwrap()
            .allowed
    );
    let mut p = pod(false);
    p["spec"]["containers"][0]["image"] = json!("nginx");
    let v = m.review(&pod_request(p, s), false, T).await.unwrap();
    assert!(!v.allowed);
    assert!(
        v.message
            .contains("image nginx is not from an allowed registry"),
        "{v:?}"
    );
}

#[tokio::test]
async fn default_limits_patches_containers_without_limits() {
    let s = r#"{"cpu": "250m", "memory": "64Mi"}"#;
    let m = module("default-limits", s).await.unwrap();
    let mut p = pod(false);
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "1"}});
    let v = m.review(&pod_request(p.clone(), s), true, T).await.unwrap();
    assert!(v.allowed);
    assert_eq!(
        v.warnings,
        ["default resource limits added (c: limits.memory=64Mi)"]
    );
    let patch: json_patch::Patch = serde_json::from_value(v.patch.unwrap()).unwrap();
    json_patch::patch(&mut p, &patch).unwrap();
    assert_eq!(
        p["spec"]["containers"][0]["resources"]["limits"],
        json!({"cpu": "1", "memory": "64Mi"})
    );
    // Validating (not mutating) calls never patch.
    let v = m.review(&pod_request(p, s), false, T).await.unwrap();
    assert!(v.allowed && v.patch.is_none());
}

#[tokio::test]
async fn hostile_plugins_hit_their_limits_as_typed_errors() {
    let m = module("hostile", "{}").await.unwrap();
    let req = |b: &str| pod_request(pod(false), &json!({ "behaviour": b }).to_string());
    let started = Instant::now();
    let timeout = Duration::from_millis(300);
    match m.review(&req("loop"), false, timeout).await {
        Err(PluginError::Timeout { after, .. }) => assert_eq!(after, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    match m
        .review(&req("allocate"), false, Duration::from_secs(10))
        .await
    {
        Err(PluginError::Memory { limit, .. }) => assert_eq!(limit, DEFAULT_MEMORY_LIMIT),
        other => panic!("expected the memory cap, got {other:?}"),
    }
    // The panic message the guest wrote to stderr comes with the trap, not on the host's
    // stderr.
    match m.review(&req("trap"), false, T).await {
        Err(e @ PluginError::Trap { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("unreachable") && msg.contains("hostile fixture traps on purpose"),
                "{msg}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The host is fine afterwards.
    assert!(m.review(&req("allow"), false, T).await.unwrap().allowed);
}

/// On a single-threaded runtime, a looping plugin yields at every epoch tick, so another
/// request finishes while it is still running.
#[tokio::test(flavor = "current_thread")]
async fn a_looping_plugin_does_not_stall_other_requests() {
    let hostile = module("hostile", "{}").await.unwrap();
    let good = module("deny-privileged", "{}").await.unwrap();
    let looping = tokio::spawn(async move {
        let r = pod_request(pod(false), r#"{"behaviour": "loop"}"#);
        hostile.review(&r, false, Duration::from_secs(3)).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v = good
        .review(&pod_request(pod(true), "{}"), false, T)
        .await
        .unwrap();
    assert!(!v.allowed);
    assert!(
        !looping.is_finished(),
        "the other request waited for the loop"
    );
    assert!(matches!(
        looping.await.unwrap(),
        Err(PluginError::Timeout { .. })
    ));
}

#[tokio::test]
async fn a_module_with_the_wrong_digest_or_world_is_refused() {
    let bytes = std::fs::read(shoal_testkit::policy("deny-privileged")).unwrap();
    let wrong = "sha256:0000";
    assert!(matches!(
        AdmissionModule::load(&host(), &bytes, Some(wrong), "{}").await,
        Err(PluginError::Digest { .. })
    ));
    let sched = std::fs::read(shoal_testkit::policy("avoid-nodes")).unwrap();
    match AdmissionModule::load(&host(), &sched, None, "{}").await {
        Err(PluginError::Invalid(m)) => assert!(m.contains("shoal:plugin/admission"), "{m}"),
        other => panic!("expected an invalid module, got {:?}", other.err()),
    }
    // Bytes that are not a component are refused without being quoted, digest or not.
    for (bytes, why) in [
        (&b"root:x:0:0:root:/root:/bin/bash"[..], "not WebAssembly"),
        (
            &b"\0asm\x01\0\0\0"[..],
            "a core WebAssembly module, not a component",
        ),
        (&b"\0asm but not really"[..], "not a WebAssembly component"),
    ] {
        match AdmissionModule::load(&host(), bytes, Some("sha256:00"), "{}").await {
            Err(PluginError::Invalid(m)) => {
                assert!(m.contains(why), "{m}");
                assert!(!m.contains("0x") && !m.contains("root"), "{m}");
            }
            other => panic!("expected an invalid module, got {:?}", other.err()),
        }
    }
}

fn node(name: &str, labels: serde_json::Value) -> NodeView {
    let n: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    NodeView {
        node: Arc::new(n),
        allocatable: Amounts::default(),
        requested: Amounts::default(),
    }
}

fn sched_pod(labels: serde_json::Value) -> PodView {
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}}),
    )
    .unwrap();
    PodView {
        pod: Arc::new(p),
        requests: Amounts::default(),
    }
}

/// Scheduler-world calls are synchronous: made on a blocking thread, as the scheduler does.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn sched_module(name: &str, settings: &str) -> Result<SchedulerModule, PluginError> {
    let bytes = std::fs::read(shoal_testkit::policy(name)).unwrap();
    SchedulerModule::load(&host(), &bytes, None, settings).await
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_plugins_read_nodes_through_handles() {
    let s = r#"{"label": "maintenance"}"#;
    let m = sched_module("avoid-nodes", s).await.unwrap();
    blocking(move || {
        let mut c = m.cycle(s, T).unwrap();
        c.set_pod(sched_pod(json!({})));
        assert_eq!(c.pre_filter().unwrap(), Ok(()));
        let nodes = || {
            [
                node("a", json!({})),
                node("b", json!({"maintenance": "yes"})),
            ]
            .into_iter()
        };
        assert_eq!(
            c.filter(nodes()).unwrap(),
            [None, Some("node(s) had label maintenance".to_owned())]
        );
        let mut c = m.cycle(s, T).unwrap();
        c.set_pod(sched_pod(json!({"maintenance-tolerated": "true"})));
        assert_eq!(c.filter(nodes()).unwrap(), [None, None]);
    })
    .await;

    let s = r#"{"label": "tier"}"#;
    let m = sched_module("prefer-nodes", s).await.unwrap();
    blocking(move || {
        let mut c = m.cycle(s, T).unwrap();
        c.set_pod(sched_pod(json!({})));
        let tiers = [
            node("a", json!({"tier": "7"})),
            node("b", json!({"tier": "x"})),
        ];
        assert_eq!(c.score(tiers.into_iter()).unwrap(), [7, 0]);
        assert_eq!(c.normalize(&[7, 0]).unwrap(), None);
    })
    .await;
    assert!(matches!(
        sched_module("prefer-nodes", r#"{"lable": 1}"#).await,
        Err(PluginError::Settings(_))
    ));
}

/// Runs one filter of the hostile scheduler plugin with `behaviour` on a blocking thread of
/// a multi-threaded runtime (where the scheduler calls plugins).
async fn hostile_filter(behaviour: &str, timeout: Duration) -> Result<usize, PluginError> {
    let s = json!({ "behaviour": behaviour, "iterations": 1000 }).to_string();
    let m = sched_module("hostile-scheduler", &s).await.unwrap();
    blocking(move || {
        let mut c = m.cycle(&s, timeout)?;
        c.set_pod(sched_pod(json!({})));
        c.filter([node("a", json!({})), node("b", json!({}))].into_iter())
            .map(|v| v.len())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_scheduler_plugins_fail_as_typed_errors_with_what_they_wrote() {
    let t = Duration::from_millis(200);
    assert_eq!(hostile_filter("allow", t).await.unwrap(), 2);
    // A benign plugin that prints is fine (its line goes to the log, not the host's stderr).
    assert_eq!(hostile_filter("print", t).await.unwrap(), 2);
    assert_eq!(
        hostile_filter("flood", Duration::from_secs(10))
            .await
            .unwrap(),
        2
    );
    assert_eq!(hostile_filter("slow", t).await.unwrap(), 2);
    match hostile_filter("panic", t).await {
        Err(e @ PluginError::Trap { .. }) => assert!(
            e.to_string()
                .contains("hostile scheduler plugin panics on purpose"),
            "{e}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    match hostile_filter("trap", t).await {
        Err(PluginError::Trap { message, .. }) => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // Rust's stack lives in linear memory: overflowing it is an out-of-bounds access (or,
    // for deep enough native frames, wasm's call stack exhausted).
    match hostile_filter("stack", t).await {
        Err(PluginError::Trap { message, .. }) => assert!(
            message.contains("out of bounds") || message.contains("stack"),
            "{message}"
        ),
        other => panic!("expected a stack overflow, got {other:?}"),
    }
    assert!(matches!(
        hostile_filter("loop", t).await,
        Err(PluginError::Timeout { .. })
    ));
    assert!(matches!(
        hostile_filter("allocate", Duration::from_secs(10)).await,
        Err(PluginError::Memory { .. })
    ));
    match hostile_filter("malformed", t).await {
        Err(PluginError::Answer(m)) => assert_eq!(m, "filter returned 3 answers for 2 nodes"),
        other => panic!("expected an invalid answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_failing_cycle_after_cycle_is_benched_without_paying_its_timeout() {
    let s = r#"{"behaviour": "loop"}"#;
    let m = sched_module("hostile-scheduler", s).await.unwrap();
    let health = m.health().clone();
    let t = Duration::from_millis(50);
    blocking(move || {
        for _ in 0..shoal_plugin_host::health::THRESHOLD {
            let mut c = m.cycle(s, t).unwrap();
            c.set_pod(sched_pod(json!({})));
            assert!(matches!(
                c.filter([node("a", json!({}))].into_iter()),
                Err(PluginError::Timeout { .. })
            ));
        }
        let started = Instant::now();
        match m.cycle(s, t) {
            Err(PluginError::Benched(why)) => {
                assert!(
                    why.starts_with("benched for 30s after 5 failures in a row"),
                    "{why}"
                )
            }
            other => panic!("expected the plugin benched, got {:?}", other.err()),
        }
        assert!(started.elapsed() < t, "a benched plugin costs nothing");
    })
    .await;
    assert_eq!(health.failures(), 5);
    assert!(health.benched().is_some());
}
