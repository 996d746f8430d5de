//! port-forward: SPDY streams in pairs (error and data, one pair per forwarded connection, tied
//! by `requestID`), each connected to the pod's port.

use crate::spdy::{Session, Stream};
use crate::upgrade::{Upgrade, negotiate};
use crate::websocket::byte_pipe;
use crate::{PORT_FORWARD_PROTOCOL, PORT_FORWARD_WEBSOCKET_PROTOCOL};
use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Connects to the pod's port.
pub type Dialer = Arc<dyn Fn(u16) -> BoxFuture<'static, std::io::Result<TcpStream>> + Send + Sync>;

/// Answers a port-forward request: upgrades it and forwards every connection the client opens
/// through `dial`.
pub async fn port_forward(req: Request, dial: Dialer) -> Response {
    let (upgrade, response) = match negotiate(
        req,
        &[PORT_FORWARD_WEBSOCKET_PROTOCOL],
        &[PORT_FORWARD_PROTOCOL],
    )
    .await
    {
        Ok(u) => u,
        Err(refused) => return refused,
    };
    match upgrade {
        Upgrade::WebSocket(ws, _) => {
            ws.on_upgrade(move |socket| serve(Session::serve(byte_pipe(socket)), dial))
        }
        Upgrade::Spdy(io, _) => {
            tokio::spawn(async move {
                if let Some(io) = io.await {
                    serve(Session::serve(io), dial).await;
                }
            });
            response.expect("a SPDY upgrade has its 101")
        }
    }
}

/// A connection's streams as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

async fn serve(mut session: Session, dial: Dialer) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = session.accept().await {
        let request = stream.headers.get("requestid").unwrap_or("").to_owned();
        let kind = stream.headers.get("streamtype").unwrap_or("").to_owned();
        let pair = pending.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" => pair.error = Some(stream),
            "data" => pair.data = Some(stream),
            _ => {
                stream.reset(crate::spdy::REFUSED_STREAM).await;
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Pair { error, data } = pending.remove(&request).expect("just filled");
            tokio::spawn(forward(
                error.expect("checked"),
                data.expect("checked"),
                dial.clone(),
            ));
        }
    }
}

async fn forward(error: Stream, data: Stream, dial: Dialer) {
    let mut ew = error.writer();
    let port = data.headers.get("port").unwrap_or("").to_owned();
    let conn = match port.parse::<u16>() {
        Ok(p) if p > 0 => dial(p)
            .await
            .map_err(|e| format!("error forwarding port {p} to pod: {e}")),
        _ => Err(format!("invalid port header {port:?}")),
    };
    let (mut from_client, mut to_client) = data.split();
    match conn {
        Ok(tcp) => {
            let _ = tcp.set_nodelay(true);
            let (mut pod_r, mut pod_w) = tcp.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut from_client, &mut pod_w).await;
                let _ = pod_w.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut pod_r, &mut to_client).await;
                to_client.finish().await;
            };
            tokio::join!(up, down);
        }
        Err(why) => {
            let _ = ew.write_all(why.as_bytes()).await;
            to_client.finish().await;
        }
    }
    ew.finish().await;
    drop(error);
}
