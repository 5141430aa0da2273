//! §Core protocol: OPTIONS (server capabilities), HEAD (where an upload stands), PATCH (append).
//!
//! Statuses: OPTIONS 204; HEAD 200, 404, 410, 412; PATCH 204, 400, 403 (final upload), 404, 409
//! (offset mismatch), 410, 412, 413, 415, 423 (held by a request that would not let go), 460
//! (checksum), 500 (body broke off or went idle: received bytes kept), 507.

use std::time::Duration;

use http::header::{HeaderValue, CACHE_CONTROL};
use http::StatusCode;
use warp::reply::Response;

use super::checksum::{self, ChecksumRequest};
use super::{
    concatenation, creation, expiration, header_str, headers, set_header, set_u64, BodyStream,
    RequestParts, EXTENSIONS, TUS_CHECKSUM_ALGORITHM, TUS_EXTENSION, TUS_MAX_SIZE, TUS_VERSION,
    TUS_VERSION_HEADER, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_LENGTH, UPLOAD_LIMIT,
    UPLOAD_METADATA, UPLOAD_OFFSET,
};
use crate::checksum::Algorithm;
use crate::checksum::Hasher;
use crate::config::{BufferSetting, Durability};
use crate::error::{Result, TusError};
use crate::metrics::UploadEvent;
use crate::session::lock::UploadGuard;
use crate::state::AppState;
use crate::storage::BlobWriter;
use crate::transfer::body::is_malformed_framing;
use crate::transfer::journal::Journaled;
use crate::transfer::pipeline::{
    self, AdaptiveBuffer, AppendEnd, AppendOutcome, AppendPlan, CheckpointPolicy, RateFloor,
};
use crate::transfer::policy::{self, InterfaceKind};
use crate::transfer::profile::{ClientKey, PatchReport};
use crate::upload::{Concat, UploadId, UploadInfo, UploadState};

/// OPTIONS `{base}` or `{base}{id}`: what this server supports. No Tus-Resumable needed.
pub fn server_info(state: &AppState) -> Response {
    let mut response = super::empty(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
    headers.insert(TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS));
    if let Ok(value) = HeaderValue::from_str(&Algorithm::advertised()) {
        headers.insert(TUS_CHECKSUM_ALGORITHM, value);
    }
    if let Some(max) = state.settings.max_size() {
        set_header(&mut response, TUS_MAX_SIZE, max);
    }
    if let Some(limit) = upload_limit(state) {
        set_header(&mut response, UPLOAD_LIMIT, limit);
    }
    response
}

/// `Upload-Limit: max-size=N, max-append-size=M` (IETF draft) for the limits that are set.
fn upload_limit(state: &AppState) -> Option<String> {
    let parts: Vec<String> = [
        ("max-size", state.settings.max_size()),
        ("max-append-size", state.settings.max_append_size()),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// HEAD `{base}{id}`: the committed offset, length and metadata. It takes no lock, so it
/// never waits for a live PATCH and never fails because one is running.
pub async fn upload_offset(
    state: &AppState,
    id: UploadId,
    request: &RequestParts,
) -> Result<Response> {
    super::require_tus_resumable(&request.headers)?;
    // A client that HEADs while its old PATCH hangs on a dead connection wants that PATCH's
    // bytes counted: let a stalled holder commit first (a live one is not disturbed).
    state.release_stalled(&id).await;
    let info = concatenation::settle(state, state.load(&id).await?, request).await?;
    let mut response = super::empty(StatusCode::OK);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    describe_upload(state, &info, &mut response);
    Ok(response)
}

/// The headers that describe an upload's state (HEAD, and partly POST/PATCH responses).
pub fn describe_upload(state: &AppState, info: &UploadInfo, response: &mut Response) {
    let pending_final = matches!(info.concat, Concat::Final { joined: false, .. });
    // §Concatenation: no Upload-Offset for a final upload whose parts are not joined yet.
    if !pending_final {
        set_u64(response, UPLOAD_OFFSET, info.offset);
    }
    match info.length {
        Some(length) => set_u64(response, UPLOAD_LENGTH, length),
        // A final upload's length is unknown only while a part's is; it is not "deferred".
        None if !info.is_final() => set_header(response, UPLOAD_DEFER_LENGTH, 1),
        None => {}
    }
    if !info.metadata.is_empty() {
        set_header(response, UPLOAD_METADATA, &info.metadata);
    }
    if let Some(value) = concatenation::header_value(state, &info.concat) {
        set_header(response, UPLOAD_CONCAT, value);
    }
    expiration::describe(info, response);
}

/// PATCH `{base}{id}`: append the body at Upload-Offset.
pub async fn append_chunk(
    state: &AppState,
    id: UploadId,
    request: &RequestParts,
    body: BodyStream,
) -> Result<Response> {
    let headers = &request.headers;
    super::require_tus_resumable(headers)?;
    if !super::has_offset_content_type(headers) {
        return Err(TusError::UnsupportedMediaType);
    }
    let requested = header_str(headers, &UPLOAD_OFFSET)
        .ok_or(TusError::BadRequest("Upload-Offset header is required"))
        .and_then(|v| Ok(headers::parse_u64("Upload-Offset", v)?))?;
    let declared_length = header_str(headers, &UPLOAD_LENGTH)
        .map(|v| headers::parse_u64("Upload-Length", v))
        .transpose()?;
    let checksum = checksum::requested(headers)?;

    let guard = state.lock_for_write(&id).await?;
    let mut info = state.load(&id).await?;
    if info.is_final() {
        return Err(TusError::FinalUploadPatch);
    }
    if requested != info.offset {
        return Err(TusError::OffsetMismatch {
            current: info.offset,
            requested,
        });
    }
    if let Some(length) = declared_length {
        creation::declare_length(state, request.principal.as_ref(), &mut info, length)?;
    }
    receive(state, &mut info, request, body, checksum, &guard).await?;

    let mut response = super::empty(StatusCode::NO_CONTENT);
    set_u64(&mut response, UPLOAD_OFFSET, info.offset);
    expiration::describe(&info, &mut response);
    Ok(response)
}

/// How long an append waits for buffer memory before answering 503.
const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// Take a request body into `info`'s blob at its offset and commit what may be kept.
///
/// Without a checksum every byte received is kept, even if the body broke off: the client
/// resumes from the new offset. Long bodies are committed along the way (every
/// [`CheckpointPolicy::DEFAULT`]), so a crash mid-PATCH loses little progress. With a checksum
/// (header or trailer) it is all or nothing. Bytes are synced before the offset that covers
/// them is stored, so the stored offset never exceeds what is durably written. On return,
/// `info` is what was committed.
pub async fn receive(
    state: &AppState,
    info: &mut UploadInfo,
    request: &RequestParts,
    mut body: BodyStream,
    checksum: Option<ChecksumRequest>,
    guard: &UploadGuard,
) -> Result<()> {
    if super::content_length(&request.headers)
        .is_some_and(|declared| declared > room_for_body(state, request, info))
    {
        return Err(too_large(state, request, info));
    }
    let client_ip = request.client_ip(&state.settings.server);
    let client = client_ip.map(ClientKey::Address);
    let mut buffer = request_buffer(state, request, client_ip, client.as_ref()).await?;
    let limits = &state.settings.limits;
    if limits.min_body_rate.0 > 0 {
        buffer.set_rate_floor(RateFloor::new(
            limits.min_body_rate.0,
            limits.min_body_rate_window.0,
        ));
    }
    // Stopped by a newer request (the lock) or by the interface monitor (address gone); one
    // token for both, so the lock table knows a stopping holder is about to commit.
    let stop = guard.stop_requested();
    let binding = request
        .conn
        .map(|c| state.interfaces.bind(c.local.ip(), stop.clone()));
    let request_max = state.settings.timeouts.request_max.0;
    let deadline = (!request_max.is_zero()).then(|| tokio::time::Instant::now() + request_max);
    let can_read_back = !state.blobs.is_shared();
    let mut hasher = checksum.as_ref().and_then(|c| c.hasher(can_read_back));
    let mut writer = state.blobs.writer(&info.id).await?;
    let heartbeat = guard.heartbeat().clone();
    let progress = state.hooks.progress(info, request);
    let on_frame = move |received_to: u64| {
        heartbeat.beat();
        if let Some(progress) = &progress {
            progress.tick(received_to);
        }
    };
    let first = info.offset;
    let began = std::time::Instant::now();

    let mut checkpoint = Checkpoint::Idle;
    let (start, outcome) = loop {
        let start = info.offset;
        let plan = AppendPlan {
            start,
            max_bytes: room_for_body(state, request, info),
            idle_timeout: state.settings.timeouts.body_idle.0,
            stop: stop.clone(),
            checkpoint: checksum.is_none().then(|| checkpoint_policy(request)),
            deadline,
        };
        let outcome = pipeline::append(
            &mut body,
            writer.as_mut(),
            plan,
            &mut buffer,
            hasher.as_mut(),
            &on_frame,
        )
        .await;
        if !matches!(outcome.end, AppendEnd::Checkpoint) {
            break (start, outcome);
        }
        let at = start + outcome.written;
        checkpoint.finish().await?;
        // A holder that lost its shared lease (another instance took over) stores nothing.
        guard.confirm().await?;
        checkpoint = Checkpoint::start(state, info, writer.as_mut(), at).await?;
        if let Some(progress) = &request.progress {
            // A progress report must carry a committed offset: this one waits for its commit.
            checkpoint.finish().await?;
            (progress.report)(at);
        }
    };
    // Before anything else is stored: a later commit must never be overtaken by this one.
    checkpoint.finish().await?;
    // The body is over, whatever ended it. Marking the holder as stopping makes a HEAD that
    // arrives during the commit below (a client re-syncing right after a cut) wait for it.
    stop.cancel();
    if let Some(client) = &client {
        state.profiles.record(
            client,
            PatchReport {
                bytes: start + outcome.written - first,
                rate: buffer.adapter().mean_rate(),
                interrupted: !matches!(outcome.end, AppendEnd::Complete | AppendEnd::TooLarge),
            },
        );
    }
    drop(buffer);

    // Whatever follows (cutting a refused chunk, committing) needs the lease still held.
    guard.confirm().await?;
    let verdict = check_chunk(state, request, info, &outcome, checksum, hasher).await;
    if let Err(refused) = verdict {
        state.blobs.truncate(&info.id, start).await?;
        return Err(refused);
    }
    let finishing = !info.is_finished() && info.length == Some(start + outcome.written);
    if finishing {
        pre_finish(state, info, start, start + outcome.written, request).await?;
    }
    let broke_off = !matches!(outcome.end, AppendEnd::Complete | AppendEnd::TooLarge);
    let next = if broke_off {
        state.metrics.upload(UploadEvent::Interrupted);
        UploadState::Interrupted
    } else {
        UploadState::Uploading
    };
    guard.confirm().await?;
    commit(state, info, writer.as_mut(), start + outcome.written, next).await?;
    if finishing {
        // The copy beside the bytes learns the upload is whole: should the database ever
        // roll this record back, start-up sees the difference instead of cutting the file.
        state.keep_record_copy(info).await;
        state.hooks.post_finish(info, request).await;
    }
    state.metrics.patch(began.elapsed(), info.offset - first);
    tracing::Span::current().record("bytes", info.offset - first);
    if binding.as_ref().is_some_and(|b| b.address_vanished()) {
        // The server lost the address this client used; give it time to come back another way.
        expiration::grant_grace(state, info);
        state.sessions.put(info).await?;
    }

    ending(state, request, info, outcome.end)
}

/// The pre-finish hook sees the complete upload before it is committed as finished. A
/// rejection discards the upload (record and bytes); a hook failure drops this body's bytes,
/// as a checksum mismatch does, so the upload stays as it was and the client's retry asks again.
async fn pre_finish(
    state: &AppState,
    info: &UploadInfo,
    start: u64,
    end: u64,
    request: &RequestParts,
) -> Result<()> {
    let mut complete = info.clone();
    complete.offset = end;
    complete.state = UploadState::Completed;
    match state.hooks.pre_finish(&complete, request).await {
        Ok(()) => Ok(()),
        Err(rejected @ TusError::HookRejected { .. }) => {
            state.remove_upload(&info.id).await?;
            tracing::info!(upload = %info.id, "upload discarded: the pre-finish hook refused it");
            Err(rejected)
        }
        Err(failed) => {
            state.blobs.truncate(&info.id, start).await?;
            Err(failed)
        }
    }
}

/// How often a body is committed on the way: [`CheckpointPolicy::DEFAULT`], or more often when
/// someone wants progress reports (each report must carry a committed offset).
fn checkpoint_policy(request: &RequestParts) -> CheckpointPolicy {
    let default = CheckpointPolicy::DEFAULT;
    match &request.progress {
        Some(progress) if !progress.interval.is_zero() => CheckpointPolicy {
            interval: progress.interval.min(default.interval),
            ..default
        },
        _ => default,
    }
}

/// The buffer for one request body: sized by the policy (client profile, else interface kind)
/// or fixed by `[transfer] buffer`, within the client address's share of the memory budget;
/// 503 when that share or the budget stays spent.
async fn request_buffer(
    state: &AppState,
    request: &RequestParts,
    client_ip: Option<std::net::IpAddr>,
    client: Option<&ClientKey>,
) -> Result<AdaptiveBuffer> {
    let (class, adaptive) = match state.settings.transfer.buffer {
        BufferSetting::Adaptive => {
            let interface = request.conn.map_or(InterfaceKind::Unknown, |c| {
                state.interfaces.kind_of(c.local.ip())
            });
            let known_rate = client.and_then(|c| state.profiles.throughput(c));
            let declared = super::content_length(&request.headers);
            (policy::initial_class(interface, known_rate, declared), true)
        }
        BufferSetting::Fixed(size) => (
            policy::class_of(usize::try_from(size.0).unwrap_or(usize::MAX)),
            false,
        ),
    };
    AdaptiveBuffer::acquire_for(&state.pool, client_ip, class, adaptive, BUDGET_WAIT)
        .await
        .ok_or(TusError::Overloaded)
}

/// Whether the bytes just written may be kept: not past the limit, and matching the checksum
/// when one was announced (then only a complete body can match).
async fn check_chunk(
    state: &AppState,
    request: &RequestParts,
    info: &UploadInfo,
    outcome: &AppendOutcome,
    checksum: Option<ChecksumRequest>,
    hasher: Option<Hasher>,
) -> Result<()> {
    let trailers = &request.trailers;
    match (&outcome.end, checksum) {
        (AppendEnd::TooLarge, _) => Err(too_large(state, request, info)),
        (AppendEnd::Complete, Some(wanted)) => {
            checksum::verify(state, info, outcome.written, wanted, hasher, trailers).await
        }
        (_, Some(_)) => Err(TusError::BadRequest(
            "the body ended early; a chunk with a checksum is kept whole or not at all",
        )),
        (_, None) => Ok(()),
    }
}

/// What the client hears once what it sent is committed.
fn ending(
    state: &AppState,
    request: &RequestParts,
    info: &UploadInfo,
    end: AppendEnd,
) -> Result<()> {
    match end {
        AppendEnd::Complete | AppendEnd::Checkpoint => Ok(()),
        AppendEnd::TooLarge => Err(too_large(state, request, info)),
        AppendEnd::Interrupted(err) if is_malformed_framing(&err) => {
            Err(TusError::MalformedBody(err))
        }
        AppendEnd::Interrupted(err) => Err(TusError::BodyInterrupted(err)),
        AppendEnd::IdleTimeout => Err(TusError::BodyTimeout(
            state.settings.timeouts.body_idle.0.as_secs(),
        )),
        AppendEnd::DeadlineReached => Err(TusError::RequestDeadline(
            state.settings.timeouts.request_max.0.as_secs(),
        )),
        // The server is going down; what arrived is committed, the client retries later.
        AppendEnd::Stopped if state.locks.is_closing() => Err(TusError::ShuttingDown),
        AppendEnd::TooSlow => Err(TusError::BodyTooSlow {
            min_rate: state.settings.limits.min_body_rate.0,
            window_secs: state.settings.limits.min_body_rate_window.0.as_secs(),
        }),
        // A newer request took the upload over; this (usually dead) client should re-sync.
        AppendEnd::Stopped => Err(TusError::Locked),
        AppendEnd::WriteFailed(err) => Err(err.into()),
    }
}

/// Make the bytes up to `offset` durable, then record `offset` (and renew the expiry).
///
/// `next` is the lifecycle state to record unless the upload is now complete.
async fn commit(
    state: &AppState,
    info: &mut UploadInfo,
    writer: &mut dyn BlobWriter,
    offset: u64,
    next: UploadState,
) -> Result<()> {
    let from = info.offset;
    let fsync = state.settings.storage.durability == Durability::Fsync;
    let journal = fsync
        .then_some(state.journal.as_ref())
        .flatten()
        .filter(|journal| offset > from && journal.admits(offset - from));
    if journal.is_none() && offset > from && fsync {
        writer.sync().await?;
    }
    if info.length == Some(offset) {
        // Also when the length was only now declared at the offset already stored; sealing
        // an already sealed upload is a no-op.
        state.blobs.complete(&info.id, offset).await?;
    }
    advance(state, info, offset, next);
    if let Some(journal) = journal {
        // Bytes and record durable in one shared fdatasync (see transfer::journal).
        if journal.commit(info, writer, from).await? == Journaled::Yes {
            return Ok(());
        }
        // The journal could not take them: the ordinary way, file first.
        writer.sync().await?;
    }
    state.sessions.put(info).await?;
    Ok(())
}

/// A mid-body commit. With fsync durability the sync and the store run in the background
/// while the body keeps arriving (a checkpoint used to stall the socket for the whole
/// fdatasync); `info` moves ahead in memory at once, the stored record only once its bytes
/// are durable. At most one is in flight, and [`Checkpoint::finish`] must be awaited before
/// the next commit of the same upload.
enum Checkpoint {
    /// Nothing in flight.
    Idle,
    /// Syncing, then storing the record it carries.
    Running(tokio::task::JoinHandle<Result<()>>),
}

impl Checkpoint {
    async fn start(
        state: &AppState,
        info: &mut UploadInfo,
        writer: &mut dyn BlobWriter,
        offset: u64,
    ) -> Result<Checkpoint> {
        let background = (state.settings.storage.durability == Durability::Fsync)
            .then(|| writer.background_sync())
            .flatten();
        let Some(sync) = background else {
            commit(state, info, writer, offset, UploadState::Uploading).await?;
            return Ok(Checkpoint::Idle);
        };
        advance(state, info, offset, UploadState::Uploading);
        let (record, sessions) = (info.clone(), state.sessions.clone());
        Ok(Checkpoint::Running(tokio::spawn(async move {
            sync.await?;
            sessions.put(&record).await?;
            Ok(())
        })))
    }

    /// Wait for the checkpoint in flight, if any.
    async fn finish(&mut self) -> Result<()> {
        match std::mem::replace(self, Checkpoint::Idle) {
            Checkpoint::Idle => Ok(()),
            Checkpoint::Running(task) => task
                .await
                .map_err(|join| TusError::Storage(std::io::Error::other(join).into()))?,
        }
    }
}

/// Move `info` to `offset` in memory (state, expiry, metrics); storing it is the caller's.
fn advance(state: &AppState, info: &mut UploadInfo, offset: u64, next: UploadState) {
    let from = info.offset;
    let was_finished = info.is_finished();
    info.offset = offset;
    info.state = if info.is_finished() {
        UploadState::Completed
    } else {
        next
    };
    expiration::renew(state, info);
    state.metrics.received(offset - from);
    if info.is_finished() && !was_finished {
        state.metrics.upload(UploadEvent::Finished);
        tracing::info!(upload = %info.id, length = offset, "upload finished");
    }
    tracing::debug!(upload = %info.id, from, to = offset, "chunk committed");
}

/// How many bytes one body may still carry for this upload.
///
/// While the length is deferred the ceiling is the smaller of Tus-Max-Size and the owner's
/// own limit: otherwise a token limited to 1,000 bytes could store any amount by never
/// declaring a length (the declaration itself is checked in [`creation::declare_length`]).
fn room_for_body(state: &AppState, request: &RequestParts, info: &UploadInfo) -> u64 {
    let owner_max = request.principal.as_ref().and_then(|p| p.max_size);
    let deferred_max = match (state.settings.max_size(), owner_max) {
        (Some(server), Some(owner)) => Some(server.min(owner)),
        (server, owner) => server.or(owner),
    };
    let ceiling = info.length.or(deferred_max).unwrap_or(u64::MAX);
    let room = ceiling.saturating_sub(info.offset);
    state
        .settings
        .max_append_size()
        .map_or(room, |cap| room.min(cap))
}

fn too_large(state: &AppState, request: &RequestParts, info: &UploadInfo) -> TusError {
    let room = room_for_body(state, request, info);
    TusError::TooLarge(format!(
        "the body may carry at most {room} more bytes for this upload (offset {}, length {})",
        info.offset,
        info.length
            .map_or_else(|| "deferred".to_owned(), |l| l.to_string())
    ))
}
