//! Request bodies: a wrapper that keeps HTTP trailers aside for the checksum-trailer extension.
//!
//! warp's body stream yields only data frames; trailers would be lost. [`TrailerCapture`] sits
//! between hyper and warp and stores the trailer frame in a [`TrailerSlot`] that the request
//! also carries as an extension, so the PATCH handler can read `Upload-Checksum` from it once
//! the body has ended.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

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
