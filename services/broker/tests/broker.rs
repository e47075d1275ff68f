//! Broker integration tests: the real broker in-process on ephemeral
//! endpoints, with plain zmq sockets as clients and workers.

use std::{thread, time::Duration};

use broker::{Broker, Config};
use mensageria::{
    header::{is_header, Header},
    ops::http_get,
    ReplyHeader, RequestHeader, Status,
};
use tokio_util::sync::CancellationToken;

const RECV_LIMIT_MS: i32 = 5_000;

struct Fixture {
    broker: Broker,
    shutdown: CancellationToken,
    ctx: zmq::Context,
}

async fn start(tweak: impl FnOnce(&mut Config)) -> Fixture {
    mensageria::telemetry::init_for_tests();
    let mut config = Config::for_tests();
    config.common.shutdown_grace = Duration::from_secs(2);
    tweak(&mut config);
    let shutdown = CancellationToken::new();
    let broker = broker::start(config, shutdown.clone())
        .await
        .expect("broker starts");
    Fixture {
        broker,
        shutdown,
        ctx: zmq::Context::new(),
    }
}

impl Fixture {
    fn socket(&self, kind: zmq::SocketType, endpoint: &str) -> zmq::Socket {
        let s = self.ctx.socket(kind).unwrap();
        s.set_linger(0).unwrap();
        s.set_rcvtimeo(RECV_LIMIT_MS).unwrap();
        s.set_sndtimeo(RECV_LIMIT_MS).unwrap();
        s.connect(endpoint).unwrap();
        s
    }

    fn metric(&self, series: &str) -> f64 {
        let (code, body) =
            http_get(self.broker.http_addr, "/metrics", Duration::from_secs(5)).unwrap();
        assert_eq!(code, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{series} not in metrics:\n{body}"))
            .parse()
            .unwrap()
    }

    /// Waits (bounded) until `series` equals `want`, then asserts it: the
    /// broker counts a reply after sending it, so a test can see the reply
    /// a moment before the count.
    fn expect_metric(&self, series: &str, want: f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.metric(series) != want && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(self.metric(series), want, "{series}");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.broker.wait())
            .await
            .expect("broker stops within its grace")
            .expect("broker stops cleanly");
    }
}

/// A plain REP worker on its own thread answering `n` requests with `f`.
fn rep_worker(
    ctx: &zmq::Context,
    backend: &str,
    n: usize,
    f: fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>,
) -> thread::JoinHandle<()> {
    let s = ctx.socket(zmq::REP).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(RECV_LIMIT_MS).unwrap();
    s.connect(backend).unwrap();
    thread::spawn(move || {
        for _ in 0..n {
            let req = s.recv_multipart(0).expect("worker gets a request");
            s.send_multipart(f(req), 0).unwrap();
        }
    })
}

fn header_request(id: u64) -> Vec<u8> {
    Header::Request(RequestHeader {
        budget_ms: None,
        id,
        sent_at_us: 1,
        trace: None,
        service: None,
    })
    .encode()
}

fn reply_header(frame: &[u8]) -> ReplyHeader {
    match Header::decode(frame).expect("a header") {
        Header::Reply(h) => h,
        other => panic!("expected a reply header, got {other:?}"),
    }
}

/// Waits until the worker's connection is visible to the broker.
fn wait_for_peers(f: &Fixture, socket: &str, n: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let series = format!("mensageria_zmq_peers{{socket=\"{socket}\"}}");
    while f.metric(&series) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{socket} peers never reached {n}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_req_rep_round_trip_is_transparent() {
    let f = start(|_| {}).await;
    let w = rep_worker(&f.ctx, &f.broker.backend, 2, |req| {
        req.into_iter().rev().collect()
    });
    wait_for_peers(&f, "backend", 1.0);
    let req = f.socket(zmq::REQ, &f.broker.frontend);
    req.send_multipart([&b"a"[..], b"b"], 0).unwrap();
    assert_eq!(
        req.recv_multipart(0).unwrap(),
        vec![b"b".to_vec(), b"a".to_vec()]
    );
    // A header request gets its header back through the worker untouched.
    let dealer = f.socket(zmq::DEALER, &f.broker.frontend);
    dealer
        .send_multipart([&b""[..], &header_request(7), b"x"], 0)
        .unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(reply[0], b"");
    assert_eq!(reply[1], b"x", "the REP worker reversed [header, x]");
    assert!(is_header(&reply[2]));
    w.join().unwrap();
    f.expect_metric("mensageria_broker_requests_total{service=\"echo\"}", 2.0);
    f.expect_metric(
        "mensageria_broker_replies_total{service=\"echo\",status=\"ok\"}",
        2.0,
    );
    f.expect_metric(
        "mensageria_broker_request_duration_seconds_count{service=\"echo\"}",
        2.0,
    );
    f.expect_metric("mensageria_broker_inflight_requests", 0.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_means_unavailable_at_once() {
    let f = start(|_| {}).await;
    let req = f.socket(zmq::REQ, &f.broker.frontend);
    req.send("hello", 0).unwrap();
    let reply = req.recv_multipart(0).unwrap();
    assert_eq!(reply.len(), 1);
    assert!(
        reply[0].starts_with(b"ERR unavailable "),
        "{:?}",
        String::from_utf8_lossy(&reply[0])
    );
    let dealer = f.socket(zmq::DEALER, &f.broker.frontend);
    dealer
        .send_multipart([&b""[..], &header_request(42), b"x"], 0)
        .unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    let h = reply_header(&reply[1]);
    assert_eq!((h.id, h.status), (42, Status::Unavailable));
    f.expect_metric(
        "mensageria_broker_replies_total{service=\"echo\",status=\"unavailable\"}",
        2.0,
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_answers_timeout_and_late_reply_is_dropped() {
    let f = start(|c| c.request_timeout = Duration::from_millis(200)).await;
    // A worker that answers only after the deadline.
    let w = rep_worker(&f.ctx, &f.broker.backend, 1, |req| {
        thread::sleep(Duration::from_millis(600));
        req
    });
    wait_for_peers(&f, "backend", 1.0);
    let dealer = f.socket(zmq::DEALER, &f.broker.frontend);
    let t = std::time::Instant::now();
    dealer
        .send_multipart([&b""[..], &header_request(5), b"slow"], 0)
        .unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(550),
        "timeout reply came before the late reply"
    );
    let h = reply_header(&reply[1]);
    assert_eq!((h.id, h.status), (5, Status::Timeout));
    w.join().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.metric("mensageria_broker_dropped_total{reason=\"late_reply\"}") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "late reply never counted"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        dealer.poll(zmq::POLLIN, 100).unwrap(),
        0,
        "the late reply is not forwarded"
    );
    f.expect_metric(
        "mensageria_broker_replies_total{service=\"echo\",status=\"timeout\"}",
        1.0,
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_inflight_is_overloaded() {
    let f = start(|c| c.max_inflight = 1).await;
    let w = rep_worker(&f.ctx, &f.broker.backend, 1, |req| {
        thread::sleep(Duration::from_millis(300));
        req
    });
    wait_for_peers(&f, "backend", 1.0);
    let first = f.socket(zmq::REQ, &f.broker.frontend);
    first.send("one", 0).unwrap();
    // Wait until the first is in flight, then the second must be refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.metric("mensageria_broker_inflight_requests") < 1.0 {
        assert!(std::time::Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    let second = f.socket(zmq::REQ, &f.broker.frontend);
    second.send("two", 0).unwrap();
    let r = second.recv_bytes(0).unwrap();
    assert!(
        r.starts_with(b"ERR overloaded "),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(first.recv_bytes(0).unwrap(), b"one");
    w.join().unwrap();
    f.expect_metric(
        "mensageria_broker_replies_total{service=\"echo\",status=\"overloaded\"}",
        1.0,
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_counted_and_the_loop_goes_on() {
    let f = start(|_| {}).await;
    let w = rep_worker(&f.ctx, &f.broker.backend, 1, |req| req);
    wait_for_peers(&f, "backend", 1.0);
    let dealer = f.socket(zmq::DEALER, &f.broker.frontend);
    // No delimiter; delimiter but no body.
    dealer.send("no-delimiter", 0).unwrap();
    dealer.send_multipart([&b""[..]], 0).unwrap();
    // A corrupted header gets bad_request (plain form: no id to answer with).
    let mut bad = header_request(9);
    bad.truncate(bad.len() - 2);
    dealer.send_multipart([&b""[..], &bad], 0).unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert!(
        reply[1].starts_with(b"ERR bad_request invalid header"),
        "{:?}",
        String::from_utf8_lossy(&reply[1])
    );
    // A wrong-version header likewise.
    let mut wrong = header_request(9);
    wrong[3] = 99;
    dealer.send_multipart([&b""[..], &wrong], 0).unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert!(
        reply[1].starts_with(b"ERR bad_request"),
        "{:?}",
        String::from_utf8_lossy(&reply[1])
    );
    // A worker sending garbage back (no correlation frame) is counted too.
    let rogue = f.socket(zmq::DEALER, &f.broker.backend);
    rogue.send("garbage", 0).unwrap();
    // And a good request still works.
    let req = f.socket(zmq::REQ, &f.broker.frontend);
    req.send("still here", 0).unwrap();
    assert_eq!(req.recv_bytes(0).unwrap(), b"still here");
    w.join().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.metric("mensageria_broker_dropped_total{reason=\"malformed\"}") < 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "malformed messages not all counted"
        );
        thread::sleep(Duration::from_millis(10));
    }
    f.expect_metric(
        "mensageria_broker_replies_total{service=\"other\",status=\"bad_request\"}",
        2.0,
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_ops_endpoints() {
    let f = start(|_| {}).await;
    let addr = f.broker.http_addr;
    let (code, body) = http_get(addr, "/readyz", Duration::from_secs(5)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"sockets_bound\":true"));
    assert_eq!(
        http_get(addr, "/healthz", Duration::from_secs(5))
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        http_get(addr, "/nope", Duration::from_secs(5)).unwrap().0,
        404
    );
    let shutdown = f.shutdown.clone();
    shutdown.cancel();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match http_get(addr, "/readyz", Duration::from_secs(1)) {
            Ok((503, _)) | Err(_) => break,
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "readiness never went false"
            ),
        }
        thread::sleep(Duration::from_millis(5));
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_answers_in_flight_requests() {
    let f = start(|_| {}).await;
    let w = rep_worker(&f.ctx, &f.broker.backend, 1, |req| {
        thread::sleep(Duration::from_millis(300));
        req
    });
    wait_for_peers(&f, "backend", 1.0);
    let req = f.socket(zmq::REQ, &f.broker.frontend);
    req.send("in flight", 0).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.metric("mensageria_broker_inflight_requests") < 1.0 {
        assert!(std::time::Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    f.shutdown.cancel();
    // New requests during the drain are refused at once…
    let late = f.socket(zmq::REQ, &f.broker.frontend);
    late.send("too late", 0).unwrap();
    let r = late.recv_bytes(0).unwrap();
    assert!(
        r.starts_with(b"ERR unavailable"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    // …and the one in flight is still answered.
    assert_eq!(req.recv_bytes(0).unwrap(), b"in flight");
    w.join().unwrap();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_conflict_is_a_clear_error() {
    let f = start(|_| {}).await;
    let mut c = Config::for_tests();
    c.frontend_bind = f.broker.frontend.clone();
    let err = broker::start(c, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("Address already in use"),
        "{err:#}"
    );
    f.stop().await;
}
