//! Accept connections and serve the routes on them, until shutdown.
//!
//! We drive hyper's HTTP/1.1 connections ourselves (warp's filter becomes a service with
//! `warp::service`) to own what warp's `serve` does not expose: the header-read timeout,
//! a bound on header size, graceful shutdown that waits for in-flight PATCHes to commit, and
//! a body wrapper that keeps HTTP trailers for the checksum-trailer extension.

use std::future::Future;
use std::io;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::routes::routes;
use crate::session::expiry;
use crate::state::AppState;
use crate::transfer::body::{TrailerCapture, TrailerSlot};
use crate::transfer::ConnInfo;

/// Largest request head (start line and headers) accepted; also bounds trailers. Metadata is
/// limited separately and far lower.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serve `state` on `listener` until `shutdown` resolves; then stop accepting, ask in-flight
/// PATCHes to commit and stop, wait for them (bounded by `timeouts.shutdown_grace`), and flush
/// the session store.
///
/// # Errors
/// When the final flush of the session store fails.
pub async fn run(
    listener: TcpListener,
    state: AppState,
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
    );
    let monitor = state.interfaces.spawn(stop_background.clone());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.timeouts.header_read.0)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);

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
        let _ = stream.set_nodelay(true);
        let conn = stream
            .local_addr()
            .ok()
            .map(|local| ConnInfo { remote, local });
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let slot = TrailerSlot::default();
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(slot.clone());
            if let Some(conn) = conn {
                parts.extensions.insert(conn);
            }
            let request = http::Request::from_parts(parts, TrailerCapture::new(body, slot));
            let mut service = service.clone();
            service.call(request)
        });
        let connection = builder.serve_connection(TokioIo::new(stream), per_request);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
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
    state
        .sessions
        .flush()
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}
