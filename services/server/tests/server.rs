//! Server integration tests of the plain REP path (`WORKER_PROTOCOL=rep`):
//! the real server in-process, with a DEALER standing in for the broker's
//! backend and a SUB for the proxy. (`tests/majordomo.rs` covers the default
//! Majordomo path.)

use std::{
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use mensageria::{header::Header, ops::http_get, Status};
use server::{
    config::WorkerProtocol,
    handler::{Handler, Request, Response},
    Config, Server,
};
use testkit::inproc;
use tokio_util::sync::CancellationToken;

struct Fixture {
    server: Server,
    shutdown: CancellationToken,
    /// Bound DEALER: what the broker's backend looks like to a worker.
    backend: zmq::Socket,
    /// Bound SUB: what the proxy's XSUB looks like to the publisher.
    events: zmq::Socket,
    _ctx: zmq::Context,
}

async fn start() -> Fixture {
    start_with(2, None).await
}

/// The server with `workers` workers and `handler` (default: the demo one).
async fn start_with(workers: u16, handler: Option<Arc<dyn Handler>>) -> Fixture {
    mensageria::telemetry::init_for_tests();
    let ctx = zmq::Context::new();
    let (backend, b) = inproc::bound(&ctx, zmq::DEALER);
    let (events, e) = inproc::bound(&ctx, zmq::SUB);
    events.set_subscribe(b"").unwrap();
    let mut config = Config::for_tests(&b, &e, workers);
    config.worker_protocol = WorkerProtocol::Rep;
    config.common.shutdown_grace = Duration::from_secs(5);
    config.status_interval = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let server = match handler {
        Some(h) => server::start_with_handler(config, shutdown.clone(), "test".into(), h).await,
        None => server::start(config, shutdown.clone()).await,
    }
    .expect("server starts");
    Fixture {
        server,
        shutdown,
        backend,
        events,
        _ctx: ctx,
    }
}

impl Fixture {
    /// Sends a request as the broker would: [corr, "", body…]; returns the reply body.
    fn call(&self, body: &[&[u8]]) -> Vec<Vec<u8>> {
        let frames: Vec<&[u8]> = [&b"corr-1"[..], b""]
            .into_iter()
            .chain(body.iter().copied())
            .collect();
        self.backend.send_multipart(frames, 0).unwrap();
        let mut reply = self.backend.recv_multipart(0).expect("a reply within 5 s");
        assert_eq!(
            &reply[..2],
            &[b"corr-1".to_vec(), vec![]],
            "envelope echoed"
        );
        reply.drain(..2);
        reply
    }

    /// Waits (up to 5 s) until `/readyz` answers `code`.
    fn wait_ready(&self, code: u16, what: &str) {
        let mut last = (0, String::new());
        testkit::wait::poll_until(Duration::from_secs(5), || {
            last = http_get(self.server.http_addr, "/readyz", Duration::from_secs(5)).unwrap();
            (last.0 == code).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: last {last:?}"));
    }

    /// The value of `series` now, if exposed.
    fn metric(&self, series: &str) -> Option<f64> {
        testkit::ops::metric_opt(self.server.http_addr, series)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        inproc::stopped("server", self.server.wait()).await;
    }
}

fn request_header(id: u64) -> Vec<u8> {
    inproc::request_header(id, None, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_plain_requests_get_matching_replies() {
    let f = start().await;
    let reply = f.call(&[&request_header(11), b"hello"]);
    assert_eq!(inproc::reply_status(&reply[0]), (11, Status::Ok));
    assert_eq!(reply[1], b"hello");
    assert_eq!(
        f.call(&[b"plain", b"two"]),
        vec![b"plain".to_vec(), b"two".to_vec()]
    );
    assert_eq!(f.call(&[b"fail nope"]), vec![b"ERR error nope".to_vec()]);
    assert_eq!(f.call(&[b"work 1ms ok"]), vec![b"ok".to_vec()]);
    let bad = f.call(&[b"work forever"]);
    assert!(
        bad[0].starts_with(b"ERR bad_request work: invalid duration"),
        "{:?}",
        String::from_utf8_lossy(&bad[0])
    );
    let mut corrupt = request_header(3);
    corrupt.truncate(5);
    let reply = f.call(&[&corrupt, b"x"]);
    assert!(
        reply[0].starts_with(b"ERR bad_request invalid header"),
        "{:?}",
        String::from_utf8_lossy(&reply[0])
    );
    for (series, want) in [
        (r#"mensageria_server_requests_total{status="ok"}"#, 3.0),
        (
            r#"mensageria_server_requests_total{status="bad_request"}"#,
            2.0,
        ),
        (r#"mensageria_server_requests_total{status="error"}"#, 1.0),
        ("mensageria_server_request_duration_seconds_count", 6.0),
    ] {
        assert_eq!(f.metric(series), Some(want), "{series}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_budget_is_skipped_and_counted() {
    let f = start().await;
    let late = inproc::request_header(21, None, Some(0));
    let reply = f.call(&[&late, b"work 1ms"]);
    assert_eq!(inproc::reply_status(&reply[0]), (21, Status::Timeout));
    assert_eq!(f.metric("mensageria_server_late_skipped_total"), Some(1.0));
    assert_eq!(
        f.metric(r#"mensageria_server_requests_total{status="ok"}"#),
        Some(0.0)
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_publishes_a_completed_event_in_sequence() {
    let f = start().await;
    // The SUB is bound; wait until the publisher's connection carries events
    // (server.status arrives every 100 ms).
    testkit::wait::wait_until("a status event", Duration::from_secs(5), || {
        let ev = f.events.recv_multipart(0).expect("status events flow");
        (ev[0] == b"server.status").then_some(())
    });
    for i in 0..3u64 {
        f.call(&[&request_header(100 + i), b"x"]);
    }
    let (mut seqs, mut ids) = (Vec::new(), Vec::new());
    while seqs.len() < 3 {
        let ev = f.events.recv_multipart(0).expect("completed events");
        if ev[0] != b"requests.completed" {
            continue;
        }
        let Ok(Header::Event(h)) = Header::decode(&ev[1]) else {
            panic!("not an event header: {ev:?}");
        };
        let body: serde_json::Value = serde_json::from_slice(&ev[2]).unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["server"], f.server.instance.as_str());
        ids.push(body["request_id"].as_u64().unwrap());
        seqs.push(h.seq);
    }
    assert_eq!(
        seqs,
        vec![1, 2, 3],
        "per-topic sequence starts at 1 and has no gaps"
    );
    // Two workers may queue their events in either order.
    ids.sort_unstable();
    assert_eq!(ids, vec![100, 101, 102]);
    assert_eq!(
        f.metric(r#"mensageria_server_events_published_total{topic="requests"}"#),
        Some(3.0)
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_without_a_broker_and_not_while_draining() {
    mensageria::telemetry::init_for_tests();
    // A broker endpoint where nothing listens.
    let dead = format!("tcp://127.0.0.1:{}", testkit::ports::unused_port());
    let shutdown = CancellationToken::new();
    let config = Config::for_tests(&dead, &dead, 1);
    let s = server::start(config, shutdown.clone()).await.unwrap();
    let (code, body) = http_get(s.http_addr, "/readyz", Duration::from_secs(5)).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"broker_connected\":false"), "{body}");
    testkit::ops::get(s.http_addr, "/healthz"); // asserts HTTP 200
    shutdown.cancel();
    inproc::stopped("server", s.wait()).await;

    let f = start().await;
    f.wait_ready(200, "never ready");
    f.shutdown.cancel();
    f.wait_ready(503, "readiness did not drop on shutdown");
    f.stop().await;
}

/// A handler that reports when it starts and then takes 300 ms.
struct Gate(Mutex<mpsc::Sender<()>>);

impl Handler for Gate {
    fn handle(&self, _: &Request<'_>) -> Response {
        let _ = self.0.lock().unwrap().send(());
        std::thread::sleep(Duration::from_millis(300));
        Response::ok(vec![b"finished".to_vec()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_the_request_in_progress() {
    let (tx, started) = mpsc::channel();
    let f = start_with(1, Some(Arc::new(Gate(Mutex::new(tx))))).await;
    f.backend
        .send_multipart([&b"corr-9"[..], b"", b"anything"], 0)
        .unwrap();
    started
        .recv_timeout(Duration::from_secs(5))
        .expect("a worker took the request");
    let t = Instant::now();
    f.shutdown.cancel();
    let reply = f
        .backend
        .recv_multipart(0)
        .expect("the in-flight request is answered");
    assert_eq!(reply[2], b"finished");
    f.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopped well within the grace"
    );
}

/// Liveness means "stuck", not "busy": a worker inside a `work` request that
/// runs longer than the heartbeat stall limit (but within MAX_WORK, 10 s by
/// default) keeps `/healthz` at 200 the whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_within_max_work_keeps_liveness() {
    let f = start().await;
    let long = mensageria::health::STALL_AFTER + Duration::from_millis(1500);
    let body = format!("work {}ms long-done", long.as_millis());
    f.backend
        .send_multipart([&b"corr-1"[..], b"", body.as_bytes()], 0)
        .unwrap();
    let sent = Instant::now();
    let deadline = sent + long + Duration::from_secs(10);
    let mut probes_past_stall = 0;
    let reply = loop {
        assert!(Instant::now() < deadline, "no reply to the long request");
        let (code, health) =
            http_get(f.server.http_addr, "/healthz", Duration::from_secs(5)).unwrap();
        assert_eq!(code, 200, "after {:?}: {health}", sent.elapsed());
        if sent.elapsed() > mensageria::health::STALL_AFTER + Duration::from_millis(200) {
            probes_past_stall += 1;
        }
        match f.backend.recv_multipart(zmq::DONTWAIT) {
            Ok(reply) => break reply,
            Err(zmq::Error::EAGAIN) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("receive: {e}"),
        }
    };
    assert_eq!(reply[2], b"long-done");
    assert!(
        probes_past_stall > 0,
        "no probe landed after the stall limit while the request ran"
    );
    f.stop().await;
}
