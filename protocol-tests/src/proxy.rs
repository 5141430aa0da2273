//! A TCP proxy that injects network faults between a test client and the server.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and forwards every accepted connection
//! to an upstream address with two plain threads per connection (one per direction).
//! Each connection can be
//!
//! - **cut** after N client→server bytes: both sockets are closed abruptly (RST through
//!   `SO_LINGER 0` on Linux, a plain shutdown elsewhere);
//! - **frozen**: nothing is forwarded in either direction and nothing is closed, the
//!   half-open connection a phone leaves behind when it walks out of Wi-Fi range;
//!   [`ConnHandle::freeze_upload`] freezes only the client→server direction;
//! - **throttled**: client→server bytes flow at most at B bytes per second.
//!
//! Faults can be set on a live connection through its [`ConnHandle`], or for every
//! connection accepted from now on with [`FaultProxy::set_new_faults`].
//! [`FaultProxy::switch_path`] freezes every existing connection and starts a new
//! *epoch*, so a test can tell the connections of the "old network" from the new ones.
//!
//! Everything is bounded: dropping the proxy closes every connection and joins every
//! thread it started.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often an idle pump re-checks its flags (freeze, stop).
const POLL: Duration = Duration::from_millis(5);
/// Read timeout of the proxy's own sockets, so pumps notice `stop` promptly.
const READ_SLICE: Duration = Duration::from_millis(50);
/// Bytes read from one side at a time.
const BUF_SIZE: usize = 64 * 1024;
/// "No limit" for [`ConnState::cut_after`].
const NO_CUT: u64 = u64::MAX;

/// Faults applied to connections when they are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Cut the connection once this many client→server bytes went through.
    pub cut_after: Option<u64>,
    /// Freeze the connection once this many client→server bytes went through.
    pub freeze_after: Option<u64>,
    /// Limit client→server to this many bytes per second.
    pub throttle: Option<u64>,
    /// Accept the connection frozen.
    pub frozen: bool,
}

#[derive(Debug)]
struct ConnState {
    index: usize,
    epoch: u64,
    accepted: Instant,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    frozen_up: AtomicBool,
    frozen_down: AtomicBool,
    cut_after: AtomicU64,
    freeze_after: AtomicU64,
    throttle: AtomicU64,
    cut: AtomicBool,
    /// Set by `kill`: both pumps stop.
    dead: AtomicBool,
    /// Set when either side closed or failed (the pumps have ended or are ending).
    closed: AtomicBool,
    /// The proxy's two sockets; taken out (closed) by a cut. The pumps hold clones that
    /// they drop within [`READ_SLICE`] of seeing `cut`.
    client: Mutex<Option<TcpStream>>,
    server: Mutex<Option<TcpStream>>,
}

impl ConnState {
    /// Ends the connection. With `rst`, both sockets get `SO_LINGER 0` and are closed, so
    /// both peers see a reset; otherwise both are shut down (FIN).
    fn kill(&self, rst: bool) {
        if rst {
            self.cut.store(true, Ordering::SeqCst);
        }
        self.dead.store(true, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
        for side in [&self.client, &self.server] {
            if let Some(sock) = side.lock().unwrap().take() {
                if rst {
                    set_linger_zero(&sock);
                } else {
                    let _ = sock.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Sets `SO_LINGER {on, 0}` so that closing the socket sends an RST (socket2's safe API).
fn set_linger_zero(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

/// A handle on one proxied connection.
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<ConnState>);

impl ConnHandle {
    /// Accept order on this proxy, from 0.
    pub fn index(&self) -> usize {
        self.0.index
    }

    /// The proxy's epoch when this connection was accepted (see [`FaultProxy::switch_path`]).
    pub fn epoch(&self) -> u64 {
        self.0.epoch
    }

    /// When the proxy accepted this connection.
    pub fn accepted_at(&self) -> Instant {
        self.0.accepted
    }

    /// Client→server bytes delivered to the server's socket so far.
    pub fn up_bytes(&self) -> u64 {
        self.0.up_bytes.load(Ordering::SeqCst)
    }

    /// Server→client bytes delivered to the client's socket so far.
    pub fn down_bytes(&self) -> u64 {
        self.0.down_bytes.load(Ordering::SeqCst)
    }

    /// Stops forwarding in both directions; nothing is closed.
    pub fn freeze(&self) {
        self.0.frozen_up.store(true, Ordering::SeqCst);
        self.0.frozen_down.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding client→server only; the server's answers still reach the client.
    pub fn freeze_upload(&self) {
        self.0.frozen_up.store(true, Ordering::SeqCst);
    }

    /// Resumes forwarding in both directions.
    pub fn unfreeze(&self) {
        self.0.freeze_after.store(NO_CUT, Ordering::SeqCst);
        self.0.frozen_up.store(false, Ordering::SeqCst);
        self.0.frozen_down.store(false, Ordering::SeqCst);
    }

    /// True while client→server forwarding is frozen.
    pub fn is_frozen(&self) -> bool {
        self.0.frozen_up.load(Ordering::SeqCst)
    }

    /// Freezes both directions once `n` client→server bytes (in total) went through.
    pub fn freeze_after(&self, n: u64) {
        self.0.freeze_after.store(n, Ordering::SeqCst);
        if self.up_bytes() >= n {
            self.freeze();
        }
    }

    /// Cuts the connection once `n` client→server bytes (in total) went through.
    pub fn cut_after(&self, n: u64) {
        self.0.cut_after.store(n, Ordering::SeqCst);
        if self.up_bytes() >= n {
            self.cut();
        }
    }

    /// Closes both sides now, abruptly (RST where supported).
    pub fn cut(&self) {
        self.0.kill(true);
    }

    /// Limits client→server to `bytes_per_sec` (0 lifts the limit).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.0.throttle.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// True once the proxy cut this connection.
    pub fn was_cut(&self) -> bool {
        self.0.cut.load(Ordering::SeqCst)
    }

    /// True once either side closed (or the proxy cut it).
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    /// Polls until `up_bytes() >= n`; false if `timeout` passes first.
    pub fn wait_up_bytes(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.up_bytes() < n {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Polls until `up_bytes()` has not changed for `quiet`; returns the count then.
    /// Gives up after `timeout` and returns the current count.
    pub fn wait_up_quiet(&self, quiet: Duration, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last = self.up_bytes();
        let mut since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(5));
            let now = self.up_bytes();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet || Instant::now() >= deadline {
                return now;
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    upstream: Mutex<SocketAddr>,
    stop: AtomicBool,
    epoch: AtomicU64,
    new_faults: Mutex<Faults>,
    conns: Mutex<Vec<ConnHandle>>,
    accepted: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A fault-injecting TCP proxy in front of one upstream server.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        FaultProxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream)
    }

    /// Listens on `listen` (a port chosen before, to stand in for a server that comes and
    /// goes on it) and forwards every connection to `upstream`.
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(listen)
            .unwrap_or_else(|e| panic!("binding the fault proxy on {listen}: {e}"));
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            stop: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            new_faults: Mutex::new(Faults::default()),
            conns: Mutex::new(Vec::new()),
            accepted: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .expect("spawning the proxy acceptor")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Starts a proxy in front of the server of an `http://host:port/...` URL.
    pub fn for_url(url: &str) -> FaultProxy {
        FaultProxy::start(socket_addr_of(url))
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<proxy>/<path>`; an absolute URL is re-rooted onto the proxy.
    pub fn url(&self, path: &str) -> String {
        let path = crate::path_of(path);
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        format!("http://{}{}", self.addr, path)
    }

    /// Forwards new connections to `upstream` from now on (e.g. after a server restart).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    /// Faults applied to every connection accepted from now on.
    pub fn set_new_faults(&self, faults: Faults) {
        *self.shared.new_faults.lock().unwrap() = faults;
    }

    /// The current epoch (0 at start).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    /// Starts a new epoch: connections accepted from now on carry the new number.
    pub fn next_epoch(&self) -> u64 {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The client "changes network": every existing connection is frozen (left half-open)
    /// and a new epoch starts, whose connections flow normally. Returns the new epoch.
    pub fn switch_path(&self) -> u64 {
        let epoch = self.next_epoch();
        for c in self.connections() {
            if c.epoch() < epoch {
                c.freeze();
            }
        }
        epoch
    }

    /// Every connection accepted so far, in accept order.
    pub fn connections(&self) -> Vec<ConnHandle> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// How many connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }

    /// The connection with accept index `index`, waiting up to `timeout` for it.
    pub fn wait_connection(&self, index: usize, timeout: Duration) -> Option<ConnHandle> {
        let deadline = Instant::now() + timeout;
        let mut conns = self.shared.conns.lock().unwrap();
        loop {
            if let Some(c) = conns.get(index) {
                return Some(c.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            conns = self
                .shared
                .accepted
                .wait_timeout(conns, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The most recently accepted connection.
    pub fn last_connection(&self) -> Option<ConnHandle> {
        self.shared.conns.lock().unwrap().last().cloned()
    }

    /// Cuts every connection now.
    pub fn cut_all(&self) {
        for c in self.connections() {
            c.cut();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor out of its blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for c in self.connections() {
            c.0.kill(false);
        }
        let threads: Vec<_> = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The socket address of an `http://host:port/...` URL.
pub fn socket_addr_of(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let u = crate::Url::parse(url);
    (u.host.as_str(), u.port)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolving {url}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{url} resolves to nothing"))
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let upstream = *shared.upstream.lock().unwrap();
        let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)).ok();
        if let Some(s) = &server {
            let _ = s.set_nodelay(true);
        }
        let faults = *shared.new_faults.lock().unwrap();
        let mut conns = shared.conns.lock().unwrap();
        let state = Arc::new(ConnState {
            index: conns.len(),
            epoch: shared.epoch.load(Ordering::SeqCst),
            accepted: Instant::now(),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            frozen_up: AtomicBool::new(faults.frozen),
            frozen_down: AtomicBool::new(faults.frozen),
            cut_after: AtomicU64::new(faults.cut_after.unwrap_or(NO_CUT)),
            freeze_after: AtomicU64::new(faults.freeze_after.unwrap_or(NO_CUT)),
            throttle: AtomicU64::new(faults.throttle.unwrap_or(0)),
            cut: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            closed: AtomicBool::new(server.is_none()),
            client: Mutex::new(Some(client)),
            server: Mutex::new(server),
        });
        conns.push(ConnHandle(Arc::clone(&state)));
        drop(conns);
        shared.accepted.notify_all();
        if state.server.lock().unwrap().is_none() {
            // Upstream is down (e.g. a killed server): the client sees its connection reset.
            state.kill(true);
            continue;
        }
        let mut threads = shared.threads.lock().unwrap();
        threads.retain(|t| !t.is_finished());
        for up in [true, false] {
            let state = Arc::clone(&state);
            let shared = Arc::clone(&shared);
            let t = thread::Builder::new()
                .name(format!(
                    "fault-proxy-{}-{}",
                    state.index,
                    if up { "up" } else { "down" }
                ))
                .spawn(move || pump(&state, &shared, up))
                .expect("spawning a proxy pump");
            threads.push(t);
        }
    }
}

/// Copies one direction of a connection, applying its faults.
fn pump(state: &ConnState, shared: &Shared, up: bool) {
    let clone = |side: &Mutex<Option<TcpStream>>| {
        side.lock()
            .unwrap()
            .as_ref()
            .and_then(|s| s.try_clone().ok())
    };
    let (Some(client), Some(server)) = (clone(&state.client), clone(&state.server)) else {
        state.kill(false);
        return;
    };
    let (mut from, mut to) = if up {
        (client, server)
    } else {
        (server, client)
    };
    let _ = from.set_read_timeout(Some(READ_SLICE));
    let _ = to.set_write_timeout(Some(READ_SLICE));
    let frozen = if up {
        &state.frozen_up
    } else {
        &state.frozen_down
    };
    let counter = if up {
        &state.up_bytes
    } else {
        &state.down_bytes
    };
    let stopped = || shared.stop.load(Ordering::SeqCst) || state.dead.load(Ordering::SeqCst);
    let mut buf = vec![0u8; BUF_SIZE];
    // Throttle bookkeeping: bytes sent since `since` at rate `rate`.
    let mut rate = 0u64;
    let mut since = Instant::now();
    let mut sent_since = 0u64;
    loop {
        if stopped() {
            return;
        }
        if frozen.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // Orderly close: pass the FIN on (unless frozen, which holds it back).
                while frozen.load(Ordering::SeqCst) && !stopped() {
                    thread::sleep(POLL);
                }
                let _ = to.shutdown(Shutdown::Write);
                state.closed.store(true, Ordering::SeqCst);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                state.kill(true);
                return;
            }
        };
        let mut pos = 0usize;
        while pos < n {
            if stopped() {
                return;
            }
            if frozen.load(Ordering::SeqCst) {
                thread::sleep(POLL);
                continue;
            }
            let mut take = n - pos;
            if up {
                let done = state.up_bytes.load(Ordering::SeqCst);
                let cut_at = state.cut_after.load(Ordering::SeqCst);
                if done >= cut_at {
                    state.kill(true);
                    return;
                }
                take = take.min((cut_at - done).min(usize::MAX as u64) as usize);
                let freeze_at = state.freeze_after.load(Ordering::SeqCst);
                if done >= freeze_at {
                    state.frozen_up.store(true, Ordering::SeqCst);
                    state.frozen_down.store(true, Ordering::SeqCst);
                    continue;
                }
                take = take.min((freeze_at - done).min(usize::MAX as u64) as usize);
                let limit = state.throttle.load(Ordering::SeqCst);
                if limit != rate {
                    rate = limit;
                    since = Instant::now();
                    sent_since = 0;
                }
                if rate > 0 {
                    // Send in slices of ~20 ms worth, never ahead of the allowed rate.
                    let slice = (rate / 50).max(1);
                    take = take.min(slice as usize);
                    let allowed = (since.elapsed().as_secs_f64() * rate as f64) as u64;
                    if sent_since + take as u64 > allowed + slice {
                        thread::sleep(POLL);
                        continue;
                    }
                }
            }
            match to.write(&buf[pos..pos + take]) {
                Ok(0) => {
                    state.kill(true);
                    return;
                }
                Ok(w) => {
                    pos += w;
                    counter.fetch_add(w as u64, Ordering::SeqCst);
                    sent_since += w as u64;
                    if up {
                        let done = state.up_bytes.load(Ordering::SeqCst);
                        if done >= state.cut_after.load(Ordering::SeqCst) {
                            state.kill(true);
                            return;
                        }
                        if done >= state.freeze_after.load(Ordering::SeqCst) {
                            state.frozen_up.store(true, Ordering::SeqCst);
                            state.frozen_down.store(true, Ordering::SeqCst);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(_) => {
                    state.kill(true);
                    return;
                }
            }
        }
    }
}
