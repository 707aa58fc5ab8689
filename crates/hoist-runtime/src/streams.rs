//! stdout and stderr for flights: a capped in-memory stdout, and a stderr that streams to
//! the user while remembering its tail for error messages.

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The trap raised when a flight writes more than its stdout cap.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the flight wrote more than {cap} bytes to stdout")]
pub struct StdoutCapExceeded {
    /// The cap in bytes.
    pub cap: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another write panicked; the buffer is still valid bytes.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Collects stdout up to a cap; writing past it traps the guest with [`StdoutCapExceeded`].
#[derive(Clone)]
pub struct CappedStdout {
    buffer: Arc<Mutex<Vec<u8>>>,
    cap: usize,
}

impl CappedStdout {
    /// An empty buffer that accepts at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CappedStdout {
            buffer: Arc::new(Mutex::new(Vec::new())),
            cap,
        }
    }

    /// Whether nothing has been written (or everything was taken).
    pub fn is_empty(&self) -> bool {
        lock(&self.buffer).is_empty()
    }

    /// Everything written so far (the buffer is left empty).
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *lock(&self.buffer))
    }

    fn push(&self, bytes: &[u8]) -> Result<(), StdoutCapExceeded> {
        let mut buffer = lock(&self.buffer);
        if bytes.len() > self.cap.saturating_sub(buffer.len()) {
            return Err(StdoutCapExceeded { cap: self.cap });
        }
        buffer.extend_from_slice(bytes);
        Ok(())
    }
}

impl GuestSink for CappedStdout {
    type Error = StdoutCapExceeded;
    fn accept(&self, bytes: &[u8]) -> Result<(), StdoutCapExceeded> {
        self.push(bytes)
    }
}

/// Where a flight's stderr goes besides the remembered tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StderrMode {
    /// Copied to hoist's own stderr as it is written.
    Stream,
    /// Only remembered (for tests and for callers that report it themselves).
    Capture,
}

/// Streams the guest's stderr to the user and keeps the last `tail_cap` bytes.
#[derive(Clone)]
pub struct TeeStderr {
    tail: Arc<Mutex<VecDeque<u8>>>,
    tail_cap: usize,
    mode: StderrMode,
}

impl TeeStderr {
    /// Keeps the last `tail_cap` bytes; streams to hoist's stderr in [`StderrMode::Stream`].
    pub fn new(tail_cap: usize, mode: StderrMode) -> Self {
        TeeStderr {
            tail: Arc::new(Mutex::new(VecDeque::with_capacity(tail_cap))),
            tail_cap,
            mode,
        }
    }

    /// The remembered tail, lossily decoded.
    pub fn tail(&self) -> String {
        let tail = lock(&self.tail);
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn push(&self, bytes: &[u8]) {
        if self.mode == StderrMode::Stream {
            // The user's terminal going away must not kill the flight.
            let _ = std::io::stderr().lock().write_all(bytes);
        }
        keep_tail(&mut lock(&self.tail), self.tail_cap, bytes);
    }
}

/// Appends `bytes` to `tail`, keeping only its last `cap` bytes (the stderr tail that errors
/// quote; shared by both execution tiers).
pub(crate) fn keep_tail(tail: &mut VecDeque<u8>, cap: usize, bytes: &[u8]) {
    let keep = bytes.len().min(cap);
    let overflow = (tail.len() + keep).saturating_sub(cap);
    tail.drain(..overflow);
    tail.extend(bytes.get(bytes.len() - keep..).unwrap_or_default());
}

impl GuestSink for TeeStderr {
    type Error = std::convert::Infallible;
    fn accept(&self, bytes: &[u8]) -> Result<(), std::convert::Infallible> {
        self.push(bytes);
        Ok(())
    }
}

/// Where a guest's output bytes go. One implementation of wasmtime-wasi's stream traits
/// ([`GuestOutput`]) serves every sink.
pub trait GuestSink: Clone + Send + Sync + 'static {
    /// Why a write is refused; it traps the guest.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Takes `bytes`, or refuses them.
    fn accept(&self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// A [`GuestSink`] as a WASI output stream (stdout or stderr of a flight).
#[derive(Clone)]
pub struct GuestOutput<S>(pub S);

impl<S: GuestSink> OutputStream for GuestOutput<S> {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.0
            .accept(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always accept a write so that an overflow traps with a clear error instead of the
        // guest seeing a closed stream and possibly looping on it.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl<S: GuestSink> Pollable for GuestOutput<S> {
    async fn ready(&mut self) {}
}

impl<S: GuestSink + Unpin> AsyncWrite for GuestOutput<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.0
                .accept(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl<S: GuestSink> IsTerminal for GuestOutput<S> {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl<S: GuestSink + Unpin> StdoutStream for GuestOutput<S> {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_cap_is_exact() {
        let out = CappedStdout::new(10);
        assert!(out.push(b"12345").is_ok());
        assert!(out.push(b"67890").is_ok());
        assert!(out.push(b"x").is_err());
        assert_eq!(out.take(), b"1234567890");
    }

    #[test]
    fn stderr_tail_keeps_the_last_bytes() {
        let err = TeeStderr::new(8, StderrMode::Capture);
        err.push(b"hello ");
        err.push(b"world, bye");
        assert_eq!(err.tail(), "rld, bye");
        err.push(b"0123456789abc");
        assert_eq!(err.tail(), "56789abc");
    }
}
