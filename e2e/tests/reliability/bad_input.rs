//! Bad input is refused cleanly: garbage on every ZeroMQ port, oversized
//! messages, envelopes without a delimiter and corrupted header frames. The
//! service keeps serving everyone else and counts the refusal.

use std::time::Duration;

use e2e::{
    decode_event,
    faults::{
        assert_all_healthy, probe_tcp, pseudo_random_bytes, socket_events, tcp_addr,
        tls_client_hello, wait_socket_events, HTTP_GET,
    },
    metric, plain_req, plain_sub, recv_within, req_roundtrip, show, wait_until, with_timeout,
    EventHeader, Header, Stack,
};
use mensageria::header::{ReplyHeader, RequestHeader, Status, TraceContext, MAGIC, VERSION};

/// The refusal events of a socket: a failed handshake or a dropped connection.
fn refusals(addr: std::net::SocketAddr, socket: &str) -> (f64, f64) {
    (
        socket_events(addr, socket, "handshake_failed"),
        socket_events(addr, socket, "disconnected"),
    )
}

/// A request still works end to end, and an event still reaches a subscriber.
fn still_serving(stack: &Stack, ctx: &zmq::Context) {
    let out = e2e::request(stack, "still serving", &["--timeout", "2s"]);
    assert_eq!(e2e::succeeded(&out), "still serving\n");
    let sub = plain_sub(ctx, stack.xpub(), b"requests");
    let req = plain_req(ctx, stack.frontend());
    let what = "an event to reach a new subscriber";
    let frames = wait_until(what, Duration::from_secs(15), || {
        req_roundtrip(&req, &[b"event please"]);
        recv_within(&sub, Duration::from_millis(100))
    });
    assert_eq!(decode_event(&frames).topic, "requests.completed");
}

#[test]
fn garbage_on_every_zeromq_port_is_refused_and_counted() {
    with_timeout(Duration::from_secs(90), || {
        let stack = Stack::start(1);
        let ctx = zmq::Context::new();
        let (b, p) = (stack.broker.http, stack.proxy.http);
        let ports = [
            ("broker", b, "frontend", stack.broker.frontend.clone()),
            ("broker", b, "backend", stack.broker.backend.clone()),
            ("proxy", p, "xsub", stack.proxy.xsub.clone()),
            ("proxy", p, "xpub", stack.proxy.xpub.clone()),
        ];
        let probes: [(&str, Vec<u8>); 4] = [
            ("random", pseudo_random_bytes(512, 0x5EED)),
            ("random-ff", {
                // A plausible ZMTP 3 signature, then garbage.
                let mut v = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1];
                v.extend(pseudo_random_bytes(256, 42));
                v
            }),
            ("http", HTTP_GET.to_vec()),
            ("tls", tls_client_hello()),
        ];
        let mut report = Vec::new();
        for (service, http, socket, endpoint) in &ports {
            let mut row = Vec::new();
            for (name, bytes) in &probes {
                let (hf, disc) = refusals(*http, socket);
                let (reply, closed) =
                    probe_tcp(tcp_addr(endpoint), bytes, Duration::from_millis(500));
                let (hf2, disc2) = wait_until(
                    &format!("{service} {socket} to count the {name} probe"),
                    Duration::from_secs(10),
                    || {
                        let now = refusals(*http, socket);
                        (now.0 + now.1 > hf + disc).then_some(now)
                    },
                );
                row.push(format!(
                    "{name}: handshake_failed+{} disconnected+{}{}",
                    hf2 - hf,
                    disc2 - disc,
                    if closed {
                        " (closed by the service)"
                    } else {
                        ""
                    }
                ));
                // libzmq answers with its greeting (and, on XSUB, the
                // subscriptions it forwards upstream). XPUB is the exception:
                // libzmq treats a peer whose first byte is not 0xFF as a
                // ZMTP 1.0 subscriber and subscribes it to everything (no
                // CURVE here), so it may be sent events until it is dropped.
                if *socket != "xpub" {
                    assert!(
                        reply.len() <= 64,
                        "{service} {socket} answered {} bytes to {name}",
                        reply.len()
                    );
                }
                if reply.len() > 64 {
                    row.push(format!("{name}: {} bytes sent back", reply.len()));
                }
            }
            report.push(format!("{service}/{socket}: {}", row.join(", ")));
        }
        still_serving(&stack, &ctx);
        assert_all_healthy(&[
            ("broker", b),
            ("proxy", p),
            ("server", stack.servers[0].http),
        ]);
        eprintln!("RESULT garbage: {}", report.join(" | "));
    });
}

#[test]
fn oversized_message_drops_only_that_peer() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::builder()
            .servers(1)
            .broker_args(&["--max-msg-size", "64KiB"])
            .start();
        let b = stack.broker.http;
        let ctx = zmq::Context::new();
        let big = e2e::connected(&ctx, zmq::DEALER, stack.frontend());
        big.send_multipart([&b""[..], b"hello"], 0).expect("send");
        let reply = recv_within(&big, Duration::from_secs(5)).expect("a normal reply first");
        assert_eq!(show(&reply), ["", "hello"]);
        let other = plain_req(&ctx, stack.frontend());
        assert_eq!(req_roundtrip(&other, &[b"other"]), vec![b"other".to_vec()]);

        let requests = metric(b, "mensageria_broker_requests_total");
        let disconnected = socket_events(b, "frontend", "disconnected");
        big.send_multipart([&b""[..], &vec![b'x'; 100 * 1024]], 0)
            .expect("send 100 KiB");
        // The broker drops the peer that sent 100 KiB.
        wait_socket_events(b, "frontend", "disconnected", disconnected);
        assert!(
            recv_within(&big, Duration::from_millis(500)).is_none(),
            "the oversized message must not be answered"
        );
        assert_eq!(
            metric(b, "mensageria_broker_requests_total"),
            requests,
            "the oversized message never became a request"
        );
        // Everyone else keeps working, on their existing connections and new ones.
        assert_eq!(req_roundtrip(&other, &[b"still"]), vec![b"still".to_vec()]);
        let out = e2e::request(&stack, "new client", &["--timeout", "2s"]);
        assert!(out.status.success(), "{}", e2e::describe(&out));
        // The dropped peer reconnects by itself and may send normal messages again.
        big.send_multipart([&b""[..], b"back"], 0).expect("send");
        let back = recv_within(&big, Duration::from_secs(5)).expect("the peer came back");
        assert_eq!(show(&back), ["", "back"]);
        assert_all_healthy(&[("broker", b)]);
        eprintln!(
            "RESULT oversize: 100 KiB to a 64 KiB broker: frontend disconnected {} -> {}, \
             handshake_failed {}, requests_total unchanged; others and the reconnected peer served",
            disconnected,
            socket_events(b, "frontend", "disconnected"),
            socket_events(b, "frontend", "handshake_failed"),
        );
    });
}

/// Header frames with every kind of corruption, and what the broker must say.
fn corrupted_headers() -> Vec<(String, Vec<u8>)> {
    let request = Header::Request(RequestHeader {
        budget_ms: None,
        service: None,
        id: 0x0123_4567_89AB_CDEF,
        sent_at_us: 1_700_000_000_000_000,
        trace: Some(TraceContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            flags: 1,
        }),
    })
    .encode();
    let with = |prefix: &[u8], body: &[u8]| [prefix, body].concat();
    let head = with(&MAGIC, &[VERSION]);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("magic only".into(), MAGIC.to_vec()),
        ("version 'x'".into(), with(&MAGIC[..2], b"Qx")),
        ("version 0".into(), with(&MAGIC, &[0])),
        (
            "version 2 with a valid body".into(),
            with(&MAGIC, &[&[2u8][..], &request[4..]].concat()),
        ),
        ("version 255".into(), with(&MAGIC, &[0xFF, 0, 1, 2])),
        ("no body".into(), head.clone()),
        ("unknown kind tag".into(), with(&head, &[200])),
        ("kind tag as a huge varint".into(), with(&head, &[0xFF; 12])),
        (
            "request id as an overlong varint".into(),
            with(&head, &[&[0u8][..], &[0xFF; 11], &[1]].concat()),
        ),
        (
            "sent_at as a huge varint".into(),
            with(&head, &[&[0u8, 1][..], &[0x80; 10], &[0x7F]].concat()),
        ),
        ("invalid option tag".into(), with(&head, &[0, 1, 1, 7])),
        (
            "truncated trace context".into(),
            with(&head, &[0, 1, 1, 1, 0xAA, 0xBB]),
        ),
        ("trailing bytes".into(), [&request[..], b"xx"].concat()),
        (
            "reply header instead of a request".into(),
            Header::Reply(ReplyHeader {
                id: 1,
                status: Status::Ok,
                trace: None,
            })
            .encode(),
        ),
        (
            "event header instead of a request".into(),
            Header::Event(EventHeader {
                publisher: 1,
                seq: 1,
                published_at_us: 1,
                trace: None,
            })
            .encode(),
        ),
    ];
    for cut in [5, 8, 12, request.len() - 1] {
        cases.push((
            format!("request truncated to {cut} bytes"),
            request[..cut].to_vec(),
        ));
    }
    for seed in 0..64u64 {
        let len = 1 + (seed as usize * 7) % 60;
        cases.push((
            format!("random body #{seed}"),
            with(&head, &pseudo_random_bytes(len, 0xBAD0 + seed)),
        ));
    }
    cases
}

#[test]
fn malformed_envelopes_and_corrupted_headers_are_refused_and_counted() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(1);
        let b = stack.broker.http;
        let ctx = zmq::Context::new();
        let dealer = e2e::connected(&ctx, zmq::DEALER, stack.frontend());
        let roundtrip = |frames: &[&[u8]]| -> Vec<Vec<u8>> {
            dealer
                .send_multipart(frames.iter().copied(), 0)
                .expect("send");
            recv_within(&dealer, Duration::from_secs(5))
                .unwrap_or_else(|| panic!("no reply to {:?}", show(frames)))
        };
        assert_eq!(show(&roundtrip(&[b"", b"ping"])), ["", "ping"]);

        // Envelopes the broker cannot route: dropped and counted, no reply.
        const MALFORMED: &str = r#"mensageria_broker_dropped_total{reason="malformed"}"#;
        let malformed = metric(b, MALFORMED);
        let bad_envelopes: [&[&[u8]]; 3] = [&[b"no delimiter"], &[b"a", b"b"], &[b""]];
        for frames in bad_envelopes {
            dealer
                .send_multipart(frames.iter().copied(), 0)
                .expect("send");
        }
        e2e::wait_metric(b, MALFORMED, "3 more malformed drops", |v| {
            v == malformed + 3.0
        });
        assert!(
            recv_within(&dealer, Duration::from_millis(300)).is_none(),
            "a malformed envelope must not be answered"
        );

        // Corrupted headers: `ERR bad_request …`, counted; the rare random
        // body that decodes as a valid request header is routed normally.
        const BAD: &str = r#"mensageria_broker_replies_total{status="bad_request"}"#;
        let bad_before = metric(b, BAD);
        let (mut refused, mut routed) = (0u32, 0u32);
        for (name, frame) in corrupted_headers() {
            let reply = roundtrip(&[b"", &frame, b"payload"]);
            match Header::decode(&frame) {
                Ok(Header::Request(h)) => {
                    routed += 1;
                    assert_eq!(reply.len(), 3, "{name}: {:?}", show(&reply));
                    match Header::decode(&reply[1]) {
                        Ok(Header::Reply(r)) => {
                            assert_eq!((r.id, r.status), (h.id, Status::Ok), "{name}")
                        }
                        other => panic!("{name}: reply header {other:?}"),
                    }
                }
                _ => {
                    refused += 1;
                    assert_eq!(reply.len(), 2, "{name}: {:?}", show(&reply));
                    let text = String::from_utf8_lossy(&reply[1]);
                    assert!(
                        reply[0].is_empty() && text.starts_with("ERR bad_request "),
                        "{name}: {:?}",
                        show(&reply)
                    );
                }
            }
        }
        e2e::wait_metric(b, BAD, "one bad_request reply per corrupted header", |v| {
            v == bad_before + f64::from(refused)
        });
        assert_eq!(
            metric(
                stack.servers[0].http,
                r#"mensageria_server_requests_total{status="bad_request"}"#
            ),
            0.0,
            "corrupted headers never reach a server"
        );
        // The same connection, and everyone else, still work.
        assert_eq!(show(&roundtrip(&[b"", b"pong"])), ["", "pong"]);
        let out = e2e::request(&stack, "after the garbage", &["--timeout", "2s"]);
        assert!(out.status.success(), "{}", e2e::describe(&out));
        assert_all_healthy(&[("broker", b), ("server", stack.servers[0].http)]);
        eprintln!(
            "RESULT malformed: 3 envelopes dropped as malformed; {refused} corrupted headers \
             answered ERR bad_request and counted; {routed} random bodies were valid requests"
        );
    });
}
