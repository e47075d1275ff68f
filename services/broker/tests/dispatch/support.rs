//! Test support: the broker in-process on ephemeral endpoints, and
//! Majordomo clients and workers written here from the RFCs' frame tables
//! (RFC 7 for 0.1, RFC 18 for 0.2), with literal bytes and raw sockets, so
//! the broker is checked against the specs and not against its own codec.

use std::{
    thread,
    time::{Duration, Instant},
};

use broker::{Broker, Config};
use testkit::inproc;
use tokio_util::sync::CancellationToken;

pub struct Fixture {
    pub broker: Option<Broker>,
    pub frontend: String,
    pub backend: String,
    pub http: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub ctx: zmq::Context,
}

/// Starts a broker; workers are given a long liveness unless a test tunes it.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Fixture {
    mensageria::telemetry::init_for_tests();
    let mut config = Config::for_tests();
    config.common.shutdown_grace = Duration::from_secs(2);
    config.worker_liveness = 60;
    tweak(&mut config);
    let shutdown = CancellationToken::new();
    let broker = broker::start(config, shutdown.clone())
        .await
        .expect("broker starts");
    Fixture {
        frontend: broker.frontend.clone(),
        backend: broker.backend.clone(),
        http: broker.http_addr,
        broker: Some(broker),
        shutdown,
        ctx: zmq::Context::new(),
    }
}

impl Drop for Fixture {
    /// A failed assertion must not leave the broker thread holding its
    /// context open (that would hang the test instead of failing it).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Fixture {
    pub fn socket(&self, kind: zmq::SocketType) -> zmq::Socket {
        inproc::connected(&self.ctx, kind, &self.frontend)
    }

    /// The value of one series in `/metrics` (0 if absent).
    pub fn metric(&self, series: &str) -> f64 {
        testkit::ops::metric_opt(self.http, series).unwrap_or(0.0)
    }

    /// Waits (bounded) until `series` equals `want`, then asserts it.
    pub fn expect_metric(&self, series: &str, want: f64) {
        testkit::ops::expect_metric(self.http, series, want);
    }

    /// [`Fixture::expect_metric`] for the replies to `service` with `status`.
    pub fn expect_replies(&self, service: &str, status: &str, want: f64) {
        let series =
            format!("mensageria_broker_replies_total{{service=\"{service}\",status=\"{status}\"}}");
        self.expect_metric(&series, want);
    }

    /// [`Fixture::expect_metric`] for the messages dropped for `reason`.
    pub fn expect_dropped(&self, reason: &str, want: f64) {
        self.expect_metric(
            &format!("mensageria_broker_dropped_total{{reason=\"{reason}\"}}"),
            want,
        );
    }

    /// Waits (bounded) until `series` reaches `at_least`.
    pub fn wait_metric(&self, series: &str, at_least: f64) {
        testkit::ops::wait_metric(self.http, series, "waiting", |v| v >= at_least);
    }

    /// The `/services` view.
    pub fn services(&self) -> serde_json::Value {
        serde_json::from_str(&testkit::ops::get(self.http, "/services")).unwrap()
    }

    /// Waits (bounded) until the `/services` view, refreshed every 250 ms,
    /// shows `service` in a state `ready` accepts; returns that entry.
    pub fn service_view(
        &self,
        service: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut view = serde_json::Value::Null;
        testkit::wait::poll_until(Duration::from_secs(5), || {
            view = self.services();
            let entries = view["services"].as_array()?;
            entries
                .iter()
                .find(|s| s["name"] == service && ready(s))
                .cloned()
        })
        .unwrap_or_else(|| panic!("{service} never shown as expected: {view}"))
    }

    /// Waits until `service` has `n` registered workers (per `/metrics`).
    pub fn wait_workers(&self, service: &str, n: f64) {
        self.expect_metric(&workers(service), n);
    }

    /// An [`RfcWorker`] the broker has registered (counts one more worker
    /// of `service`).
    pub fn worker(&self, v2: bool, service: &str, ext: Option<&str>) -> RfcWorker {
        let before = self.metric(&workers(service));
        let w = RfcWorker::new(self, v2, service, ext);
        self.wait_workers(service, before + 1.0);
        w
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let broker = self.broker.take().expect("stopped once");
        inproc::stopped("broker", broker.wait()).await;
    }
}

/// The series of `service`'s registered workers, idle and busy.
fn workers(service: &str) -> String {
    format!("mensageria_broker_workers{{service=\"{service}\"}}")
}

/// A plain REP worker on the backend, on its own thread, answering `n`
/// requests with `answer`; returned once the broker sees its connection.
pub fn rep_worker(
    f: &Fixture,
    n: usize,
    answer: fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>,
) -> thread::JoinHandle<()> {
    let s = inproc::connected(&f.ctx, zmq::REP, &f.backend);
    f.expect_metric("mensageria_zmq_peers{socket=\"backend\"}", 1.0);
    thread::spawn(move || {
        for _ in 0..n {
            let req = s.recv_multipart(0).expect("worker gets a request");
            s.send_multipart(answer(req), 0).unwrap();
        }
    })
}

/// A Majordomo worker from the RFC tables: a DEALER; 0.1 commands are
/// `["", "MDPW01", cmd, …]`, 0.2 commands `["MDPW02", cmd, …]`.
pub struct RfcWorker {
    pub s: zmq::Socket,
    pub v2: bool,
}

/// Worker command bytes: (READY, REQUEST, REPLY/FINAL, HEARTBEAT, DISCONNECT).
pub const V1: [u8; 5] = [1, 2, 3, 4, 5];
pub const V2: [u8; 5] = [1, 2, 4, 5, 6];

impl RfcWorker {
    pub fn new(f: &Fixture, v2: bool, service: &str, ext: Option<&str>) -> Self {
        let w = RfcWorker {
            s: f.socket(zmq::DEALER),
            v2,
        };
        let mut rest: Vec<&[u8]> = vec![service.as_bytes()];
        rest.extend(ext.map(str::as_bytes));
        w.send(w.cmd(0), &rest);
        w
    }

    /// The byte of command `i` in this worker's version (see [`V1`]).
    pub fn cmd(&self, i: usize) -> u8 {
        if self.v2 {
            V2[i]
        } else {
            V1[i]
        }
    }

    pub fn send(&self, cmd: u8, rest: &[&[u8]]) {
        let mut frames: Vec<&[u8]> = if self.v2 {
            vec![b"MDPW02"]
        } else {
            vec![b"", b"MDPW01"]
        };
        let c = [cmd];
        frames.push(&c);
        frames.extend_from_slice(rest);
        self.s.send_multipart(frames, 0).unwrap();
    }

    /// Next command other than HEARTBEAT: (command byte, frames after it).
    pub fn recv(&self) -> (u8, Vec<Vec<u8>>) {
        loop {
            let mut m = self.s.recv_multipart(0).expect("worker gets a command");
            if !self.v2 {
                assert_eq!(m.remove(0), b"", "0.1 commands start with an empty frame");
            }
            assert_eq!(m.remove(0), if self.v2 { b"MDPW02" } else { b"MDPW01" });
            let cmd = m.remove(0);
            assert_eq!(cmd.len(), 1);
            if cmd[0] != self.cmd(3) {
                return (cmd[0], m);
            }
        }
    }

    /// Receives a REQUEST: (client address, body frames).
    pub fn request(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (cmd, mut m) = self.recv();
        assert_eq!(cmd, self.cmd(1), "expected REQUEST, got {cmd} {m:?}");
        let addr = m.remove(0);
        assert_eq!(m.remove(0), b"", "envelope delimiter after the address");
        (addr, m)
    }

    /// Receives a REQUEST, asserts its body is the one frame `body` and
    /// returns the client address.
    pub fn request_of(&self, body: &[u8]) -> Vec<u8> {
        let (addr, got) = self.request();
        assert_eq!(got, [body], "the request's body");
        addr
    }

    /// Sends REPLY (0.1) / FINAL (0.2) for `addr`.
    pub fn reply(&self, addr: &[u8], body: &[&[u8]]) {
        let mut rest = vec![addr, b""];
        rest.extend_from_slice(body);
        self.send(self.cmd(2), &rest);
    }

    /// Whether anything but heartbeats arrives within `ms`.
    pub fn gets_nothing_for(&self, ms: i64) -> bool {
        let until = Instant::now() + Duration::from_millis(ms as u64);
        loop {
            let left = until.saturating_duration_since(Instant::now()).as_millis() as i64;
            if left == 0 || self.s.poll(zmq::POLLIN, left).unwrap() == 0 {
                return true;
            }
            let m = self.s.recv_multipart(0).unwrap();
            let cmd = &m[if self.v2 { 1 } else { 2 }];
            if cmd[..] != [self.cmd(3)] {
                return false;
            }
        }
    }
}

pub use testkit::inproc::call_v1;

/// A Majordomo 0.2 client (DEALER): `["MDPC02", 0x01, service, body…]`;
/// the reply is `["MDPC02", 0x03 FINAL, service, reply…]`.
pub fn call_v2(s: &zmq::Socket, service: &str, body: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut frames: Vec<&[u8]> = vec![b"MDPC02", &[1], service.as_bytes()];
    frames.extend_from_slice(body);
    s.send_multipart(frames, 0).unwrap();
    recv_v2(s, service)
}

/// The body of the next FINAL for `service` on a 0.2 client socket.
pub fn recv_v2(s: &zmq::Socket, service: &str) -> Vec<Vec<u8>> {
    let mut r = s.recv_multipart(0).expect("a reply");
    assert_eq!(r.remove(0), b"MDPC02");
    assert_eq!(r.remove(0), [3], "FINAL");
    assert_eq!(r.remove(0), service.as_bytes());
    r
}

/// Our request header for `service` with a budget.
pub use testkit::inproc::request_header as header;
pub use testkit::inproc::{reply_frame, reply_header, reply_status};

/// Asserts that a reply frame is an error starting with `prefix`
/// (`ERR <status> …`).
pub fn assert_err(frame: &[u8], prefix: &str) {
    assert!(
        frame.starts_with(prefix.as_bytes()),
        "expected {prefix:?}…, got {:?}",
        String::from_utf8_lossy(frame)
    );
}

/// Sends a one-frame Majordomo 0.2 request (see [`call_v2`]) without
/// waiting for the reply.
pub fn send_v2(s: &zmq::Socket, service: &str, body: &[u8]) {
    s.send_multipart([&b"MDPC02"[..], &[1], service.as_bytes(), body], 0)
        .unwrap();
}

/// Sends our header request on a DEALER: `["", header, payload]`.
pub fn send_ours(s: &zmq::Socket, header: &[u8], payload: &[u8]) {
    s.send_multipart([&b""[..], header, payload], 0).unwrap();
}

/// [`send_ours`], then the reply frames after the empty delimiter.
pub fn call_ours(s: &zmq::Socket, header: &[u8], payload: &[u8]) -> Vec<Vec<u8>> {
    send_ours(s, header, payload);
    let mut r = s.recv_multipart(0).expect("a reply");
    assert_eq!(r.remove(0), b"");
    r
}
