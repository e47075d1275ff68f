//! Several services on one broker: each request reaches a worker of the
//! service it names, an unknown service is `unavailable` at once, MMI
//! (RFC 8) answers 200/404, and `client services` shows them all.

use std::time::Duration;

use e2e::{
    assert_failed, describe, poll_until, run_client, stdout, unused_port, with_timeout, Stack,
    CLIENT_TIMEOUT,
};

use crate::rfc::{call_v1, call_v2, expect_replies};

#[test]
fn two_services_from_two_servers_route_correctly() {
    with_timeout(Duration::from_secs(90), || {
        let mut stack = Stack::start(0);
        let alpha = stack.add_server(&["--services", "alpha"]);
        let beta = stack.add_server(&["--services", "beta,gamma"]);
        let (alpha, beta) = (
            stack.servers[alpha].instance.clone(),
            stack.servers[beta].instance.clone(),
        );

        for (service, instance) in [("alpha", &alpha), ("beta", &beta), ("gamma", &beta)] {
            for _ in 0..5 {
                let out = e2e::request(&stack, "whoami", &["--service", service]);
                assert!(out.status.success(), "{service}: {}", describe(&out));
                assert_eq!(
                    stdout(&out).trim(),
                    instance.as_str(),
                    "{service} went elsewhere"
                );
            }
        }
        // No worker for `echo` (the default service) nor for `nosuch`.
        for extra in [&["--service", "nosuch"][..], &[]] {
            let mut args = extra.to_vec();
            args.extend(["--retries", "0"]);
            let out = e2e::request(&stack, "hello", &args);
            let what = format!("{extra:?}");
            assert_failed(&out, 1, "request failed (unavailable)", &what);
        }

        // MMI over real Majordomo client sockets (RFC 7 over REQ, RFC 18 over DEALER).
        let ctx = zmq::Context::new();
        let front = stack.frontend();
        expect_replies(
            &ctx,
            front,
            &[
                (call_v1, "mmi.service", "alpha", "200"),
                (call_v1, "mmi.service", "nosuch", "404"),
                (call_v2, "mmi.service", "gamma", "200"),
                (call_v2, "mmi.service", "echo", "404"),
                (call_v1, "mmi.nosuch", "x", "501"),
            ],
        );
        let listing = call_v1(&ctx, front, "mmi.services", &[b""]);
        let listing = String::from_utf8_lossy(&listing[0]).into_owned();
        for line in ["alpha 1", "beta 1", "gamma 1"] {
            assert!(
                listing.lines().any(|l| l == line),
                "mmi.services: {listing:?}"
            );
        }

        // `client services` shows the same once the broker's view (a snapshot
        // refreshed every 250 ms) has caught up with the last replies.
        let http = stack.broker.http.to_string();
        let columns = |table: &str, service: &str| -> Vec<String> {
            let row = table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(service))
                .unwrap_or_else(|| panic!("no row for {service}:\n{table}"));
            // SERVICE QUEUE IDLE BUSY …
            row.split_whitespace()
                .skip(1)
                .take(3)
                .map(str::to_owned)
                .collect()
        };
        let settled = |table: &str| {
            ["alpha", "beta", "gamma"]
                .iter()
                .all(|s| columns(table, s) == ["0", "1", "0"])
        };
        let mut table = String::new();
        let _ = poll_until(Duration::from_secs(5), || {
            let out = run_client(&["services", "--broker-http", &http], CLIENT_TIMEOUT);
            table = e2e::succeeded(&out);
            settled(&table).then_some(())
        });
        for service in ["alpha", "beta", "gamma"] {
            assert_eq!(
                columns(&table, service),
                ["0", "1", "0"],
                "{service}:\n{table}"
            );
        }
        assert!(
            table.contains(&alpha) && table.contains(&beta),
            "instances listed:\n{table}"
        );
        let json = run_client(
            &["services", "--broker-http", &http, "--json"],
            CLIENT_TIMEOUT,
        );
        let v: serde_json::Value = serde_json::from_str(stdout(&json).trim())
            .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {}", describe(&json)));
        let names: Vec<&str> = v["services"]
            .as_array()
            .unwrap_or_else(|| panic!("no services array: {v}"))
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        for service in ["alpha", "beta", "gamma"] {
            assert!(names.contains(&service), "{service} missing: {v}");
        }

        // Nothing listening: a clear error, exit 1.
        let nowhere = format!("127.0.0.1:{}", unused_port());
        let out = run_client(&["services", "--broker-http", &nowhere], CLIENT_TIMEOUT);
        assert_failed(&out, 1, "cannot reach the broker", "nothing listening");
    });
}
