//! Plain REP server faults under steady `client run` load: SIGKILL,
//! SIGSTOP/SIGCONT (a frozen process whose TCP connections stay open) and
//! SIGTERM (drain). These run the seed's kind of server (`--worker-protocol
//! rep`, round-robin from the broker's backend), whose faults the broker can
//! only see as timeouts and dropped connections; the same faults of
//! Majordomo workers are answered at once (the `dispatch` suite).

use std::time::{Duration, Instant};

use e2e::{
    faults::{assert_stack_healthy, peers, ClientRun, FAST_HEARTBEATS, HEARTBEAT_TIMEOUT},
    metric, metrics_text, parse_metric, recv_within, show, wait_until, with_timeout, Signal, Stack,
    GRACE,
};

const TIMEOUT_REPLIES: &str = r#"mensageria_broker_replies_total{status="timeout"}"#;
const INFLIGHT: &str = "mensageria_broker_inflight_requests";

/// Two REP servers (`heartbeats` flags on them and the broker) under
/// steady load: 300 requests/s, each `work 2ms`, a 500 ms attempt timeout
/// (shorter than the broker's 1 s request timeout, so the client retries
/// before the broker's own `timeout` reply comes; that late reply is then
/// stale to the client and only counted by the broker), and a concurrency
/// cap far above anything a fault leaves outstanding.
fn loaded_stack(retries: &str, heartbeats: &[&str]) -> (Stack, ClientRun) {
    let mut broker_flags = vec!["--request-timeout", "1s"];
    broker_flags.extend(heartbeats);
    let stack = Stack::builder()
        .servers(2)
        .rep()
        .broker_args(&broker_flags)
        .server_args(heartbeats)
        .start();
    let mut flags = vec!["--timeout", "500ms", "--retries", retries];
    flags.extend(["--payload", "work 2ms"]);
    let c = ClientRun::steady(&stack, "300", &flags);
    let warm = c.wait_stats("600 requests ok", Duration::from_secs(30), |s| {
        s.ok() >= 600.0
    });
    assert_eq!(warm.failed(), 0.0, "failures before any fault: {warm:?}");
    (stack, c)
}

#[test]
fn sigkill_of_one_server_under_load_fails_no_request() {
    with_timeout(Duration::from_secs(100), || {
        let (mut stack, client) = loaded_stack("4", &[]);
        assert_eq!(metric(stack.broker.http, TIMEOUT_REPLIES), 0.0);

        // Pin eight 300 ms requests (plain DEALER, no retries) on the four
        // workers, so the victim surely holds requests when it dies: the
        // broker's entries for them must expire as `timeout`.
        let ctx = zmq::Context::new();
        let pinned = e2e::connected(&ctx, zmq::DEALER, stack.frontend());
        for _ in 0..8 {
            pinned
                .send_multipart([&b""[..], b"work 300ms pinned"], 0)
                .expect("send a pinned request");
        }
        wait_until(
            "the pinned requests to be in flight",
            Duration::from_secs(5),
            || (metric(stack.broker.http, INFLIGHT) >= 8.0).then_some(()),
        );
        let at_kill = client.stats();
        let killed = Instant::now();
        stack.servers[0].proc.kill(Signal::Kill);
        let status = stack.servers[0].proc.wait_exit(Duration::from_secs(5));
        assert_eq!(status.code(), None, "killed by a signal: {status:?}");

        let (mut ok, mut timed_out) = (0, 0);
        for _ in 0..8 {
            let reply = recv_within(&pinned, Duration::from_secs(5))
                .expect("every pinned request gets an answer from the broker");
            match reply.as_slice() {
                [d, body] if d.is_empty() && body.as_slice() == b"pinned" => ok += 1,
                [d, body] if d.is_empty() && body.starts_with(b"ERR timeout ") => timed_out += 1,
                other => panic!("unexpected reply to a pinned request: {:?}", show(other)),
            }
        }
        assert!(
            timed_out >= 1 && ok >= 1,
            "the victim held some pinned requests and the survivor answered the rest: \
             {ok} ok, {timed_out} timed out"
        );

        // Load goes on: every request lost with the victim succeeds on retry.
        let after = client.wait_stats(
            "900 more requests ok after the kill",
            Duration::from_secs(30),
            |s| s.ok() >= at_kill.ok() + 900.0,
        );
        let broker = metrics_text(stack.broker.http);
        let broker = |series| parse_metric(&broker, series).unwrap_or(0.0);
        let survivor_workers = f64::from(stack.servers[1].workers);
        assert_eq!(after.failed(), 0.0, "failed requests: {after:?}");
        assert!(after.retries > at_kill.retries, "no retry: {after:?}");
        assert!(
            broker(TIMEOUT_REPLIES) >= f64::from(timed_out),
            "the broker counts its expired entries as `timeout` replies"
        );
        assert_eq!(peers(stack.broker.http, "backend"), survivor_workers);
        assert_stack_healthy(&stack, &client, Some(0));
        eprintln!(
            "RESULT server-kill: client ok={} failed={} retries={} (during fault {}); \
             pinned ok={ok} timeout={timed_out}; broker timeout replies={} late_replies={}; \
             {:.1}s of load after the kill",
            after.ok(),
            after.failed(),
            after.retries,
            after.retries - at_kill.retries,
            broker(TIMEOUT_REPLIES),
            broker(r#"mensageria_broker_dropped_total{reason="late_reply"}"#),
            killed.elapsed().as_secs_f64()
        );
    });
}

#[test]
fn frozen_server_is_dropped_by_heartbeats_and_rejoins_after_sigcont() {
    with_timeout(Duration::from_secs(100), || {
        // Up to 7 attempts: one sent to the frozen server just before the
        // broker drops it can meet it again on a retry or two.
        let (mut stack, client) = loaded_stack("6", &FAST_HEARTBEATS);
        let all_workers = f64::from(stack.servers.iter().map(|s| s.workers).sum::<u32>());
        let survivor_workers = f64::from(stack.servers[1].workers);
        let b = stack.broker.http;

        let handled_before = stack.servers[0].handled_ok();
        let at_stop = client.stats();
        let stopped = Instant::now();
        stack.servers[0].proc.kill(Signal::Stop);
        let dropped_after = wait_until(
            "the broker to drop the frozen server's connections",
            Duration::from_secs(15),
            || (peers(b, "backend") == survivor_workers).then(|| stopped.elapsed()),
        );
        let at_drop = client.stats();
        // Hold the freeze while the load goes on (the requests queued at the
        // frozen server expire and are retried elsewhere).
        client.wait_stats(
            "600 more requests ok while the server is frozen",
            Duration::from_secs(30),
            |s| s.ok() >= at_stop.ok() + 600.0,
        );
        let frozen_for = stopped.elapsed();

        let at_cont = client.stats();
        let resumed = Instant::now();
        stack.servers[0].proc.kill(Signal::Cont);
        let victim = &stack.servers[0];
        let rejoined_after = wait_until(
            "the resumed server to rejoin the broker",
            Duration::from_secs(15),
            || (peers(b, "backend") == all_workers).then(|| resumed.elapsed()),
        );
        let at_rejoin = client.stats();
        let handled_at_rejoin = victim.handled_ok();
        wait_until(
            "the resumed server to handle new requests",
            Duration::from_secs(15),
            || (victim.handled_ok() >= handled_at_rejoin + 50.0).then_some(()),
        );
        let at_end = client.wait_stats(
            "the retry budget of every request sent during the freeze to pass",
            Duration::from_secs(30),
            |s| s.ok() >= at_stop.ok() + 1500.0,
        );

        let [f_stop, f_drop, f_cont, f_rejoin, f_end] =
            [&at_stop, &at_drop, &at_cont, &at_rejoin, &at_end]
                .map(|s| format!("{}/{}", s.failed(), s.retries));
        let timeline = format!(
            "failed/retries: at SIGSTOP {f_stop}, at the drop ({dropped_after:?} later) {f_drop}, \
             at SIGCONT ({frozen_for:?} after SIGSTOP) {f_cont}, at the rejoin \
             ({rejoined_after:?} later) {f_rejoin}, at the end {f_end}"
        );
        assert_eq!(
            at_end.failed(),
            0.0,
            "failed requests: {at_end:?}; {timeline}"
        );
        assert!(at_end.retries > at_stop.retries, "no retry: {at_end:?}");
        let timeouts = metric(b, TIMEOUT_REPLIES);
        assert!(
            timeouts > 0.0,
            "requests queued at the frozen server must expire at the broker"
        );
        let limit = HEARTBEAT_TIMEOUT + Duration::from_millis(2500);
        assert!(
            dropped_after <= limit,
            "the broker dropped the frozen server after {dropped_after:?}, more than \
             the heartbeat timeout {HEARTBEAT_TIMEOUT:?} + margin ({limit:?})"
        );
        assert_stack_healthy(&stack, &client, None);
        eprintln!(
            "RESULT server-freeze: backend peers {all_workers}->{survivor_workers} after {:.2}s \
             (heartbeat timeout 1s); frozen {:.1}s; rejoined {:.2}s after SIGCONT; victim handled \
             {handled_before}->{} ; client ok={} failed={} retries during fault={}; broker \
             timeout replies={timeouts}",
            dropped_after.as_secs_f64(),
            frozen_for.as_secs_f64(),
            rejoined_after.as_secs_f64(),
            victim.handled_ok(),
            at_end.ok(),
            at_end.failed(),
            at_end.retries - at_stop.retries,
        );
    });
}

/// A server drained by SIGTERM under steady load: it refuses what is queued
/// at its workers (`unavailable`, retried elsewhere), disconnects within
/// about 100 ms (services/server/src/worker.rs `DRAIN_REFUSE_MAX`) instead of
/// drawing more requests to refuse, and exits 0: no client request fails.
#[test]
fn sigterm_drains_one_server_under_load_without_losing_a_request() {
    with_timeout(Duration::from_secs(100), || {
        let (mut stack, client) = loaded_stack("3", &[]);
        let at_term = client.stats();
        let started = Instant::now();
        stack.servers[0].proc.kill(Signal::Term);
        let status = stack.servers[0]
            .proc
            .wait_exit(GRACE + Duration::from_secs(5));
        let took = started.elapsed();
        assert!(
            status.success(),
            "the draining server must exit 0: {status:?}\n{}",
            stack.servers[0].proc.diagnostics()
        );
        let after = client.wait_stats(
            "600 more requests ok after the drain",
            Duration::from_secs(30),
            |s| s.ok() >= at_term.ok() + 600.0,
        );
        let drained = stack.servers[0].proc.diagnostics();
        assert!(
            after.failed() == 0.0 && took < GRACE,
            "drain under load: {} requests failed ({after:?}); the server exited after \
             {took:?} (grace {GRACE:?}); its last words:\n{drained}",
            after.failed()
        );
        assert_eq!(
            peers(stack.broker.http, "backend"),
            f64::from(stack.servers[1].workers)
        );
        assert_stack_healthy(&stack, &client, Some(0));
        eprintln!(
            "RESULT server-drain: exit 0 after {:.2}s; client ok={} failed={} retries during \
             drain={}; broker timeout replies={}",
            took.as_secs_f64(),
            after.ok(),
            after.failed(),
            after.retries - at_term.retries,
            metric(stack.broker.http, TIMEOUT_REPLIES)
        );
    });
}
