//! Requests through the broker: our client, plain REQ peers, and the answer
//! when no server is connected.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use e2e::{
    assert_failed, describe, metric, plain_req, req_roundtrip, stderr, stdout, wait_metric,
    wait_metric_at_least, with_timeout, Stack,
};

const OK_HANDLED: &str = r#"mensageria_server_requests_total{status="ok"}"#;

#[test]
fn client_requests_are_answered_and_spread_over_both_servers() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(2);

        let out = e2e::request(&stack, "hello e2e", &[]);
        assert_eq!(e2e::succeeded(&out), "hello e2e\n");

        let out = e2e::request(&stack, "work 5ms hi", &[]);
        assert_eq!(e2e::succeeded(&out), "hi\n");

        let out = e2e::request(&stack, "fail boom", &["--retries", "0"]);
        assert_failed(&out, 1, "request failed (error): boom", "fail boom");
        assert_eq!(
            stdout(&out),
            "",
            "a failed request prints nothing on stdout"
        );

        // The broker's DEALER deals requests round-robin over the four workers.
        let ids: HashSet<String> = stack.servers.iter().map(|s| s.instance.clone()).collect();
        assert_eq!(ids.len(), 2, "instance ids must differ per server: {ids:?}");
        let mut seen = HashSet::new();
        for _ in 0..40 {
            let out = e2e::request(&stack, "whoami", &[]);
            let id = e2e::succeeded(&out).trim_end().to_owned();
            assert!(
                ids.contains(&id),
                "whoami answered {id:?}, not one of {ids:?}"
            );
            seen.insert(id);
            if seen == ids {
                break;
            }
        }
        assert_eq!(seen, ids, "sequential requests did not reach both servers");

        // The human-readable bench summary.
        let mut args = vec!["bench", "--requests", "200", "--concurrency", "4"];
        args.extend(["--broker-endpoints", stack.frontend()]);
        let out = e2e::run_client(&args, e2e::CLIENT_TIMEOUT);
        let text = e2e::succeeded(&out);
        for want in [
            "requests:",
            "200 ok",
            "0 errors",
            "throughput:",
            "latency:",
            "p99",
        ] {
            assert!(
                text.contains(want),
                "bench summary without {want:?}:\n{text}"
            );
        }

        let before: Vec<f64> = stack.servers.iter().map(|s| s.handled_ok()).collect();
        let s = e2e::bench(
            &stack,
            &["--requests", "2000", "--concurrency", "8"],
            Duration::from_secs(45),
        );
        assert_eq!((s.requests, s.ok, s.errors), (2000, 2000, 0), "{s:?}");
        // Server counters move just after each reply leaves: wait for them.
        for (srv, b) in stack.servers.iter().zip(&before) {
            wait_metric(
                srv.http,
                OK_HANDLED,
                "above its value before the bench",
                |v| v > *b,
            );
        }
        e2e::wait_until(
            "the servers to count 2000 bench requests",
            Duration::from_secs(10),
            || {
                let handled: f64 = stack
                    .servers
                    .iter()
                    .zip(&before)
                    .map(|(srv, b)| srv.handled_ok() - b)
                    .sum();
                (handled >= 2000.0).then_some(())
            },
        );
        let b = stack.broker.http;
        wait_metric_at_least(b, "mensageria_broker_requests_total", 2000.0);
        wait_metric_at_least(b, r#"mensageria_broker_replies_total{status="ok"}"#, 2000.0);
    });
}

#[test]
fn plain_req_peer_gets_plain_replies_through_the_broker() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(1);
        let ctx = zmq::Context::new();
        let req = plain_req(&ctx, stack.frontend());

        assert_eq!(
            req_roundtrip(&req, &[b"hello plain"]),
            vec![b"hello plain".to_vec()]
        );
        assert_eq!(
            req_roundtrip(&req, &[b"part one", b"part two"]),
            vec![b"part one".to_vec(), b"part two".to_vec()],
            "every payload frame is echoed"
        );
        assert_eq!(
            req_roundtrip(&req, &[b"whoami"]),
            vec![stack.servers[0].instance.clone().into_bytes()]
        );
        assert_eq!(
            req_roundtrip(&req, &[b"work 1ms fine"]),
            vec![b"fine".to_vec()]
        );
        assert_eq!(
            req_roundtrip(&req, &[b"fail nope"]),
            vec![b"ERR error nope".to_vec()]
        );

        // A frame that claims to be a header but is garbage: a plain error, and the broker goes on.
        let mut bogus = mensageria::header::MAGIC.to_vec();
        bogus.extend_from_slice(&[mensageria::header::VERSION, 0x7f, 0xff, 0xff]);
        let reply = req_roundtrip(&req, &[&bogus]);
        e2e::assert_plain_error(&reply, "ERR bad_request ");
        assert_eq!(
            req_roundtrip(&req, &[b"still here"]),
            vec![b"still here".to_vec()]
        );

        let srv = stack.servers[0].http;
        wait_metric_at_least(srv, OK_HANDLED, 5.0);
        let errors = r#"mensageria_server_requests_total{status="error"}"#;
        wait_metric_at_least(srv, errors, 1.0);
        let bad = r#"mensageria_broker_replies_total{status="bad_request"}"#;
        wait_metric_at_least(stack.broker.http, bad, 1.0);
    });
}

#[test]
fn no_server_connected_means_unavailable_at_once() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(0);

        for retries in ["0", "3"] {
            let started = Instant::now();
            let out = e2e::request(&stack, "hello", &["--retries", retries, "--timeout", "5s"]);
            let took = started.elapsed();
            assert_eq!(
                out.status.code(),
                Some(1),
                "retries {retries}: {}",
                describe(&out)
            );
            let err = stderr(&out);
            assert!(
                err.contains("request failed (unavailable)"),
                "retries {retries}: {}",
                describe(&out)
            );
            assert_eq!(stdout(&out), "");
            assert!(
                took < Duration::from_millis(2500),
                "retries {retries}: `unavailable` took {took:?}, not well within the 5 s timeout"
            );
        }

        let ctx = zmq::Context::new();
        let req = plain_req(&ctx, stack.frontend());
        let reply = req_roundtrip(&req, &[b"hello"]);
        e2e::assert_plain_error(&reply, "ERR unavailable ");

        let unavailable = r#"mensageria_broker_replies_total{status="unavailable"}"#;
        wait_metric_at_least(stack.broker.http, unavailable, 6.0);
        assert_eq!(
            metric(stack.broker.http, "mensageria_broker_inflight_requests"),
            0.0
        );
    });
}
