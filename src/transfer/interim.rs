//! Interim (1xx) responses on the HTTP/1.1 connections hyper serves.
//!
//! hyper 1's server has no API to send informational responses (it only writes the
//! `100 Continue` it manages itself), but the resumable-upload draft needs
//! `104 Upload Resumption Supported` before and during a long request. So each connection's IO
//! is wrapped in an [`InterimWriter`], and its handlers get an [`InterimSender`] (a request
//! extension) through which they queue complete interim messages. The writer puts queued bytes
//! on the wire only between hyper's own writes: before hyper's next bytes, when hyper flushes,
//! and when hyper polls for more of the request body. A request's handler queues messages only
//! before it hands its final response to hyper, so they always precede that response.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Queued interim bytes beyond this are dropped (a client that does not read its socket gets
/// no more progress reports, rather than costing us memory).
const MAX_QUEUED: usize = 16 * 1024;

/// What a connection's writer and its requests' senders share.
#[derive(Debug, Default)]
struct Shared {
    /// Complete interim messages not yet written.
    queue: Vec<u8>,
    /// The connection task, to wake when something is queued.
    waker: Option<Waker>,
}

/// Wraps a connection's IO so that interim responses queued through its [`InterimSender`]s
/// are written between hyper's messages.
#[derive(Debug)]
pub struct InterimWriter<S> {
    inner: S,
    shared: Arc<Mutex<Shared>>,
    /// hyper has written part of its buffer and not yet flushed: it may be inside a message.
    hyper_writing: bool,
}

/// The handle a request handler uses to send interim responses on its connection.
///
/// It holds the connection weakly: once the connection is gone, sending does nothing.
#[derive(Debug, Clone)]
pub struct InterimSender {
    shared: Weak<Mutex<Shared>>,
}

fn locked(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Plain bytes and a waker: a panic elsewhere cannot leave them inconsistent.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S> InterimWriter<S> {
    /// Wrap `inner`; the sender is for the requests served on it.
    pub fn new(inner: S) -> (InterimWriter<S>, InterimSender) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sender = InterimSender {
            shared: Arc::downgrade(&shared),
        };
        let writer = InterimWriter {
            inner,
            shared,
            hyper_writing: false,
        };
        (writer, sender)
    }

    /// The same queue, written over `inner` instead: the connection's senders are handed out
    /// before a TLS handshake, and the writer must sit above TLS (interim responses are HTTP,
    /// so they are encrypted like the rest).
    pub fn with_inner<T>(self, inner: T) -> InterimWriter<T> {
        InterimWriter {
            inner,
            shared: self.shared,
            hyper_writing: false,
        }
    }

    fn remember_waker(&self, cx: &Context<'_>) {
        let mut shared = locked(&self.shared);
        if !shared
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            shared.waker = Some(cx.waker().clone());
        }
    }
}

impl<S: AsyncWrite + Unpin> InterimWriter<S> {
    /// Write what is queued; Ready once the queue is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = locked(&self.shared);
        while !shared.queue.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &shared.queue) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    shared.queue.drain(..n);
                }
                Poll::Ready(Err(err)) => {
                    shared.queue.clear();
                    return Poll::Ready(Err(err));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Before hyper writes: first whatever is queued, unless hyper is inside a message.
    fn poll_before_hyper(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.hyper_writing {
            return Poll::Ready(Ok(()));
        }
        self.remember_waker(cx);
        std::task::ready!(self.poll_drain(cx))?;
        self.hyper_writing = true;
        Poll::Ready(Ok(()))
    }
}

impl InterimSender {
    /// Queue one complete interim message (see [`interim_message`]) and wake the connection.
    /// Returns false when it was dropped: connection gone, or the client is not reading.
    pub fn send(&self, message: &[u8]) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        let waker = {
            let mut shared = locked(&shared);
            if shared.queue.len() + message.len() > MAX_QUEUED {
                return false;
            }
            shared.queue.extend_from_slice(message);
            shared.waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

/// An interim response as bytes: status line, the header lines, blank line. Header names and
/// values must be valid field text (the callers build them from numbers and URLs).
pub fn interim_message(status: u16, reason: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        if value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    text.push_str("\r\n");
    text.into_bytes()
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for InterimWriter<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.remember_waker(cx);
        // hyper reads the body while the handler runs: a good moment for queued messages.
        // A write error here shows up again on hyper's own next write.
        if !this.hyper_writing {
            let _ = this.poll_drain(cx);
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InterimWriter<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_before_hyper(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_before_hyper(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes only once its buffer is fully written: it is between messages again.
        this.hyper_writing = false;
        this.remember_waker(cx);
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn queued_interim_bytes_go_out_before_the_next_write() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut writer, sender) = InterimWriter::new(server);
        assert!(sender.send(&interim_message(
            104,
            "Upload Resumption Supported",
            &[("Upload-Offset", "5".to_owned())]
        )));
        writer
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        writer.flush().await.unwrap();
        drop(writer);
        let mut text = String::new();
        let mut client = client;
        client.read_to_string(&mut text).await.unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 104 Upload Resumption Supported\r\nUpload-Offset: 5\r\n\r\n\
             HTTP/1.1 204 No Content\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn nothing_is_injected_inside_a_message_hyper_is_writing() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut writer, sender) = InterimWriter::new(server);
        writer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        sender.send(b"HTTP/1.1 104 X\r\n\r\n");
        writer.write_all(b"\r\n").await.unwrap();
        writer.flush().await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 104 X\r\n\r\n");
    }

    #[test]
    fn a_sender_outliving_its_connection_does_nothing() {
        let (writer, sender) = InterimWriter::new(tokio::io::empty());
        drop(writer);
        assert!(!sender.send(b"HTTP/1.1 104 X\r\n\r\n"));
    }
}
