//! The baseline: a bare hyper 1.x HTTP/1.1 server that stores uploads the simplest way.
//!
//! * `POST /files/` creates an empty file and answers 201 with `Location`.
//! * `HEAD /files/{id}` answers 200 with `Upload-Offset` = the file's length.
//! * `PATCH /files/{id}` appends every body frame to the file as it arrives, fsyncs it
//!   (`fdatasync`, in [`SinkMode::Fsync`]) and answers 204 with the new `Upload-Offset`.
//!
//! No header checks, no offsets verified, no database, no buffering: an upper bound for a
//! server that keeps uploads in files. [`SinkMode::Discard`] does no file work at all and
//! measures what the client and HTTP over loopback can do (the client's ceiling).

use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the sink treats upload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Append, then `fdatasync` before answering each PATCH.
    Fsync,
    /// Append; the OS writes back when it likes.
    NoFsync,
    /// Read bodies and drop them; no files (the client's ceiling).
    Discard,
}

impl SinkMode {
    /// Parse `fsync`, `nofsync` or `discard`.
    pub fn parse(text: &str) -> Option<SinkMode> {
        match text {
            "fsync" => Some(SinkMode::Fsync),
            "nofsync" | "no-fsync" => Some(SinkMode::NoFsync),
            "discard" => Some(SinkMode::Discard),
            _ => None,
        }
    }

    /// The name [`SinkMode::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            SinkMode::Fsync => "fsync",
            SinkMode::NoFsync => "nofsync",
            SinkMode::Discard => "discard",
        }
    }
}

const BASE_PATH: &str = "/files/";

struct Sink {
    dir: PathBuf,
    mode: SinkMode,
    authority: String,
    next_id: AtomicU64,
}

type Reply = Response<Empty<Bytes>>;

fn reply(status: StatusCode) -> Reply {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response.headers_mut().insert(
        "tus-resumable",
        hyper::header::HeaderValue::from_static("1.0.0"),
    );
    response
}

fn with_header(mut response: Reply, name: &'static str, value: String) -> Reply {
    if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// The upload id in `/files/{id}`, if it is one we could have made (hex digits only).
fn upload_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix(BASE_PATH)?;
    (!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

impl Sink {
    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Reply {
        let path = request.uri().path().to_owned();
        let result = match (request.method().clone(), path.as_str()) {
            (Method::POST, BASE_PATH) => self.create(),
            (Method::HEAD, _) => match upload_id(&path) {
                Some(id) => self.offset(id),
                None => Ok(reply(StatusCode::NOT_FOUND)),
            },
            (Method::PATCH, _) => match upload_id(&path) {
                Some(id) => {
                    let id = id.to_owned();
                    self.append(&id, request.into_body()).await
                }
                None => Ok(reply(StatusCode::NOT_FOUND)),
            },
            _ => Ok(reply(StatusCode::METHOD_NOT_ALLOWED)),
        };
        result.unwrap_or_else(|err| {
            let status = if err.kind() == io::ErrorKind::NotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            reply(status)
        })
    }

    fn create(&self) -> io::Result<Reply> {
        let id = format!("{:032x}", self.next_id.fetch_add(1, Ordering::Relaxed));
        if self.mode != SinkMode::Discard {
            File::create(self.path_of(&id))?;
        }
        let location = format!("http://{}{BASE_PATH}{id}", self.authority);
        Ok(with_header(
            reply(StatusCode::CREATED),
            "location",
            location,
        ))
    }

    fn offset(&self, id: &str) -> io::Result<Reply> {
        let len = match self.mode {
            SinkMode::Discard => 0,
            _ => std::fs::metadata(self.path_of(id))?.len(),
        };
        Ok(with_header(
            reply(StatusCode::OK),
            "upload-offset",
            len.to_string(),
        ))
    }

    async fn append(&self, id: &str, mut body: Incoming) -> io::Result<Reply> {
        let mut file = match self.mode {
            SinkMode::Discard => None,
            _ => Some(OpenOptions::new().append(true).open(self.path_of(id))?),
        };
        let mut offset = match &file {
            Some(file) => file.metadata()?.len(),
            None => 0,
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(io::Error::other)?;
            if let Ok(data) = frame.into_data() {
                // Page-cache writes take microseconds: done in place, like the simplest server.
                if let Some(file) = file.as_mut() {
                    file.write_all(&data)?;
                }
                offset += data.len() as u64;
            }
        }
        if let (SinkMode::Fsync, Some(file)) = (self.mode, file) {
            tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(io::Error::other)??;
        }
        Ok(with_header(
            reply(StatusCode::NO_CONTENT),
            "upload-offset",
            offset.to_string(),
        ))
    }
}

/// Serve on `listener`, keeping uploads in `dir`, until the process ends.
///
/// # Errors
/// When the listener's address cannot be read.
pub async fn serve(listener: TcpListener, dir: &Path, mode: SinkMode) -> io::Result<()> {
    let local: SocketAddr = listener.local_addr()?;
    let sink = Arc::new(Sink {
        dir: dir.to_owned(),
        mode,
        authority: local.to_string(),
        next_id: AtomicU64::new(1),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sink = Arc::clone(&sink);
                async move { Ok::<_, Infallible>(sink.handle(request).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The `sink` command line: `--port N --dir DIR --mode fsync|nofsync|discard`. Prints
/// `sink listening on http://127.0.0.1:PORT/files/` once it accepts connections.
///
/// # Errors
/// On bad arguments or when it cannot listen.
pub fn main_with_args(args: &[String]) -> io::Result<()> {
    let mut port: u16 = 0;
    let mut dir: Option<PathBuf> = None;
    let mut mode = SinkMode::NoFsync;
    let mut iter = args.iter();
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--port" => {
                port = iter
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("--port needs a number"))?;
            }
            "--dir" => dir = iter.next().map(PathBuf::from),
            "--mode" => {
                mode = iter
                    .next()
                    .and_then(|v| SinkMode::parse(v))
                    .ok_or_else(|| bad("--mode is fsync, nofsync or discard"))?;
            }
            "--fsync" => mode = SinkMode::Fsync,
            other => return Err(bad(&format!("unknown argument {other}"))),
        }
    }
    let dir = dir.ok_or_else(|| bad("--dir DIR is required"))?;
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let local = listener.local_addr()?;
        println!("sink listening on http://{local}{BASE_PATH}");
        serve(listener, &dir, mode).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hex_ids_under_the_base_path_are_uploads() {
        assert_eq!(upload_id("/files/00ab"), Some("00ab"));
        assert_eq!(upload_id("/files/../etc"), None);
        assert_eq!(upload_id("/files/"), None);
        assert_eq!(upload_id("/other/00ab"), None);
    }
}
