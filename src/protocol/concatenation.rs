//! §Concatenation and concatenation-unfinished: partial uploads joined into a final one.
//!
//! A final upload may be created before its parts are complete. It is joined lazily: the
//! first HEAD or GET that finds every part finished joins the bytes (under the final upload's
//! lock) and records it as complete. Until then HEAD omits Upload-Offset, as the spec asks.
//!
//! Statuses of a final POST: 201; 400 (Upload-Length given, a URL that is not one of our
//! partial uploads, or another server's, a part named twice, more than
//! `limits.max_concat_parts` parts); 413 (sum over Tus-Max-Size or the owner's limit, at
//! creation or, for parts whose lengths were deferred, when the join happens: the final
//! upload is then discarded).

use http::header::{HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::{access, creation, expiration, headers::Metadata, RequestParts, UPLOAD_LENGTH};
use crate::error::{Result, TusError};
use crate::metrics::UploadEvent;
use crate::state::AppState;
use crate::upload::{unix_now, Concat, UploadId, UploadInfo, UploadState};

/// POST `{base}` with `Upload-Concat: final;<urls>`.
pub async fn create_final(
    state: &AppState,
    request: &RequestParts,
    urls: &[String],
    metadata: Metadata,
) -> Result<Response> {
    let headers = &request.headers;
    let principal = request.principal.as_ref();
    if headers.contains_key(UPLOAD_LENGTH) {
        return Err(TusError::BadRequest(
            "a final upload must not carry Upload-Length",
        ));
    }
    // Checked before any lookup: one short header must not cost a thousand reads.
    if urls.len() > state.settings.limits.max_concat_parts {
        return Err(TusError::BadRequest(
            "Upload-Concat names more parts than this server allows (limits.max_concat_parts)",
        ));
    }
    let mut parts: Vec<UploadId> = Vec::with_capacity(urls.len());
    let mut length = Some(0u64);
    for url in urls {
        let id = part_id(state, headers, url)?;
        // A part named twice would let one stored upload be copied any number of times.
        if parts.contains(&id) {
            return Err(TusError::BadRequest(
                "Upload-Concat names the same upload more than once",
            ));
        }
        let part = state
            .sessions
            .get(&id)
            .await?
            .filter(|p| !p.is_expired(unix_now()))
            .ok_or(TusError::BadRequest(
                "Upload-Concat names an unknown upload",
            ))?;
        if part.concat != Concat::Partial {
            return Err(TusError::BadRequest(
                "Upload-Concat names an upload that is not partial",
            ));
        }
        if principal.is_some_and(|p| !access::owned_by(&part, p)) {
            return Err(TusError::Forbidden(
                "only the owner of a partial upload may concatenate it",
            ));
        }
        // Joining a part reads it: the same pre-access a GET of it would ask.
        state.hooks.pre_access_to(&part, request).await?;
        length = match (length, part.length) {
            (Some(sum), Some(len)) => Some(sum.checked_add(len).ok_or_else(|| {
                TusError::TooLarge("the parts together are too large".to_owned())
            })?),
            _ => None,
        };
        parts.push(id);
    }
    if let Some(total) = length {
        check_total(state, principal, total)?;
    }
    // The parts already count as the owner's bytes in flight: the final adds nothing new.
    let owner = access::admit_creation(state, principal, None, &metadata).await?;
    let mut info = UploadInfo {
        id: UploadId::random(),
        length,
        offset: 0,
        metadata: metadata.to_header(),
        created_at: unix_now(),
        expires_at: expiration::deadline(state, false),
        concat: Concat::Final {
            parts,
            joined: false,
        },
        state: UploadState::Initiated,
        owner,
    };
    state.hooks.pre_create(&mut info, request).await?;
    let info = state.create_upload(info, true).await?;
    state.hooks.post_create(&info, request);
    let info = match settle(state, info.clone(), request).await {
        Ok(settled) => settled,
        // The final upload exists; it stays pending and the next HEAD or GET asks again.
        Err(TusError::HookUnavailable(_)) => info,
        Err(err) => return Err(err),
    };
    state.metrics.upload(UploadEvent::Created);
    tracing::info!(upload = %info.id, joined = info.is_finished(), "final upload created");

    let mut response = super::empty(StatusCode::CREATED);
    if let Ok(value) = HeaderValue::from_str(&super::upload_url(state, headers, &info.id)) {
        response.headers_mut().insert(LOCATION, value);
    }
    expiration::describe(&info, &mut response);
    Ok(response)
}

/// 413 when the parts together exceed Tus-Max-Size or the owner's own limit.
fn check_total(
    state: &AppState,
    principal: Option<&crate::auth::Principal>,
    total: u64,
) -> Result<()> {
    creation::check_max_size(state, total)?;
    if let Some(principal) = principal {
        access::check_owner_size(principal, total)?;
    }
    Ok(())
}

/// The id behind one URL of `Upload-Concat: final;...`: a path under our base path, or an
/// absolute URL on this very server.
fn part_id(state: &AppState, headers: &HeaderMap, url: &str) -> Result<UploadId> {
    let path = match url.split_once("://") {
        Some((_scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let ours = super::request_origin(state, headers).map(|(_, host)| host);
            if !ours.is_some_and(|host| host.eq_ignore_ascii_case(authority)) {
                return Err(TusError::BadRequest(
                    "Upload-Concat names an upload on another server",
                ));
            }
            path
        }
        None => url,
    };
    path.strip_prefix(state.settings.server.base_path.as_str())
        .and_then(UploadId::parse)
        .ok_or(TusError::BadRequest(
            "Upload-Concat names an invalid upload URL",
        ))
}

/// Join a final upload whose parts are all finished; otherwise return it unchanged.
/// Anything that is not a pending final upload is returned as it is.
///
/// The join is what finishes a final upload, so the pre-finish hook is asked first: a
/// rejection discards the final upload; a hook failure leaves it pending (the next HEAD or GET
/// asks again).
pub async fn settle(
    state: &AppState,
    info: UploadInfo,
    request: &RequestParts,
) -> Result<UploadInfo> {
    if !matches!(info.concat, Concat::Final { joined: false, .. }) {
        return Ok(info);
    }
    // Someone else joining it right now: report it as still pending.
    let Ok(_guard) = state.locks.try_lock(&info.id).await else {
        return Ok(info);
    };
    let Some(mut info) = state.sessions.get(&info.id).await? else {
        return Err(TusError::NotFound);
    };
    let Concat::Final {
        parts,
        joined: false,
    } = &info.concat
    else {
        return Ok(info);
    };
    let mut total = 0u64;
    for part in parts {
        match state.sessions.get(part).await? {
            Some(p) if p.is_finished() => total = total.saturating_add(p.offset),
            // A part missing for good leaves the final pending until it expires.
            _ => return Ok(info),
        }
    }
    // Parts whose lengths were deferred when the final was created are only summed now.
    // A sum over the limits can never shrink again: the final upload is discarded.
    if let Err(over) = check_total(state, request.principal.as_ref(), total) {
        state.remove_upload(&info.id).await?;
        tracing::info!(upload = %info.id, length = total, "final upload discarded: its parts together exceed the size limit");
        return Err(over);
    }
    let parts = parts.clone();
    let total = state.blobs.concat(&info.id, &parts).await?;
    info.length = Some(total);
    info.offset = total;
    info.concat = Concat::Final {
        parts,
        joined: true,
    };
    info.state = UploadState::Completed;
    if let Err(err) = state.hooks.pre_finish(&info, request).await {
        if matches!(err, TusError::HookRejected { .. }) {
            state.remove_upload(&info.id).await?;
        }
        return Err(err);
    }
    state.metrics.upload(UploadEvent::Finished);
    expiration::renew(state, &mut info);
    state.sessions.put(&info).await?;
    state.keep_record_copy(&info).await;
    state.hooks.post_finish(&info, request).await;
    tracing::info!(upload = %info.id, length = total, "final upload joined");
    Ok(info)
}

/// The `Upload-Concat` response value for an upload, if it takes part in concatenation.
pub fn header_value(state: &AppState, concat: &Concat) -> Option<String> {
    match concat {
        Concat::None => None,
        Concat::Partial => Some("partial".to_owned()),
        Concat::Final { parts, .. } => {
            let base = &state.settings.server.base_path;
            let urls: Vec<String> = parts.iter().map(|id| format!("{base}{id}")).collect();
            Some(format!("final;{}", urls.join(" ")))
        }
    }
}
