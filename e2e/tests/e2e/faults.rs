//! Faults: a server killed with SIGKILL in the middle of a bench.

use std::time::Duration;

use e2e::{metric, with_timeout, Signal, Stack};

#[test]
fn sigkill_of_one_server_mid_bench_is_absorbed_by_retries() {
    with_timeout(Duration::from_secs(120), || {
        let mut stack = Stack::start(2);
        let mut flags = vec!["--requests", "20000", "--concurrency", "16"];
        flags.extend(["--timeout", "1s"]);
        let mut bench = Some(e2e::spawn_bench(stack.frontend(), &flags));

        e2e::wait_until(
            "the victim to handle 2000 requests",
            Duration::from_secs(60),
            || (stack.servers[0].handled_ok() >= 2000.0).then_some(()),
        );
        let b = bench.as_mut().expect("bench");
        assert!(
            b.try_status().is_none(),
            "the bench finished before the kill; nothing was tested"
        );
        stack.servers[0].proc.kill(Signal::Kill);
        let status = stack.servers[0].proc.wait_exit(Duration::from_secs(5));
        assert_eq!(status.code(), None, "killed by a signal: {status:?}");

        let s = e2e::bench_summary(bench.take().expect("bench"), Duration::from_secs(90));
        assert_eq!(s.requests, 20_000, "{s:?}");
        assert_eq!(
            s.errors, 0,
            "every request lost with the victim must succeed on retry: {s:?}"
        );
        assert_eq!(s.ok, 20_000, "{s:?}");
        assert!(
            s.retries > 0,
            "requests in flight at the victim must have been retried: {s:?}"
        );
        assert!(stack.servers[1].handled_ok() > 0.0);

        // The broker removed the dead server's registration (heartbeats).
        let survivors = stack.servers[1].registrations() as f64;
        e2e::wait_workers(stack.broker.http, &[], survivors, e2e::WAIT_LIMIT);
        let lost = metric(stack.broker.http, e2e::ECHO_WORKERS_LOST);
        assert!(lost >= 1.0, "counted as a lost worker");
    });
}
