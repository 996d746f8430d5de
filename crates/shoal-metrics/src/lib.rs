//! Prometheus metrics for every component, through the `metrics` facade: components record with
//! `metrics::counter!`, `gauge!` and `histogram!` under the names Kubernetes' dashboards use
//! (`apiserver_request_total`, `scheduler_schedule_attempts_total`, `workqueue_depth`, ...), and
//! each component's `/metrics` endpoint serves [`render`]'s text exposition format. There is one
//! recorder per process: under `shoal up`, where the control plane and the kubelet share a
//! process, every endpoint shows the whole process's metrics.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Histogram buckets, in seconds (Kubernetes' request-latency buckets, trimmed).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The content type of [`render`]'s answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls are no-ops). Until it is installed,
/// recording costs nothing and is lost.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's): then ours stays
        // empty, and says so by rendering nothing.
        metrics::set_global_recorder(recorder).ok().map(|()| handle)
    });
}

/// Every metric recorded in this process, in Prometheus' text exposition format.
pub fn render() -> String {
    install();
    match HANDLE.get().and_then(Option::as_ref) {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_gauges_and_histograms_render_as_prometheus_text() {
        super::install();
        metrics::counter!("shoal_test_total", "kind" => "a").increment(2);
        metrics::gauge!("shoal_test_gauge").set(7.0);
        metrics::histogram!("shoal_test_duration_seconds").record(0.003);
        let text = super::render();
        assert!(text.contains("shoal_test_total{kind=\"a\"} 2"), "{text}");
        assert!(text.contains("# TYPE shoal_test_gauge gauge"), "{text}");
        assert!(text.contains("shoal_test_gauge 7"), "{text}");
        assert!(
            text.contains("# TYPE shoal_test_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("shoal_test_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
    }
}
