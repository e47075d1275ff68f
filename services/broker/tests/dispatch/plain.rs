//! The plain path: REQ clients and our header clients through the broker
//! to plain REP workers on its backend (the default service); deadlines,
//! overload, malformed input, readiness, drain and bind errors.

use std::{thread, time::Duration};

use broker::Config;
use mensageria::{header::is_header, Status};
use testkit::{inproc, ops, wait::wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A REQ client that has sent the one-frame request `body`.
fn sent(f: &Fixture, body: &str) -> zmq::Socket {
    let req = f.socket(zmq::REQ);
    req.send(body, 0).unwrap();
    req
}

/// Echoes after 300 ms (the request stays in flight meanwhile).
fn slow_echo(req: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    thread::sleep(Duration::from_millis(300));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_req_rep_round_trip_is_transparent() {
    let f = start(|_| {}).await;
    let w = rep_worker(&f, 2, |req| req.into_iter().rev().collect());
    let req = f.socket(zmq::REQ);
    req.send_multipart([&b"a"[..], b"b"], 0).unwrap();
    assert_eq!(
        req.recv_multipart(0).unwrap(),
        vec![b"b".to_vec(), b"a".to_vec()]
    );
    // A header request gets its header back through the worker untouched.
    let dealer = f.socket(zmq::DEALER);
    send_ours(&dealer, &header(7, None, None), b"x");
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(reply[0], b"");
    assert_eq!(reply[1], b"x", "the REP worker reversed [header, x]");
    assert!(is_header(&reply[2]));
    w.join().unwrap();
    f.expect_metric("mensageria_broker_requests_total{service=\"echo\"}", 2.0);
    f.expect_replies("echo", "ok", 2.0);
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
    let req = sent(&f, "hello");
    let reply = req.recv_multipart(0).unwrap();
    assert_eq!(reply.len(), 1);
    assert_err(&reply[0], "ERR unavailable ");
    let dealer = f.socket(zmq::DEALER);
    send_ours(&dealer, &header(42, None, None), b"x");
    let reply = dealer.recv_multipart(0).unwrap();
    assert_eq!(reply_status(&reply[1]), (42, Status::Unavailable));
    f.expect_replies("echo", "unavailable", 2.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_answers_timeout_and_late_reply_is_dropped() {
    let f = start(|c| c.request_timeout = Duration::from_millis(200)).await;
    // A worker that answers only after the deadline.
    let w = rep_worker(&f, 1, |req| {
        thread::sleep(Duration::from_millis(600));
        req
    });
    let dealer = f.socket(zmq::DEALER);
    let t = std::time::Instant::now();
    send_ours(&dealer, &header(5, None, None), b"slow");
    let reply = dealer.recv_multipart(0).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(550),
        "timeout reply came before the late reply"
    );
    assert_eq!(reply_status(&reply[1]), (5, Status::Timeout));
    w.join().unwrap();
    f.wait_metric(
        "mensageria_broker_dropped_total{reason=\"late_reply\"}",
        1.0,
    );
    assert_eq!(
        dealer.poll(zmq::POLLIN, 100).unwrap(),
        0,
        "the late reply is not forwarded"
    );
    f.expect_replies("echo", "timeout", 1.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_inflight_is_overloaded() {
    let f = start(|c| c.max_inflight = 1).await;
    let w = rep_worker(&f, 1, slow_echo);
    let first = sent(&f, "one");
    // Wait until the first is in flight, then the second must be refused.
    f.wait_metric("mensageria_broker_inflight_requests", 1.0);
    let second = sent(&f, "two");
    assert_err(&second.recv_bytes(0).unwrap(), "ERR overloaded ");
    assert_eq!(first.recv_bytes(0).unwrap(), b"one");
    w.join().unwrap();
    f.expect_replies("echo", "overloaded", 1.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_counted_and_the_loop_goes_on() {
    let f = start(|_| {}).await;
    let w = rep_worker(&f, 1, |req| req);
    let dealer = f.socket(zmq::DEALER);
    // No delimiter; delimiter but no body.
    dealer.send("no-delimiter", 0).unwrap();
    dealer.send_multipart([&b""[..]], 0).unwrap();
    // A corrupted header gets bad_request (plain form: no id to answer with).
    let mut bad = header(9, None, None);
    bad.truncate(bad.len() - 2);
    dealer.send_multipart([&b""[..], &bad], 0).unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_err(&reply[1], "ERR bad_request invalid header");
    // A wrong-version header likewise.
    let mut wrong = header(9, None, None);
    wrong[3] = 99;
    dealer.send_multipart([&b""[..], &wrong], 0).unwrap();
    let reply = dealer.recv_multipart(0).unwrap();
    assert_err(&reply[1], "ERR bad_request");
    // A worker sending garbage back (no correlation frame) is counted too.
    let rogue = inproc::connected(&f.ctx, zmq::DEALER, &f.backend);
    rogue.send("garbage", 0).unwrap();
    // And a good request still works.
    let req = sent(&f, "still here");
    assert_eq!(req.recv_bytes(0).unwrap(), b"still here");
    w.join().unwrap();
    f.wait_metric("mensageria_broker_dropped_total{reason=\"malformed\"}", 3.0);
    f.expect_replies("other", "bad_request", 2.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_ops_endpoints() {
    let f = start(|_| {}).await;
    // `get` asserts HTTP 200.
    assert!(ops::get(f.http, "/readyz").contains("\"sockets_bound\":true"));
    ops::get(f.http, "/healthz");
    assert_eq!(ops::http_get(f.http, "/nope").unwrap().0, 404);
    f.shutdown.cancel();
    wait_until("readiness to go false", Duration::from_secs(5), || {
        matches!(ops::http_get(f.http, "/readyz"), Ok((503, _)) | Err(_)).then_some(())
    });
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_answers_in_flight_requests() {
    let f = start(|_| {}).await;
    let w = rep_worker(&f, 1, slow_echo);
    let req = sent(&f, "in flight");
    f.wait_metric("mensageria_broker_inflight_requests", 1.0);
    f.shutdown.cancel();
    // New requests during the drain are refused at once…
    let late = sent(&f, "too late");
    assert_err(&late.recv_bytes(0).unwrap(), "ERR unavailable");
    // …and the one in flight is still answered.
    assert_eq!(req.recv_bytes(0).unwrap(), b"in flight");
    w.join().unwrap();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_conflict_is_a_clear_error() {
    let f = start(|_| {}).await;
    let mut c = Config::for_tests();
    c.frontend_bind = f.frontend.clone();
    let err = broker::start(c, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("Address already in use"),
        "{err:#}"
    );
    f.stop().await;
}
