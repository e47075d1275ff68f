//! Socket monitoring: every socket we create gets a libzmq monitor whose
//! events (inproc PAIR) are read by one `zmq-monitor` thread per service and
//! turned into `mensageria_zmq_peers` and `mensageria_zmq_socket_events_total`.
//!
//! Refused connections (failed handshakes, failed accepts such as `EMFILE`
//! when the process is out of file descriptors) can come by the thousand;
//! they are always counted, but logged at most once per
//! [`REFUSAL_LOG_EVERY`] per socket, with the number of lines left out.

use std::{
    collections::HashMap,
    sync::mpsc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zmq::SocketEvent;

use crate::metrics::{SocketEventLabels, SocketLabel, SocketMetrics};

/// A monitor PAIR socket handed to the hub, with the role of the socket it watches.
pub(crate) struct Watched {
    pub(crate) pair: zmq::Socket,
    pub(crate) role: &'static str,
    /// Peers of this socket counted in `mensageria_zmq_peers`: libzmq sends
    /// no DISCONNECTED for the connections of a socket being closed, so they
    /// are taken off when its monitor stops.
    pub(crate) connected: i64,
}

/// Name of a monitor event, as used in the `event` label.
pub fn event_name(event: SocketEvent) -> &'static str {
    use SocketEvent::*;
    match event {
        CONNECTED => "connected",
        CONNECT_DELAYED => "connect_delayed",
        CONNECT_RETRIED => "connect_retried",
        LISTENING => "listening",
        BIND_FAILED => "bind_failed",
        ACCEPTED => "accepted",
        ACCEPT_FAILED => "accept_failed",
        CLOSED => "closed",
        CLOSE_FAILED => "close_failed",
        DISCONNECTED => "disconnected",
        MONITOR_STOPPED => "monitor_stopped",
        HANDSHAKE_FAILED_NO_DETAIL | HANDSHAKE_FAILED_PROTOCOL => "handshake_failed",
        HANDSHAKE_SUCCEEDED => "handshake_succeeded",
        HANDSHAKE_FAILED_AUTH => "auth_failed",
        ALL => "other",
    }
}

/// At most one refusal log line per socket role this often.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets one log line through per interval and counts the ones held back.
#[derive(Debug)]
struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged at `now` (`n` lines were held
    /// back since the last one); `None` when this one is held back.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Decodes a monitor message's first frame: event number (u16 LE) and value (u32 LE).
pub fn decode_event(frame: &[u8]) -> Option<(u16, u32)> {
    let ev = u16::from_le_bytes(frame.get(0..2)?.try_into().ok()?);
    let val = u32::from_le_bytes(frame.get(2..6)?.try_into().ok()?);
    Some((ev, val))
}

/// Runs the hub: receives monitor PAIRs on `rx`, polls them all, updates the
/// metrics. After `cancel`, it keeps reading until every watched socket has
/// stopped (so a closing socket never waits on an unread monitor) or
/// `stop_within` has passed.
pub(crate) fn run_hub(
    rx: mpsc::Receiver<Watched>,
    metrics: SocketMetrics,
    cancel: CancellationToken,
    stop_within: Duration,
) {
    let mut watched: Vec<Watched> = Vec::new();
    let mut refusals: HashMap<&'static str, LogLimiter> = HashMap::new();
    let mut cancelled_at: Option<Instant> = None;
    loop {
        while let Ok(w) = rx.try_recv() {
            metrics.declare(w.role);
            watched.push(w);
        }
        if cancel.is_cancelled() {
            let at = *cancelled_at.get_or_insert_with(Instant::now);
            if watched.is_empty() || at.elapsed() > stop_within {
                break;
            }
        }
        if watched.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut items: Vec<_> = watched
            .iter()
            .map(|w| w.pair.as_poll_item(zmq::POLLIN))
            .collect();
        if let Err(e) = zmq::poll(&mut items, 100) {
            warn!(error.message = %e, "Monitor poll failed.");
            break;
        }
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        let mut stopped = Vec::new();
        for (idx, w) in watched.iter_mut().enumerate().filter(|(i, _)| ready[*i]) {
            while let Ok(frames) = w.pair.recv_multipart(zmq::DONTWAIT) {
                let Some((raw, value)) = frames.first().and_then(|f| decode_event(f)) else {
                    continue;
                };
                let event = SocketEvent::from_raw(raw);
                let addr = frames
                    .get(1)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .unwrap_or_default();
                let limiter = refusals
                    .entry(w.role)
                    .or_insert_with(|| LogLimiter::new(REFUSAL_LOG_EVERY));
                record(&metrics, w.role, event, value, &addr, limiter);
                match event {
                    SocketEvent::ACCEPTED | SocketEvent::CONNECTED => w.connected += 1,
                    SocketEvent::DISCONNECTED => w.connected -= 1,
                    SocketEvent::MONITOR_STOPPED => {
                        if w.connected > 0 {
                            metrics
                                .peers
                                .get_or_create(&SocketLabel { socket: w.role })
                                .dec_by(w.connected);
                        }
                        stopped.push(idx);
                        break;
                    }
                    _ => {}
                }
            }
        }
        for idx in stopped.into_iter().rev() {
            watched.swap_remove(idx);
        }
    }
    debug!(remaining = watched.len(), "Monitor hub stopped.");
}

fn record(
    metrics: &SocketMetrics,
    role: &'static str,
    event: SocketEvent,
    value: u32,
    addr: &str,
    refusals: &mut LogLimiter,
) {
    let name = event_name(event);
    metrics
        .events
        .get_or_create(&SocketEventLabels {
            socket: role,
            event: name,
        })
        .inc();
    let peers = metrics.peers.get_or_create(&SocketLabel { socket: role });
    match event {
        // Per-peer events are debug; the first peer in and the last out of
        // a socket role are the lifecycle lines worth an info log.
        SocketEvent::ACCEPTED | SocketEvent::CONNECTED => {
            if peers.inc() == 0 {
                info!(socket = role, peer = addr, "Connected.");
            }
            debug!(socket = role, peer = addr, "Peer connected.");
        }
        SocketEvent::DISCONNECTED => {
            if peers.dec() == 1 {
                info!(socket = role, peer = addr, "No peer connected any more.");
            }
            debug!(socket = role, peer = addr, "Peer disconnected.");
        }
        SocketEvent::HANDSHAKE_FAILED_AUTH
        | SocketEvent::HANDSHAKE_FAILED_NO_DETAIL
        | SocketEvent::HANDSHAKE_FAILED_PROTOCOL => {
            if let Some(suppressed) = refusals.admit(Instant::now()) {
                info!(
                    socket = role,
                    peer = addr,
                    event = name,
                    suppressed,
                    "Handshake failed (at most one line per {}s; `suppressed` similar lines left out before this one).",
                    REFUSAL_LOG_EVERY.as_secs()
                );
            }
        }
        SocketEvent::ACCEPT_FAILED => {
            if let Some(suppressed) = refusals.admit(Instant::now()) {
                let error = std::io::Error::from_raw_os_error(value as i32);
                warn!(
                    socket = role,
                    error.message = %error,
                    suppressed,
                    "Accepting a connection failed (at most one line per {}s; `suppressed` similar lines left out before this one).",
                    REFUSAL_LOG_EVERY.as_secs()
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_event_frames() {
        let mut f = 512u16.to_le_bytes().to_vec();
        f.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(decode_event(&f), Some((512, 7)));
        assert_eq!(decode_event(&f[..5]), None);
        assert_eq!(event_name(SocketEvent::from_raw(512)), "disconnected");
        assert_eq!(
            event_name(SocketEvent::HANDSHAKE_FAILED_AUTH),
            "auth_failed"
        );
    }

    #[test]
    fn refusal_lines_are_rate_limited_and_count_what_they_leave_out() {
        let mut l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(l.admit(at(0)), Some(0), "the first refusal is logged");
        for i in 1..=999 {
            assert_eq!(l.admit(at(i)), None, "refusal {i} within 10 s");
        }
        assert_eq!(l.admit(at(9_999)), None);
        assert_eq!(
            l.admit(at(10_000)),
            Some(1000),
            "next line reports 1000 left out"
        );
        assert_eq!(l.admit(at(10_001)), None);
        assert_eq!(l.admit(at(60_000)), Some(1));
        assert_eq!(l.admit(at(70_000)), Some(0));
    }
}
