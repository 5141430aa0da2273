//! How big a PATCH's buffer should be: pure functions of what we know about the link.
//!
//! A buffer should hold about [`TARGET_FILL`] worth of data at the rate the body arrives:
//! large enough that fast clients make few, large writes, small enough that a thousand slow
//! phones don't pin a mebibyte each. A request starts from the client's profile (its measured
//! throughput from earlier PATCHes) or, for a client we don't know, from the kind of network
//! interface its connection arrived on; then [`Adapter`] re-sizes it as the rate is measured.

use std::time::Duration;

use super::buffer_pool::{SizeClass, SIZE_CLASSES};

/// A buffer should fill in about this long at the measured rate.
pub const TARGET_FILL: Duration = Duration::from_millis(20);

/// Rate is measured over windows of at least this long.
const WINDOW: Duration = Duration::from_millis(50);

/// Shrink only after this many windows in a row asked for less (growth is immediate).
const SHRINK_AFTER: u32 = 2;

/// Windows at least this long mean the buffer did not fill for that long (the pipeline writes
/// what it gathered after half a second): a body this slow drops straight to the class its
/// rate asks for, not one class per two windows, which took 1 MiB buffers about 7 s to let go.
const SLOW_WINDOW: Duration = Duration::from_millis(400);

/// What kind of link a local network interface is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceKind {
    /// `lo`.
    Loopback,
    /// Wired.
    Ethernet,
    /// Wireless LAN.
    Wifi,
    /// Mobile broadband (wwan, rmnet, ...).
    Cellular,
    /// Bridges, veth, tun, dummy and other software interfaces.
    Virtual,
    /// Not known (no monitor, or an address we have not seen).
    Unknown,
}

impl InterfaceKind {
    /// Lowercase name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            InterfaceKind::Loopback => "loopback",
            InterfaceKind::Ethernet => "ethernet",
            InterfaceKind::Wifi => "wifi",
            InterfaceKind::Cellular => "cellular",
            InterfaceKind::Virtual => "virtual",
            InterfaceKind::Unknown => "unknown",
        }
    }

    /// The starting buffer class for a client we know nothing about: the seeds' table
    /// (ethernet large, wifi medium, cellular small), kept modest because growth is immediate
    /// once the rate is measured, while a thousand slow phones must not pin large buffers.
    pub fn default_class(self) -> SizeClass {
        match self {
            InterfaceKind::Loopback | InterfaceKind::Ethernet => class_of(64 << 10),
            InterfaceKind::Wifi | InterfaceKind::Virtual | InterfaceKind::Unknown => {
                class_of(32 << 10)
            }
            InterfaceKind::Cellular => class_of(16 << 10),
        }
    }
}

/// The smallest class holding `bytes` (the largest class if none does).
pub fn class_of(bytes: usize) -> SizeClass {
    SIZE_CLASSES
        .iter()
        .position(|&size| size >= bytes)
        .unwrap_or(SIZE_CLASSES.len() - 1)
}

/// The class that holds [`TARGET_FILL`] of data at `bytes_per_sec`.
pub fn class_for_rate(bytes_per_sec: f64) -> SizeClass {
    let wanted = bytes_per_sec * TARGET_FILL.as_secs_f64();
    if wanted.is_finite() && wanted > 0.0 {
        class_of(wanted.min(usize::MAX as f64) as usize)
    } else {
        0
    }
}

/// Where a request starts: the client's measured rate if we have one, else the interface's
/// default; never larger than the body it is for, when that is declared.
pub fn initial_class(
    interface: InterfaceKind,
    client_rate: Option<f64>,
    body_length: Option<u64>,
) -> SizeClass {
    let class = client_rate.map_or_else(|| interface.default_class(), class_for_rate);
    body_length.map_or(class, |len| {
        class.min(class_of(usize::try_from(len).unwrap_or(usize::MAX)))
    })
}

/// Re-sizes a request's buffer from the rate measured while it runs.
#[derive(Debug, Clone)]
pub struct Adapter {
    class: SizeClass,
    /// A fixed-size configuration measures but never re-sizes.
    fixed: bool,
    window_bytes: u64,
    window_time: Duration,
    shrink_votes: u32,
    /// The largest class the slow windows of the current vote asked for.
    shrink_floor: SizeClass,
    /// Every window of the current vote was at least [`SLOW_WINDOW`] long.
    all_slow: bool,
    total_bytes: u64,
    total_time: Duration,
}

impl Adapter {
    /// Start at `class`.
    pub fn new(class: SizeClass) -> Adapter {
        Adapter {
            class,
            fixed: false,
            window_bytes: 0,
            window_time: Duration::ZERO,
            shrink_votes: 0,
            shrink_floor: 0,
            all_slow: false,
            total_bytes: 0,
            total_time: Duration::ZERO,
        }
    }

    /// Measure only; keep `class` whatever the rate (`[transfer] buffer = "32KiB"`).
    pub fn fixed(class: SizeClass) -> Adapter {
        Adapter {
            fixed: true,
            ..Adapter::new(class)
        }
    }

    /// The class currently chosen.
    pub fn class(&self) -> SizeClass {
        self.class
    }

    /// The mean rate over the whole request so far, bytes per second (for the profile).
    pub fn mean_rate(&self) -> Option<f64> {
        let secs = self.total_time.as_secs_f64();
        (secs > 0.0 && self.total_bytes > 0).then(|| self.total_bytes as f64 / secs)
    }

    /// Record `bytes` that took `elapsed` to arrive and be written; returns the new class when
    /// the buffer should change size.
    pub fn observe(&mut self, bytes: u64, elapsed: Duration) -> Option<SizeClass> {
        self.window_bytes += bytes;
        self.window_time += elapsed;
        self.total_bytes += bytes;
        self.total_time += elapsed;
        if self.window_time < WINDOW || self.fixed {
            return None;
        }
        let rate = self.window_bytes as f64 / self.window_time.as_secs_f64();
        let slow_window = self.window_time >= SLOW_WINDOW;
        self.window_bytes = 0;
        self.window_time = Duration::ZERO;
        let wanted = class_for_rate(rate);
        if wanted > self.class {
            self.shrink_votes = 0;
            self.class = wanted;
            return Some(wanted);
        }
        if wanted < self.class {
            if self.shrink_votes == 0 {
                self.all_slow = true;
                self.shrink_floor = wanted;
            }
            self.all_slow &= slow_window;
            self.shrink_floor = self.shrink_floor.max(wanted);
            self.shrink_votes += 1;
            if self.shrink_votes >= SHRINK_AFTER {
                self.shrink_votes = 0;
                // One step at a time, so a brief stall does not collapse a fast client's
                // buffer; unless every window of the vote was a slow one (see SLOW_WINDOW).
                self.class = if self.all_slow {
                    self.shrink_floor
                } else {
                    self.class - 1
                };
                return Some(self.class);
            }
        } else {
            self.shrink_votes = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_map_to_about_twenty_milliseconds_of_data() {
        assert_eq!(SIZE_CLASSES[class_for_rate(1e9)], 1 << 20);
        assert_eq!(SIZE_CLASSES[class_for_rate(10e6)], 256 << 10);
        assert_eq!(SIZE_CLASSES[class_for_rate(1e6)], 32 << 10);
        assert_eq!(SIZE_CLASSES[class_for_rate(50e3)], 16 << 10);
        assert_eq!(class_for_rate(0.0), 0);
        assert_eq!(class_for_rate(f64::NAN), 0);
    }

    #[test]
    fn interfaces_start_large_wired_and_small_cellular() {
        let wired = SIZE_CLASSES[initial_class(InterfaceKind::Ethernet, None, None)];
        let wifi = SIZE_CLASSES[initial_class(InterfaceKind::Wifi, None, None)];
        let cell = SIZE_CLASSES[initial_class(InterfaceKind::Cellular, None, None)];
        assert!(wired > wifi && wifi > cell);
        // A known client's own rate wins over the interface.
        assert_eq!(initial_class(InterfaceKind::Ethernet, Some(100e3), None), 0);
        // A 4 KiB body needs no more than the smallest buffer.
        assert_eq!(
            initial_class(InterfaceKind::Ethernet, Some(1e9), Some(4096)),
            0
        );
    }

    #[test]
    fn adapter_grows_at_once_and_shrinks_step_by_step() {
        let mut adapter = Adapter::new(class_of(64 << 10));
        // 100 MB/s over a window: straight to 1 MiB... well, 2 MB per 20 ms -> the top class.
        assert_eq!(
            adapter.observe(5_000_000, Duration::from_millis(50)),
            Some(SIZE_CLASSES.len() - 1)
        );
        // A slow window alone does not shrink it.
        assert_eq!(adapter.observe(500, Duration::from_millis(60)), None);
        // A second slow one shrinks it by one class.
        assert_eq!(
            adapter.observe(500, Duration::from_millis(60)),
            Some(SIZE_CLASSES.len() - 2)
        );
        assert!(adapter.mean_rate().unwrap() > 1e6);
    }

    #[test]
    fn a_body_that_cannot_fill_its_buffer_drops_to_its_rate_at_once() {
        // A trickle (a byte every 0.3 s, written every half second) in a 1 MiB buffer.
        let top = SIZE_CLASSES.len() - 1;
        let mut adapter = Adapter::new(top);
        assert_eq!(adapter.observe(2, Duration::from_millis(600)), None);
        assert_eq!(adapter.observe(2, Duration::from_millis(600)), Some(0));
    }
}
