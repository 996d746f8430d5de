//! Telling the upgrades apart, negotiating their protocols, and the errors a client reads.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use hyper_util::rt::TokioIo;

/// The header SPDY clients name their stream protocols in.
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// A Kubernetes `Status` error response.
pub(crate) fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn upgrade_is(headers: &HeaderMap, what: &str) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(what))
}

/// How a client asks to stream.
pub(crate) enum Upgrade {
    WebSocket(WebSocketUpgrade, String),
    Spdy(TokioIoFuture, String),
}

/// The SPDY connection once the 101 has been sent.
pub(crate) type TokioIoFuture =
    std::pin::Pin<Box<dyn Future<Output = Option<TokioIo<hyper::upgrade::Upgraded>>> + Send>>;

/// Negotiates a WebSocket upgrade speaking one of `ws` or a SPDY/3.1 upgrade speaking one of
/// `spdy` (the client's preference first, as Kubernetes picks). `Err` is the answer to send:
/// 400 without an upgrade or a WebSocket protocol in common (kubectl then tries SPDY), 403 when
/// no SPDY protocol is in common.
pub(crate) async fn negotiate(
    req: Request,
    ws: &[&'static str],
    spdy: &[&str],
) -> Result<(Upgrade, Option<Response>), Response> {
    let (mut parts, _body) = req.into_parts();
    if upgrade_is(&parts.headers, "websocket") {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| status(StatusCode::BAD_REQUEST, "BadRequest", e.body_text()))?
            .protocols(ws.iter().copied());
        let Some(chosen) = upgrade
            .selected_protocol()
            .and_then(|p| p.to_str().ok())
            .map(str::to_owned)
        else {
            let offered = parts
                .headers
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports [{offered}], server supports {ws:?}"
                ),
            ));
        };
        return Ok((Upgrade::WebSocket(upgrade, chosen), None));
    }
    if upgrade_is(&parts.headers, "SPDY/3.1") {
        let offered: Vec<String> = parts
            .headers
            .get_all(PROTOCOL_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        let Some(chosen) = offered.iter().find(|p| spdy.contains(&p.as_str())).cloned() else {
            return Err(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {spdy:?}"
                ),
            ));
        };
        let on = hyper::upgrade::on(http::Request::from_parts(parts, Body::empty()));
        let io: TokioIoFuture = Box::pin(async move {
            match on.await {
                Ok(u) => Some(TokioIo::new(u)),
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY upgrade failed");
                    None
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header(PROTOCOL_HEADER, chosen.as_str())
            .body(Body::empty())
            .expect("a valid 101 response");
        return Ok((Upgrade::Spdy(io, chosen), Some(response)));
    }
    Err(status(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "Upgrade request required",
    ))
}
