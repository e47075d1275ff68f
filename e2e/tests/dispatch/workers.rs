//! Workers that die, freeze or are slow: the broker answers what a lost
//! worker held at once, and a fast worker takes nearly all the work.

use std::time::{Duration, Instant};

use e2e::{
    plain_req, recv_within, req_roundtrip, show, wait_registered, with_timeout, Signal, Stack,
};

use crate::rfc::{Mdp, RfcWorker};

/// Long enough that only heartbeats can explain a quick answer.
const REQUEST_TIMEOUT: &str = "30s";

/// Sends `work 8s` through a plain REQ, freezes or kills the only server
/// with `signal` while it runs the request, and checks the answer is
/// `unavailable` long before REQUEST_TIMEOUT.
fn lose_the_worker(signal: Signal) {
    let mut stack = Stack::builder()
        .servers(1)
        .broker_args(&["--request-timeout", REQUEST_TIMEOUT])
        .server_args(&["--workers", "1"])
        .start();
    let ctx = zmq::Context::new();
    let req = e2e::busy_request(&ctx, &stack.broker, "work 8s");
    let t = Instant::now();
    stack.servers[0].proc.kill(signal);
    // Liveness is 3 × 1 s; the broker's own deadline is 30 s away.
    let reply = recv_within(&req, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no answer within 15 s of {signal:?}"));
    let took = t.elapsed();
    // `unavailable`: the worker is lost.
    e2e::assert_plain_error(&reply, "ERR unavailable");
    // The broker publishes its gauges and counters when its pass ends,
    // just after it sent the reply: wait for them, bounded.
    e2e::wait_metric_at_least(stack.broker.http, e2e::ECHO_WORKERS_LOST, 1.0);
    e2e::wait_workers(stack.broker.http, &[], 0.0, e2e::WAIT_LIMIT);
    eprintln!("RESULT worker lost ({signal:?}): answered `unavailable` after {took:?} (REQUEST_TIMEOUT {REQUEST_TIMEOUT})");

    if signal == Signal::Stop {
        // Thawed, it registers again on a new connection and serves.
        stack.servers[0].proc.kill(Signal::Cont);
        wait_registered(stack.broker.http, 1.0);
        let again = plain_req(&ctx, stack.frontend());
        assert_eq!(req_roundtrip(&again, &[b"back"]), vec![b"back".to_vec()]);
    }
}

#[test]
fn a_killed_worker_s_request_is_answered_within_the_liveness() {
    with_timeout(Duration::from_secs(60), || lose_the_worker(Signal::Kill));
}

#[test]
fn a_frozen_worker_s_request_is_answered_within_the_liveness() {
    with_timeout(Duration::from_secs(60), || lose_the_worker(Signal::Stop));
}

#[test]
fn the_fast_worker_takes_nearly_all_the_work() {
    with_timeout(Duration::from_secs(90), || {
        // Fast: our server, one worker. Slow: an RFC 18 worker that takes
        // 100 ms per request. Both serve `echo` with credit 1.
        let stack = Stack::builder()
            .servers(1)
            .server_args(&["--workers", "1"])
            .start();
        let slow = RfcWorker::start(
            stack.frontend(),
            Mdp::V2,
            "echo",
            "",
            Duration::from_millis(100),
        );
        let echo = [("service", "echo")];
        e2e::wait_workers(stack.broker.http, &echo, 2.0, e2e::WAIT_LIMIT);
        // 200 requests outstanding at once (one plain DEALER), so the queue
        // is never empty: each worker takes the next request as soon as it
        // is free. (With both idle, lockstep requests would alternate
        // between them: the broker cannot know which is faster.)
        const N: usize = 200;
        let ctx = zmq::Context::new();
        let dealer = e2e::connected(&ctx, zmq::DEALER, stack.frontend());
        for i in 0..N {
            dealer
                .send_multipart([&b""[..], format!("r{i}").as_bytes()], 0)
                .expect("send");
        }
        let mut replies = std::collections::BTreeSet::new();
        while replies.len() < N {
            let reply = recv_within(&dealer, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("only {} of {N} replies", replies.len()));
            assert_eq!(reply.len(), 2, "{:?}", show(&reply));
            assert!(
                replies.insert(reply[1].clone()),
                "duplicate reply {:?}",
                show(&reply)
            );
        }
        let total = N as f64;
        e2e::wait_metric_at_least(
            stack.servers[0].http,
            r#"mensageria_server_requests_total{status="ok"}"#,
            1.0,
        );
        let fast = stack.servers[0].handled_ok();
        let slow_served = slow.stop() as f64;
        assert_eq!(
            fast + slow_served,
            total,
            "fast {fast} + slow {slow_served}"
        );
        assert!(
            fast >= 0.9 * total,
            "the fast worker served only {fast} of {total} (slow: {slow_served})"
        );
        eprintln!("RESULT fast/slow: fast worker {fast}, slow worker {slow_served} of {total}");
    });
}
