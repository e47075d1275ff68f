//! The broker's queue: a slow request does not hold quick ones back while
//! other workers are idle, and a request whose deadline passes while it
//! waits is answered `timeout` and never runs.

use std::time::Duration;

use e2e::{metric, plain_req, recv_within, req_roundtrip, with_timeout, Stack};
use mensageria::header::{Header, RequestHeader, Status};

/// Sends `n` quick lockstep requests on `quick` and checks that each is
/// answered while the request on `slow` is still unanswered: none of them
/// waited behind it (ordering alone proves it; no timing threshold).
pub fn quick_before_slow(quick: &zmq::Socket, slow: &zmq::Socket, n: usize) {
    for i in 0..n {
        let body = format!("quick {i}");
        assert_eq!(
            req_roundtrip(quick, &[body.as_bytes()]),
            vec![body.into_bytes()]
        );
        assert_eq!(
            slow.poll(zmq::POLLIN, 0).expect("poll"),
            0,
            "the slow reply came before quick request {i} was answered: it waited"
        );
    }
}

#[test]
fn a_slow_request_holds_no_quick_one_back() {
    with_timeout(Duration::from_secs(90), || {
        // Four workers: four servers of one worker (credit 1) each.
        let stack = Stack::builder()
            .servers(4)
            .server_args(&["--workers", "1"])
            .start();
        let ctx = zmq::Context::new();
        let slow = e2e::busy_request(&ctx, &stack.broker, "work 2s");

        // 40 quick lockstep requests: each is answered while the slow one
        // still runs (its reply has not arrived), so none waited behind it.
        let quick = plain_req(&ctx, stack.frontend());
        quick_before_slow(&quick, &slow, 40);
        let reply = recv_within(&slow, Duration::from_secs(10)).expect("the slow reply");
        assert_eq!(reply, vec![b"done".to_vec()]);

        // The worker that ran the slow request got none of the quick ones.
        let handled: Vec<f64> = stack.servers.iter().map(e2e::Server::handled_ok).collect();
        assert_eq!(
            handled.iter().filter(|h| **h == 1.0).count(),
            1,
            "{handled:?}"
        );
        assert_eq!(handled.iter().sum::<f64>(), 41.0, "{handled:?}");
    });
}

#[test]
fn requests_that_expire_in_the_queue_never_run() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::builder()
            .servers(1)
            .broker_args(&["--request-timeout", "1s"])
            .server_args(&["--workers", "1"])
            .start();
        let ctx = zmq::Context::new();
        // Five requests of 800 ms at once, with our header (1 s budget), on
        // five DEALER sockets.
        let sockets: Vec<zmq::Socket> = (0..5u64)
            .map(|id| {
                let s = e2e::connected(&ctx, zmq::DEALER, stack.frontend());
                let header = Header::Request(RequestHeader {
                    budget_ms: Some(1000),
                    id,
                    sent_at_us: mensageria::header::now_us(),
                    trace: None,
                    service: None,
                })
                .encode();
                s.send_multipart([&b""[..], &header, b"work 800ms"], 0)
                    .expect("send");
                s
            })
            .collect();
        let mut statuses = Vec::new();
        for s in &sockets {
            let reply = recv_within(s, Duration::from_secs(10)).expect("every request is answered");
            match Header::decode(&reply[1]) {
                Ok(Header::Reply(h)) => statuses.push(h.status),
                other => panic!("not a reply header: {other:?} {:?}", e2e::show(&reply)),
            }
        }
        let ok = statuses.iter().filter(|s| **s == Status::Ok).count();
        let timeout = statuses.iter().filter(|s| **s == Status::Timeout).count();
        assert_eq!((ok, timeout), (1, 4), "{statuses:?}");

        // The server ran the work once: one `ok`, and the handler's total
        // time is one 800 ms job, not two. Whatever reached it after its
        // deadline was refused without running.
        let srv = stack.servers[0].http;
        let count = |s: &str| {
            metric(
                srv,
                &format!(r#"mensageria_server_requests_total{{status="{s}"}}"#),
            )
        };
        e2e::wait_metric_at_least(srv, r#"mensageria_server_requests_total{status="ok"}"#, 1.0);
        assert_eq!(count("ok"), 1.0);
        for s in ["error", "bad_request", "unavailable", "overloaded"] {
            assert_eq!(count(s), 0.0, "{s}");
        }
        let handler_s = metric(srv, "mensageria_server_request_duration_seconds_sum");
        assert!(
            handler_s < 1.6,
            "handler time {handler_s}s: an expired 800 ms job ran"
        );
        // What the server never saw expired in the broker's queue.
        let expired = metric(
            stack.broker.http,
            r#"mensageria_broker_expired_in_queue_total{service="echo"}"#,
        );
        let refused_late = count("timeout");
        assert_eq!(
            expired + refused_late,
            4.0,
            "expired in the queue {expired} + refused by the worker {refused_late}"
        );
        eprintln!("RESULT expiry: 1 ok, 4 timeout: {expired} expired in the broker's queue, {refused_late} refused by the worker unrun");
    });
}
