//! CRI's streaming calls (`Exec`, `Attach`) from the client side: the runtime answers with a
//! URL on its streaming server, which speaks Kubernetes' remote-command protocol; this module
//! connects to it and joins it to the kubelet's [`ExecIo`]: over WebSocket
//! (`v4.channel.k8s.io`: one byte of channel — 0 stdin, 1 stdout, 2 stderr, 3 the final
//! Status — then the data, [`run`]) when there is no input, over SPDY/3.1 (one stream each,
//! [`run_spdy`]) when there is, because only SPDY can tell the command its input ended.

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

/// Runs the stream at `url` to its end with `io`, over SPDY when it has input (see the module
/// documentation), else over WebSocket.
pub async fn stream(url: &str, io: ExecIo) -> Result<Option<i32>> {
    if io.stdin.is_some() {
        run_spdy(url, io).await
    } else {
        run(url, io).await
    }
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
    // Input goes out as it comes; with v4 its end cannot be told to the runtime (callers
    // with input use `run_spdy`).
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

/// The SPDY stream ids of the remote-command streams this client opens (odd: client-opened).
const SPDY_ERROR: u32 = 1;
const SPDY_STDIN: u32 = 3;
const SPDY_STDOUT: u32 = 5;
const SPDY_STDERR: u32 = 7;
const SPDY_RESIZE: u32 = 9;

/// Runs the stream at `url` to its end with `io` over SPDY/3.1 (the transport `kubectl exec`
/// spoke before WebSockets, which every streaming server serves): a SPDY stream can be
/// half-closed, so the end of `io.stdin` reaches the command, as `v4.channel.k8s.io` over
/// WebSocket cannot say. Returns the exit code its Status reports, as [`run`] does.
pub async fn run_spdy(url: &str, mut io: ExecIo) -> Result<Option<i32>> {
    use shoal_streaming::spdy::{Frame, FrameReader, FrameWriter, Headers};
    let uri: http::Uri = url.parse().map_err(|e| io_error("streaming URL", e))?;
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| io_error("streaming URL", "no host"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| io_error("connecting to the runtime's streaming server", e))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| io_error("streaming handshake", e))?;
    // The response head, a byte at a time: the server sends nothing after it until streams
    // are opened, so no frame is read into it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(io_error("streaming handshake", "response head too long"));
        }
        head.push(
            tcp.read_u8()
                .await
                .map_err(|e| io_error("streaming handshake", e))?,
        );
    }
    let head = String::from_utf8_lossy(&head);

    if !head.starts_with("HTTP/1.1 101") {
        let line = head.lines().next().unwrap_or_default().to_owned();
        return Err(io_error("streaming handshake", line));
    }
    let (r, w) = tcp.into_split();
    let mut reader = FrameReader::new(r);
    // One writer task: the streams' openings, stdin and the answers to PINGs.
    let (out, mut queued) = tokio::sync::mpsc::channel::<Frame>(64);
    let writing = tokio::spawn(async move {
        let mut writer = FrameWriter::new(w);
        while let Some(frame) = queued.recv().await {
            if writer.write(&frame).await.is_err() {
                break;
            }
            if queued.is_empty() && writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
    });
    let send = |frame: Frame| {
        let out = out.clone();
        async move {
            out.send(frame)
                .await
                .map_err(|_| io_error("exec", "stream closed"))
        }
    };
    // The streams the request asked for (as `exec` and `attach` set them), all opened here.
    let mut streams = vec![(SPDY_ERROR, "error"), (SPDY_STDOUT, "stdout")];
    if io.stdin.is_some() {
        streams.push((SPDY_STDIN, "stdin"));
    }
    streams.push(if io.tty {
        (SPDY_RESIZE, "resize")
    } else {
        (SPDY_STDERR, "stderr")
    });
    // SPDY wants a connection's stream ids increasing.
    streams.sort();
    for (id, kind) in streams {
        let headers = Headers(vec![("streamtype".into(), kind.into())]);
        // Only stdin carries anything from this side: the others are half-closed at once,
        // or the server, closing its connection, waits for them to end.
        send(Frame::SynStream {
            id,
            headers,
            fin: id != SPDY_STDIN,
        })
        .await?;
    }
    let input = io.stdin.take().map(|mut stdin| {
        let out = out.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let (data, fin) = match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => (bytes::Bytes::new(), true),
                    Ok(n) => (bytes::Bytes::copy_from_slice(&buf[..n]), false),
                };
                let frame = Frame::Data {
                    id: SPDY_STDIN,
                    data,
                    fin,
                };
                if out.send(frame).await.is_err() || fin {
                    break;
                }
            }
        })
    });
    let mut status = Vec::new();
    loop {
        let frame = match reader.read().await {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => break,
        };

        match frame {
            Frame::Data { id, data, .. } => match id {
                SPDY_STDOUT => {
                    let _ = io.stdout.write_all(&data).await;
                    let _ = io.stdout.flush().await;
                }
                SPDY_STDERR => {
                    if let Some(err) = io.stderr.as_mut() {
                        let _ = err.write_all(&data).await;
                        let _ = err.flush().await;
                    }
                }
                SPDY_ERROR => status.extend_from_slice(&data),
                _ => {}
            },
            Frame::Ping(id) => send(Frame::Ping(id)).await?,
            Frame::GoAway { .. } => break,
            _ => {}
        }
    }
    if let Some(input) = input {
        input.abort();
    }
    drop(out);
    writing.abort();
    let _ = io.stdout.shutdown().await;
    if status.is_empty() {
        return Ok(None);
    }
    exit_code(&status)
        .map(Some)
        .map_err(|m| io_error("exec", m))
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
