//! Sending post-* events: retries with backoff, and the outbox's at-least-once delivery
//! (stored before the client hears of the event, removed on a 2xx, what remains sent again).

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::Uri;
use serde::Deserialize;

use super::{HookEvent, Inner};
use crate::upload::UploadId;

/// The one field the redelivery reads back from a stored payload.
#[derive(Deserialize)]
struct EventOf {
    event: HookEvent,
}

/// One post-* event on its way.
pub(super) struct Outgoing {
    pub(super) event: HookEvent,
    pub(super) url: Uri,
    pub(super) event_id: String,
    pub(super) body: Bytes,
    pub(super) upload: UploadId,
}

/// Send a post-* event from a task of its own, retrying with backoff, then logging. A
/// `queued` (outbox) event leaves the outbox on its 2xx; after its retries it stays there for
/// the redelivery.
pub(super) fn spawn_delivery(inner: Arc<Inner>, outgoing: Outgoing, queued: bool) {
    let Outgoing {
        event,
        url,
        event_id,
        body,
        upload,
    } = outgoing;
    tokio::spawn(async move {
        let mut backoff = inner.settings.backoff.0;
        let mut attempt = 0;
        loop {
            match inner.call(&url, body.clone()).await {
                Ok(_) => {
                    inner.count(event, "ok");
                    if queued {
                        inner.delivered(&event_id).await;
                    }
                    return;
                }
                Err(err) if attempt < inner.settings.retries => {
                    inner.count(event, "retried");
                    tracing::debug!(event = event.name(), %upload, event_id, error = %err, attempt, "hook failed; retrying");
                }
                Err(err) if queued => {
                    inner.count(event, "failed");
                    tracing::warn!(event = event.name(), %upload, event_id, error = %err, attempts = attempt + 1, "hook failed; kept in the outbox for redelivery");
                    inner.lock_in_flight().remove(&event_id);
                    return;
                }
                Err(err) => {
                    inner.count(event, "failed");
                    tracing::warn!(event = event.name(), %upload, event_id, error = %err, attempts = attempt + 1, "hook failed; giving up");
                    return;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
        }
    });
}

/// Send what waits in the outbox: at once (what the last run left), then every
/// `hooks.redeliver_interval`, one event at a time, one attempt each; events a task is still
/// retrying are left to it.
pub(super) async fn redeliver(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let interval = strong.settings.redeliver_interval.0;
        strong.sweep_outbox().await;
        drop(strong);
        tokio::time::sleep(interval).await;
    }
}

impl Inner {
    /// Store an outbox event before anyone hears of it; whether it was stored. A failure to
    /// store it is logged and the event is still sent, once, as before the outbox existed:
    /// the commit it reports has already happened, so the client's request does not fail.
    pub(super) async fn enqueue(self: &Arc<Inner>, event_id: &str, body: &Bytes) -> bool {
        let this = Arc::clone(self);
        let (id, bytes) = (event_id.to_owned(), body.clone());
        let stored = tokio::task::spawn_blocking(move || match &this.outbox {
            Some(outbox) => outbox.put(&id, &bytes),
            None => Ok(()),
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match stored {
            Ok(()) => {
                self.lock_in_flight().insert(event_id.to_owned());
                true
            }
            Err(err) => {
                tracing::error!(event_id, error = %err, "cannot store a hook event in the outbox; it is sent at most once");
                self.metrics.hook_call("outbox", "failed");
                false
            }
        }
    }

    /// An outbox event got its 2xx: forget it.
    async fn delivered(self: &Arc<Inner>, event_id: &str) {
        let this = Arc::clone(self);
        let id = event_id.to_owned();
        let removed = tokio::task::spawn_blocking(move || match &this.outbox {
            Some(outbox) => outbox.remove(&id),
            None => Ok(()),
        })
        .await;
        if let Ok(Err(err)) = removed {
            tracing::warn!(event_id, error = %err, "cannot remove a delivered hook event; it may be sent again");
        }
        self.lock_in_flight().remove(event_id);
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass over the outbox: one attempt for each event no task is sending.
    async fn sweep_outbox(self: &Arc<Inner>) {
        let this = Arc::clone(self);
        let listed = tokio::task::spawn_blocking(move || match &this.outbox {
            Some(outbox) => outbox.pending(),
            None => Ok(Vec::new()),
        })
        .await;
        let pending = match listed {
            Ok(Ok(pending)) => pending,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot read the hook outbox");
                return;
            }
            Err(_) => return,
        };
        for (event_id, body) in pending {
            // The event's name is in its body; its endpoint is today's configuration's.
            let Ok(EventOf { event }) = serde_json::from_slice::<EventOf>(&body) else {
                tracing::warn!(event_id, "hook outbox entry without an event name skipped");
                continue;
            };
            // Off in today's configuration: kept for when it is on again.
            let Some(url) = self.endpoints.get(&event).cloned() else {
                continue;
            };
            if !self.lock_in_flight().insert(event_id.clone()) {
                continue;
            }
            match self.call(&url, body).await {
                Ok(_) => {
                    self.count(event, "ok");
                    self.delivered(&event_id).await;
                }
                Err(err) => {
                    self.count(event, "failed");
                    tracing::debug!(event = event.name(), event_id, error = %err, "hook redelivery failed");
                    self.lock_in_flight().remove(&event_id);
                }
            }
        }
    }
}
