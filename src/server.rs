//! Accept connections and serve the routes on them, until shutdown.
//!
//! We drive hyper's HTTP/1.1 connections ourselves (warp's filter becomes a service with
//! `warp::service`) to own what warp's `serve` does not expose: the header-read timeout,
//! a bound on header size, graceful shutdown that waits for in-flight PATCHes to commit, and
//! a body wrapper that keeps HTTP trailers for the checksum-trailer extension.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::admission::ConnectionLimit;
use crate::metrics::UploadEvent;
use crate::routes::routes;
use crate::session::expiry;
use crate::state::AppState;
use crate::tls::TlsFiles;
use crate::transfer::body::{TrailerCapture, TrailerSlot};
use crate::transfer::interim::InterimWriter;
use crate::transfer::ConnInfo;

/// How long a connection we close keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Largest request head (start line and headers) accepted; also bounds trailers. Metadata is
/// limited separately and far lower.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serve `state` on `listener` (over TLS when `tls` is given) until `shutdown` resolves; then
/// stop accepting, ask in-flight PATCHes to commit and stop, wait for them (bounded by
/// `timeouts.shutdown_grace`), and flush the session store.
///
/// # Errors
/// When the final flush of the session store fails.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<TlsFiles>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let service = warp::service(routes(state.clone()));
    let graceful = GracefulShutdown::new();
    let stop_background = CancellationToken::new();
    let sweeper = expiry::spawn_sweeper(
        state.sessions.clone(),
        state.blobs.clone(),
        state.locks.clone(),
        state.settings.expiration.sweep_interval.0,
        stop_background.clone(),
        {
            let metrics = state.metrics.clone();
            move |deleted| {
                for _ in 0..deleted {
                    metrics.upload(UploadEvent::Expired);
                }
            }
        },
    );
    let monitor = state.interfaces.spawn(stop_background.clone());
    // Ends after the sweeper and the requests: its last drain leaves the journal empty.
    let stop_drainer = CancellationToken::new();
    let drainer = state
        .journal
        .as_ref()
        .map(|journal| journal.spawn_drainer(stop_drainer.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.timeouts.header_read.0)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);

    let connections = ConnectionLimit::new(state.settings.server.max_connections);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = connections.try_open() else {
            // Closed at once: a flood of idle connections must not take the memory and file
            // descriptors that the uploads in progress need.
            crate::admission::note_refusal(&state.admission.connection_log, |suppressed| {
                tracing::warn!(
                    client = %remote.ip(),
                    max = state.settings.server.max_connections,
                    suppressed,
                    "connection refused: server.max_connections are open"
                );
            });
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = stream
            .local_addr()
            .ok()
            .map(|local| ConnInfo { remote, local });
        let service = service.clone();
        // The writer's senders go to the requests now; the stream it writes to is known once
        // TLS (if any) is set up, and it wraps that: interim responses are encrypted too.
        let (interim_writer, interim) = InterimWriter::new(());
        let per_request = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let slot = TrailerSlot::default();
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(slot.clone());
            if let Some(conn) = conn {
                parts.extensions.insert(conn);
            }
            // warp does not hand the version to filters; the Host rules of RFC 9112 §3.2
            // depend on it.
            parts.extensions.insert(parts.version);
            // RFC 9110 §15.2: no 1xx responses to HTTP/1.0 clients.
            if parts.version == http::Version::HTTP_11 {
                parts.extensions.insert(interim.clone());
            }
            let request = http::Request::from_parts(parts, TrailerCapture::new(body, slot));
            let mut service = service.clone();
            service.call(request)
        });
        let stream = LingeringStream {
            inner: Some(stream),
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // Taken now: a certificate reloaded later applies to later connections.
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        let handshake_timeout = state.settings.timeouts.header_read.0;
        // The handshake runs here, in the connection's task, so a slow client never holds up
        // the accept loop.
        tokio::spawn(async move {
            // The slot is given back when the connection's task ends.
            let _slot = slot;
            let served = match acceptor {
                None => {
                    let stream = interim_writer.with_inner(stream);
                    serve_connection(&builder, watcher, stream, per_request).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let stream = interim_writer.with_inner(stream);
                            serve_connection(&builder, watcher, stream, per_request).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%remote, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(err) = served {
                tracing::debug!(%remote, error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!("shutting down: letting in-flight requests commit");
    stop_background.cancel();
    state.locks.stop_all();
    let grace = state.settings.timeouts.shutdown_grace.0;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "some connections did not finish in time");
    }
    let _ = sweeper.await;
    let _ = monitor.await;
    stop_drainer.cancel();
    if let Some(drainer) = drainer {
        let _ = drainer.await;
    }
    state
        .sessions
        .flush()
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Serve HTTP/1.1 on one connection, whatever its transport (TCP, TLS, or wrappers over them),
/// until it closes or graceful shutdown ends it.
async fn serve_connection<S, Svc, B>(
    builder: &http1::Builder,
    watcher: Watcher,
    stream: S,
    service: Svc,
) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::HttpService<Incoming, ResBody = B>,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    watcher.watch(connection).await
}

/// A TCP stream that, when the server closes it, first stops sending (FIN) and then reads and
/// discards for up to [`LINGER`] before letting go.
///
/// Without this, refusing a PATCH early (409, 413, 415...) and closing while the client is
/// still sending the body makes the kernel answer with a reset, and the client reports
/// "broken pipe" instead of our status (nginx's lingering close, Go's reset-avoidance delay).
struct LingeringStream {
    inner: Option<TcpStream>,
}

impl LingeringStream {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream));
        }
    }
}

/// Send FIN, then drain the client's leftovers until it closes or [`LINGER`] passes.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
        if read == 0 {
            break;
        }
    }
}
