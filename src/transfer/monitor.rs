//! The interface monitor: which local addresses exist, on what kind of link, and what to do
//! when one goes away.
//!
//! On Linux it listens to rtnetlink address events (through `if-watch`) and rescans the
//! interface list on each event, with a periodic rescan as the fallback when events are not
//! available. Each local address is classified (loopback, ethernet, wifi, cellular, virtual)
//! from `/sys/class/net`; the kind is the starting point of a PATCH's buffer size.
//!
//! A PATCH registers the local address its connection arrived on. When that address
//! vanishes (a cable pulled, a VPN or Wi-Fi gone on the server), its connections can never
//! deliver another byte, so those PATCHes are released at once: they commit what they have
//! and the uploads stay resumable over another address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::policy::InterfaceKind;

/// Rescan this often even without events (and always, where events are unavailable).
const RESCAN: Duration = Duration::from_secs(2);

/// One local address's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// What kind of link it is.
    #[serde(serialize_with = "kind_name")]
    pub kind: InterfaceKind,
}

fn kind_name<S: serde::Serializer>(kind: &InterfaceKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

/// Counters, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MonitorStats {
    /// Addresses that appeared or vanished since start-up.
    pub changes: u64,
    /// PATCHes released because their local address vanished.
    pub released: u64,
}

#[derive(Debug, Default)]
struct Inner {
    addresses: RwLock<HashMap<IpAddr, Interface>>,
    bound: Mutex<HashMap<IpAddr, HashMap<u64, CancellationToken>>>,
    next_binding: AtomicU64,
    changes: AtomicU64,
    released: AtomicU64,
}

/// The monitor; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct InterfaceMonitor {
    inner: Arc<Inner>,
}

impl InterfaceMonitor {
    /// A monitor primed with the current interfaces (not yet watching: see [`spawn`]).
    ///
    /// [`spawn`]: InterfaceMonitor::spawn
    pub fn new() -> InterfaceMonitor {
        let monitor = InterfaceMonitor::default();
        monitor.rescan();
        monitor
    }

    /// Watch for changes until `stop` is cancelled.
    pub fn spawn(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let monitor = self.clone();
        tokio::spawn(async move {
            let mut events = match if_watch::tokio::IfWatcher::new() {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::info!(error = %err, "no interface events; polling every {RESCAN:?}");
                    None
                }
            };
            let mut ticker = tokio::time::interval(RESCAN);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                    event = next_event(&mut events) => {
                        if event.is_none() {
                            events = None;
                        }
                    }
                }
                monitor.rescan();
            }
        })
    }

    /// The kind of link `local` belongs to.
    pub fn kind_of(&self, local: IpAddr) -> InterfaceKind {
        if local.is_loopback() {
            return InterfaceKind::Loopback;
        }
        self.read()
            .get(&local)
            .map_or(InterfaceKind::Unknown, |i| i.kind)
    }

    /// Register a PATCH whose connection arrived on `local`; `release` is cancelled if that
    /// address vanishes. Dropping the binding unregisters it.
    pub fn bind(&self, local: IpAddr, release: CancellationToken) -> Binding {
        let id = self.inner.next_binding.fetch_add(1, Ordering::Relaxed);
        self.bound()
            .entry(local)
            .or_default()
            .insert(id, release.clone());
        Binding {
            monitor: self.clone(),
            local,
            id,
            release,
        }
    }

    /// Every known local address and its interface.
    pub fn snapshot(&self) -> Vec<(IpAddr, Interface)> {
        let mut list: Vec<_> = self.read().iter().map(|(ip, i)| (*ip, i.clone())).collect();
        list.sort_by_key(|entry| entry.0);
        list
    }

    /// Counters since start-up.
    pub fn stats(&self) -> MonitorStats {
        MonitorStats {
            changes: self.inner.changes.load(Ordering::Relaxed),
            released: self.inner.released.load(Ordering::Relaxed),
        }
    }

    /// Compare the interface list with what we knew; log, count and release.
    pub fn rescan(&self) {
        let current = match if_addrs::get_if_addrs() {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list network interfaces");
                return;
            }
        };
        let fresh: HashMap<IpAddr, Interface> = current
            .into_iter()
            .map(|iface| {
                let kind = classify(&iface.name);
                (
                    iface.ip(),
                    Interface {
                        name: iface.name,
                        kind,
                    },
                )
            })
            .collect();
        let gone: Vec<(IpAddr, Interface)> = {
            let mut known = self
                .inner
                .addresses
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let had_any = !known.is_empty();
            let gone = known
                .iter()
                .filter(|(ip, _)| !fresh.contains_key(ip))
                .map(|(ip, i)| (*ip, i.clone()))
                .collect();
            if had_any {
                for (ip, iface) in &fresh {
                    if !known.contains_key(ip) {
                        self.inner.changes.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%ip, interface = %iface.name, kind = iface.kind.name(), "local address appeared");
                    }
                }
            }
            *known = fresh;
            gone
        };
        for (ip, iface) in gone {
            self.inner.changes.fetch_add(1, Ordering::Relaxed);
            let released = self.release(ip);
            tracing::warn!(%ip, interface = %iface.name, released, "local address vanished; its uploads were released");
        }
    }

    /// Cancel every PATCH bound to `ip`; returns how many.
    fn release(&self, ip: IpAddr) -> usize {
        let tokens = self.bound().remove(&ip).unwrap_or_default();
        for token in tokens.values() {
            token.cancel();
        }
        self.inner
            .released
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
        tokens.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<IpAddr, Interface>> {
        self.inner
            .addresses
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn bound(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, HashMap<u64, CancellationToken>>> {
        self.inner.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The addresses currently known (for tests and the admin API).
    pub fn addresses(&self) -> HashSet<IpAddr> {
        self.read().keys().copied().collect()
    }
}

/// The next rtnetlink event, or never when there is no watcher.
async fn next_event(events: &mut Option<if_watch::tokio::IfWatcher>) -> Option<()> {
    match events {
        Some(watcher) => match watcher.next().await {
            Some(Ok(_)) => Some(()),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "interface event error");
                Some(())
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

/// A PATCH's registration with the monitor.
#[derive(Debug)]
pub struct Binding {
    monitor: InterfaceMonitor,
    local: IpAddr,
    id: u64,
    release: CancellationToken,
}

impl Binding {
    /// Whether the address vanished (so the PATCH was released by the monitor).
    pub fn address_vanished(&self) -> bool {
        self.release.is_cancelled() && !self.monitor.read().contains_key(&self.local)
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        let mut bound = self.monitor.bound();
        if let Some(set) = bound.get_mut(&self.local) {
            set.remove(&self.id);
            if set.is_empty() {
                bound.remove(&self.local);
            }
        }
    }
}

/// Classify an interface by its name and what `/sys/class/net/{name}` says.
pub fn classify(name: &str) -> InterfaceKind {
    classify_in(Path::new("/sys/class/net"), name)
}

fn classify_in(sysfs: &Path, name: &str) -> InterfaceKind {
    if name == "lo" {
        return InterfaceKind::Loopback;
    }
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return InterfaceKind::Unknown;
    }
    let dir = sysfs.join(name);
    if dir.join("wireless").exists() || dir.join("phy80211").exists() {
        return InterfaceKind::Wifi;
    }
    const CELLULAR: [&str; 5] = ["wwan", "rmnet", "ccmni", "wwp", "usb"];
    if CELLULAR.iter().any(|prefix| name.starts_with(prefix)) {
        return InterfaceKind::Cellular;
    }
    let link_type = std::fs::read_to_string(dir.join("type")).unwrap_or_default();
    match link_type.trim() {
        "772" => InterfaceKind::Loopback,
        // ARPHRD_RAWIP (519) and ARPHRD_NONE (65534) are what modems' netdevs use.
        "519" => InterfaceKind::Cellular,
        "1" if dir.join("device").exists() => InterfaceKind::Ethernet,
        "1" | "65534" | "768" | "769" | "776" => InterfaceKind::Virtual,
        _ if !dir.exists() => InterfaceKind::Unknown,
        _ => InterfaceKind::Virtual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(entries: &[(&str, &str, &[&str])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, link_type, subdirs) in entries {
            let iface = dir.path().join(name);
            std::fs::create_dir_all(&iface).unwrap();
            std::fs::write(iface.join("type"), format!("{link_type}\n")).unwrap();
            for sub in *subdirs {
                std::fs::create_dir_all(iface.join(sub)).unwrap();
            }
        }
        dir
    }

    #[test]
    fn interfaces_are_classified_from_sysfs() {
        let sys = fake_sysfs(&[
            ("eth0", "1", &["device"]),
            ("wlan0", "1", &["device", "wireless"]),
            ("wwan0", "519", &["device"]),
            ("rmnet_data0", "519", &[]),
            ("veth1", "1", &[]),
            ("dummy0", "1", &[]),
            ("tun0", "65534", &[]),
        ]);
        let kind = |name| classify_in(sys.path(), name);
        assert_eq!(kind("lo"), InterfaceKind::Loopback);
        assert_eq!(kind("eth0"), InterfaceKind::Ethernet);
        assert_eq!(kind("wlan0"), InterfaceKind::Wifi);
        assert_eq!(kind("wwan0"), InterfaceKind::Cellular);
        assert_eq!(kind("rmnet_data0"), InterfaceKind::Cellular);
        assert_eq!(kind("veth1"), InterfaceKind::Virtual);
        assert_eq!(kind("dummy0"), InterfaceKind::Virtual);
        assert_eq!(kind("tun0"), InterfaceKind::Virtual);
        assert_eq!(kind("missing9"), InterfaceKind::Unknown);
        assert_eq!(kind("../etc"), InterfaceKind::Unknown);
    }

    #[test]
    fn releasing_an_address_cancels_only_its_bindings() {
        let monitor = InterfaceMonitor::default();
        let here: IpAddr = [127, 0, 0, 1].into();
        let there: IpAddr = [127, 0, 0, 77].into();
        let a = CancellationToken::new();
        let b = CancellationToken::new();
        let _bound_a = monitor.bind(there, a.clone());
        let bound_b = monitor.bind(here, b.clone());
        assert_eq!(monitor.release(there), 1);
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled());
        drop(bound_b);
        assert_eq!(monitor.release(here), 0, "a dropped binding is forgotten");
        assert_eq!(monitor.stats().released, 1);
    }

    #[test]
    fn loopback_addresses_are_loopback_even_unseen() {
        let monitor = InterfaceMonitor::default();
        assert_eq!(
            monitor.kind_of([127, 0, 0, 9].into()),
            InterfaceKind::Loopback
        );
        assert_eq!(
            monitor.kind_of([192, 0, 2, 1].into()),
            InterfaceKind::Unknown
        );
    }
}
