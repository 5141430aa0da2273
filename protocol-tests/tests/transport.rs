//! Transport: TLS served directly (certificate reloaded on SIGHUP) and trusted proxies, against
//! the real binary. Certificates come from a throw-away CA made in each test (rcgen); the
//! client is rustls trusting only that CA.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::{needs_spawned_server, tus, tusk_bin, TestServer, TUS_VERSION};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Every wait in this file ends within this.
const BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A CA, and the directory where server certificates it issues are written.
struct Pki {
    dir: tempfile::TempDir,
    ca: Certificate,
    ca_key: KeyPair,
}

/// One issued server certificate.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tusk test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            dir: tempfile::Builder::new()
                .prefix("tusk-tls-")
                .tempdir()
                .unwrap(),
            ca,
            ca_key,
        }
    }

    /// A new certificate (and key) for `localhost` and 127.0.0.1.
    fn issue(&self, name: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Put `issued` in place the way a renewal does: write aside, then rename over.
    fn install(&self, issued: &Issued) {
        replace_file(&self.cert_file(), issued.cert_pem.as_bytes());
        replace_file(&self.key_file(), issued.key_pem.as_bytes());
    }

    /// The `[tls]` section naming the installed files.
    fn config(&self) -> String {
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            self.cert_file().display().to_string(),
            self.key_file().display().to_string()
        )
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

fn replace_file(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

// ---------------------------------------------------------------------------
// A keep-alive HTTP/1.1 client over TLS
// ---------------------------------------------------------------------------

struct TlsConn {
    stream: StreamOwned<ClientConnection, TcpStream>,
    authority: String,
    buf: Vec<u8>,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl TlsConn {
    /// Connect to `port` on 127.0.0.1 as `localhost`, and finish the handshake.
    fn open(pki: &Pki, port: u16) -> TlsConn {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(BOUND)).unwrap();
        tcp.set_write_timeout(Some(BOUND)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(pki.client_config(), name).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake with tusk");
        }
        TlsConn {
            stream,
            authority: format!("localhost:{port}"),
            buf: Vec::new(),
        }
    }

    /// The leaf certificate the server presented.
    fn server_cert(&self) -> CertificateDer<'static> {
        self.stream.conn.peer_certificates().unwrap()[0].clone()
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: {TUS_VERSION}\r\n",
            self.authority
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out).unwrap();
        self.stream.flush().unwrap();
        self.read_reply(method)
    }

    /// The next response on the connection (interim ones included).
    fn read_reply(&mut self, method: &str) -> Reply {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        let length: usize = match reply.header("content-length") {
            Some(n) if method != "HEAD" && status != 204 && status >= 200 => n.parse().unwrap(),
            _ => 0,
        };
        while self.buf.len() < length {
            self.fill();
        }
        reply.body = self.buf.drain(..length).collect();
        reply
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .expect("reading from tusk over TLS");
        assert!(n > 0, "tusk closed the TLS connection mid-response");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The port of a server's `https://` endpoint.
fn https_port(server: &TestServer) -> u16 {
    let rest = server
        .endpoint()
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("expected an https:// endpoint, got {}", server.endpoint()));
    let authority = rest.split('/').next().unwrap();
    authority.rsplit(':').next().unwrap().parse().unwrap()
}

fn sighup(server: &TestServer) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(server.pid().unwrap().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP failed");
}

/// Polls `done` until it holds or [`BOUND`] passes.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !done() {
        assert!(Instant::now() < deadline, "within {BOUND:?}: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `tusk` with `args` and a config file; its exit status and stderr, or a panic if it is
/// still running after [`BOUND`].
fn run_tusk(args: &[&str], config: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("tusk.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut child = Command::new(tusk_bin())
        .args(args)
        .arg("--config")
        .arg(&config_file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--port")
        .arg("0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tusk {args:?} still running after {BOUND:?} (it should have refused)");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// Reads until the server closes (EOF or reset); what it sent, or a panic after [`BOUND`].
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server kept the connection open past {BOUND:?}")
            }
            Err(_) => return got, // reset: closed too
        }
    }
}

fn spawn_tls(pki: &Pki, extra: &str) -> TestServer {
    TestServer::spawn_with_config(&format!("{}{extra}", pki.config()))
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[test]
fn tls_serves_the_tus_api() {
    needs_spawned_server!();
    let pki = Pki::new();
    let first = pki.issue("first");
    pki.install(&first);
    let mut server = spawn_tls(&pki, "");
    let mut conn = TlsConn::open(&pki, https_port(&server));
    assert_eq!(conn.server_cert(), first.der);
    assert_eq!(conn.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    let options = conn.request("OPTIONS", "/files/", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(options.header("tus-version"), Some(TUS_VERSION));
    let created = conn.request("POST", "/files/", &[("Upload-Length", "11")], b"");
    assert_eq!(created.status, 201);
    let location = created.header("location").unwrap().to_owned();
    let port = https_port(&server);
    assert!(
        location.starts_with(&format!("https://localhost:{port}/files/")),
        "Location over TLS: {location}"
    );
    let path = &location[location.find("/files/").unwrap()..];
    let patched = conn.request(
        "PATCH",
        path,
        &[
            ("Upload-Offset", "0"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        b"hello world",
    );
    assert_eq!(
        patched.status,
        204,
        "{}",
        String::from_utf8_lossy(&patched.body)
    );
    let head = conn.request("HEAD", path, &[], b"");
    assert_eq!(head.header("upload-offset"), Some("11"));
    assert_eq!(head.header("upload-length"), Some("11"));
    // Graceful shutdown still works with a TLS connection open.
    server.terminate();
}

#[test]
fn tls_carries_interim_104_responses_encrypted() {
    needs_spawned_server!();
    let pki = Pki::new();
    let cert = pki.issue("interim");
    pki.install(&cert);
    let server = spawn_tls(&pki, "");
    let mut conn = TlsConn::open(&pki, https_port(&server));
    // A draft creation gets 104 Upload Resumption Supported before its final 201; over TLS
    // both must arrive as TLS records a client can read, in that order.
    let first = conn.request(
        "POST",
        "/files/",
        &[
            ("Upload-Draft-Interop-Version", "8"),
            ("Upload-Complete", "?1"),
        ],
        b"hello",
    );
    assert_eq!(first.status, 104, "the interim response comes first");
    let location = first
        .header("location")
        .expect("104 carries Location")
        .to_owned();
    assert!(location.starts_with("https://"), "{location}");
    let last = conn.read_reply("POST");
    assert_eq!(last.status, 201);
    assert_eq!(last.header("location"), Some(location.as_str()));
}

#[test]
fn tls_reloads_the_certificate_on_sighup() {
    needs_spawned_server!();
    let pki = Pki::new();
    let first = pki.issue("first");
    pki.install(&first);
    let server = spawn_tls(&pki, "");
    let port = https_port(&server);
    let mut old = TlsConn::open(&pki, port);
    let created = old.request("POST", "/files/", &[("Upload-Length", "10")], b"");
    let location = created.header("location").unwrap().to_owned();
    let path = location[location.find("/files/").unwrap()..].to_owned();
    let octets = ("Content-Type", "application/offset+octet-stream");
    let half = old.request("PATCH", &path, &[("Upload-Offset", "0"), octets], b"01234");
    assert_eq!(half.status, 204);

    let second = pki.issue("second");
    pki.install(&second);
    sighup(&server);
    eventually("a new connection is served the new certificate", || {
        TlsConn::open(&pki, port).server_cert() == second.der
    });

    // The connection made before the reload goes on, upload and all.
    assert_eq!(old.server_cert(), first.der);
    let rest = old.request("PATCH", &path, &[("Upload-Offset", "5"), octets], b"56789");
    assert_eq!(rest.status, 204);
    assert_eq!(rest.header("upload-offset"), Some("10"));
    let mut new = TlsConn::open(&pki, port);
    assert_eq!(
        new.request("HEAD", &path, &[], b"").header("upload-offset"),
        Some("10")
    );
}

#[test]
fn tls_bad_reload_keeps_serving() {
    needs_spawned_server!();
    let pki = Pki::new();
    let first = pki.issue("first");
    pki.install(&first);
    let server = spawn_tls(&pki, "");
    let port = https_port(&server);

    replace_file(&pki.cert_file(), b"-----BEGIN CERTIFICATE-----\ngarbage\n");
    sighup(&server);
    eventually("the failed reload is logged", || {
        server.stderr().contains("TLS reload failed")
    });
    let mut conn = TlsConn::open(&pki, port);
    assert_eq!(conn.server_cert(), first.der, "the old certificate is kept");
    assert_eq!(conn.request("OPTIONS", "/files/", &[], b"").status, 204);

    // A key that does not belong to the certificate is refused the same way.
    pki.install(&pki.issue("second"));
    replace_file(&pki.key_file(), pki.issue("third").key_pem.as_bytes());
    sighup(&server);
    eventually("the second failed reload is logged", || {
        server.stderr().matches("TLS reload failed").count() >= 2
    });
    assert_eq!(TlsConn::open(&pki, port).server_cert(), first.der);
}

#[test]
fn tls_refuses_missing_or_bad_files_at_start() {
    needs_spawned_server!();
    let pki = Pki::new();
    let good = pki.issue("good");
    pki.install(&good);
    let missing = pki.dir.path().join("missing.pem");
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let other_key = pki.dir.path().join("other-key.pem");
    std::fs::write(&other_key, pki.issue("other").key_pem).unwrap();
    let tls = |cert: &Path, key: &Path| {
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    let cases = [
        (tls(&missing, &pki.key_file()), "tls.cert_file", &missing),
        (tls(&garbage, &pki.key_file()), "tls.cert_file", &garbage),
        (tls(&pki.cert_file(), &missing), "tls.key_file", &missing),
        (tls(&pki.cert_file(), &garbage), "tls.key_file", &garbage),
        (
            tls(&pki.cert_file(), &other_key),
            "tls.key_file",
            &other_key,
        ),
    ];
    for (config, key, file) in &cases {
        for args in [&[][..], &["check"][..]] {
            let (status, stderr) = run_tusk(args, config);
            assert!(!status.success(), "tusk {args:?} accepted {config}");
            let file = file.display().to_string();
            assert!(
                stderr.contains(key) && stderr.contains(&file),
                "tusk {args:?}: the message should name {key} and {file}: {stderr}"
            );
        }
    }
    let (status, stderr) = run_tusk(&["check"], &pki.config());
    assert!(status.success(), "tusk check refuses good files: {stderr}");
}

#[test]
fn tls_slow_handshake_does_not_block_others() {
    needs_spawned_server!();
    let pki = Pki::new();
    pki.install(&pki.issue("server"));
    let server = spawn_tls(&pki, "[timeouts]\nheader_read = \"1s\"\n");
    let port = https_port(&server);

    let opened = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut other = TlsConn::open(&pki, port);
    assert_eq!(other.request("OPTIONS", "/files/", &[], b"").status, 204);
    assert!(
        opened.elapsed() < Duration::from_millis(900),
        "another client waited for the silent one: {:?}",
        opened.elapsed()
    );

    let got = read_until_closed(&mut silent);
    let waited = opened.elapsed();
    assert!(got.is_empty(), "the silent client was sent {got:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?}, expected about timeouts.header_read (1s)"
    );
}

#[test]
fn sighup_without_tls_leaves_the_server_serving() {
    needs_spawned_server!();
    // `systemctl reload` sends SIGHUP; without TLS there is nothing to reload, and the
    // default action (terminate) would take every upload down with it.
    let server = TestServer::spawn();
    sighup(&server);
    eventually("the SIGHUP is logged", || {
        server.stderr().contains("SIGHUP: TLS is off")
    });
    let r = tus("POST", server.endpoint())
        .header("Upload-Length", "1")
        .send();
    protocol_tests::assert_status(&r, &[201], "POST after SIGHUP");
}

#[test]
fn tls_port_refuses_plain_http() {
    needs_spawned_server!();
    let pki = Pki::new();
    pki.install(&pki.issue("server"));
    let server = spawn_tls(&pki, "");
    let mut plain = TcpStream::connect(("127.0.0.1", https_port(&server))).unwrap();
    plain
        .write_all(b"OPTIONS /files/ HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut plain);
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP was answered in plain HTTP: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Trusted proxies
// ---------------------------------------------------------------------------

const SPOOFED: [(&str, &str); 4] = [
    (
        "Forwarded",
        "for=198.51.100.66;host=evil.example;proto=https",
    ),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-For", "198.51.100.66"),
];

/// A plain-HTTP server with the admin API on (to read the client profiles) and `proxies` trusted.
fn spawn_with_proxies(proxies: &str) -> (TestServer, tempfile::NamedTempFile) {
    let mut token = tempfile::NamedTempFile::new().unwrap();
    token.write_all(ADMIN_TOKEN.as_bytes()).unwrap();
    let config = format!(
        "[server]\ntrusted_proxies = {proxies}\n[admin]\nenabled = true\ntoken_file = {:?}\n",
        token.path().display().to_string()
    );
    (TestServer::spawn_with_config(&config), token)
}

const ADMIN_TOKEN: &str = "transport-test-admin-token";

/// POST then PATCH one byte with `headers`; the Location answered.
fn upload_with(server: &TestServer, headers: &[(&str, &str)]) -> String {
    let mut post = tus("POST", server.endpoint()).header("Upload-Length", "1");
    for (name, value) in headers {
        post = post.header(name, value);
    }
    let created = post.send();
    assert_eq!(created.status, 201, "{}", created.describe());
    let location = created.header("Location").unwrap().to_owned();
    let mut patch = tus("PATCH", &server.url(&location))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(b"x".to_vec());
    for (name, value) in headers {
        patch = patch.header(name, value);
    }
    assert_eq!(patch.send().status, 204);
    location
}

/// The client addresses the server keeps profiles for (admin API).
fn profiled_clients(server: &TestServer) -> String {
    let reply = tus("GET", &server.url("/admin/clients"))
        .header("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send();
    assert_eq!(reply.status, 200, "{}", reply.describe());
    reply.text()
}

#[test]
fn forwarded_headers_ignored_from_untrusted_peer() {
    needs_spawned_server!();
    let (server, _token) = spawn_with_proxies("[\"10.0.0.0/8\"]");
    let location = upload_with(&server, &SPOOFED);
    assert!(
        location.starts_with(&format!("http://{}/files/", server.authority())),
        "Location from an untrusted peer must use its Host: {location}"
    );
}

#[test]
fn forwarded_headers_believed_from_trusted_proxy() {
    needs_spawned_server!();
    let (server, _token) = spawn_with_proxies("[\"127.0.0.1/32\", \"::1/128\"]");
    let location = upload_with(
        &server,
        &[(
            "Forwarded",
            "for=203.0.113.9;host=uploads.example.com;proto=https",
        )],
    );
    assert!(
        location.starts_with("https://uploads.example.com/files/"),
        "Location behind a trusted proxy: {location}"
    );
    let location = upload_with(
        &server,
        &[
            ("X-Forwarded-Host", "uploads.example.com:8443"),
            ("X-Forwarded-Proto", "https"),
            // The client wrote the first entry itself; the proxy appended what it saw.
            ("X-Forwarded-For", "192.0.2.1, 198.51.100.7, 127.0.0.1"),
        ],
    );
    assert!(
        location.starts_with("https://uploads.example.com:8443/files/"),
        "{location}"
    );
    let clients = profiled_clients(&server);
    assert!(
        clients.contains("ip:203.0.113.9"),
        "Forwarded for=: {clients}"
    );
    assert!(
        clients.contains("ip:198.51.100.7"),
        "X-Forwarded-For: {clients}"
    );
    assert!(
        !clients.contains("192.0.2.1"),
        "a client-written entry was believed: {clients}"
    );
    assert!(
        !clients.contains("ip:127.0.0.1"),
        "the proxy was taken for the client: {clients}"
    );
    eventually("the access log names the forwarded client", || {
        server.stderr().contains("remote=198.51.100.7")
    });
}

#[test]
fn xff_spoof_from_untrusted_peer_is_ignored() {
    needs_spawned_server!();
    let (server, _token) = spawn_with_proxies("[]");
    upload_with(&server, &SPOOFED);
    let clients = profiled_clients(&server);
    assert!(clients.contains("ip:127.0.0.1"), "{clients}");
    assert!(
        !clients.contains("198.51.100.66"),
        "a spoofed address was believed: {clients}"
    );
    eventually("the access log names the TCP peer", || {
        server.stderr().contains("remote=127.0.0.1")
    });
    assert!(!server.stderr().contains("remote=198.51.100.66"));
}

/// `server.public_url`: Location is built from it, whatever `Host` or a (trusted) proxy's
/// forwarded headers say.
#[test]
fn public_url_builds_location_whatever_the_host_says() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n\
         public_url = \"https://uploads.example.com\"\n",
    );
    for headers in [
        &[("Host", "attacker.example:666")][..],
        &[
            ("X-Forwarded-Host", "attacker.example"),
            ("X-Forwarded-Proto", "http"),
        ][..],
        &[("Forwarded", "host=attacker.example;proto=http")][..],
    ] {
        let location = upload_with(&server, headers);
        assert!(
            location.starts_with("https://uploads.example.com/files/"),
            "Location with {headers:?}: {location}"
        );
    }
}

/// Sends `head` (a whole request without body) on a fresh connection; the status answered.
fn raw_status(server: &TestServer, head: &str) -> u16 {
    let mut stream = TcpStream::connect(server.authority()).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut stream)).into_owned();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, with two, or with an invalid one gets
/// 400; HTTP/1.0 may go without.
#[test]
fn requests_without_a_single_valid_host_are_refused() {
    needs_spawned_server!();
    let server = TestServer::spawn();
    let path = protocol_tests::path_of(server.endpoint());
    let authority = server.authority();
    let options = |version: &str, hosts: &str| {
        format!(
            "OPTIONS {path} {version}\r\nTus-Resumable: {TUS_VERSION}\r\n{hosts}\
             Connection: close\r\n\r\n"
        )
    };
    let ok = format!("Host: {authority}\r\n");
    assert_eq!(raw_status(&server, &options("HTTP/1.1", &ok)), 204);
    assert_eq!(raw_status(&server, &options("HTTP/1.0", "")), 204);
    for hosts in [
        String::new(),
        format!("Host: {authority}\r\nHost: {authority}\r\n"),
        format!("Host: {authority}\r\nHost: attacker.example\r\n"),
        "Host: attacker.example/path\r\n".to_owned(),
        "Host: a b\r\n".to_owned(),
        "Host: example.com:80x\r\n".to_owned(),
    ] {
        assert_eq!(
            raw_status(&server, &options("HTTP/1.1", &hosts)),
            400,
            "HTTP/1.1 with {hosts:?}"
        );
    }
    let post = format!(
        "POST {path} HTTP/1.1\r\nTus-Resumable: {TUS_VERSION}\r\nUpload-Length: 1\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status(&server, &post), 400, "POST without Host");
}
