//! SPDY/3.1 as Kubernetes' clients speak it (moby/spdystream under client-go): frames, header
//! blocks compressed with zlib and SPDY/3's preset dictionary, and a [`Session`] that accepts the
//! streams a client opens. spdystream keeps no flow-control windows, so neither does this.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// `RST_STREAM` status: the stream is refused / cancelled.
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;
/// Larger frames are a protocol error (data frames carry at most 2^24-1 bytes anyway).
const MAX_FRAME: usize = 1 << 24;
/// What one outgoing data frame carries at most.
const MAX_DATA: usize = 32 * 1024;
/// Frames a stream buffers before the session stops reading (back-pressure on the client).
const STREAM_QUEUE: usize = 64;

/// The header-compression dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00 §2.6.10.1):
/// length-prefixed words, then a run of common values.
fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=",
            "iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn protocol(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A stream's headers, names lower-cased as SPDY sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_u32(self.0.len() as u32);
        for (k, v) in &self.0 {
            b.put_u32(k.len() as u32);
            b.put_slice(k.to_ascii_lowercase().as_bytes());
            b.put_u32(v.len() as u32);
            b.put_slice(v.as_bytes());
        }
        b
    }

    fn decode(mut b: &[u8]) -> io::Result<Self> {
        let take = |b: &mut &[u8]| -> io::Result<String> {
            if b.remaining() < 4 {
                return Err(protocol("truncated header block"));
            }
            let n = b.get_u32() as usize;
            if b.remaining() < n {
                return Err(protocol("truncated header block"));
            }
            let s = String::from_utf8_lossy(&b[..n]).into_owned();
            b.advance(n);
            Ok(s)
        };
        if b.remaining() < 4 {
            return Err(protocol("truncated header block"));
        }
        let n = b.get_u32() as usize;
        let mut out = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let k = take(&mut b)?;
            let v = take(&mut b)?;
            out.push((k.to_ascii_lowercase(), v));
        }
        Ok(Headers(out))
    }
}

/// One frame, as read or to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    SynReply {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last: u32,
    },
    Data {
        id: u32,
        data: Bytes,
        fin: bool,
    },
    /// SETTINGS, HEADERS, WINDOW_UPDATE and the rest: read and ignored.
    Other(u16),
}

/// Reads frames, keeping the connection's header decompressor.
pub struct FrameReader<R> {
    io: R,
    inflate: flate2::Decompress,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            inflate: flate2::Decompress::new(true),
        }
    }

    /// The next frame; `None` at a clean end of the connection.
    pub async fn read(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len >= MAX_FRAME {
            return Err(protocol("frame too large"));
        }
        let mut payload = BytesMut::zeroed(len);
        self.io.read_exact(&mut payload).await?;
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                id,
                data: payload.freeze(),
                fin,
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(protocol(format!("unsupported SPDY version {version}")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let mut p = &payload[..];
        let word = |p: &mut &[u8]| -> io::Result<u32> {
            if p.remaining() < 4 {
                return Err(protocol("truncated control frame"));
            }
            Ok(p.get_u32())
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                let id = word(&mut p)? & 0x7fff_ffff;
                let _associated = word(&mut p)?;
                if p.remaining() < 2 {
                    return Err(protocol("truncated SYN_STREAM"));
                }
                p.advance(2);
                let headers = Headers::decode(&self.inflate(p)?)?;
                Frame::SynStream { id, headers, fin }
            }
            SYN_REPLY => {
                let id = word(&mut p)? & 0x7fff_ffff;
                let headers = Headers::decode(&self.inflate(p)?)?;
                Frame::SynReply { id, headers, fin }
            }
            RST_STREAM => Frame::RstStream {
                id: word(&mut p)? & 0x7fff_ffff,
                status: word(&mut p)?,
            },
            PING => Frame::Ping(word(&mut p)?),
            GOAWAY => Frame::GoAway {
                last: word(&mut p)? & 0x7fff_ffff,
            },
            other => Frame::Other(other),
        }))
    }

    /// Inflates one header block with the connection's zlib stream.
    fn inflate(&mut self, mut input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            let before = self.inflate.total_in();
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let r = self
                .inflate
                .decompress_vec(input, &mut out, flate2::FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match r {
                Ok(_) if input.is_empty() && out.len() < out.capacity() => return Ok(out),
                Ok(_) => {
                    if out.len() > MAX_FRAME {
                        return Err(protocol("header block too large"));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(protocol(format!("header block: {e}"))),
            }
        }
    }
}

/// Writes frames, keeping the connection's header compressor.
pub struct FrameWriter<W> {
    io: W,
    deflate: flate2::Compress,
    started: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        FrameWriter {
            io,
            deflate: flate2::Compress::new(flate2::Compression::default(), true),
            started: false,
        }
    }

    fn deflate(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        if !self.started {
            self.deflate
                .set_dictionary(dictionary())
                .map_err(|e| protocol(format!("header dictionary: {e}")))?;
            self.started = true;
        }
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = block;
        loop {
            let before = self.deflate.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            self.deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Sync)
                .map_err(|e| protocol(format!("header block: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when all input is in and the flush fitted with room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn control(buf: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
        buf.put_u16(0x8000 | VERSION);
        buf.put_u16(kind);
        buf.put_u32((u32::from(flags) << 24) | payload.len() as u32);
        buf.put_slice(payload);
    }

    /// Encodes `frame` and writes it (unflushed).
    pub async fn write(&mut self, frame: &Frame) -> io::Result<()> {
        let mut buf = Vec::new();
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::SynStream { id, headers, fin } => {
                let mut p = Vec::new();
                p.put_u32(*id);
                p.put_u32(0);
                p.put_u16(0);
                p.extend(self.deflate(&headers.encode())?);
                Self::control(&mut buf, SYN_STREAM, fin_flag(*fin), &p);
            }
            Frame::SynReply { id, headers, fin } => {
                let mut p = Vec::new();
                p.put_u32(*id);
                p.extend(self.deflate(&headers.encode())?);
                Self::control(&mut buf, SYN_REPLY, fin_flag(*fin), &p);
            }
            Frame::RstStream { id, status } => {
                let mut p = Vec::new();
                p.put_u32(*id);
                p.put_u32(*status);
                Self::control(&mut buf, RST_STREAM, 0, &p);
            }
            Frame::Ping(id) => Self::control(&mut buf, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last } => {
                let mut p = Vec::new();
                p.put_u32(*last);
                p.put_u32(0);
                Self::control(&mut buf, GOAWAY, 0, &p);
            }
            Frame::Data { id, data, fin } => {
                buf.put_u32(*id & 0x7fff_ffff);
                buf.put_u32((u32::from(fin_flag(*fin)) << 24) | data.len() as u32);
                self.io.write_all(&buf).await?;
                return self.io.write_all(data).await;
            }
            Frame::Other(_) => return Ok(()),
        }
        self.io.write_all(&buf).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.io.flush().await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }
}

/// What the session's writer task sends.
enum Out {
    Frame(Frame),
    /// Ends the session: GOAWAY, then the connection is shut down.
    Close,
}

/// A stream the client opened: its headers, what it sends, and a way to answer.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    data: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
}

impl Stream {
    /// What the client sends on it, ending at its FIN or reset (or the connection's end).
    pub fn reader(self) -> impl AsyncRead + Send + Sync + Unpin + 'static {
        let rx = tokio_stream::wrappers::ReceiverStream::new(self.data);
        tokio_util::io::StreamReader::new(futures::StreamExt::map(rx, Ok::<_, io::Error>))
    }

    /// Writes to this stream; shutting the writer down sends FIN.
    pub fn writer(&self) -> StreamWriter {
        StreamWriter {
            id: self.id,
            out: PollSender::new(self.out.clone()),
            finished: false,
        }
    }

    /// Splits the stream into what the client sends and a writer back.
    pub fn split(self) -> (impl AsyncRead + Send + Sync + Unpin + 'static, StreamWriter) {
        let w = self.writer();
        (self.reader(), w)
    }

    /// Resets the stream.
    pub async fn reset(&self, status: u32) {
        let _ = self
            .out
            .send(Out::Frame(Frame::RstStream {
                id: self.id,
                status,
            }))
            .await;
    }
}

/// Writes data frames on one stream; `shutdown` sends FIN once.
pub struct StreamWriter {
    id: u32,
    out: PollSender<Out>,
    finished: bool,
}

impl StreamWriter {
    /// Sends FIN (once), without waiting for the writer's other users.
    pub async fn finish(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.shutdown().await;
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.finished {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match self.out.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.len().min(MAX_DATA);
        let id = self.id;
        let frame = Out::Frame(Frame::Data {
            id,
            data: Bytes::copy_from_slice(&buf[..n]),
            fin: false,
        });
        match self.out.send_item(frame) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.finished {
            return Poll::Ready(Ok(()));
        }
        match self.out.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {}
        }
        let id = self.id;
        let _ = self.out.send_item(Out::Frame(Frame::Data {
            id,
            data: Bytes::new(),
            fin: true,
        }));
        self.finished = true;
        Poll::Ready(Ok(()))
    }
}

/// The server side of a SPDY connection: every stream the client opens is answered with
/// SYN_REPLY and handed out by [`Session::accept`]; PINGs are echoed.
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
}

impl Session {
    /// Serves SPDY on `io` (an upgraded connection) until either side ends it.
    pub fn serve<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel::<Out>(256);
        let (in_tx, in_rx) = mpsc::channel::<Stream>(64);
        tokio::spawn(write_loop(FrameWriter::new(w), out_rx));
        tokio::spawn(read_loop(FrameReader::new(r), in_tx, out_tx.clone()));
        Session {
            incoming: in_rx,
            out: out_tx,
        }
    }

    /// The next stream the client opens; `None` once the connection has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Ends the session after everything already queued has been written.
    pub async fn close(&self) {
        let _ = self.out.send(Out::Close).await;
    }

    /// A handle that can end the session from elsewhere.
    pub fn closer(&self) -> Closer {
        Closer(self.out.clone())
    }
}

/// Ends a [`Session`] (see [`Session::close`]).
#[derive(Clone)]
pub struct Closer(mpsc::Sender<Out>);

impl Closer {
    pub async fn close(&self) {
        let _ = self.0.send(Out::Close).await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: FrameWriter<W>, mut rx: mpsc::Receiver<Out>) {
    while let Some(out) = rx.recv().await {
        let done = match out {
            Out::Frame(f) => w.write(&f).await.is_err(),
            Out::Close => {
                let _ = w.write(&Frame::GoAway { last: 0 }).await;
                true
            }
        };
        // Write whatever else is already queued before flushing.
        if done || rx.is_empty() && w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: FrameReader<R>,
    incoming: mpsc::Sender<Stream>,
    out: mpsc::Sender<Out>,
) {
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let frame = match r.read().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY connection ended");
                break;
            }
        };
        match frame {
            Frame::SynStream { id, headers, fin } => {
                let reply = Frame::SynReply {
                    id,
                    headers: Headers::default(),
                    fin: false,
                };
                if out.send(Out::Frame(reply)).await.is_err() {
                    break;
                }
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                if !fin {
                    streams.insert(id, tx);
                }
                let stream = Stream {
                    id,
                    headers,
                    data: rx,
                    out: out.clone(),
                };
                if incoming.send(stream).await.is_err() {
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            id,
                            status: REFUSED_STREAM,
                        }))
                        .await;
                }
            }
            Frame::Data { id, data, fin } => {
                if let Some(tx) = streams.get(&id)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    // Nobody reads this stream any more; drop what it sends.
                    streams.remove(&id);
                }
                if fin {
                    streams.remove(&id);
                }
            }
            Frame::RstStream { id, .. } => {
                streams.remove(&id);
            }
            Frame::Ping(id) => {
                let _ = out.send(Out::Frame(Frame::Ping(id))).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Other(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib's Adler-32 of the dictionary, which a peer checks against the stream's DICTID.
        let (mut a, mut b) = (1u32, 0u32);
        for x in d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[tokio::test]
    async fn frames_round_trip_with_a_shared_header_compressor() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a);
        let mut r = FrameReader::new(b);
        let h = |t: &str| {
            Headers(vec![
                ("streamtype".into(), t.into()),
                ("port".into(), "80".into()),
            ])
        };
        let frames = vec![
            Frame::SynStream {
                id: 1,
                headers: h("error"),
                fin: false,
            },
            Frame::SynStream {
                id: 3,
                headers: h("data"),
                fin: false,
            },
            Frame::Data {
                id: 3,
                data: Bytes::from_static(b"hello"),
                fin: false,
            },
            Frame::SynReply {
                id: 1,
                headers: Headers::default(),
                fin: false,
            },
            Frame::Data {
                id: 3,
                data: Bytes::new(),
                fin: true,
            },
            Frame::RstStream {
                id: 3,
                status: CANCEL,
            },
            Frame::Ping(7),
            Frame::GoAway { last: 3 },
        ];
        for f in &frames {
            w.write(f).await.unwrap();
        }
        w.flush().await.unwrap();
        for f in &frames {
            assert_eq!(r.read().await.unwrap().as_ref(), Some(f));
        }
        drop(w);
        assert_eq!(r.read().await.unwrap(), None);
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        for junk in [
            &[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 4, 0, 0, 0, 1][..],
            &[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0][..],
            &[
                0x80, 0x03, 0x00, 0x01, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
            ][..],
            &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 2, 0, 0][..],
        ] {
            let mut r = FrameReader::new(junk);
            assert!(r.read().await.is_err(), "{junk:?}");
        }
    }

    #[tokio::test]
    async fn a_session_replies_to_streams_echoes_pings_and_delivers_data() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut session = Session::serve(server);
        let (cr, cw) = tokio::io::split(client);
        let (mut r, mut w) = (FrameReader::new(cr), FrameWriter::new(cw));
        let headers = Headers(vec![("streamtype".into(), "stdin".into())]);
        w.write(&Frame::SynStream {
            id: 1,
            headers: headers.clone(),
            fin: false,
        })
        .await
        .unwrap();
        w.write(&Frame::Data {
            id: 1,
            data: Bytes::from_static(b"abc"),
            fin: true,
        })
        .await
        .unwrap();
        w.write(&Frame::Ping(2)).await.unwrap();
        w.flush().await.unwrap();
        let s = session.accept().await.unwrap();
        assert_eq!(s.headers.get("streamType"), Some("stdin"));
        let mut writer = s.writer();
        writer.write_all(b"out").await.unwrap();
        writer.finish().await;
        let mut got = String::new();
        s.reader().read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "abc");
        session.close().await;
        let mut frames = Vec::new();
        while let Some(f) = r.read().await.unwrap() {
            frames.push(f);
        }
        let data = Frame::Data {
            id: 1,
            data: Bytes::from_static(b"out"),
            fin: false,
        };
        let fin = Frame::Data {
            id: 1,
            data: Bytes::new(),
            fin: true,
        };
        let at = |f: &Frame| frames.iter().position(|x| x == f);
        assert!(
            matches!(frames[0], Frame::SynReply { id: 1, .. }),
            "{frames:?}"
        );
        assert!(at(&Frame::Ping(2)).is_some(), "{frames:?}");
        assert!(at(&data).unwrap() < at(&fin).unwrap(), "{frames:?}");
        assert_eq!(frames.last(), Some(&Frame::GoAway { last: 0 }));
    }
}
