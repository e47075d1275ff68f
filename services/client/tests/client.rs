//! Client integration tests: the requester and subscriber against sockets
//! the test controls (a bound ROUTER playing the broker, a bound PUB playing
//! the proxy), to drive timeouts, retries and loss deterministically.

use std::time::{Duration, Instant};

use client::{
    metrics::ClientMetrics,
    requester::{Outcome, Requester, RequesterConfig},
    subscriber::Subscriber,
};
use mensageria::{
    header::{EventHeader, Header},
    metrics::SocketMetrics,
    socket::SocketFactory,
    Endpoints, Status, TransportArgs,
};
use testkit::wait::wait_until;
use tokio_util::sync::CancellationToken;

fn factory() -> SocketFactory {
    mensageria::telemetry::init_for_tests();
    SocketFactory::new(
        TransportArgs::default(),
        SocketMetrics::default(),
        CancellationToken::new(),
    )
    .unwrap()
    .0
}

fn router() -> (zmq::Socket, String, zmq::Context) {
    let ctx = zmq::Context::new();
    let (s, ep) = testkit::inproc::bound(&ctx, zmq::ROUTER);
    (s, ep, ctx)
}

fn config(endpoint: &str, plain: bool, timeout_ms: u64, retries: u32) -> RequesterConfig {
    RequesterConfig {
        endpoints: endpoint.parse::<Endpoints>().unwrap(),
        timeout: Duration::from_millis(timeout_ms),
        retries,
        plain,
        concurrency: 4,
        service: None,
    }
}

/// A requester on [`factory`] with [`config`] and unregistered metrics.
fn requester(endpoint: &str, plain: bool, timeout_ms: u64, retries: u32) -> Requester {
    Requester::new(
        factory(),
        config(endpoint, plain, timeout_ms, retries),
        ClientMetrics::unregistered(),
    )
    .unwrap()
}

/// Drives the requester until the fake broker has a request, then receives
/// it: (route, header id if any, payload). Panics if an outcome appears first.
fn take(router: &zmq::Socket, req: &mut Requester) -> (Vec<u8>, Option<u64>, Vec<Vec<u8>>) {
    let mut f = take_frames(router, req);
    let route = f.remove(0);
    assert!(
        f.remove(0).is_empty(),
        "DEALER requests carry the empty delimiter"
    );
    let id = match Header::decode(&f[0]) {
        Ok(Header::Request(h)) => {
            f.remove(0);
            Some(h.id)
        }
        _ => None,
    };
    (route, id, f)
}

/// [`take`]: the request's frames as the fake broker received them.
fn take_frames(router: &zmq::Socket, req: &mut Requester) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while router.poll(zmq::POLLIN, 0).unwrap() == 0 {
        req.poll(Duration::from_millis(10), &mut out);
        assert!(out.is_empty(), "unexpected outcome {out:?}");
        assert!(
            Instant::now() < deadline,
            "no request reached the fake broker"
        );
    }
    router.recv_multipart(0).unwrap()
}

fn answer(router: &zmq::Socket, route: &[u8], id: Option<u64>, status: Status, body: &[u8]) {
    let mut frames = vec![route.to_vec(), vec![]];
    if let Some(id) = id {
        frames.push(testkit::inproc::reply_frame(id, status));
    }
    frames.push(body.to_vec());
    router.send_multipart(frames, 0).unwrap();
}

fn wait_one(req: &mut Requester) -> Outcome {
    let mut out = Vec::new();
    wait_until("an outcome", Duration::from_secs(10), || {
        req.poll(Duration::from_millis(50), &mut out);
        (!out.is_empty()).then(|| out.remove(0))
    })
}

#[test]
fn header_request_round_trip() {
    let (router, ep, _ctx) = router();
    let mut req = requester(&ep, false, 2000, 0);
    let id = req.submit(vec![b"ping".to_vec()]);
    let (route, got_id, payload) = take(&router, &mut req);
    assert_eq!((got_id, payload), (Some(id), vec![b"ping".to_vec()]));
    answer(&router, &route, got_id, Status::Ok, b"pong");
    let o = wait_one(&mut req);
    assert_eq!(
        (o.id, o.status, o.frames, o.attempts),
        (id, Status::Ok, vec![b"pong".to_vec()], 1)
    );
}

#[test]
fn the_header_names_the_service_and_the_attempts_budget() {
    let (router, ep, _ctx) = router();
    let mut cfg = config(&ep, false, 700, 0);
    cfg.service = Some(mensageria::header::ServiceName::new(b"work").unwrap());
    let mut req = Requester::new(factory(), cfg, ClientMetrics::unregistered()).unwrap();
    req.submit(vec![b"x".to_vec()]);
    let f = take_frames(&router, &mut req);
    let Ok(Header::Request(h)) = Header::decode(&f[2]) else {
        panic!("no request header: {f:?}");
    };
    assert_eq!(
        h.service.map(|s| s.as_str().to_owned()).as_deref(),
        Some("work")
    );
    assert_eq!(
        h.budget_ms,
        Some(700),
        "the budget is the attempt's timeout"
    );
}

#[test]
fn lost_reply_is_retried_and_a_stale_reply_ignored() {
    let (router, ep, _ctx) = router();
    let metrics = ClientMetrics::unregistered();
    let mut req = Requester::new(factory(), config(&ep, false, 200, 2), metrics.clone()).unwrap();
    let id = req.submit(vec![b"x".to_vec()]);
    let (route, got, _) = take(&router, &mut req); // first attempt: dropped on the floor
    let (route2, got2, _) = take(&router, &mut req); // the retry after the timeout
    let mut out = Vec::new();
    assert_eq!(got, got2, "a retry keeps the request id");
    answer(&router, &route2, got2, Status::Ok, b"second");
    let o = wait_one(&mut req);
    assert_eq!((o.id, o.status, o.attempts), (id, Status::Ok, 2));
    // The first attempt's reply arriving now is ignored.
    answer(&router, &route, got, Status::Ok, b"first");
    req.poll(Duration::from_millis(100), &mut out);
    assert!(out.is_empty(), "stale reply produced an outcome: {out:?}");
    assert_eq!(metrics.retries.get(), 1);
}

#[test]
fn unavailable_is_retried_with_backoff_then_reported() {
    let (router, ep, _ctx) = router();
    let mut req = requester(&ep, false, 2000, 2);
    req.submit(vec![b"x".to_vec()]);
    for _ in 0..3 {
        let (route, id, _) = take(&router, &mut req);
        answer(&router, &route, id, Status::Unavailable, b"no worker");
    }
    let o = wait_one(&mut req);
    assert_eq!((o.status, o.attempts), (Status::Unavailable, 3));
    assert_eq!(o.frames, vec![b"no worker".to_vec()]);
}

#[test]
fn every_attempt_timing_out_ends_in_timeout() {
    let (router, ep, _ctx) = router();
    let mut req = requester(&ep, false, 100, 1);
    let t = Instant::now();
    req.submit(vec![b"x".to_vec()]);
    // Both attempts reach the broker, which never answers.
    take(&router, &mut req);
    take(&router, &mut req);
    let o = wait_one(&mut req);
    assert_eq!((o.status, o.attempts), (Status::Timeout, 2));
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[test]
fn no_broker_at_all_is_a_timeout_not_a_hang() {
    let ep = format!("tcp://127.0.0.1:{}", testkit::ports::unused_port());
    let mut req = requester(&ep, false, 100, 1);
    req.submit(vec![b"x".to_vec()]);
    let o = wait_one(&mut req);
    assert_eq!(o.status, Status::Timeout);
    assert!(
        String::from_utf8_lossy(&o.frames[0]).contains("no broker reachable"),
        "{:?}",
        o.frames
    );
}

#[test]
fn plain_mode_reopens_the_socket_after_a_timeout() {
    let (router, ep, _ctx) = router();
    let mut req = requester(&ep, true, 150, 1);
    req.submit(vec![b"plain".to_vec()]);
    let (route1, id, payload) = take(&router, &mut req);
    assert_eq!(
        (id, payload),
        (None, vec![b"plain".to_vec()]),
        "plain requests have no header"
    );
    let (route2, _, _) = take(&router, &mut req);
    assert_ne!(
        route1, route2,
        "the retry comes from a new socket (Lazy Pirate)"
    );
    // A reply on the old socket's route goes nowhere; the new one counts.
    answer(&router, &route2, None, Status::Ok, b"ERR overloaded busy");
    let o = wait_one(&mut req);
    assert_eq!(
        (o.status, o.frames),
        (Status::Overloaded, vec![b"busy".to_vec()])
    );
}

#[test]
fn subscriber_counts_sequence_gaps_and_lag() {
    let ctx = zmq::Context::new();
    let (publisher, ep) = testkit::inproc::bound(&ctx, zmq::PUB);
    let f = factory();
    let socket = f.socket(zmq::SUB, "sub").unwrap();
    f.connect_all(&socket, &ep.parse().unwrap()).unwrap();
    let metrics = ClientMetrics::unregistered();
    let mut sub = Subscriber::new(socket, &["requests".to_owned()], metrics.clone()).unwrap();
    let event = |seq: u64| {
        let h = Header::Event(EventHeader {
            publisher: 7,
            seq,
            published_at_us: mensageria::header::now_us(),
            trace: None,
        });
        vec![b"requests.completed".to_vec(), h.encode(), b"{}".to_vec()]
    };
    // Publish seq 1 until the subscription is live.
    let first = wait_until("a live subscription", Duration::from_secs(5), || {
        publisher.send_multipart(event(1), 0).unwrap();
        let ev = sub.next(Duration::from_millis(20))?;
        Some((ev.header.map(|h| h.seq), ev.gap))
    });
    assert_eq!(first, (Some(1), 0));
    // Drain duplicates of seq 1 sent while priming, then skip 2 and 3.
    publisher.send_multipart(event(4), 0).unwrap();
    publisher
        .send_multipart([&b"other.topic"[..], b"x"], 0)
        .unwrap();
    publisher.send_multipart(event(5), 0).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = sub.next(Duration::from_secs(5)).expect("events arrive");
        let seq = ev.header.unwrap().seq;
        if seq > 1 {
            got.push((seq, ev.gap));
            assert!(ev.lag.unwrap() < Duration::from_secs(5));
        }
    }
    assert_eq!(got, vec![(4, 2), (5, 0)]);
    assert_eq!(metrics.events_lost.get(), 2);
    assert!(metrics.event_lag.count() >= 3);
}
