//! A run's captured output: `host.log` calls and guest stdout/stderr, capped in
//! bytes per run, stripped of control characters, mirrored to `tracing`.
//!
//! Once the cap is reached every further line is only counted: stdout and stderr
//! bytes past it are scanned for newlines and discarded, never turned into
//! strings, so a guest printing without end costs the host next to nothing.
//! Guest output is taken synchronously by [`GuestOutput`] as a WASI p2 output
//! stream that is always ready, instead of wasmtime's default adapter, which
//! hands every 4 KiB write to a worker task and waits for it.

use super::outcome::{LogLevel, LogLine, LogSource};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug)]
struct Inner {
    lines: Vec<LogLine>,
    bytes: usize,
    cap: usize,
    dropped: u64,
    /// Set by the first line dropped: every later line is dropped too, so output
    /// past the cap takes the cheap path in [`RunLog::write_stream`].
    full: bool,
    /// Partial lines of stdout and stderr waiting for their newline.
    pending: [Vec<u8>; 2],
    /// The guest's panic message, recognised on stderr.
    panic: Option<String>,
    panic_follows: bool,
}

/// The shared log of one run. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RunLog {
    inner: Arc<Mutex<Inner>>,
    /// Set once, before the guest starts, when the run holds secrets: every
    /// line is redacted before it is kept or mirrored.
    redactor: Arc<std::sync::OnceLock<crate::grants::Redactor>>,
    job_key: Arc<str>,
    fire_id: Arc<str>,
}

/// Lines longer than this are cut, so one line cannot take the whole cap.
const MAX_LINE: usize = 4096;

impl RunLog {
    pub(crate) fn new(cap: usize, job_key: Arc<str>, fire_id: Arc<str>) -> Self {
        RunLog {
            inner: Arc::new(Mutex::new(Inner {
                lines: Vec::new(),
                bytes: 0,
                cap,
                dropped: 0,
                full: false,
                pending: [Vec::new(), Vec::new()],
                panic: None,
                panic_follows: false,
            })),
            redactor: Arc::default(),
            job_key,
            fire_id,
        }
    }

    /// Redacts the values `redactor` knows from every later line.
    pub(crate) fn set_redactor(&self, redactor: crate::grants::Redactor) {
        let _ = self.redactor.set(redactor);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one line, unless the run's cap is reached.
    pub(crate) fn push(&self, level: LogLevel, source: LogSource, message: &str) {
        let message = match self.redactor.get() {
            Some(r) => sanitize(&r.apply(message)),
            None => sanitize(message),
        };
        let mut inner = self.lock();
        if source == LogSource::Stderr {
            note_panic(&mut inner, &message);
        }
        if inner.full || inner.bytes + message.len() > inner.cap {
            inner.full = true;
            inner.dropped += 1;
            return;
        }
        inner.bytes += message.len();
        emit(level, source, &self.job_key, &self.fire_id, &message);
        inner.lines.push(LogLine {
            level,
            source,
            message,
        });
    }

    fn write_stream(&self, stream: usize, bytes: &[u8]) {
        let mut complete = Vec::new();
        {
            let mut inner = self.lock();
            let mut rest = bytes;
            while let Some(at) = rest.iter().position(|&b| b == b'\n') {
                let (line, after) = (&rest[..at], &rest[at + 1..]);
                rest = after;
                if inner.full && !(stream == 1 && wants_panic_line(&inner, line)) {
                    // Past the cap: count the line, keep nothing of it.
                    inner.pending[stream].clear();
                    inner.dropped += 1;
                    continue;
                }
                let pending = &mut inner.pending[stream];
                append_capped(pending, line);
                complete.push(String::from_utf8_lossy(pending).into_owned());
                pending.clear();
            }
            if !rest.is_empty() && !inner.full {
                append_capped(&mut inner.pending[stream], rest);
            }
        }
        for line in complete {
            self.push_stream_line(stream, &line);
        }
    }

    fn push_stream_line(&self, stream: usize, line: &str) {
        let (level, source) = if stream == 0 {
            (LogLevel::Info, LogSource::Stdout)
        } else {
            (LogLevel::Warn, LogSource::Stderr)
        };
        self.push(level, source, line);
    }

    /// Ends the run: flushes partial lines and returns what was captured.
    pub(crate) fn finish(&self) -> (Vec<LogLine>, u64) {
        let pending: Vec<(usize, String)> = {
            let mut inner = self.lock();
            let mut out = Vec::new();
            for (i, pending) in inner.pending.iter_mut().enumerate() {
                if !pending.is_empty() {
                    out.push((
                        i,
                        String::from_utf8_lossy(&std::mem::take(pending)).into_owned(),
                    ));
                }
            }
            out
        };
        for (stream, line) in pending {
            self.push_stream_line(stream, &line);
        }
        let mut inner = self.lock();
        (std::mem::take(&mut inner.lines), inner.dropped)
    }

    /// The guest's panic message, if it printed one to stderr.
    pub(crate) fn panic_message(&self) -> Option<String> {
        self.lock().panic.clone()
    }

    /// A WASI stdout (`stream` 0) or stderr (`stream` 1) feeding this log.
    pub(crate) fn stream(&self, stream: usize) -> GuestOutput {
        GuestOutput {
            log: self.clone(),
            stream,
        }
    }
}

/// Adds `bytes` to a partial line, keeping at most [`MAX_LINE`] bytes of it.
fn append_capped(pending: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE.saturating_sub(pending.len());
    pending.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Whether a stderr line past the cap must still be read for the guest's panic
/// message, so a trap after much output can still say why it happened.
fn wants_panic_line(inner: &Inner, line: &[u8]) -> bool {
    const MARK: &[u8] = b"panicked at ";
    inner.panic_follows || (inner.panic.is_none() && line.windows(MARK.len()).any(|w| w == MARK))
}

/// Rust guests print `thread '<unnamed>' panicked at src/lib.rs:1:2:` and then the
/// message on the next line; keep both so a trap can say why it happened.
fn note_panic(inner: &mut Inner, line: &str) {
    if inner.panic_follows {
        inner.panic_follows = false;
        if let Some(p) = inner.panic.as_mut() {
            p.push_str(": ");
            p.push_str(line);
        }
    } else if inner.panic.is_none()
        && let Some(at) = line.find("panicked at ")
    {
        let location = line[at..].trim_end_matches(':').to_string();
        inner.panic = Some(location);
        inner.panic_follows = line.ends_with(':');
    }
}

fn sanitize(message: &str) -> String {
    crate::text::strip(message, MAX_LINE)
}

fn emit(level: LogLevel, source: LogSource, job: &str, fire: &str, message: &str) {
    let source = match source {
        LogSource::Log => "log",
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
    };
    match level {
        LogLevel::Trace => {
            tracing::trace!(target: "quartzite::guest", job, fire, source, "{message}")
        }
        LogLevel::Debug => {
            tracing::debug!(target: "quartzite::guest", job, fire, source, "{message}")
        }
        LogLevel::Info => {
            tracing::info!(target: "quartzite::guest", job, fire, source, "{message}")
        }
        LogLevel::Warn => {
            tracing::warn!(target: "quartzite::guest", job, fire, source, "{message}")
        }
        LogLevel::Error => {
            tracing::error!(target: "quartzite::guest", job, fire, source, "{message}")
        }
    }
}

/// A guest's stdout or stderr. Accepts every write, so printing past the cap
/// drops lines instead of failing the guest's `println!`.
pub(crate) struct GuestOutput {
    log: RunLog,
    stream: usize,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(GuestOutput {
            log: self.log.clone(),
            stream: self.stream,
        })
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(GuestOutput {
            log: self.log.clone(),
            stream: self.stream,
        })
    }
}

/// How much one `write` may carry. Bounded because wasmtime allocates this much
/// for a guest's `write-zeroes`; 64 KiB is the WASI streams' usual permit.
const WRITE_PERMIT: usize = 64 * 1024;

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.log.write_stream(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    // Writes are taken at once, so the stream is always ready.
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.write_stream(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(cap: usize) -> RunLog {
        RunLog::new(cap, "g/j".into(), "f".into())
    }

    #[test]
    fn lines_past_the_cap_are_counted_not_kept() {
        let l = log(10);
        l.push(LogLevel::Info, LogSource::Log, "12345");
        l.push(LogLevel::Info, LogSource::Log, "12345");
        l.push(LogLevel::Info, LogSource::Log, "x");
        let (lines, dropped) = l.finish();
        assert_eq!(lines.len(), 2);
        assert_eq!(dropped, 1);
    }

    #[test]
    fn control_characters_are_stripped() {
        let l = log(100);
        l.push(LogLevel::Info, LogSource::Log, "a\u{1b}[31mb\rc");
        assert_eq!(l.finish().0[0].message, "a[31mbc");
    }

    #[test]
    fn stream_bytes_become_lines_and_panics_are_recognised() {
        let l = log(1000);
        l.write_stream(1, b"\nthread '<unnamed>' panicked at src/lib.rs:9:5:\nbo");
        l.write_stream(1, b"om\nnote: run with `RUST_BACKTRACE=1`\npartial");
        assert_eq!(
            l.panic_message().as_deref(),
            Some("panicked at src/lib.rs:9:5: boom")
        );
        let (lines, _) = l.finish();
        assert_eq!(lines.last().unwrap().message, "partial");
        assert!(lines.iter().all(|l| l.source == LogSource::Stderr));
    }
}
