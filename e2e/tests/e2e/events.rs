//! Events through the proxy: a plain SUB peer, and `client subscribe` seeing
//! every event of a 20000-request bench.

use std::{collections::BTreeMap, time::Duration};

use e2e::{
    decode_event,
    faults::{EventLine, SummaryFile},
    observability::wait_proxy_subscriptions,
    plain_req, plain_sub, recv_within, req_roundtrip, with_timeout, PlainEvent, Stack,
    PUBLISHED_REQUESTS,
};

const PROXY_SUBS_REQUESTS: &str = r#"mensageria_proxy_subscriptions{topic="requests"}"#;

#[test]
fn plain_sub_peer_receives_events_from_the_servers() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::builder()
            .servers(1)
            .server_args(&["--status-interval", "200ms"])
            .start();
        let instance = stack.servers[0].instance.clone();
        let ctx = zmq::Context::new();
        let sub = plain_sub(&ctx, stack.xpub(), b"requests");
        let status_sub = plain_sub(&ctx, stack.xpub(), b"server.status");
        e2e::wait_metric_at_least(stack.proxy.http, PROXY_SUBS_REQUESTS, 1.0);

        // The subscription still has to travel on to the server's PUB socket:
        // keep sending requests until events arrive.
        let req = plain_req(&ctx, stack.frontend());
        let mut events: Vec<PlainEvent> = Vec::new();
        e2e::wait_until("5 events", Duration::from_secs(15), || {
            assert_eq!(req_roundtrip(&req, &[b"ping"]), vec![b"ping".to_vec()]);
            while let Some(frames) = recv_within(&sub, Duration::from_millis(100)) {
                events.push(decode_event(&frames));
            }
            (events.len() >= 5).then_some(())
        });
        for e in &events {
            assert_eq!(e.topic, "requests.completed");
            assert_eq!(e.payload["server"], instance.as_str(), "{}", e.payload);
            assert_eq!(e.payload["status"], "ok", "{}", e.payload);
            assert!(
                e.payload["request_id"].is_null(),
                "a plain request has no id: {}",
                e.payload
            );
            assert!(e.payload["duration_us"].is_u64(), "{}", e.payload);
            let age_us = mensageria::header::now_us().saturating_sub(e.header.published_at_us);
            assert!(
                age_us < 60_000_000,
                "published_at is not recent: {:?}",
                e.header
            );
        }
        for pair in events.windows(2) {
            assert_eq!(
                pair[1].header.publisher, pair[0].header.publisher,
                "one server, one publisher"
            );
            assert_eq!(
                pair[1].header.seq,
                pair[0].header.seq + 1,
                "sequence numbers are consecutive"
            );
        }

        let frames = recv_within(&status_sub, Duration::from_secs(10))
            .expect("a server.status event within 10 s");
        let status = decode_event(&frames);
        assert_eq!(status.topic, "server.status");
        assert_eq!(
            status.payload["server"],
            instance.as_str(),
            "{}",
            status.payload
        );
        assert_eq!(status.payload["workers"], 2, "{}", status.payload);

        for counter in ["events_in", "deliveries"] {
            let series = format!(r#"mensageria_proxy_{counter}_total{{topic="requests"}}"#);
            e2e::wait_metric_at_least(stack.proxy.http, &series, 5.0);
        }
    });
}

#[test]
fn bench_of_20000_requests_and_subscriber_sees_all_its_events() {
    const N: u64 = 20_000;
    with_timeout(Duration::from_secs(120), || {
        let stack = Stack::start(2);
        let ctx = zmq::Context::new();

        // Prime the path: the plain SUB on "requests" is kept open for the
        // whole test, so every server's PUB holds that subscription from
        // before the subscriber under test starts until the bench is over,
        // and no priming event can reach that subscriber.
        let (_sub, last) = e2e::prime_events(&stack, &ctx);

        let totals = SummaryFile::new();
        let count = N.to_string();
        let mut subscriber = totals.subscribe(stack.xpub(), &["requests", "--count", &count], &[]);
        wait_proxy_subscriptions(stack.proxy.http, "requests", 2.0);

        let s = e2e::bench(
            &stack,
            &["--requests", &N.to_string(), "--concurrency", "16"],
            Duration::from_secs(90),
        );
        assert_eq!((s.requests, s.ok, s.errors), (N, N, 0), "{s:?}");
        assert!(s.throughput_rps > 0.0, "{s:?}");

        let out = subscriber.output(Duration::from_secs(30));
        assert!(out.status.success(), "{}", e2e::describe(&out));
        let t = totals.read();
        assert_eq!((t.received, t.lost), (N, 0), "subscriber totals");

        // Every line is an event of this run: per publisher, consecutive
        // sequence numbers right after the last priming event.
        let text = e2e::stdout(&out);
        let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for line in text.lines() {
            let ev = EventLine::parse(line).unwrap_or_else(|| panic!("not an event line: {line}"));
            assert_eq!(ev.topic, "requests.completed", "{line}");
            seqs.entry(ev.publisher).or_default().push(ev.seq);
        }
        assert_eq!(
            seqs.values().map(Vec::len).sum::<usize>(),
            N as usize,
            "event lines"
        );
        for srv in &stack.servers {
            let (publisher, primed) = last[&srv.instance];
            let mut got = seqs
                .remove(&format!("{publisher:016x}"))
                .unwrap_or_default();
            got.sort_unstable();
            let end = primed + got.len() as u64;
            assert!(
                got.into_iter().eq(primed + 1..=end),
                "server {}: sequence numbers are not {}..={end}",
                srv.instance,
                primed + 1
            );
            if s.retries == 0 {
                // The servers published exactly the events the subscriber saw.
                e2e::expect_metric(srv.http, PUBLISHED_REQUESTS, end as f64);
            }
        }
    });
}
