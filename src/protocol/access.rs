//! Who may do what, at the HTTP edge: the bearer token of a request, the owner check on every
//! upload request, signed download links, per-owner limits at creation, and the owner's own
//! upload list. [`crate::auth`] knows tokens and owners; this file knows where they sit in a
//! request and which status a refusal gets.
//!
//! In open mode (`auth.mode = "open"`) every check here passes and no owner is recorded.

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use warp::reply::Response;

use super::headers::Metadata;
use crate::auth::link::{LinkParams, SIGNATURE_PARAM};
use crate::auth::Principal;
use crate::error::{Result, TusError};
use crate::state::AppState;
use crate::upload::{unix_now, UploadId, UploadInfo};

/// The principal behind a request: `None` in open mode.
///
/// # Errors
/// 401 without a token or with an invalid one.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &str,
) -> Result<Option<Principal>> {
    if !state.auth.requires_token() {
        return Ok(None);
    }
    let token = bearer_token(headers)
        .or_else(|| query_token(query, state.auth.query_param()?))
        .ok_or(TusError::TokenRequired)?;
    state
        .auth
        .verify(&token, unix_now())
        .map(Some)
        .map_err(|err| TusError::Unauthorized(err.to_string()))
}

/// `Authorization: Bearer TOKEN` (scheme case-insensitive, RFC 9110 §11.1); the admin API
/// reads its token the same way.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// `?{param}=TOKEN` (tokens are base64url and dots: nothing to percent-decode).
fn query_token(query: &str, param: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == param && !value.is_empty()).then(|| value.to_owned())
    })
}

/// `query` without its secrets, for what others see of a request (hooks): the token
/// parameter (`auth.query_param`) and a download link's `signature` are dropped, everything
/// else is kept as it came.
pub fn redact_query(state: &AppState, query: &str) -> String {
    without_secrets(query, state.auth.query_param())
}

fn without_secrets(query: &str, token_param: Option<&str>) -> String {
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            name != SIGNATURE_PARAM && Some(name) != token_param
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A signed download link in the query of a GET, if there is one.
///
/// # Errors
/// 403 when the link is malformed, wrongly signed or expired.
pub fn download_link(state: &AppState, id: &UploadId, query: &str) -> Result<Option<()>> {
    let Some(link) = LinkParams::from_query(query).map_err(link_refused)? else {
        return Ok(None);
    };
    state
        .auth
        .verify_link(id.as_str(), &link, unix_now())
        .map_err(link_refused)?;
    Ok(Some(()))
}

fn link_refused(err: crate::auth::link::LinkError) -> TusError {
    use crate::auth::link::LinkError;
    TusError::Forbidden(match err {
        LinkError::Malformed => "malformed download link",
        LinkError::Signature => "invalid download link signature",
        LinkError::Expired => "download link expired",
    })
}

/// The upload `id` may be used by `principal` (HEAD, PATCH, DELETE, GET): in token mode only
/// its owner may. An unknown id passes: the handler answers 404.
///
/// # Errors
/// 403 for any other owner.
pub async fn authorize(
    state: &AppState,
    id: &UploadId,
    principal: Option<&Principal>,
) -> Result<()> {
    let Some(principal) = principal else {
        return Ok(());
    };
    match state.sessions.get(id).await? {
        Some(info) if !owned_by(&info, principal) => {
            Err(TusError::Forbidden("this upload belongs to another owner"))
        }
        _ => Ok(()),
    }
}

/// Whether `principal` owns `info`.
pub fn owned_by(info: &UploadInfo, principal: &Principal) -> bool {
    info.owner.as_deref() == Some(principal.owner.as_str())
}

/// Per-owner checks before an upload of `length` (`None`: deferred) is created; returns the
/// owner to record.
///
/// # Errors
/// 413 over the owner's size limit; 403 for a filetype the token does not allow; 429 over
/// the hourly creation limit or the bytes in flight.
pub async fn admit_creation(
    state: &AppState,
    principal: Option<&Principal>,
    length: Option<u64>,
    metadata: &Metadata,
) -> Result<Option<String>> {
    let Some(principal) = principal else {
        return Ok(None);
    };
    if let Some(length) = length {
        check_owner_size(principal, length)?;
    }
    let filetype = metadata
        .get("filetype")
        .and_then(|v| std::str::from_utf8(v).ok());
    if !principal.allows_filetype(filetype) {
        return Err(TusError::Forbidden(
            "this token may not upload this filetype",
        ));
    }
    if let Some(limit) = state.auth.max_bytes_in_flight() {
        let pending = bytes_in_flight(state, &principal.owner).await?;
        if pending.saturating_add(length.unwrap_or(0)) > limit {
            return Err(TusError::QuotaExceeded(format!(
                "this owner's unfinished uploads would exceed {limit} bytes in flight; finish or delete some first"
            )));
        }
    }
    if let Some(per_hour) = principal.uploads_per_hour {
        state
            .auth
            .ledger
            .admit_creation(&principal.owner, per_hour, unix_now())
            .map_err(|retry_after| TusError::RateLimited { retry_after })?;
    }
    Ok(Some(principal.owner.clone()))
}

/// 413 when `length` is over the principal's own limit.
///
/// # Errors
/// [`TusError::TooLarge`].
pub fn check_owner_size(principal: &Principal, length: u64) -> Result<()> {
    match principal.max_size {
        Some(max) if length > max => Err(TusError::TooLarge(format!(
            "Upload-Length {length} exceeds this owner's limit of {max}"
        ))),
        _ => Ok(()),
    }
}

/// Bytes the owner's unfinished uploads still announce (deferred lengths count nothing).
async fn bytes_in_flight(state: &AppState, owner: &str) -> Result<u64> {
    let mut pending = 0u64;
    let mut settled = Vec::new();
    for id in state.auth.ledger.unfinished(owner) {
        match state.sessions.get(&id).await? {
            Some(info) if !info.is_finished() && !info.is_expired(unix_now()) => {
                pending = pending.saturating_add(info.length.map_or(0, |l| l - info.offset));
            }
            _ => settled.push(id),
        }
    }
    state.auth.ledger.settled(owner, &settled);
    Ok(pending)
}

/// What `POST {base}{id}/link` answers.
#[derive(Serialize)]
struct SignedLink {
    url: String,
    expires_at: u64,
}

/// `POST {base}{id}/link[?ttl=SECONDS]`: a signed URL for GET of a finished upload, for its
/// owner, valid for `ttl` (default one hour, at most `auth.link_max_ttl`).
///
/// # Errors
/// 404 for unknown uploads, 409 while unfinished, 400 for a bad ttl, 405 in open mode.
pub async fn create_link(
    state: &AppState,
    id: &UploadId,
    headers: &HeaderMap,
    query: &str,
) -> Result<Response> {
    let info = state.sessions.get(id).await?.ok_or(TusError::NotFound)?;
    if !info.is_finished() {
        return Err(TusError::Conflict("the upload is not finished yet"));
    }
    let ttl = match query.split('&').find_map(|pair| pair.strip_prefix("ttl=")) {
        Some(value) => value
            .parse::<u64>()
            .ok()
            .filter(|&t| t > 0)
            .ok_or(TusError::BadRequest(
                "ttl must be a positive number of seconds",
            ))?,
        None => state.auth.default_link_ttl(),
    };
    let link = state
        .auth
        .sign_link(id.as_str(), ttl, unix_now())
        .ok_or(TusError::MethodNotAllowed)?;
    let body = SignedLink {
        url: format!(
            "{}?{}",
            super::upload_url(state, headers, id),
            link.to_query()
        ),
        expires_at: link.expires,
    };
    Ok(json_response(StatusCode::CREATED, &body))
}

/// One upload in the owner's listing.
#[derive(Serialize)]
struct OwnUpload {
    id: String,
    url: String,
    offset: u64,
    length: Option<u64>,
    state: &'static str,
    created_at: u64,
    expires_at: Option<u64>,
}

/// `GET {base}` with a token: the owner's own uploads, newest first.
///
/// # Errors
/// When the session store fails.
pub async fn list_own_uploads(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Response> {
    let now = unix_now();
    let mut uploads: Vec<OwnUpload> = state
        .sessions
        .all()
        .await?
        .into_iter()
        .filter(|info| owned_by(info, principal))
        .map(|info| OwnUpload {
            url: super::upload_url(state, headers, &info.id),
            id: info.id.to_string(),
            offset: info.offset,
            length: info.length,
            state: info.lifecycle(now),
            created_at: info.created_at,
            expires_at: info.expires_at,
        })
        .collect();
    uploads.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    Ok(json_response(StatusCode::OK, &uploads))
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let mut response = Response::new(serde_json::to_vec(body).unwrap_or_default().into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_link_signatures_are_cut_from_the_query_hooks_see() {
        let token = Some("token");
        assert_eq!(without_secrets("token=abc.def&x=1", token), "x=1");
        assert_eq!(without_secrets("x=1&token=abc&y", token), "x=1&y");
        assert_eq!(
            without_secrets("expires=9&kid=k1&signature=SIG", token),
            "expires=9&kid=k1"
        );
        assert_eq!(without_secrets("signature", token), "");
        assert_eq!(without_secrets("access=abc", Some("access")), "");
        assert_eq!(without_secrets("token=abc", None), "token=abc");
        assert_eq!(
            without_secrets("tokens=1&xtoken=2", token),
            "tokens=1&xtoken=2"
        );
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer abc.def.ghi"),
        );
        assert_eq!(bearer_token(&headers).as_deref(), Some("abc.def.ghi"));
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwdw=="),
        );
        assert_eq!(bearer_token(&headers), None);
        assert_eq!(
            query_token("a=1&token=x.y.z", "token").as_deref(),
            Some("x.y.z")
        );
        assert_eq!(query_token("token=", "token"), None);
        assert_eq!(query_token("tokens=x", "token"), None);
    }
}
