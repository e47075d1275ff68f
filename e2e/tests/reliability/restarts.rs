//! Broker and proxy restarted on the same ports under steady load: peers
//! reconnect by themselves, requests recover within seconds and never hang,
//! and the events missed while the proxy was away are exactly the ones the
//! subscriber reports lost.

use std::time::{Duration, Instant};

use e2e::{
    faults::{assert_all_healthy, assert_stack_healthy, published, ClientRun, FAST_HEARTBEATS},
    metric, plain_req, req_roundtrip, with_timeout, Signal, Stack, GRACE, PUBLISHED_REQUESTS,
};

const RATE: f64 = 300.0;

#[test]
fn broker_restarted_on_the_same_ports_recovers_within_seconds() {
    with_timeout(Duration::from_secs(110), || {
        let mut stack = Stack::builder()
            .servers(2)
            .broker_args(&FAST_HEARTBEATS)
            .server_args(&FAST_HEARTBEATS)
            .start();
        let registrations = stack
            .servers
            .iter()
            .map(e2e::Server::registrations)
            .sum::<usize>() as f64;
        let mut flags = vec!["--timeout", "500ms", "--retries", "3"];
        flags.extend(["--payload", "work 1ms"]);
        flags.extend(FAST_HEARTBEATS);
        let client = ClientRun::steady(&stack, "300", &flags);
        client.wait_stats("600 requests ok", Duration::from_secs(30), |s| {
            s.ok() >= 600.0
        });

        let mut report = Vec::new();
        for signal in [Signal::Term, Signal::Kill] {
            let before = client.stats();
            let t0 = Instant::now();
            stack.broker.proc.kill(signal);
            let status = stack.broker.proc.wait_exit(GRACE + Duration::from_secs(5));
            if signal == Signal::Term {
                assert!(status.success(), "broker drain must exit 0: {status:?}");
            }
            let exited = t0.elapsed();
            let new = stack.broker.restart(&FAST_HEARTBEATS);
            let bound = t0.elapsed();
            drop(std::mem::replace(&mut stack.broker, new));
            let ok_at_bind = client.stats().ok();
            let first_ok = client.wait_stats(
                "a request to succeed through the new broker",
                Duration::from_secs(10),
                |s| s.ok() > ok_at_bind,
            );
            let recovered = t0.elapsed();
            e2e::wait_workers(stack.broker.http, &[], registrations, e2e::START_TIMEOUT);
            let servers_back = t0.elapsed();
            // Progress continues at the configured rate: nothing hangs.
            let resumed = Instant::now();
            let after = client.wait_stats(
                "3 s worth of requests after the restart",
                Duration::from_secs(15),
                |s| s.ok() >= first_ok.ok() + 3.0 * RATE,
            );
            let rate = (after.ok() - first_ok.ok()) / resumed.elapsed().as_secs_f64();
            let delta = |st: &str| after.status(st) - before.status(st);
            for st in ["error", "bad_request", "overloaded"] {
                assert_eq!(
                    delta(st),
                    0.0,
                    "`{st}` outcomes during the restart: {after:?}"
                );
            }
            assert!(
                recovered - bound < Duration::from_secs(5),
                "success resumed {:?} after the new broker bound",
                recovered - bound
            );
            assert!(
                rate >= 0.5 * RATE,
                "only {rate:.0} requests/s after the restart"
            );
            report.push(format!(
                "{signal:?}: exited {:.2}s, new broker bound {:.2}s, first ok {:.2}s \
                 (recovery {:.2}s after bind), servers back {:.2}s; during the gap: \
                 ok +{} timeout +{} unavailable +{} retries +{}; {rate:.0} req/s after",
                exited.as_secs_f64(),
                bound.as_secs_f64(),
                recovered.as_secs_f64(),
                (recovered - bound).as_secs_f64(),
                servers_back.as_secs_f64(),
                first_ok.ok() - before.ok(),
                delta("timeout"),
                delta("unavailable"),
                after.retries - before.retries,
            ));
        }
        assert_stack_healthy(&stack, &client, None);
        eprintln!("RESULT broker-restart: {}", report.join(" | "));
    });
}

const PROXY_SUBS: &str = r#"mensageria_proxy_subscriptions{topic="requests"}"#;

#[test]
fn proxy_restarted_on_the_same_ports_loses_exactly_what_subscribers_report() {
    with_timeout(Duration::from_secs(110), || {
        let mut stack = Stack::builder()
            .servers(2)
            .server_args(&FAST_HEARTBEATS)
            .start();
        let ctx = zmq::Context::new();
        // Keep the priming SUB until the subscriber under test is registered
        // at the proxy, so the subscription upstream never lapses.
        let (probe, _) = e2e::prime_events(&stack, &ctx);

        // The subscriber under test joins while nothing is published, so it
        // sees every event published from now on, or counts it lost.
        let sub = ClientRun::ready(&stack, &["--rate", "0", "--topics", "requests"], &[]);
        // The proxy registers the subscription, then sees the probe unsubscribe.
        e2e::wait_metric_at_least(stack.proxy.http, PROXY_SUBS, 2.0);
        drop(probe);
        e2e::expect_metric(stack.proxy.http, PROXY_SUBS, 1.0);
        let baseline = published(&stack.servers, "requests");

        // The load: a `client run` that requests and subscribes too.
        let mut load = ClientRun::steady(&stack, "300", &["--timeout", "1s"]);
        sub.wait_stats("300 events received", Duration::from_secs(30), |s| {
            s.received("requests") >= 300.0
        });

        let t0 = Instant::now();
        stack.proxy.proc.kill(Signal::Kill);
        stack.proxy.proc.wait_exit(Duration::from_secs(5));
        for s in &stack.servers {
            // The servers notice the proxy is gone.
            e2e::expect_metric(s.http, r#"mensageria_zmq_peers{socket="pub"}"#, 0.0);
        }
        let new = stack.proxy.restart(&[]);
        let bound = t0.elapsed();
        drop(std::mem::replace(&mut stack.proxy, new));
        let received_at_bind = sub.stats().received("requests");
        sub.wait_stats(
            "events to flow through the new proxy",
            Duration::from_secs(10),
            |s| s.received("requests") > received_at_bind,
        );
        let recovered = t0.elapsed();
        let load_rx = load.stats().received("requests");
        load.wait_stats(
            "the load client's subscription to recover too",
            Duration::from_secs(10),
            |s| s.received("requests") > load_rx,
        );
        sub.wait_stats("300 more events", Duration::from_secs(30), |s| {
            s.received("requests") >= received_at_bind + 300.0
        });

        // Stop the load (it drains), then publish one more event per server
        // so that a loss at the very end would show as a gap too.
        let load_stats = load.stats();
        assert_eq!(
            load_stats.failed(),
            0.0,
            "requests do not go through the proxy: {load_stats:?}"
        );
        load.proc.kill(Signal::Term);
        let status = load.proc.wait_exit(GRACE + Duration::from_secs(5));
        assert!(
            status.success(),
            "client run drains and exits 0: {status:?}"
        );
        let req = plain_req(&ctx, stack.frontend());
        let before: Vec<f64> = stack
            .servers
            .iter()
            .map(|s| metric(s.http, PUBLISHED_REQUESTS))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stack
            .servers
            .iter()
            .zip(&before)
            .any(|(s, b)| metric(s.http, PUBLISHED_REQUESTS) <= *b)
        {
            assert!(Instant::now() < deadline, "final events not published");
            req_roundtrip(&req, &[b"final"]);
        }

        let expected = published(&stack.servers, "requests") - baseline;
        let what =
            format!("the {expected} events published since the subscription = received + lost");
        let s = sub.wait_stats(&what, Duration::from_secs(10), |s| {
            s.received("requests") + s.lost == expected
        });
        assert!(s.lost > 0.0, "the restart must cost events: {s:?}");
        assert_eq!(s.failed(), 0.0);
        assert_all_healthy(&[
            ("broker", stack.broker.http),
            ("proxy", stack.proxy.http),
            ("subscriber", sub.http),
        ]);
        eprintln!(
            "RESULT proxy-restart: new proxy bound {:.2}s after SIGKILL, events flowing again \
             {:.2}s after the kill ({:.2}s after bind); subscriber: published {expected} = received {} \
             + lost {}; load client: received {} lost {} requests ok {} failed {}",
            bound.as_secs_f64(),
            recovered.as_secs_f64(),
            (recovered - bound).as_secs_f64(),
            s.received("requests"),
            s.lost,
            load_stats.received("requests"),
            load_stats.lost,
            load_stats.ok(),
            load_stats.failed()
        );
    });
}
