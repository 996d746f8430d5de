//! The WebSocket side: channel writers for exec and attach, and the byte pipe SPDY is
//! tunnelled through for port-forward.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// What one message carries at most.
const MAX_MESSAGE: usize = 32 * 1024;

/// Writes to one channel: every write is one binary message, the channel byte first.
pub(crate) struct ChannelWriter {
    channel: u8,
    out: PollSender<Message>,
}

impl ChannelWriter {
    pub(crate) fn new(channel: u8, out: &mpsc::Sender<Message>) -> Self {
        ChannelWriter {
            channel,
            out: PollSender::new(out.clone()),
        }
    }
}

/// A binary message on `channel`.
pub(crate) fn message(channel: u8, data: &[u8]) -> Message {
    let mut m = BytesMut::with_capacity(data.len() + 1);
    m.put_u8(channel);
    m.put_slice(data);
    Message::Binary(m.freeze())
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.out.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.len().min(MAX_MESSAGE);
        let m = message(self.channel, &buf[..n]);
        match self.out.send_item(m) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Sends what `rx` yields on `sink` until the queue closes, then a normal close.
pub(crate) async fn send_all(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(m) = rx.recv().await {
        if sink.send(m).await.is_err() {
            return;
        }
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    let _ = sink.close().await;
}

/// Turns a WebSocket into a byte stream: binary messages in, binary messages out (port-forward's
/// SPDY tunnel). The returned end reads what the client sends and writes back to it.
pub(crate) fn byte_pipe(socket: WebSocket) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut sink, mut stream) = socket.split();
    let (mut r, mut w) = tokio::io::split(theirs);
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Binary(b) if w.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = w.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    });
    ours
}

/// What the client sends on the channel WebSocket: stdin data, its end, and whether the client
/// is still there.
pub(crate) async fn read_channels(
    mut stream: futures::stream::SplitStream<WebSocket>,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    v5: bool,
) {
    while let Some(Ok(m)) = stream.next().await {
        let b = match m {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        match b.first() {
            Some(0) => {
                if let Some(tx) = &stdin
                    && b.len() > 1
                    && tx.send(b.slice(1..)).await.is_err()
                {
                    stdin = None;
                }
            }
            // The close signal: `[255, 0]` ends stdin.
            Some(255) if v5 && b.get(1) == Some(&0) => stdin = None,
            // Terminal resizes: WASI has no terminal size to pass them to.
            _ => {}
        }
    }
}

/// A reader over the chunks a channel receives.
pub(crate) fn chunk_reader(
    rx: mpsc::Receiver<Bytes>,
) -> impl AsyncRead + Send + Sync + Unpin + 'static {
    let rx = tokio_stream::wrappers::ReceiverStream::new(rx);
    tokio_util::io::StreamReader::new(rx.map(Ok::<_, io::Error>))
}
