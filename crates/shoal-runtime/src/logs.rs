//! Container logs in the CRI format every runtime writes and the kubelet reads:
//! `2024-05-01T10:00:00.123456789Z stdout F the line`, `P` for a partial line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Lines longer than this are split into partial (`P`) records, as containerd does.
const MAX_LINE: usize = 16 * 1024;

/// When a log file passes this size it is rotated (kubelet's `containerLogMaxSize`).
pub const MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;
/// How many files, the live one included, are kept (kubelet's `containerLogMaxFiles`).
pub const MAX_FILES: usize = 5;

struct Inner {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    pending: [Vec<u8>; 2],
}

/// One container run's log file, shared by its stdout and stderr writers.
#[derive(Clone)]
pub struct LogFile(Arc<Mutex<Inner>>);

impl LogFile {
    pub fn create(path: &Path) -> io::Result<Self> {
        Self::with_max_size(path, MAX_FILE_SIZE)
    }

    pub fn with_max_size(path: &Path, max_size: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile(Arc::new(Mutex::new(Inner {
            path: path.to_owned(),
            file,
            size,
            max_size,
            pending: [Vec::new(), Vec::new()],
        }))))
    }

    /// Appends output; complete lines are written at once, the rest waits for its newline.
    pub fn write(&self, stream: Stream, mut buf: &[u8]) -> io::Result<()> {
        let mut inner = self.0.lock().expect("log file lock is never poisoned");
        let i = stream as usize;
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut inner.pending[i]);
            line.extend_from_slice(&buf[..nl]);
            inner.record(stream, &line, true)?;
            buf = &buf[nl + 1..];
        }
        inner.pending[i].extend_from_slice(buf);
        while inner.pending[i].len() >= MAX_LINE {
            let rest = inner.pending[i].split_off(MAX_LINE);
            let chunk = std::mem::replace(&mut inner.pending[i], rest);
            inner.record(stream, &chunk, false)?;
        }
        Ok(())
    }

    /// Writes what is left of unfinished lines (at exit).
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.0.lock().expect("log file lock is never poisoned");
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut inner.pending[stream as usize]);
            if !line.is_empty() {
                inner.record(stream, &line, true)?;
            }
        }
        inner.file.flush()
    }
}

impl Inner {
    fn record(&mut self, stream: Stream, line: &[u8], full: bool) -> io::Result<()> {
        let ts = jiff::Timestamp::now();
        let mut out = Vec::with_capacity(line.len() + 48);
        write!(
            out,
            "{} {} {} ",
            format_ts(ts),
            stream.as_str(),
            if full { 'F' } else { 'P' }
        )?;
        out.extend_from_slice(line);
        out.push(b'\n');
        if self.size + out.len() as u64 > self.max_size && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    /// `log` → `log.1` → ... → `log.<MAX_FILES-1>`, dropping the oldest.
    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(MAX_FILES - 1));
        for n in (1..MAX_FILES - 1).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// RFC 3339 with nanoseconds, as CRI writes it.
pub fn format_ts(ts: jiff::Timestamp) -> String {
    format!("{ts:.9}")
}

/// One parsed record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a str,
    pub stream: &'a str,
    pub full: bool,
    pub content: &'a str,
}

/// Parses one line of a CRI log file; `None` if it is not one.
pub fn parse_record(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("");
    Some(Record {
        timestamp,
        stream,
        full: tag.starts_with('F'),
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_full_and_partial_records_per_stream() {
        let dir = std::env::temp_dir().join(format!("shoal-logs-{}", std::process::id()));
        let path = dir.join("c/0.log");
        let log = LogFile::create(&path).unwrap();
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"lo\nworld").unwrap();
        log.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<Record> = text.lines().map(|l| parse_record(l).unwrap()).collect();
        let got: Vec<(&str, &str)> = recs.iter().map(|r| (r.stream, r.content)).collect();
        assert_eq!(
            got,
            [("stderr", "oops"), ("stdout", "hello"), ("stdout", "world")]
        );
        assert!(recs.iter().all(|r| r.full));
        assert!(recs[0].timestamp.parse::<jiff::Timestamp>().is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn long_lines_are_split_and_big_files_rotate() {
        let dir = std::env::temp_dir().join(format!("shoal-logs-rot-{}", std::process::id()));
        let path = dir.join("0.log");
        let log = LogFile::with_max_size(&path, 40 * 1024).unwrap();
        log.write(Stream::Stdout, &vec![b'x'; MAX_LINE + 10])
            .unwrap();
        log.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let tags: Vec<bool> = text
            .lines()
            .map(|l| parse_record(l).unwrap().full)
            .collect();
        assert_eq!(tags, [false, true]);
        for _ in 0..3 {
            log.write(Stream::Stdout, &vec![b'y'; 20 * 1024]).unwrap();
            log.write(Stream::Stdout, b"\n").unwrap();
        }
        assert!(PathBuf::from(format!("{}.1", path.display())).exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 40 * 1024);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
