//! Bad input on the worker path (unknown command, a reply for a request the
//! worker does not hold, READY twice, an oversized service name): the
//! broker answers DISCONNECT (RFC 7/18: "MUST respond to any valid but
//! unexpected command by sending DISCONNECT"), counts it, and serves
//! everyone else as before.

use std::time::Duration;

use e2e::{plain_req, recv_within, req_roundtrip, show, with_timeout, Stack};

fn send(s: &zmq::Socket, frames: &[&[u8]]) {
    s.send_multipart(frames, 0).expect("send");
}

/// Waits for DISCONNECT (`["MDPW02", 0x06]`), skipping broker heartbeats.
fn expect_disconnect(s: &zmq::Socket, what: &str) {
    loop {
        let m = recv_within(s, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{what}: no DISCONNECT within 5 s"));
        match (m.first().map(Vec::as_slice), m.get(1).map(Vec::as_slice)) {
            (Some(b"MDPW02"), Some([0x05])) => continue, // HEARTBEAT
            (Some(b"MDPW02"), Some([0x06])) => return,
            _ => panic!("{what}: expected DISCONNECT, got {:?}", show(&m)),
        }
    }
}

#[test]
fn bad_worker_commands_are_refused_counted_and_harm_nothing_else() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(1);
        let (front, b) = (stack.frontend(), stack.broker.http);
        let ctx = zmq::Context::new();
        let plain = plain_req(&ctx, front);
        assert_eq!(
            req_roundtrip(&plain, &[b"before"]),
            vec![b"before".to_vec()]
        );
        let dropped = r#"mensageria_broker_dropped_total{reason="worker_protocol"}"#;
        let before = e2e::metric_opt(b, dropped).unwrap_or(0.0);

        let ready: &[&[u8]] = &[b"MDPW02", &[0x01], b"bad-svc"];
        let cases: [(&str, Vec<&[&[u8]]>); 4] = [
            ("READY twice", vec![ready, ready]),
            ("unknown command", vec![ready, &[b"MDPW02", &[0x7f]]]),
            (
                "FINAL for a request it does not hold",
                vec![
                    ready,
                    &[
                        b"MDPW02",
                        &[0x04],
                        b"\x00\x00\x00\x00\x00\x00\x00\x01",
                        b"",
                        b"x",
                    ],
                ],
            ),
            ("oversized service name", vec![]),
        ];
        let long = vec![b's'; 256];
        for (what, frames) in &cases {
            let s = e2e::connected(&ctx, zmq::DEALER, front);
            if frames.is_empty() {
                send(&s, &[b"MDPW02", &[0x01], &long]);
            } else {
                for f in frames {
                    send(&s, f);
                }
            }
            expect_disconnect(&s, what);
        }
        // The refusals are counted.
        e2e::wait_metric_at_least(b, dropped, before + cases.len() as f64);
        // None of them stayed registered; our server still serves.
        assert_eq!(e2e::broker_workers(b, &[("service", "bad-svc")]), 0.0);
        assert_eq!(e2e::broker_workers(b, &[]), 1.0);
        assert_eq!(req_roundtrip(&plain, &[b"after"]), vec![b"after".to_vec()]);
        let lost = e2e::metric_opt(b, e2e::ECHO_WORKERS_LOST);
        assert_eq!(lost.unwrap_or(0.0), 0.0, "our server was not disturbed");
    });
}
