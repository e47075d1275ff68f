//! Loopback TCP ports for services a test or benchmark starts with a fixed
//! port (most bind port 0 or `tcp://127.0.0.1:*` and report the port in
//! their ready record).

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    net::TcpListener,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
///
/// The port is picked *below* the kernel's ephemeral range
/// (`ip_local_port_range`), so an outgoing connection of another test cannot
/// be given it as a source port between this check and its use. A port is
/// handed out at most once per process.
///
/// # Panics
/// If no such port is found (see [`try_unused_port`]).
pub fn unused_port() -> u16 {
    try_unused_port().expect("no free port found on 127.0.0.1 below the ephemeral range")
}

/// [`unused_port`], or `None` if 1000 tries found no free port.
pub fn try_unused_port() -> Option<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_100));
    for _ in 0..1000 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let port = low + (h.finish() % u64::from(high - low)) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return Some(port);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let a = unused_port();
        let b = unused_port();
        assert_ne!(a, b);
        assert!(a >= 10_000 && b >= 10_000);
        TcpListener::bind(("127.0.0.1", a)).expect("the port is free");
    }
}
