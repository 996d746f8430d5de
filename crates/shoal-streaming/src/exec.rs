//! exec and attach: the command's standard streams over WebSocket channels or SPDY streams, and
//! its end as a `Status`.

use crate::spdy::{Session, Stream};
use crate::upgrade::{Upgrade, negotiate};
use crate::websocket::{ChannelWriter, chunk_reader, message, read_channels, send_all};
use crate::{SPDY_CHANNEL_PROTOCOLS, WEBSOCKET_CHANNEL_PROTOCOLS};
use axum::extract::Request;
use axum::response::Response;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::json;
use shoal_runtime::ExecIo;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a SPDY client has to open the streams it asked for (Kubernetes' default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Which standard streams the client wants (exec's and attach's query).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Runs the command (or attaches) with the streams it is given; `Ok` is the exit code, `Err` a
/// failure to run it at all.
pub type Runner = Box<dyn FnOnce(ExecIo) -> BoxFuture<'static, Result<i32, String>> + Send>;

/// Answers an exec or attach request: upgrades it and runs `run` on the streams, or says why
/// not (see the crate documentation for the protocols).
pub async fn exec(req: Request, opts: ExecOptions, run: Runner) -> Response {
    let (upgrade, response) =
        match negotiate(req, &WEBSOCKET_CHANNEL_PROTOCOLS, &SPDY_CHANNEL_PROTOCOLS).await {
            Ok(u) => u,
            Err(refused) => return refused,
        };
    match upgrade {
        Upgrade::WebSocket(ws, protocol) => {
            let v5 = protocol.starts_with("v5.");
            ws.on_upgrade(move |socket| over_websocket(socket, opts, v5, run))
        }
        Upgrade::Spdy(io, protocol) => {
            tokio::spawn(async move {
                if let Some(io) = io.await {
                    over_spdy(Session::serve(io), &protocol, opts, run).await;
                }
            });
            response.expect("a SPDY upgrade has its 101")
        }
    }
}

/// The `Status` that ends a v4/v5 stream.
fn end_status(result: &Result<i32, String>) -> serde_json::Value {
    match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => {
            // kubectl reads the exit code as a byte.
            let shown = match code & 0xff {
                0 => 1,
                c => c,
            };
            json!({
                "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": format!("command terminated with non-zero exit code: exit status {shown}"),
                "details": {"causes": [{"reason": "ExitCode", "message": shown.to_string()}]},
            })
        }
        Err(why) => json!({
            "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
            "message": format!("Internal error occurred: {why}"),
            "details": {"causes": [{"message": why}]},
        }),
    }
}

/// v2/v3's error stream: plain text, nothing on success.
fn end_text(result: &Result<i32, String>) -> Option<String> {
    match result {
        Ok(0) => None,
        Ok(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        Err(why) => Some(why.clone()),
    }
}

async fn over_websocket(
    socket: axum::extract::ws::WebSocket,
    opts: ExecOptions,
    v5: bool,
    run: Runner,
) {
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(256);
    let sender = tokio::spawn(send_all(sink, rx));
    let (stdin_tx, stdin_rx) = mpsc::channel(16);
    let stdin = opts.stdin.then(|| {
        Box::new(chunk_reader(stdin_rx)) as Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>
    });
    let io = ExecIo {
        stdin,
        stdout: if opts.stdout {
            Box::new(ChannelWriter::new(1, &tx))
        } else {
            Box::new(tokio::io::sink())
        },
        stderr: match (opts.tty, opts.stderr) {
            (true, _) if opts.stdout => Some(Box::new(ChannelWriter::new(1, &tx))),
            (false, true) => Some(Box::new(ChannelWriter::new(2, &tx))),
            _ => None,
        },
        tty: opts.tty,
    };
    let reader = read_channels(stream, opts.stdin.then_some(stdin_tx), v5);
    let result = tokio::select! {
        r = run(io) => r,
        // The client went away: the command is cancelled with it.
        () = reader => return,
    };
    let status = end_status(&result).to_string();
    let _ = tx.send(message(3, status.as_bytes())).await;
    drop(tx);
    let _ = sender.await;
}

/// The SPDY streams exec and attach use, by `streamType`.
#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, opts: ExecOptions, with_resize: bool) -> bool {
        self.error.is_some()
            && (!opts.stdin || self.stdin.is_some())
            && (!opts.stdout || self.stdout.is_some())
            && (!opts.stderr || opts.tty || self.stderr.is_some())
            && (!(opts.tty && with_resize) || self.resize.is_some())
    }
}

async fn over_spdy(mut session: Session, protocol: &str, opts: ExecOptions, run: Runner) {
    let with_status = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    let with_resize = !protocol.starts_with("v2.");
    let mut s = Streams::default();
    let gathered = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while !s.complete(opts, with_resize) {
            let Some(stream) = session.accept().await else {
                return false;
            };
            let kind = stream.headers.get("streamtype").unwrap_or("").to_owned();
            let slot = match kind.as_str() {
                "error" => &mut s.error,
                "stdin" => &mut s.stdin,
                "stdout" => &mut s.stdout,
                "stderr" => &mut s.stderr,
                "resize" => &mut s.resize,
                _ => {
                    stream.reset(crate::spdy::REFUSED_STREAM).await;
                    continue;
                }
            };
            *slot = Some(stream);
        }
        true
    })
    .await;
    if gathered != Ok(true) {
        tracing::debug!("exec: the client did not open its streams");
        session.close().await;
        return;
    }
    let error = s.error.take().expect("complete");
    // Resizes are read and dropped: WASI has no terminal size to pass them to.
    if let Some(resize) = s.resize.take() {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut resize.reader(), &mut tokio::io::sink()).await;
        });
    }
    let stdout_w = s.stdout.as_ref().map(Stream::writer);
    let stderr_w = s.stderr.as_ref().map(Stream::writer);
    let io = ExecIo {
        stdin: s
            .stdin
            .take()
            .map(|st| Box::new(st.reader()) as Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>),
        stdout: match &s.stdout {
            Some(st) => Box::new(st.writer()),
            None => Box::new(tokio::io::sink()),
        },
        stderr: match (&s.stderr, &s.stdout) {
            (Some(st), _) => Some(Box::new(st.writer())),
            (None, Some(out)) if opts.tty => Some(Box::new(out.writer())),
            _ => None,
        },
        tty: opts.tty,
    };
    let closer = session.closer();
    // The session ends when the client goes: the command is cancelled with it.
    let gone = async move { while session.accept().await.is_some() {} };
    let result = tokio::select! {
        r = run(io) => r,
        () = gone => return,
    };
    for mut w in [stdout_w, stderr_w].into_iter().flatten() {
        w.finish().await;
    }
    let mut ew = error.writer();
    let report = if with_status {
        Some(end_status(&result).to_string())
    } else {
        end_text(&result)
    };
    if let Some(report) = report {
        use tokio::io::AsyncWriteExt;
        let _ = ew.write_all(report.as_bytes()).await;
    }
    ew.finish().await;
    closer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_read_as_kubectl_expects() {
        assert_eq!(end_status(&Ok(0))["status"], "Success");
        let s = end_status(&Ok(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        // 256 would read as 0 (success) in a byte.
        assert_eq!(end_status(&Ok(256))["details"]["causes"][0]["message"], "1");
        let e = end_status(&Err("no container".into()));
        assert_eq!(e["reason"], "InternalError");
        assert_eq!(end_text(&Ok(0)), None);
    }
}
