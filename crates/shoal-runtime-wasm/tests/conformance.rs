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
    Harness {
        runtime: Arc::new(rt),
        exerciser: "shoal.local/exerciser:latest".into(),
        dir: tmp.path().join("pods"),
        guard: Box::new(tmp),
    }
}

shoal_runtime::runtime_conformance!(harness);
