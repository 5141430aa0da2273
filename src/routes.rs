//! The one place requests are routed and every response is decorated.
//!
//! warp's method and path filters are static, but tus needs a configurable base path and
//! `X-HTTP-Method-Override` (a POST that means PATCH or DELETE). So one filter extracts the
//! request, and [`dispatch`] matches (resource, effective method) in a single exhaustive table:
//! 404 and 405 are decided there, explicitly. Then [`decorate`] adds `Tus-Resumable` and CORS
//! to every response, errors included.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Buf;
use futures_util::{FutureExt, TryStreamExt};
use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, Method};
use tracing::Instrument;
use warp::filters::path::FullPath;
use warp::reply::Response;
use warp::Filter;

use crate::error::TusError;
use crate::ops;
use crate::protocol::{
    access, core, creation, download, draft, header_str, require_known_transfer_coding,
    require_single_values, require_valid_host, termination, BodyStream, RequestParts,
    METHOD_OVERRIDE, TUS_RESUMABLE, TUS_VERSION,
};
use crate::state::AppState;
use crate::transfer::body::TrailerSlot;
use crate::transfer::interim::InterimSender;
use crate::transfer::ConnInfo;
use crate::upload::UploadId;

/// Methods browsers may use cross-origin.
const CORS_METHODS: &str = "POST, HEAD, PATCH, OPTIONS, GET, DELETE";
/// Request headers browsers may send cross-origin (tus, the IETF draft, and the usual ones).
const CORS_ALLOW_HEADERS: &str = "Authorization, Origin, X-Requested-With, X-Request-ID, \
X-HTTP-Method-Override, Content-Type, Upload-Length, Upload-Offset, Tus-Resumable, \
Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum, Upload-Complete, \
Upload-Draft-Interop-Version, Upload-Incomplete, Content-Digest, Repr-Digest";
/// Response headers browser code may read.
const CORS_EXPOSE_HEADERS: &str = "Upload-Offset, Location, Upload-Length, Tus-Version, \
Tus-Resumable, Tus-Max-Size, Tus-Extension, Upload-Metadata, Upload-Defer-Length, \
Upload-Concat, Upload-Expires, Upload-Limit, Tus-Checksum-Algorithm, Content-Range, ETag, \
WWW-Authenticate, Retry-After, Upload-Complete, Upload-Incomplete, Upload-Draft-Interop-Version";

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// `/metrics` (when enabled)
    Metrics,
    /// `/admin/...` (when enabled), with the rest of the path.
    Admin(String),
    /// `/demo/...` (when enabled), with the file name.
    Demo(String),
    /// The creation endpoint `{base}` (also without its trailing slash).
    Endpoint,
    /// `{base}{id}` with a valid id.
    Upload(UploadId),
    /// `{base}{id}/link`: where an owner asks for a signed download link.
    UploadLink(UploadId),
    /// `{base}{something}` that is no id of ours.
    NoSuchUpload,
    /// Anything else.
    Elsewhere,
}

impl Resource {
    /// What the resumable-upload draft serves here.
    fn draft(&self) -> Option<draft::Target> {
        match self {
            Resource::Endpoint => Some(draft::Target::Endpoint),
            Resource::Upload(id) => Some(draft::Target::Upload(id.clone())),
            Resource::NoSuchUpload => Some(draft::Target::NoSuchUpload),
            _ => None,
        }
    }

    fn of(base: &str, path: &str) -> Resource {
        match path {
            "/healthz" => return Resource::Healthz,
            "/readyz" => return Resource::Readyz,
            "/metrics" => return Resource::Metrics,
            // The page's relative links need the trailing slash.
            "/demo" => return Resource::Demo("/".to_owned()),
            _ => {}
        }
        if let Some(tail) = path.strip_prefix("/admin/") {
            return Resource::Admin(tail.to_owned());
        }
        if let Some(file) = path.strip_prefix("/demo/") {
            return Resource::Demo(file.to_owned());
        }
        if path == base || Some(path) == base.strip_suffix('/') {
            return Resource::Endpoint;
        }
        let Some(tail) = path.strip_prefix(base) else {
            return Resource::Elsewhere;
        };
        if let Some(id) = tail.strip_suffix("/link") {
            return UploadId::parse(id).map_or(Resource::NoSuchUpload, Resource::UploadLink);
        }
        UploadId::parse(tail.strip_suffix('/').unwrap_or(tail))
            .map_or(Resource::NoSuchUpload, Resource::Upload)
    }
}

/// The whole tus API of `state`, as a warp filter.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    // One reference count per request, not one per shared part of the state.
    let state = Arc::new(state);
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<TrailerSlot>())
        .and(warp::ext::optional::<ConnInfo>())
        .and(warp::ext::optional::<InterimSender>())
        .and(warp::ext::optional::<http::Version>())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::stream().map(box_body))
        .and(warp::any().map(move || Arc::clone(&state)))
        .then(
            |method: Method,
             path: FullPath,
             headers: HeaderMap,
             trailers: Option<TrailerSlot>,
             conn: Option<ConnInfo>,
             interim: Option<InterimSender>,
             version: Option<http::Version>,
             query: String,
             body: BodyStream,
             state: Arc<AppState>| async move {
                let mut request = RequestParts {
                    method: method.clone(),
                    uri: request_uri(path.as_str(), &access::redact_query(&state, &query)),
                    version,
                    headers,
                    trailers: trailers.unwrap_or_default(),
                    conn,
                    principal: None,
                    interim,
                    progress: None,
                };
                request.drop_untrusted_forwarding(&state.settings.server);
                let path = path.as_str().to_owned();
                let method = effective_method(method, &request.headers);
                let writes = !matches!(method, Method::HEAD | Method::GET | Method::OPTIONS);
                let handled = handle(state, method, path, query, request, body);
                if !writes {
                    // Nothing to leave half done if the client goes away: no task to spawn
                    // (and no hand-over to another thread) for the most frequent requests.
                    return AssertUnwindSafe(handled)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| handler_panicked(panic_message(&*panic)));
                }
                // Its own task: if hyper drops this request (the client vanished), the upload
                // work still runs to its commit instead of being cancelled mid-write.
                // Boxed: the task then moves a pointer, not the request's whole state machine
                // (tokio copies a task's future several times while spawning it).
                let task = tokio::spawn(Box::pin(handled));
                task.await
                    .unwrap_or_else(|join| handler_panicked(&join.to_string()))
            },
        )
}

/// The text a panic was raised with (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or_default()
}

/// A 500 for a handler that panicked (a bug; the server and other requests carry on).
fn handler_panicked(message: &str) -> Response {
    tracing::error!(error = message, "request handler panicked");
    let mut response = crate::protocol::empty(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

/// warp's body stream as the transfer layer consumes it: `Bytes` frames, `io::Error`s (the
/// client's malformed framing told apart from a broken-off connection).
fn box_body<S, B>(body: S) -> BodyStream
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    Box::pin(
        body.map_ok(|mut buf| buf.copy_to_bytes(buf.remaining()))
            .map_err(crate::transfer::body::body_error),
    )
}

/// Path and query, as the client asked for them (the query without its secrets).
fn request_uri(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// The method the client means: §Core "X-HTTP-Method-Override ... MUST be interpreted as the
/// request's method ... the actual method of the request MUST be ignored". Only on a POST (as
/// the README says): it exists for clients whose proxies pass nothing but GET and POST;
/// honoured on a GET, it would turn what caches and logs take for a read into a DELETE.
fn effective_method(method: Method, headers: &HeaderMap) -> Method {
    if method != Method::POST {
        return method;
    }
    header_str(headers, &METHOD_OVERRIDE)
        .and_then(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok())
        .unwrap_or(method)
}

/// One request (`method` already the effective one): dispatch, decorate, count and log it
/// (one line per request).
async fn handle(
    state: Arc<AppState>,
    method: Method,
    path: String,
    query: String,
    mut request: RequestParts,
    body: BodyStream,
) -> Response {
    let state = &*state;
    let started = std::time::Instant::now();
    request.method = method.clone();
    // Every field known now is given now: each later `record` formats the span's fields again.
    let client = request.client_ip(&state.settings.server);
    let span = tracing::info_span!(
        "request",
        method = %method,
        path = %path,
        remote = client.map(tracing::field::display),
        owner = tracing::field::Empty,
        bytes = tracing::field::Empty,
    );
    let response = dispatch(state, &method, &path, &query, &mut request, body)
        .instrument(span.clone())
        .await
        .unwrap_or_else(TusError::into_response);
    let response = decorate(state, &request.headers, response);
    let status = response.status().as_u16();
    state.metrics.request(method.as_str(), status);
    tracing::info!(
        parent: &span,
        status,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Pick the handler for (resource, method).
async fn dispatch(
    state: &AppState,
    method: &Method,
    path: &str,
    query: &str,
    request: &mut RequestParts,
    body: BodyStream,
) -> Result<Response, TusError> {
    // Before routing: these are about the message, whatever it asks for.
    require_valid_host(request)?;
    require_known_transfer_coding(&request.headers)?;
    let headers = &request.headers;
    let method = method.clone();
    let resource = Resource::of(&state.settings.server.base_path, path);
    match resource {
        Resource::Healthz => Ok(ops::healthz()),
        Resource::Readyz => Ok(ops::readyz(state).await),
        Resource::Metrics if state.settings.metrics.enabled => Ok(ops::metrics(state).await),
        Resource::Admin(tail) if state.settings.admin.enabled => {
            ops::admin(state, &method, &tail, query, headers).await
        }
        Resource::Demo(file) if state.settings.demo.enabled && method == Method::GET => {
            ops::demo(&file)
        }
        Resource::Metrics | Resource::Admin(_) | Resource::Demo(_) | Resource::Elsewhere => {
            Err(TusError::RouteNotFound)
        }
        // Before any token or id is looked at: OPTIONS only describes the server (and is
        // what browsers send as a CORS preflight, without credentials).
        Resource::Endpoint
        | Resource::Upload(_)
        | Resource::UploadLink(_)
        | Resource::NoSuchUpload
            if method == Method::OPTIONS =>
        {
            match (draft::requested(state, headers), resource.draft()) {
                (Some(version), Some(target)) => {
                    Ok(draft::serve(state, version, &method, target, request, body).await)
                }
                _ => Ok(core::server_info(state)),
            }
        }
        tus => tus_request(state, method, tus, query, request, body).await,
    }
}

/// The tus resources: authenticate, check ownership, then the handler for the method.
async fn tus_request(
    state: &AppState,
    method: Method,
    resource: Resource,
    query: &str,
    request: &mut RequestParts,
    body: BodyStream,
) -> Result<Response, TusError> {
    // A signed download link opens GET of its own upload without a token.
    let linked = match (&resource, &method) {
        (Resource::Upload(id), &Method::GET) => access::download_link(state, id, query)?.is_some(),
        _ => false,
    };
    if !linked {
        request.principal = access::authenticate(state, &request.headers, query)?;
    }
    if let Some(principal) = &request.principal {
        tracing::Span::current().record("owner", principal.owner.as_str());
    }
    let request = &*request;
    let headers = &request.headers;
    let principal = request.principal.as_ref();
    // The IETF resumable-upload draft on the same resources, chosen by its interop version,
    // under the same rules of who may do what.
    if let (Some(version), Some(target)) = (draft::requested(state, headers), resource.draft()) {
        if let Resource::Upload(id) = &resource {
            access::authorize(state, id, principal).await?;
            state.hooks.pre_access(&method, id, request).await?;
        }
        return Ok(Box::pin(draft::serve(state, version, &method, target, request, body)).await);
    }
    // Draft requests are checked the same way by `draft::serve`, to answer in problem details.
    require_single_values(headers)?;
    match resource {
        // Boxed: the data paths' futures are large, and every request's future is moved
        // into its own task; a HEAD should not pay for copying a PATCH's state around.
        Resource::Endpoint if method == Method::POST => {
            Box::pin(creation::create_upload(state, request, body)).await
        }
        Resource::Endpoint => match (method, principal) {
            (Method::GET, Some(principal)) => {
                access::list_own_uploads(state, principal, headers).await
            }
            _ => Err(TusError::MethodNotAllowed),
        },
        Resource::NoSuchUpload => Err(TusError::NotFound),
        Resource::UploadLink(id) => match (method, principal) {
            (Method::POST, Some(principal)) => {
                access::authorize(state, &id, Some(principal)).await?;
                access::create_link(state, &id, headers, query).await
            }
            _ => Err(TusError::MethodNotAllowed),
        },
        Resource::Upload(id) => {
            access::authorize(state, &id, principal).await?;
            state.hooks.pre_access(&method, &id, request).await?;
            match method {
                Method::HEAD => core::upload_offset(state, id, request).await,
                Method::PATCH => Box::pin(core::append_chunk(state, id, request, body)).await,
                Method::DELETE => termination::terminate_upload(state, id, request).await,
                Method::GET => download::download(state, id, request).await,
                _ => Err(TusError::MethodNotAllowed),
            }
        }
        // Answered by `dispatch` before authentication.
        Resource::Healthz
        | Resource::Readyz
        | Resource::Metrics
        | Resource::Admin(_)
        | Resource::Demo(_)
        | Resource::Elsewhere => Err(TusError::RouteNotFound),
    }
}

/// Add `Tus-Resumable` and, for allowed origins, CORS headers.
fn decorate(state: &AppState, request: &HeaderMap, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    let cors = &state.settings.cors;
    let Some(origin) = request.get(ORIGIN).filter(|_| cors.enabled) else {
        return response;
    };
    let allowed = cors
        .allowed_origins
        .iter()
        .any(|o| o == "*" || origin.to_str().is_ok_and(|v| v.eq_ignore_ascii_case(o)));
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if !allowed {
        return response;
    }
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(CORS_EXPOSE_HEADERS),
    );
    if request.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(CORS_METHODS),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_ALLOW_HEADERS),
        );
        if let Ok(age) = HeaderValue::from_str(&cors.max_age.0.as_secs().to_string()) {
            headers.insert(ACCESS_CONTROL_MAX_AGE, age);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_resources() {
        let id = UploadId::random();
        assert_eq!(Resource::of("/files/", "/files/"), Resource::Endpoint);
        assert_eq!(Resource::of("/files/", "/files"), Resource::Endpoint);
        assert_eq!(
            Resource::of("/files/", &format!("/files/{id}")),
            Resource::Upload(id.clone())
        );
        assert_eq!(
            Resource::of("/files/", &format!("/files/{id}/")),
            Resource::Upload(id)
        );
        assert_eq!(
            Resource::of("/files/", "/files/..%2F..%2Fetc%2Fpasswd"),
            Resource::NoSuchUpload
        );
        assert_eq!(Resource::of("/files/", "/other"), Resource::Elsewhere);
    }

    #[test]
    fn a_panic_reads_back_as_its_message() {
        let literal = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*literal), "plain");
        let formatted = std::panic::catch_unwind(|| panic!("upload {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*formatted), "upload 7");
    }

    #[test]
    fn method_override_replaces_post_and_only_post() {
        let mut headers = HeaderMap::new();
        assert_eq!(effective_method(Method::POST, &headers), Method::POST);
        headers.insert(METHOD_OVERRIDE, HeaderValue::from_static("patch"));
        assert_eq!(effective_method(Method::POST, &headers), Method::PATCH);
        for other in [Method::PUT, Method::GET, Method::HEAD, Method::PATCH] {
            assert_eq!(effective_method(other.clone(), &headers), other);
        }
    }
}
