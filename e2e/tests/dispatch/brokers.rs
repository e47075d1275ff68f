//! Two brokers (as Kubernetes runs them): one server registers with both,
//! keeps its credit honest across them, and losing one broker costs the
//! other nothing.

use std::time::Duration;

use e2e::{
    plain_req, recv_within, req_roundtrip, wait_ready, wait_registered, wait_until, with_timeout,
    Launcher, Signal, START_TIMEOUT,
};

#[test]
fn a_server_serves_two_brokers_without_head_of_line_waits_and_survives_losing_one() {
    with_timeout(Duration::from_secs(120), || {
        let l = Launcher::default();
        let (mut b1, b2) = (l.broker(&[], &[]).unwrap(), l.broker(&[], &[]).unwrap());
        let proxy = l.proxy(&[], &[]).unwrap();
        let both = format!("{},{}", b1.frontend, b2.frontend);
        // Two workers: credit 2, announced to each broker.
        let server = l
            .server((&both, &proxy.xsub), &["--workers", "2"], &[])
            .unwrap();
        wait_ready(server.http, START_TIMEOUT);
        for b in [&b1, &b2] {
            wait_ready(b.http, START_TIMEOUT);
            wait_registered(b.http, 1.0);
        }

        // Requests through either broker reach it.
        let ctx = zmq::Context::new();
        for b in [&b1, &b2] {
            let req = plain_req(&ctx, &b.frontend);
            assert_eq!(
                req_roundtrip(&req, &[b"whoami"]),
                vec![server.instance.clone().into_bytes()]
            );
        }

        // A slow request through broker 1 takes one of the two slots; quick
        // lockstep requests through broker 2 use the other and are all
        // answered while the slow one runs.
        let slow = e2e::busy_request(&ctx, &b1, "work 2s");
        let quick = plain_req(&ctx, &b2.frontend);
        crate::queue::quick_before_slow(&quick, &slow, 20);
        assert_eq!(
            recv_within(&slow, Duration::from_secs(10)),
            Some(vec![b"done".to_vec()])
        );

        // Load through broker 2 while broker 1 is killed: nothing is lost
        // or even retried there.
        let mut flags = vec!["--requests", "3000", "--concurrency", "4"];
        flags.extend(["--payload", "work 1ms"]);
        let mut bench = e2e::spawn_bench(&b2.frontend, &flags);
        wait_until("the bench to be under way", Duration::from_secs(20), || {
            (server.handled_ok() >= 500.0).then_some(())
        });
        assert!(
            bench.try_status().is_none(),
            "the bench ended before the kill; nothing was tested"
        );
        b1.proc.kill(Signal::Kill);
        b1.proc.wait_exit(Duration::from_secs(5));
        let s = e2e::bench_summary(bench, Duration::from_secs(90));
        assert_eq!(
            (s.requests, s.ok, s.errors, s.retries),
            (3000, 3000, 0, 0),
            "{s:?}"
        );
        assert_eq!(
            e2e::broker_workers(b2.http, &[]),
            1.0,
            "still registered with broker 2"
        );
    });
}
