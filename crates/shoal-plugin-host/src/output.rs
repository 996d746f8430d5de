//! What a plugin writes to stdout and stderr.
//!
//! A guest's `println!`, `eprintln!`, panic message or allocator failure message must never
//! reach the host's own stderr, block a thread, or grow host memory without bound. Each call's
//! instance writes into a [`Capture`]: writes complete at once (no flush ever waits), only the
//! last [`TAIL_BYTES`] are kept, and after the call the plugin's [`crate::health::Health`] logs
//! the lines (rate-limited, tagged with the plugin's name) and, when the call failed, attaches
//! the last lines to the [`crate::PluginError`] so they reach the plugin's events and status.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Output kept per call: the last bytes written.
pub const TAIL_BYTES: usize = 4096;
/// Lines of a call's output attached to its failure.
pub const TAIL_LINES: usize = 5;
/// A line longer than this is cut (with `...`).
const LINE_CHARS: usize = 300;
/// How much a guest may write in one `write` (what `check-write` grants).
const WRITE_PERMIT: usize = 64 << 10;

/// The output of one call (stdout and stderr interleaved); cheap to clone.
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<Mutex<Tail>>,
}

#[derive(Default)]
struct Tail {
    /// The last [`TAIL_BYTES`] written.
    bytes: std::collections::VecDeque<u8>,
    /// Bytes written in all, kept or not.
    total: u64,
}

impl Capture {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, bytes: &[u8]) {
        let mut tail = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        tail.total += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (tail.bytes.len() + keep.len()).saturating_sub(TAIL_BYTES);
        tail.bytes.drain(..overflow);
        tail.bytes.extend(keep);
    }

    /// Bytes written in all.
    pub fn total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// The non-empty lines kept, oldest first, each cut to a readable length. A first line
    /// whose start was dropped is marked with `...`.
    pub fn lines(&self) -> Vec<String> {
        let tail = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if tail.bytes.is_empty() {
            return Vec::new();
        }
        let (a, b) = tail.bytes.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let truncated = tail.total > tail.bytes.len() as u64;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let mut line: String = l.trim_end().chars().take(LINE_CHARS).collect();
                if line.len() < l.trim_end().len() {
                    line.push_str("...");
                }
                if i == 0 && truncated {
                    line.insert_str(0, "...");
                }
                line
            })
            .collect()
    }

    /// The lines kept, which are then dropped (what is written next starts a new tail).
    pub fn take_lines(&self) -> Vec<String> {
        let lines = self.lines();
        let mut tail = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        tail.bytes.clear();
        tail.total = 0;
        lines
    }

    /// The last [`TAIL_LINES`] lines.
    pub fn last_lines(&self) -> Vec<String> {
        let mut lines = self.lines();
        let skip = lines.len().saturating_sub(TAIL_LINES);
        lines.drain(..skip);
        lines
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The last lines a failed call wrote, shown after its error (`...; it wrote: "a" "b"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written(pub Vec<String>);

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str("; it wrote:")?;
        for line in &self.0 {
            write!(f, " {line:?}")?;
        }
        Ok(())
    }
}

/// A token bucket: `burst` at once, then one every `every`. Used to bound how many log lines
/// and events one plugin can cause.
#[derive(Debug)]
pub struct Bucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    last: std::time::Instant,
    /// What was refused since the last allowed take.
    pub refused: u64,
}

impl Bucket {
    pub fn new(burst: u32, every: std::time::Duration) -> Self {
        Bucket {
            burst: f64::from(burst),
            per_sec: 1.0 / every.as_secs_f64().max(1e-6),
            tokens: f64::from(burst),
            last: std::time::Instant::now(),
            refused: 0,
        }
    }

    /// Takes a token if one is left: `Some(refused before)` or `None`.
    pub fn take(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.refused))
        } else {
            self.refused += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_only_the_tail_and_never_refuses_a_write() {
        let mut c = Capture::new();
        for i in 0..10_000 {
            OutputStream::write(&mut c, Bytes::from(format!("line {i}\n"))).unwrap();
        }
        assert_eq!(c.check_write().unwrap(), WRITE_PERMIT);
        let lines = c.last_lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last().unwrap(), "line 9999");
        assert!(c.lines()[0].starts_with("..."), "{:?}", c.lines()[0]);
        assert!(c.total() > TAIL_BYTES as u64);
        let kept: usize = c.lines().iter().map(|l| l.len() + 1).sum();
        assert!(kept <= TAIL_BYTES + 3, "{kept}");
    }

    #[test]
    fn long_lines_are_cut_and_written_lines_render_after_an_error() {
        let mut c = Capture::new();
        OutputStream::write(&mut c, Bytes::from("x".repeat(1000))).unwrap();
        OutputStream::write(
            &mut c,
            Bytes::from_static(b"\npanicked at src/lib.rs:9:5:\nboom"),
        )
        .unwrap();
        let lines = c.last_lines();
        assert_eq!(lines[0].len(), LINE_CHARS + 3);
        assert_eq!(
            Written(lines[1..].to_vec()).to_string(),
            "; it wrote: \"panicked at src/lib.rs:9:5:\" \"boom\""
        );
        assert_eq!(Written::default().to_string(), "");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_counts_what_it_refuses() {
        let mut b = Bucket::new(2, std::time::Duration::from_secs(3600));
        assert_eq!(b.take(), Some(0));
        assert_eq!(b.take(), Some(0));
        assert_eq!(b.take(), None);
        assert_eq!(b.take(), None);
        assert_eq!(b.refused, 2);
    }
}
