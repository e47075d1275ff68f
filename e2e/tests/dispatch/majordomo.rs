//! Majordomo clients and workers written from the RFCs (MDP/0.1 and 0.2)
//! work through the real broker, beside our own client and server and a
//! plain REQ client.

use std::time::Duration;

use e2e::{plain_req, req_roundtrip, with_timeout, Stack};

use crate::rfc::{call_v1, call_v2, expect_replies, Mdp, RfcWorker};

#[test]
fn rfc_clients_and_workers_work_beside_ours_and_plain_peers() {
    with_timeout(Duration::from_secs(90), || {
        let stack = Stack::start(1);
        let front = stack.frontend();
        let v1 = RfcWorker::start(front, Mdp::V1, "v1svc", "v1:", Duration::ZERO);
        let v2 = RfcWorker::start(front, Mdp::V2, "v2svc", "v2:", Duration::ZERO);
        for service in ["v1svc", "v2svc"] {
            let matching = [("service", service)];
            e2e::wait_workers(stack.broker.http, &matching, 1.0, e2e::WAIT_LIMIT);
        }
        let ctx = zmq::Context::new();
        let plain = plain_req(&ctx, front);
        const ROUNDS: u64 = 10;
        for i in 0..ROUNDS {
            let body = format!("r{i}");
            let b = body.as_bytes();
            // Each client version against each worker version.
            assert_eq!(
                call_v1(&ctx, front, "v2svc", &[b, b"x"]),
                vec![format!("v2:{body}").into_bytes(), b"x".to_vec()]
            );
            assert_eq!(
                call_v2(&ctx, front, "v1svc", &[b]),
                vec![format!("v1:{body}").into_bytes()]
            );
            assert_eq!(
                call_v1(&ctx, front, "v1svc", &[b]),
                vec![format!("v1:{body}").into_bytes()]
            );
            assert_eq!(
                call_v2(&ctx, front, "v2svc", &[b]),
                vec![format!("v2:{body}").into_bytes()]
            );
            // Majordomo clients reach our server too (plain body, plain reply).
            assert_eq!(call_v1(&ctx, front, "echo", &[b]), vec![b.to_vec()]);
            assert_eq!(call_v2(&ctx, front, "echo", &[b]), vec![b.to_vec()]);
            // A plain REQ peer: the default service.
            assert_eq!(req_roundtrip(&plain, &[b]), vec![b.to_vec()]);
        }
        // Our client, by name and by default.
        for extra in [&["--service", "echo"][..], &[]] {
            let out = e2e::request(&stack, "ours", extra);
            assert_eq!(e2e::succeeded(&out), "ours\n");
        }
        assert!(
            !v1.was_disconnected() && !v2.was_disconnected(),
            "the broker disconnected an RFC worker"
        );
        assert_eq!(v1.served(), 2 * ROUNDS);
        assert_eq!(v2.served(), 2 * ROUNDS);
        assert_eq!(stack.servers[0].handled_ok(), (3 * ROUNDS + 2) as f64);

        // DISCONNECT (RFC 7/18) removes the worker: its service is gone.
        v1.stop();
        let v1svc = [("service", "v1svc")];
        e2e::wait_workers(stack.broker.http, &v1svc, 0.0, e2e::WAIT_LIMIT);
        expect_replies(
            &ctx,
            front,
            &[
                (call_v1, "mmi.service", "v1svc", "404"),
                (call_v1, "mmi.service", "v2svc", "200"),
            ],
        );
        v2.stop();
    });
}
