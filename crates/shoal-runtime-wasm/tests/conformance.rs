//! The runtime conformance suite against the wasmtime backend, with the exerciser sample.

use shoal_runtime::conformance::Harness;
use shoal_runtime_wasm::WasmRuntime;
use std::sync::Arc;

async fn harness() -> Harness {
    let tmp = tempfile::tempdir().unwrap();
    let rt = WasmRuntime::new(tmp.path(), "127.66.0.0/24").unwrap();
    let bytes = std::fs::read(shoal_testkit::guest("exerciser")).unwrap();
    rt.images()
        .import("shoal.local/exerciser:latest", &bytes)
        .unwrap();
    let spare = std::fs::read(shoal_testkit::guest("hello")).unwrap();
    rt.images()
        .import("shoal.local/spare:latest", &spare)
        .unwrap();
    Harness {
        budget: Some(rt.memory_budget().clone()),
        pod_cidr: "127.66.0.0/24".into(),
        runtime: Arc::new(rt),
        exerciser: "shoal.local/exerciser:latest".into(),
        spare: "shoal.local/spare:latest".into(),
        dir: tmp.path().join("pods"),
        guard: Box::new(tmp),
    }
}

shoal_runtime::runtime_conformance!(harness);

mod wasm_only {
    use shoal_runtime::{ContainerConfig, PodRuntime, SandboxConfig};
    use shoal_runtime_wasm::WasmRuntime;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn runtime(tmp: &tempfile::TempDir, cidr: &str, images: &[&str]) -> WasmRuntime {
        let rt = WasmRuntime::new(tmp.path(), cidr).unwrap();
        for name in images {
            let bytes = std::fs::read(shoal_testkit::guest(name)).unwrap();
            rt.images()
                .import(&format!("shoal.local/{name}"), &bytes)
                .unwrap();
        }
        rt
    }

    fn sandbox_config(tmp: &tempfile::TempDir, name: &str) -> SandboxConfig {
        SandboxConfig {
            name: name.into(),
            namespace: "default".into(),
            uid: name.into(),
            log_directory: tmp.path().join(name),
            ..Default::default()
        }
    }

    /// Starts an http-echo pod `name` in `rt` with `memory_limit` and pod `annotations`;
    /// its address and container.
    async fn start_echo(
        rt: &WasmRuntime,
        tmp: &tempfile::TempDir,
        name: &str,
        memory_limit: Option<u64>,
        annotations: &[(&str, &str)],
    ) -> (std::net::SocketAddr, shoal_runtime::ContainerId) {
        let mut cfg = sandbox_config(tmp, name);
        for (k, v) in annotations {
            cfg.annotations.insert((*k).into(), (*v).into());
        }
        let sb = rt.run_pod_sandbox(&cfg).await.unwrap();
        let id = rt
            .create_container(
                &sb.id,
                ContainerConfig {
                    name: "echo".into(),
                    image: "shoal.local/http-echo".into(),
                    ports: vec![8080],
                    memory_limit,
                    log_path: tmp.path().join(format!("{name}/0.log")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();
        (std::net::SocketAddr::new(sb.ip, 8080), id)
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: pod\r\nX-Probe: yes\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_echo_is_served_on_the_pod_ip_with_a_fresh_instance_per_request() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp, "127.67.0.0/24", &["http-echo"]);
        let (addr, id) = start_echo(&rt, &tmp, "echo", None, &[]).await;
        for i in 0..3 {
            let resp = tokio::task::spawn_blocking(move || get(addr, &format!("/hello/{i}")))
                .await
                .unwrap();
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
            assert!(resp.contains(&format!("GET /hello/{i}")), "{resp}");
            assert!(resp.to_lowercase().contains("x-probe: yes"), "{resp}");
        }
        rt.stop_container(&id, Duration::from_secs(1))
            .await
            .unwrap();
        let st = rt.container_status(&id).await.unwrap();
        assert!(st.exited());
        // The address is free again once stopped.
        assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limited_http_containers_take_pooled_instances_and_fall_back_when_the_pool_is_full() {
        let tmp = tempfile::tempdir().unwrap();
        // Room for one pooled instance at a time in each pool.
        let rt = WasmRuntime::with_pool(tmp.path(), "127.69.0.0/24", 1).unwrap();
        let bytes = std::fs::read(shoal_testkit::guest("http-echo")).unwrap();
        rt.images().import("shoal.local/http-echo", &bytes).unwrap();
        let limited = start_echo(&rt, &tmp, "limited", Some(64 << 20), &[])
            .await
            .0;
        let unlimited = start_echo(&rt, &tmp, "unlimited", None, &[]).await.0;
        let fetch = |addr, path: &'static str| tokio::task::spawn_blocking(move || get(addr, path));
        // One at a time: every instance of the limited container comes from the pool. An
        // instance gives its slot back when its task ends, which may be just after the
        // response arrived: the next request waits for that.
        for _ in 0..3 {
            assert!(
                fetch(limited, "/")
                    .await
                    .unwrap()
                    .starts_with("HTTP/1.1 200")
            );
            let deadline = std::time::Instant::now() + shoal_testkit::patience();
            while rt.pooled_in_use() > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a pool slot never given back"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert_eq!(rt.http_instances(), (3, 0));
        // Without a limit it may outgrow a slot: on demand.
        assert!(
            fetch(unlimited, "/")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
        assert_eq!(rt.http_instances(), (3, 1));
        // Two at once with one slot: the second is made on demand, and both answer.
        let (a, b) = tokio::join!(fetch(limited, "/sleep/500"), fetch(limited, "/sleep/500"));
        assert!(a.unwrap().starts_with("HTTP/1.1 200"));
        assert!(b.unwrap().starts_with("HTTP/1.1 200"));
        assert_eq!(rt.http_instances(), (4, 2));
        // A limit past the small slots: the pool of large slots.
        let large = start_echo(&rt, &tmp, "large", Some(512 << 20), &[]).await.0;
        assert!(fetch(large, "/").await.unwrap().starts_with("HTTP/1.1 200"));
        assert_eq!(rt.http_instances(), (5, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_that_opts_in_reuses_instances_and_others_get_a_fresh_one_per_request() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp, "127.70.0.0/24", &["http-echo"]);
        let addrs = [
            start_echo(&rt, &tmp, "fresh", None, &[]).await.0,
            start_echo(
                &rt,
                &tmp,
                "reused",
                None,
                &[(shoal_runtime::INSTANCE_REUSE, "true")],
            )
            .await
            .0,
        ];
        let count = |addr| async move {
            let resp = tokio::task::spawn_blocking(move || get(addr, "/count"))
                .await
                .unwrap();
            resp.lines()
                .find_map(|l| l.strip_prefix("count: "))
                .unwrap_or_else(|| panic!("{resp}"))
                .to_owned()
        };
        for _ in 0..3 {
            assert_eq!(count(addrs[0]).await, "1");
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(count(addrs[1]).await);
        }
        assert_eq!(seen, ["1", "2", "3"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_standby_handler_answers_from_a_template_with_no_pod() {
        use http_body_util::BodyExt;
        use shoal_runtime::local_http::Standby;
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp, "127.71.0.0/24", &["http-echo", "exerciser"]);
        let template = Standby {
            image: "shoal.local/http-echo".into(),
            command: vec![],
            args: vec![],
            env: vec![("POD_NAME".into(), "standby-of-fn".into())],
            working_dir: None,
            memory_limit: Some(64 << 20),
        };
        let handler = rt.standby_handler(&template).expect("a standby handler");
        for i in 0..2 {
            let mut req = http::Request::new(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *req.uri_mut() = format!("/first/{i}").parse().unwrap();
            req.headers_mut()
                .insert(http::header::HOST, "fn.test".parse().unwrap());
            let resp = handler(req).await;
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains(&format!("GET /first/{i}")), "{text}");
            assert!(text.contains("pod: standby-of-fn"), "{text}");
        }
        // Fresh instances, no pod: nothing runs on the node afterwards.
        assert!(rt.list_pod_sandbox_stats().await.unwrap().is_empty());
        // An image the node does not have, or a command component: no standby.
        let missing = Standby {
            image: "shoal.local/nowhere".into(),
            ..template.clone()
        };
        assert!(rt.standby_handler(&missing).is_none());
        let command = Standby {
            image: "shoal.local/exerciser".into(),
            ..template
        };
        assert!(rt.standby_handler(&command).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cpu_limit_holds_a_spinner_to_its_share() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp, "127.68.0.0/24", &["exerciser"]);
        let sb = rt
            .run_pod_sandbox(&sandbox_config(&tmp, "spin"))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for (name, cpu) in [("limited", Some(100)), ("free", None)] {
            let id = rt
                .create_container(
                    &sb.id,
                    ContainerConfig {
                        name: name.into(),
                        image: "shoal.local/exerciser".into(),
                        args: vec!["spin".into(), "1".into()],
                        cpu_limit_millis: cpu,
                        log_path: tmp.path().join(format!("spin/{name}.log")),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            ids.push(id);
        }
        for id in &ids {
            rt.start_container(id).await.unwrap();
        }
        let mut iterations = Vec::new();
        for (id, name) in ids.iter().zip(["limited", "free"]) {
            let st = tokio::time::timeout(Duration::from_secs(20), rt.wait_container(id))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(st.exit_code, 0, "{st:?}");
            let log = std::fs::read_to_string(tmp.path().join(format!("spin/{name}.log"))).unwrap();
            let n: f64 = log
                .split(": ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no iteration count in {log:?}"));
            iterations.push(n);
        }
        // 100m of one core against a whole core, with generous slack for a busy machine.
        assert!(
            iterations[0] < iterations[1] * 0.35,
            "limited spinner did {} iterations, unlimited {}",
            iterations[0],
            iterations[1]
        );
    }

    /// Pushes `bytes` to `image` with `layer_type` as the layer's media type.
    async fn push_as(image: &str, bytes: Vec<u8>, layer_type: &str) {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        let reference: oci_client::Reference = image.parse().unwrap();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        client
            .push(
                &reference,
                &[ImageLayer::new(bytes, layer_type.to_owned(), None)],
                Config::new(
                    b"{}".to_vec(),
                    shoal_wasm::oci::WASM_CONFIG_TYPE.to_owned(),
                    None,
                ),
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn components_are_pulled_from_an_oci_registry_in_every_layout() {
        let registry = shoal_testkit::registry::Registry::start().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime(&tmp, "127.68.0.0/24", &[]);
        let hello = std::fs::read(shoal_testkit::guest("hello")).unwrap();
        let digest = shoal_runtime_wasm::images::sha256_digest(&hello);

        let pushed = format!("{}/samples/hello:v1", registry.host);
        shoal_wasm::oci::push(&pushed, hello.clone()).await.unwrap();
        let img = rt.pull_image(&pushed).await.unwrap();
        assert_eq!(img.digest, digest);
        assert_eq!(
            rt.image_status(&pushed).await.unwrap().unwrap().digest,
            digest
        );

        for (i, layer) in shoal_wasm::oci::WASM_LAYER_TYPES.iter().enumerate() {
            let name = format!("{}/samples/layout{i}:v1", registry.host);
            push_as(&name, hello.clone(), layer).await;
            assert_eq!(
                rt.pull_image(&name).await.unwrap().digest,
                digest,
                "{layer}"
            );
        }

        // The pulled component runs.
        let sb = rt
            .run_pod_sandbox(&sandbox_config(&tmp, "pulled"))
            .await
            .unwrap();
        let log = tmp.path().join("pulled/0.log");
        let id = rt
            .create_container(
                &sb.id,
                ContainerConfig {
                    name: "hello".into(),
                    image: pushed.clone(),
                    log_path: log.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();
        let st = rt.wait_container(&id).await.unwrap();
        assert_eq!(st.exit_code, 0);
        assert!(std::fs::read_to_string(&log).unwrap().contains("Hello"));

        // Missing artifacts, non-Wasm layers and unknown registries are pull errors.
        let missing = format!("{}/samples/nope:v1", registry.host);
        assert!(matches!(
            rt.pull_image(&missing).await,
            Err(shoal_runtime::RuntimeError::ImagePull { .. })
        ));
        let not_wasm = format!("{}/samples/text:v1", registry.host);
        push_as(&not_wasm, b"plain text".to_vec(), "text/plain").await;
        assert!(rt.pull_image(&not_wasm).await.is_err());
        assert!(rt.pull_image("shoal.local/absent:latest").await.is_err());

        // An OCI container image is told apart: another runtime's.
        let container = format!("{}/samples/busybox:v1", registry.host);
        shoal_wasm::oci::push_layer(
            &container,
            (vec![0; 1024], "application/vnd.oci.image.layer.v1.tar"),
            (b"{}".to_vec(), "application/vnd.oci.image.config.v1+json"),
        )
        .await
        .unwrap();
        assert!(matches!(
            rt.pull_image(&container).await,
            Err(shoal_runtime::RuntimeError::ContainerImage { .. })
        ));

        // Through a mirror, under its own name.
        rt.set_mirrors(vec![(
            "mirror.test".into(),
            format!("http://{}", registry.host),
        )]);
        let img = rt.pull_image("mirror.test/samples/hello:v1").await.unwrap();
        assert_eq!(img.digest, digest);
        assert!(
            img.names
                .iter()
                .any(|n| n == "mirror.test/samples/hello:v1"),
            "{img:?}"
        );
    }
}
