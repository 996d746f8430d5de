//! `http-echo`: a `wasi:http` server that answers every request with its request line and
//! headers, preceded by `pod: NAME` when `POD_NAME` is set (so callers see which replica
//! answered). `GET /ready` answers 200, or 503 once the Unix time in `READY_UNTIL` has passed
//! (a readiness probe that fails on cue). `GET /bytes/N` answers N bytes (at most 1 GiB), for
//! throughput benchmarks. `GET /sleep/MS` waits MS milliseconds (at most a minute) before it
//! answers as any other request, for tests of requests in flight. `GET /count` answers how many
//! requests this instance has served (1 with a fresh instance per request; more when the
//! runtime reuses instances).

use wstd::http::{Body, Request, Response, StatusCode};

fn ready() -> bool {
    let Some(until) = std::env::var("READY_UNTIL")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return true;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    now < until
}

/// Requests this instance has served.
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[wstd::http_server]
async fn main(req: Request<Body>) -> Result<Response<Body>, wstd::http::Error> {
    let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if target == "/count" {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(format!("count: {served}\n")))?);
    }
    if target == "/ready" {
        let (status, text) = if ready() {
            (StatusCode::OK, "ready\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        };
        return Ok(Response::builder().status(status).body(Body::from(text))?);
    }
    if let Some(n) = target
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n <= 1 << 30)
    {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/octet-stream")
            .body(Body::from(vec![b'x'; n]))?);
    }
    if let Some(ms) = target
        .strip_prefix("/sleep/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        wstd::task::sleep(wstd::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let mut out = String::new();
    if let Ok(pod) = std::env::var("POD_NAME") {
        out.push_str(&format!("pod: {pod}\n"));
    }
    out.push_str(&format!(
        "{} {} {:?}\n",
        req.method(),
        target,
        req.version()
    ));
    if let Some(host) = req.uri().authority() {
        out.push_str(&format!("host: {host}\n"));
    }
    for (name, value) in req.headers() {
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        out.push('\n');
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(out))?)
}
