//! The interface monitor, for real: an address on a dummy interface vanishes mid-PATCH.
//!
//! The test puts 127.0.0.77 (loopback range, so no packet leaves the machine) on a dummy
//! interface of its own, uploads through it, removes the address, and checks that tusk
//! releases the PATCH at once (committing what it received) and that the upload resumes over
//! 127.0.0.1. It needs CAP_NET_ADMIN (root); elsewhere it says so and skips.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol_tests::*;

const ALIAS: &str = "127.0.0.77";

/// A software interface (dummy, or veth) carrying [`ALIAS`]; deleted on drop.
struct DummyInterface {
    name: String,
}

impl DummyInterface {
    fn create() -> Option<DummyInterface> {
        let name = format!("tuskd{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A dummy interface where the kernel has the module, else one end of a veth pair.
        let peer = format!("{name}p");
        if !ip(&["link", "add", &name, "type", "dummy"])
            && !ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer])
        {
            return None;
        }
        let iface = DummyInterface { name };
        let ok = ip(&["link", "set", &iface.name, "up"])
            && ip(&["addr", "add", &format!("{ALIAS}/32"), "dev", &iface.name]);
        ok.then_some(iface)
    }

    fn remove_address(&self) {
        let status = Command::new("ip")
            .args(["addr", "del", &format!("{ALIAS}/32"), "dev", &self.name])
            .status()
            .expect("running ip addr del");
        assert!(status.success(), "ip addr del failed");
    }
}

impl Drop for DummyInterface {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}

/// tusk listening on every IPv4 address (so both 127.0.0.1 and the alias reach it).
struct WideServer {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

impl WideServer {
    fn start() -> WideServer {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(tusk_bin())
            .args(["--host", "0.0.0.0", "--port", "0", "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tusk");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the listening line");
        let url = line
            .split("listening on ")
            .nth(1)
            .expect("a listening line")
            .trim();
        let port = Url::parse(url)
            .authority()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        std::thread::spawn(move || for _ in stdout.lines() {});
        WideServer {
            child,
            port,
            log,
            _data: data,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for WideServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// §Core: "Both Client and Server, SHOULD attempt to detect and handle network errors
/// predictably." tusk: when the server address a PATCH arrived on vanishes, the PATCH is
/// released at once with its bytes committed, and the upload resumes over another address.
#[test]
fn a_vanished_server_address_releases_its_patches_and_the_upload_resumes() {
    if is_external() {
        println!("skipped: needs a spawned server");
        return;
    }
    let Some(dummy) = DummyInterface::create() else {
        skip_unless_ci("creating a dummy or veth interface needs CAP_NET_ADMIN (run as root)");
        return;
    };
    let server = WideServer::start();
    let data = pattern(77, 1 << 20);
    let endpoint = server.url("127.0.0.1", "/files/");
    let (location, created) = {
        let r = tus("POST", &endpoint)
            .header("Upload-Length", &data.len().to_string())
            .send();
        assert_status(&r, &[201], "create");
        (r.header("Location").unwrap().to_string(), r)
    };
    drop(created);
    let path = path_of(&location);

    // PATCH through the alias, deliver 300 KiB, then go silent (the path is about to vanish).
    let sent = 300 * 1024;
    let mut conn = tus("PATCH", &server.url(ALIAS, &path))
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", &data.len().to_string())
        .open();
    conn.write_all(&data[..sent]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let removed = Instant::now();
    dummy.remove_address();
    // The monitor, not a stalled-lock takeover, must release it: nobody else asks for the
    // upload until the log says so.
    let deadline = removed + Duration::from_secs(5);
    while !server.log().contains("its uploads were released") {
        assert!(
            Instant::now() < deadline,
            "no release within 5 s of removing {ALIAS}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let released_after = removed.elapsed();
    assert!(
        server.log().contains("released=1"),
        "expected one released PATCH; log:\n{}",
        server.log()
    );
    println!("released {released_after:?} after the address vanished");
    drop(conn);

    // Resume over the address that is still there.
    let url = server.url("127.0.0.1", &path);
    assert_eq!(
        head_offset(&url),
        sent as u64,
        "committed bytes after release"
    );
    patch_ok(&url, sent as u64, &data[sent..]);
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}
