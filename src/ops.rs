//! Endpoints for operators: `/healthz`, `/readyz`, `/metrics`, and the admin API under
//! `/admin/` (off by default, bearer-token protected).
//!
//! Admin API (JSON):
//! - `GET /admin/uploads?state=interrupted&owner=alice&older_than=30m` list uploads (filters
//!   optional; `state` is a lifecycle name, `expired` included; `owner` a token subject;
//!   `older_than` compares creation time)
//! - `GET /admin/uploads/{id}` one upload
//! - `POST /admin/uploads/{id}/expire` make it expire now (the sweeper deletes it)
//! - `DELETE /admin/uploads/{id}` delete it now
//! - `GET /admin/clients` client profiles; `GET /admin/interfaces` the interface monitor's view

use http::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use warp::reply::Response;

use crate::config::HumanDuration;
use crate::error::TusError;
use crate::metrics::UploadEvent;
use crate::state::AppState;
use crate::upload::{unix_now, UploadId, UploadInfo};

/// `GET /healthz`: the process is alive and serving.
pub fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_owned())
}

/// `GET /readyz`: the session store flushes (Redis: answers), the data directory is writable
/// (local backend), and free space is above `storage.min_free_space`. 503 with the reasons otherwise.
pub async fn readyz(state: &AppState) -> Response {
    let mut problems = Vec::new();
    if let Err(err) = state.sessions.flush().await {
        problems.push(format!("session store: {err}"));
    }
    if !state.blobs.is_shared() {
        let probe = state.settings.storage.data_dir.join(".readyz-probe");
        let writable = tokio::fs::write(&probe, b"ok").await;
        let _ = tokio::fs::remove_file(&probe).await;
        if let Err(err) = writable {
            problems.push(format!("data directory not writable: {err}"));
        }
    }
    if let Err(err) = state.check_free_space() {
        problems.push(err.to_string());
    }
    if problems.is_empty() {
        text(StatusCode::OK, "ready\n".to_owned())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: &AppState) -> Response {
    let mut response = text(StatusCode::OK, crate::metrics::render(state).await);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /demo/...`: the Uppy Dashboard page of `examples/demo`, built into the binary.
pub fn demo(file: &str) -> Result<Response, TusError> {
    let (body, content_type): (&'static [u8], &'static str) = match file {
        "" | "index.html" => (
            include_bytes!("../examples/demo/index.html"),
            "text/html; charset=utf-8",
        ),
        "demo.js" => (
            include_bytes!("../examples/demo/demo.js"),
            "text/javascript; charset=utf-8",
        ),
        "demo.css" => (
            include_bytes!("../examples/demo/demo.css"),
            "text/css; charset=utf-8",
        ),
        "/" => {
            let mut response = crate::protocol::empty(StatusCode::PERMANENT_REDIRECT);
            response
                .headers_mut()
                .insert(http::header::LOCATION, HeaderValue::from_static("/demo/"));
            return Ok(response);
        }
        _ => return Err(TusError::RouteNotFound),
    };
    let mut response = Response::new(bytes::Bytes::from_static(body).into());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// One upload as the admin API shows it.
#[derive(Debug, Serialize)]
struct UploadView<'a> {
    #[serde(flatten)]
    info: &'a UploadInfo,
    lifecycle: &'static str,
}

/// Anything under `/admin/`.
pub async fn admin(
    state: &AppState,
    method: &Method,
    tail: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Response, TusError> {
    if !authorized(state, headers) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "ERR_UNAUTHORIZED: a valid admin bearer token is required\n".to_owned(),
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tusk-admin\""),
        );
        return Ok(response);
    }
    let segments: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["uploads"]) => list_uploads(state, query).await,
        (&Method::GET, ["uploads", id]) => {
            let info = find(state, id).await?;
            json(&UploadView {
                lifecycle: info.lifecycle(unix_now()),
                info: &info,
            })
        }
        (&Method::POST, ["uploads", id, "expire"]) => {
            let id = parse_id(id)?;
            let _guard = state.lock_for_write(&id).await?;
            let mut info = find(state, id.as_str()).await?;
            info.expires_at = Some(unix_now());
            state.sessions.put(&info).await?;
            tracing::info!(upload = %id, "expired by the admin API");
            Ok(crate::protocol::empty(StatusCode::NO_CONTENT))
        }
        (&Method::DELETE, ["uploads", id]) => {
            let id = parse_id(id)?;
            let _guard = state.lock_for_write(&id).await?;
            find(state, id.as_str()).await?;
            state.remove_upload(&id).await?;
            state.metrics.upload(UploadEvent::Terminated);
            tracing::info!(upload = %id, "deleted by the admin API");
            Ok(crate::protocol::empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, ["clients"]) => {
            let clients: Vec<_> = state
                .profiles
                .snapshot()
                .into_iter()
                .map(|(client, profile)| serde_json::json!({ "client": client.to_string(), "profile": profile }))
                .collect();
            json(&clients)
        }
        (&Method::GET, ["interfaces"]) => {
            let interfaces: Vec<_> = state
                .interfaces
                .snapshot()
                .into_iter()
                .map(|(ip, iface)| serde_json::json!({ "address": ip, "interface": iface }))
                .collect();
            json(&serde_json::json!({
                "addresses": interfaces,
                "stats": state.interfaces.stats(),
            }))
        }
        _ => Err(TusError::RouteNotFound),
    }
}

async fn list_uploads(state: &AppState, query: &str) -> Result<Response, TusError> {
    let mut wanted_state = None;
    let mut wanted_owner = None;
    let mut older_than = None;
    for (key, value) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
    {
        match key {
            "state" => wanted_state = Some(value.to_owned()),
            "owner" => wanted_owner = Some(value.to_owned()),
            "older_than" => {
                older_than = Some(
                    HumanDuration::parse(value)
                        .map_err(|_| {
                            TusError::BadRequest("older_than must be a duration like 30m")
                        })?
                        .0
                        .as_secs(),
                );
            }
            _ => {
                return Err(TusError::BadRequest(
                    "filters are state, owner and older_than",
                ))
            }
        }
    }
    let now = unix_now();
    let uploads = state.sessions.all().await?;
    let views: Vec<UploadView<'_>> = uploads
        .iter()
        .map(|info| UploadView {
            lifecycle: info.lifecycle(now),
            info,
        })
        .filter(|v| wanted_state.as_deref().is_none_or(|s| s == v.lifecycle))
        .filter(|v| wanted_owner.is_none() || v.info.owner == wanted_owner)
        .filter(|v| older_than.is_none_or(|age| v.info.created_at + age <= now))
        .collect();
    json(&views)
}

fn parse_id(text: &str) -> Result<UploadId, TusError> {
    UploadId::parse(text).ok_or(TusError::NotFound)
}

async fn find(state: &AppState, id: &str) -> Result<UploadInfo, TusError> {
    let id = parse_id(id)?;
    state.sessions.get(&id).await?.ok_or(TusError::NotFound)
}

/// Compare the bearer token with the configured one in constant time (digests of both, so
/// neither length nor content leaks through timing).
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = state.admin_token.as_ref().map(|t| t.expose()) else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` as the upload API takes it.
    let presented = crate::protocol::access::bearer_token(headers).unwrap_or_default();
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn json(value: &impl Serialize) -> Result<Response, TusError> {
    let body = serde_json::to_string_pretty(value)
        .map_err(|_| TusError::BadRequest("could not render the answer"))?;
    let mut response = text(StatusCode::OK, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
