//! Request bodies: a wrapper that keeps HTTP trailers aside for the checksum-trailer extension.
//!
//! warp's body stream yields only data frames; trailers would be lost. [`TrailerCapture`] sits
//! between hyper and warp and stores the trailer frame in a [`TrailerSlot`] that the request
//! also carries as an extension, so the PATCH handler can read `Upload-Checksum` from it once
//! the body has ended.

use std::error::Error;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// A request body that broke HTTP/1.1's message framing (a malformed chunk-size line, chunk
/// extensions past hyper's limit, ...): the client's fault (400), unlike a connection that
/// broke off (which it should simply resume).
#[derive(Debug, thiserror::Error)]
#[error("malformed body framing ({0})")]
pub struct MalformedFraming(String);

/// A body error as the transfer layer carries it. hyper reports framing faults as an
/// `io::Error` of kind `InvalidData` / `InvalidInput` somewhere in the error's chain (cut
/// connections are `UnexpectedEof` and the like); those become a [`MalformedFraming`].
pub fn body_error<E>(err: E) -> io::Error
where
    E: Error + Send + Sync + 'static,
{
    let mut cause: Option<&(dyn Error + 'static)> = Some(&err);
    while let Some(current) = cause {
        if let Some(io_err) = current.downcast_ref::<io::Error>() {
            if matches!(
                io_err.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            ) {
                return io::Error::new(
                    io::ErrorKind::InvalidData,
                    MalformedFraming(io_err.to_string()),
                );
            }
        }
        cause = current.source();
    }
    io::Error::other(err)
}

/// Whether a body error is the client's malformed framing (see [`body_error`]).
pub fn is_malformed_framing(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<MalformedFraming>())
}

/// Trailers received with a request body, available after the body ends.
#[derive(Debug, Clone, Default)]
pub struct TrailerSlot(Arc<Mutex<Option<HeaderMap>>>);

impl TrailerSlot {
    /// The trailers, if the body ended with some.
    pub fn take(&self) -> Option<HeaderMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn store(&self, trailers: HeaderMap) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(trailers);
    }
}

/// A body that passes data through and stores trailers in a [`TrailerSlot`].
#[derive(Debug)]
pub struct TrailerCapture<B> {
    inner: B,
    slot: TrailerSlot,
}

impl<B> TrailerCapture<B> {
    /// Wrap `inner`; trailers go to `slot`.
    pub fn new(inner: B, slot: TrailerSlot) -> Self {
        TrailerCapture { inner, slot }
    }
}

impl<B> Body for TrailerCapture<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(trailers) => {
                    self.slot.store(trailers);
                    // Nothing downstream wants the trailer frame; end of body follows.
                    Poll::Ready(None)
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error wrapping another, as warp's and hyper's do.
    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] io::Error);

    #[test]
    fn framing_faults_are_told_from_cut_connections() {
        let framing = body_error(Wrapped(io::Error::new(
            io::ErrorKind::InvalidInput,
            "Invalid chunk size line: Invalid Size",
        )));
        assert!(is_malformed_framing(&framing), "{framing}");
        assert!(framing.to_string().contains("Invalid Size"), "{framing}");
        let extensions = body_error(Wrapped(io::Error::new(
            io::ErrorKind::InvalidData,
            "chunk extensions over limit",
        )));
        assert!(is_malformed_framing(&extensions));
        let cut = body_error(Wrapped(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "unexpected EOF during chunk size line",
        )));
        assert!(!is_malformed_framing(&cut), "{cut}");
        assert!(!is_malformed_framing(&io::Error::other("reset")));
    }
}
