//! CRI's streaming calls (`Exec`, `Attach`) from the client side: the runtime answers with a
//! URL on its streaming server, which speaks Kubernetes' remote-command protocol; this module
//! connects to it over WebSocket (`v4.channel.k8s.io`: one byte of channel — 0 stdin,
//! 1 stdout, 2 stderr, 3 the final Status — then the data) and joins it to the kubelet's
//! [`ExecIo`].

use futures::{SinkExt, StreamExt};
use shoal_runtime::{ExecIo, Result, RuntimeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;

fn io_error(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Io(std::io::Error::other(format!("{what}: {e}")))
}

/// The exit code a final remote-command Status gives: 0 for `Success`, the `ExitCode` cause
/// of a `NonZeroExitCode` failure; `None` for another failure (its message is the error).
pub fn exit_code(status: &[u8]) -> std::result::Result<i32, String> {
    let v: serde_json::Value =
        serde_json::from_slice(status).map_err(|e| format!("unreadable exec status: {e}"))?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode" {
        let code = v["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str()?.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(v["message"].as_str().unwrap_or("exec failed").to_owned())
}

/// Runs the stream at `url` to its end with `io`; the exit code its Status reports (`None`
/// when the stream ended without one, as an attach does when the container exits).
pub async fn run(url: &str, mut io: ExecIo) -> Result<Option<i32>> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| io_error("streaming URL", e))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| io_error("streaming URL", "no host"))?;
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| io_error("connecting to the runtime's streaming server", e))?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| io_error("streaming handshake", e))?;
    let (mut tx, mut rx) = ws.split();
    // Input goes out as it comes; with v4 its end cannot be told to the runtime.
    let input = io.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            buf[0] = STDIN;
            loop {
                match stdin.read(&mut buf[1..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frame = Message::Binary(buf[..=n].to_vec().into());
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                }
            }
            tx
        })
    });
    let mut code = None;
    while let Some(msg) = rx.next().await {
        let data = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            STDOUT => {
                let _ = io.stdout.write_all(payload).await;
                let _ = io.stdout.flush().await;
            }
            STDERR => match io.stderr.as_mut() {
                Some(err) => {
                    let _ = err.write_all(payload).await;
                    let _ = err.flush().await;
                }
                None if io.tty => {
                    let _ = io.stdout.write_all(payload).await;
                }
                None => {}
            },
            ERROR if !payload.is_empty() => {
                code = Some(exit_code(payload).map_err(|m| io_error("exec", m))?);
            }
            _ => {}
        }
    }
    if let Some(input) = input {
        input.abort();
    }
    let _ = io.stdout.shutdown().await;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_give_exit_codes() {
        assert_eq!(exit_code(br#"{"metadata":{},"status":"Success"}"#), Ok(0));
        let failed = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_code(failed), Ok(3));
        let other = br#"{"status":"Failure","message":"no such container"}"#;
        assert_eq!(exit_code(other), Err("no such container".into()));
    }
}
