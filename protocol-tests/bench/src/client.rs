//! A small HTTP/1.1 client for tus requests: one keep-alive `TcpStream` per worker, bodies
//! written straight from the shared random buffer, responses parsed in place.
//!
//! The request body is sent while the response is awaited, so a server that answers early
//! (503, 409...) is heard at once and the connection is then dropped rather than reused.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::data::pattern;

/// Largest request whose head and body are copied into one buffer and sent in one write.
const COALESCE_LIMIT: usize = 64 << 10;
/// Largest response head we accept.
const MAX_HEAD: usize = 64 << 10;

/// A request body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// No body.
    Empty,
    /// `len` bytes from the shared pattern, as fast as the socket takes them.
    Data(u64),
    /// `len` bytes, `chunk` at a time, one chunk every `every` (the first at once).
    Paced {
        /// Total bytes.
        len: u64,
        /// Bytes per write.
        chunk: usize,
        /// Time between writes.
        every: Duration,
    },
    /// `len` bytes as fast as the socket takes them, in `Transfer-Encoding: chunked` chunks of
    /// `chunk` bytes: the server's HTTP layer hands them over one small frame per chunk, which
    /// is what gathering into a buffer is for.
    Chunked {
        /// Total bytes.
        len: u64,
        /// Bytes per chunk.
        chunk: usize,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match *self {
            Body::Empty => 0,
            Body::Data(len) | Body::Paced { len, .. } | Body::Chunked { len, .. } => len,
        }
    }

    /// How long a request with this body may take before the server is deemed stuck:
    /// [`ANSWER_TIMEOUT`], plus the body at 32 MiB/s (or at its pace).
    fn time_limit(&self) -> Duration {
        match *self {
            Body::Empty => ANSWER_TIMEOUT,
            Body::Data(len) | Body::Chunked { len, .. } => {
                ANSWER_TIMEOUT + Duration::from_secs(len >> 25)
            }
            Body::Paced { len, chunk, every } => {
                let writes = u32::try_from(len / chunk.max(1) as u64 + 1).unwrap_or(u32::MAX);
                ANSWER_TIMEOUT + every.saturating_mul(writes)
            }
        }
    }
}

/// How long a server may take to answer once the request is sent.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What we keep of a response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Location`, if any.
    pub location: Option<String>,
    /// `Upload-Offset`, if any.
    pub offset: Option<u64>,
    /// False when the connection cannot carry another request.
    pub reusable: bool,
}

/// Why a tus call failed.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an unexpected status.
    Status(u16),
    /// The answer lacked what the call needs, or carried the wrong offset.
    Protocol(String),
    /// Connecting, sending or receiving failed.
    Io(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status) => write!(f, "status {status}"),
            Failure::Protocol(what) => write!(f, "{what}"),
            Failure::Io(err) => write!(f, "{err}"),
        }
    }
}

impl Failure {
    /// Whether the server did not answer within the client's time limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Failure::Io(err) if err.kind() == io::ErrorKind::TimedOut)
    }
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Failure::Io(err)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parse a response head (`HTTP/1.1 204 No Content\r\n...\r\n\r\n`); returns the response
/// and the body length it announces (`None` = chunked or until close).
fn parse_head(head: &[u8], head_request: bool) -> io::Result<(Response, Option<usize>)> {
    let text = std::str::from_utf8(head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut response = Response {
        status,
        reusable: true,
        ..Response::default()
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("location") {
            response.location = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("upload-offset") {
            response.offset = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            response.reusable = false;
        }
    }
    let no_body = head_request || status == 204 || status == 304 || status < 200;
    let body = if no_body {
        Some(0)
    } else if chunked {
        None
    } else {
        Some(content_length.unwrap_or(0))
    };
    Ok((response, body))
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    received: Vec<u8>,
    scratch: Vec<u8>,
}

impl Conn {
    /// Connect to `addr`, from `source` if given (any 127.x.y.z works on Linux loopback).
    ///
    /// # Errors
    /// When the connection cannot be made.
    pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Conn> {
        let stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            received: Vec::with_capacity(8 << 10),
            scratch: Vec::new(),
        })
    }

    /// Send `head` (ending in the blank line) and `body`, and read the response.
    ///
    /// # Errors
    /// When the connection fails before a response arrives.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: Body,
        head_request: bool,
    ) -> io::Result<Response> {
        let Conn {
            stream,
            received,
            scratch,
        } = self;
        let (mut reader, mut writer) = stream.split();
        let send = async move {
            let len = body.len();
            match body {
                Body::Empty => writer.write_all(head).await?,
                Body::Data(len) if head.len() as u64 + len <= COALESCE_LIMIT as u64 => {
                    scratch.clear();
                    scratch.extend_from_slice(head);
                    extend_pattern(scratch, len as usize);
                    writer.write_all(scratch).await?;
                }
                Body::Data(_) => {
                    writer.write_all(head).await?;
                    let data = pattern();
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(data.len() as u64) as usize;
                        writer.write_all(&data[..n]).await?;
                        left -= n as u64;
                    }
                }
                Body::Chunked { chunk, .. } => {
                    writer.write_all(head).await?;
                    let data = pattern();
                    let chunk = chunk.clamp(1, data.len());
                    // Many chunks per write, so the client's own syscalls stay few.
                    let per_write = (256usize << 10) / (chunk + 16) + 1;
                    let mut left = len;
                    while left > 0 {
                        scratch.clear();
                        for _ in 0..per_write {
                            if left == 0 {
                                break;
                            }
                            let n = left.min(chunk as u64) as usize;
                            scratch.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                            scratch.extend_from_slice(&data[..n]);
                            scratch.extend_from_slice(b"\r\n");
                            left -= n as u64;
                        }
                        if left == 0 {
                            scratch.extend_from_slice(b"0\r\n\r\n");
                        }
                        writer.write_all(scratch).await?;
                    }
                }
                Body::Paced { chunk, every, .. } => {
                    writer.write_all(head).await?;
                    let data = pattern();
                    let chunk = chunk.clamp(1, data.len());
                    let mut ticker = tokio::time::interval(every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut left = len;
                    while left > 0 {
                        ticker.tick().await;
                        let n = left.min(chunk as u64) as usize;
                        writer.write_all(&data[..n]).await?;
                        left -= n as u64;
                    }
                }
            }
            Ok::<(), io::Error>(())
        };
        let recv = read_response(&mut reader, received, head_request);
        tokio::pin!(send);
        tokio::pin!(recv);
        let mut sent = false;
        loop {
            tokio::select! {
                result = &mut send, if !sent => match result {
                    Ok(()) => sent = true,
                    Err(err) => {
                        // A server that refuses a body may answer and close while we send:
                        // its answer is what counts.
                        return match tokio::time::timeout(Duration::from_secs(2), &mut recv).await {
                            Ok(Ok(mut response)) => {
                                response.reusable = false;
                                Ok(response)
                            }
                            _ => Err(err),
                        };
                    }
                },
                result = &mut recv => {
                    let mut response = result?;
                    if !sent {
                        response.reusable = false;
                    }
                    return Ok(response);
                }
            }
        }
    }
}

fn extend_pattern(out: &mut Vec<u8>, mut len: usize) {
    let data = pattern();
    while len > 0 {
        let n = len.min(data.len());
        out.extend_from_slice(&data[..n]);
        len -= n;
    }
}

async fn read_response<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    received: &mut Vec<u8>,
    head_request: bool,
) -> io::Result<Response> {
    loop {
        if let Some(end) = find(received, b"\r\n\r\n") {
            let head_len = end + 4;
            let (mut response, body) = parse_head(&received[..head_len], head_request)?;
            match body {
                Some(body_len) => {
                    while received.len() < head_len + body_len {
                        received.reserve(body_len);
                        if reader.read_buf(received).await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    received.drain(..head_len + body_len);
                }
                None => {
                    // Chunked: we don't decode it; the connection is dropped after this answer.
                    response.reusable = false;
                    received.clear();
                }
            }
            return Ok(response);
        }
        if received.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        received.reserve(4096);
        if reader.read_buf(received).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A tus client for one server: a connection that is re-opened when it cannot be reused.
#[derive(Debug)]
pub struct TusClient {
    addr: SocketAddr,
    source: Option<IpAddr>,
    authority: String,
    base_path: String,
    conn: Option<Conn>,
    head: Vec<u8>,
}

impl TusClient {
    /// A client of the server at `addr` whose creation endpoint is `base_path`.
    pub fn new(addr: SocketAddr, base_path: &str, source: Option<IpAddr>) -> TusClient {
        TusClient {
            addr,
            source,
            authority: addr.to_string(),
            base_path: base_path.to_owned(),
            conn: None,
            head: Vec::with_capacity(512),
        }
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: Body,
    ) -> Result<Response, Failure> {
        use std::io::Write;
        self.head.clear();
        let _ = write!(
            self.head,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n{headers}",
            self.authority
        );
        if let Body::Chunked { .. } = body {
            self.head
                .extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        } else if method != "HEAD" {
            let _ = write!(self.head, "Content-Length: {}\r\n", body.len());
        }
        self.head.extend_from_slice(b"\r\n");
        if self.conn.is_none() {
            self.conn = Some(Conn::connect(self.addr, self.source).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let exchange = conn.exchange(&self.head, body, method == "HEAD");
        let Ok(result) = tokio::time::timeout(body.time_limit(), exchange).await else {
            self.conn = None;
            return Err(Failure::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {:?}", body.time_limit()),
            )));
        };
        match result {
            Ok(response) => {
                if !response.reusable {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(err) => {
                self.conn = None;
                Err(Failure::Io(err))
            }
        }
    }

    /// The path of a Location header (absolute URL or path).
    fn path_of(location: &str) -> String {
        match location.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned()),
            None => location.to_owned(),
        }
    }

    /// POST: create an upload of `length` bytes; returns its path.
    ///
    /// # Errors
    /// Any answer but 201 with a Location.
    pub async fn create(&mut self, length: u64) -> Result<String, Failure> {
        let base = self.base_path.clone();
        let headers = format!("Upload-Length: {length}\r\n");
        let response = self.call("POST", &base, &headers, Body::Empty).await?;
        match (response.status, response.location) {
            (201, Some(location)) => Ok(Self::path_of(&location)),
            (201, None) => Err(Failure::Protocol("201 without Location".to_owned())),
            (status, _) => Err(Failure::Status(status)),
        }
    }

    /// POST with the whole upload as body (creation-with-upload); returns its path.
    ///
    /// # Errors
    /// Any answer but 201 with a Location and `Upload-Offset: length`.
    pub async fn create_with_upload(&mut self, length: u64) -> Result<String, Failure> {
        let base = self.base_path.clone();
        let headers =
            format!("Upload-Length: {length}\r\nContent-Type: application/offset+octet-stream\r\n");
        let response = self
            .call("POST", &base, &headers, Body::Data(length))
            .await?;
        match (response.status, response.location, response.offset) {
            (201, Some(location), Some(offset)) if offset == length => Ok(Self::path_of(&location)),
            (201, _, offset) => Err(Failure::Protocol(format!(
                "201 with Upload-Offset {offset:?}, wanted {length}"
            ))),
            (status, _, _) => Err(Failure::Status(status)),
        }
    }

    /// PATCH `body` at `offset`; checks the new offset.
    ///
    /// # Errors
    /// Any answer but 204 with `Upload-Offset: offset + body length`.
    pub async fn patch(&mut self, path: &str, offset: u64, body: Body) -> Result<(), Failure> {
        let headers =
            format!("Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n");
        let wanted = offset + body.len();
        let response = self.call("PATCH", path, &headers, body).await?;
        match (response.status, response.offset) {
            (204, Some(new)) if new == wanted => Ok(()),
            (204, new) => Err(Failure::Protocol(format!(
                "204 with Upload-Offset {new:?}, wanted {wanted}"
            ))),
            (status, _) => Err(Failure::Status(status)),
        }
    }

    /// HEAD: the upload's offset.
    ///
    /// # Errors
    /// Any answer but 200 with an `Upload-Offset`.
    pub async fn head(&mut self, path: &str) -> Result<u64, Failure> {
        let response = self.call("HEAD", path, "", Body::Empty).await?;
        match (response.status, response.offset) {
            (200, Some(offset)) => Ok(offset),
            (200, None) => Err(Failure::Protocol("200 without Upload-Offset".to_owned())),
            (status, _) => Err(Failure::Status(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_case_insensitively() {
        let head = b"HTTP/1.1 201 Created\r\nlocation: http://h:1/files/ab\r\nUPLOAD-OFFSET: 7\r\ncontent-length: 3\r\n\r\n";
        let (response, body) = parse_head(head, false).unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.location.as_deref(), Some("http://h:1/files/ab"));
        assert_eq!(response.offset, Some(7));
        assert_eq!(body, Some(3));
        let (_, body) = parse_head(head, true).unwrap();
        assert_eq!(body, Some(0));
    }

    #[test]
    fn locations_become_paths() {
        assert_eq!(
            TusClient::path_of("http://127.0.0.1:9/files/ab"),
            "/files/ab"
        );
        assert_eq!(TusClient::path_of("/files/ab"), "/files/ab");
    }
}
