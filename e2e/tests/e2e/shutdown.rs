//! SIGTERM: every service drains and exits 0 within its grace period.

use std::time::{Duration, Instant};

use e2e::{
    describe, faults::ClientRun, healthcheck, http_get, metric, wait_ready, with_timeout, Launcher,
    Proc, Signal, Stack, GRACE,
};

const INFLIGHT: &str = "mensageria_broker_inflight_requests";
const OK_REPLIES: &str = r#"mensageria_broker_replies_total{status="ok"}"#;

/// Sends SIGTERM and asserts the process exits 0 within its grace.
fn terminate(proc: &mut Proc) {
    let started = Instant::now();
    proc.kill(Signal::Term);
    let status = proc.wait_exit(GRACE + Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        status.success(),
        "{} exited with {status:?} after SIGTERM\n{}",
        proc.name(),
        proc.diagnostics()
    );
    assert!(
        took < GRACE,
        "{} took {took:?} to exit, more than its {GRACE:?} grace",
        proc.name()
    );
}

/// Starts a bench of `work 200ms` requests at concurrency 4 against the only
/// server of `stack` and waits until requests are in flight there.
fn slow_bench_in_flight(stack: &Stack, timeout: &str) -> Proc {
    let mut flags = vec!["--requests", "24", "--concurrency", "4"];
    flags.extend(["--payload", "work 200ms", "--timeout", timeout]);
    flags.extend(["--retries", "30"]);
    let bench = e2e::spawn_bench(stack.frontend(), &flags);
    let b = stack.broker.http;
    e2e::wait_until(
        "requests in flight at the only server",
        Duration::from_secs(20),
        || (stack.servers[0].handled_ok() >= 2.0 && metric(b, INFLIGHT) >= 1.0).then_some(()),
    );
    bench
}

#[test]
fn sigterm_server_finishes_its_in_flight_work_and_exits_0() {
    with_timeout(Duration::from_secs(90), || {
        let mut stack = Stack::start(1);
        let b = stack.broker.http;
        let bench = slow_bench_in_flight(&stack, "2s");
        let ok_before = metric(b, OK_REPLIES);

        terminate(&mut stack.servers[0].proc);
        // The requests its workers were executing at SIGTERM were answered.
        e2e::wait_until(
            "replies sent by the draining server",
            Duration::from_secs(3),
            || (metric(b, OK_REPLIES) > ok_before).then_some(()),
        );

        // Meanwhile the bench gets `unavailable` and retries; a new server takes the rest.
        stack.add_server(&[]);
        let s = e2e::bench_summary(bench, Duration::from_secs(60));
        assert_eq!((s.requests, s.ok, s.errors), (24, 24, 0), "{s:?}");
        assert!(
            s.retries > 0,
            "requests sent while no server was connected are retried: {s:?}"
        );
    });
}

/// A draining plain REP server (`--worker-protocol rep`: requests are dealt
/// to it round-robin, so some wait at its sockets) answers every request it
/// has read (the one executing finishes; the ones queued at its workers are
/// refused `unavailable`, so their clients retry at once) before it
/// disconnects: every request the server counted reached the broker as a
/// reply, and the load completes with no errors. (A request still on the
/// wire at the instant the worker disconnects was never read; the broker
/// times it out and the client retries, so it costs time, not a failure.)
/// A Majordomo server holds only what it runs; its drain is in the
/// `dispatch` suite and the server's own tests.
#[test]
fn sigterm_rep_server_answers_the_requests_queued_at_its_workers() {
    with_timeout(Duration::from_secs(90), || {
        let mut stack = Stack::builder()
            .servers(1)
            .rep()
            .broker_args(&["--request-timeout", "3s"])
            .start();
        let b = stack.broker.http;
        let bench = slow_bench_in_flight(&stack, "20s");
        terminate(&mut stack.servers[0].proc);
        let stopped = stack.servers[0]
            .proc
            .wait_for_json_field("answered", Duration::from_secs(5));
        let read_by_server = stopped["answered"]
            .as_f64()
            .expect("answered count in the log");
        let replies_from_backend = metric(
            b,
            r#"mensageria_broker_messages_total{socket="backend",direction="in"}"#,
        );
        assert_eq!(
            replies_from_backend, read_by_server,
            "every request the server read must have reached the broker as a reply"
        );
        stack.add_server(&[]);
        let s = e2e::bench_summary(bench, Duration::from_secs(60));
        assert_eq!((s.requests, s.ok, s.errors), (24, 24, 0), "{s:?}");
    });
}

#[test]
fn sigterm_broker_forwards_the_in_flight_reply_and_exits_0() {
    with_timeout(Duration::from_secs(60), || {
        let mut stack = Stack::start(1);
        let b = stack.broker.http;
        let ctx = zmq::Context::new();
        let req = e2e::busy_request(&ctx, &stack.broker, "work 700ms");
        terminate(&mut stack.broker.proc);
        let reply = e2e::recv_within(&req, Duration::from_secs(5))
            .expect("the reply of the in-flight request");
        assert_eq!(reply, vec![b"done".to_vec()]);
        assert!(
            http_get(b, "/readyz").is_err(),
            "the ops server is gone after exit"
        );
    });
}

/// Our client (a connect-side DEALER with ZMQ_IMMEDIATE, which discards
/// unread messages when its connection closes) still gets the reply a
/// draining broker forwards just before it exits: the broker keeps its
/// connections open briefly after the last reply.
#[test]
fn client_gets_the_reply_forwarded_as_the_broker_exits() {
    with_timeout(Duration::from_secs(60), || {
        let mut stack = Stack::start(1);
        let b = stack.broker.http;
        let mut args = vec!["request", "work 300ms", "--timeout", "3s"];
        args.extend(["--retries", "0", "--broker-endpoints", stack.frontend()]);
        let mut request = e2e::spawn("client", &args, &[]);
        e2e::wait_metric_at_least(b, INFLIGHT, 1.0);
        terminate(&mut stack.broker.proc);
        let out = request.output(Duration::from_secs(10));
        assert!(
            out.status.success(),
            "the reply forwarded before the broker exited was lost\n{}",
            describe(&out)
        );
        assert_eq!(e2e::stdout(&out), "done\n");
    });
}

#[test]
fn sigterm_proxy_exits_0() {
    with_timeout(Duration::from_secs(60), || {
        let mut proxy = Launcher::default().proxy(&[], &[]).unwrap();
        wait_ready(proxy.http, e2e::START_TIMEOUT);
        let ctx = zmq::Context::new();
        let _sub = e2e::plain_sub(&ctx, &proxy.xpub, b"");
        let xpub_peers = r#"mensageria_zmq_peers{socket="xpub"}"#;
        e2e::wait_metric_at_least(proxy.http, xpub_peers, 1.0);
        terminate(&mut proxy.proc);
    });
}

#[test]
fn sigterm_client_run_exits_0_and_healthcheck_follows_it() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(1);
        let mut run = ClientRun::ready(&stack, &["--rate", "50", "--concurrency", "2"], &[]);
        e2e::succeeded(&healthcheck("client", run.http));
        run.wait_stats("steady requests and events", Duration::from_secs(20), |s| {
            s.ok() >= 5.0 && s.received("requests") >= 1.0
        });
        terminate(&mut run.proc);
        let out = healthcheck("client", run.http);
        let what = "healthcheck of a stopped client";
        assert_eq!(out.status.code(), Some(1), "{what}\n{}", describe(&out));
    });
}
