//! Pressure: a slow subscriber among fast ones, overload far above
//! `MAX_INFLIGHT`, and `client run` at its own concurrency cap.

use std::{
    thread,
    time::{Duration, Instant},
};

use e2e::{
    faults::{assert_all_healthy, ClientRun, EventLines, RssSampler, SummaryFile},
    metric, metric_opt,
    observability::wait_proxy_subscriptions,
    wait_until, with_timeout, EventHeader, Header, Signal, Stack, GRACE,
};

const MIB: f64 = 1024.0 * 1024.0;

/// A plain PUB peer publishing `bulk.data` events with our event header
/// (publisher id, consecutive sequence numbers) and a 4 KiB payload.
struct BulkPublisher {
    socket: zmq::Socket,
    id: u64,
    seq: u64,
    payload: Vec<u8>,
}

impl BulkPublisher {
    fn connect(ctx: &zmq::Context, xsub: &str) -> BulkPublisher {
        let socket = ctx.socket(zmq::PUB).expect("create a PUB socket");
        socket.set_linger(0).expect("set linger");
        socket.set_sndhwm(1_000_000).expect("set send HWM");
        socket.connect(xsub).expect("connect PUB");
        BulkPublisher {
            socket,
            id: 0x00b0_1c00_0000_0001,
            seq: 0,
            payload: vec![b'x'; 4096],
        }
    }

    fn publish(&mut self) {
        self.seq += 1;
        let header = Header::Event(EventHeader {
            publisher: self.id,
            seq: self.seq,
            published_at_us: mensageria::header::now_us(),
            trace: None,
        })
        .encode();
        self.socket
            .send_multipart([&b"bulk.data"[..], &header, &self.payload], 0)
            .expect("publish");
    }
}

/// A slow subscriber (`--delay 10ms`, receive HWM 10) among two normal ones.
#[test]
fn slow_subscriber_loses_counted_events_without_hurting_others_or_proxy_memory() {
    slow_subscriber("10", "10ms");
}

/// The same with the slow subscriber's receive HWM at 1000 and `--delay
/// 20ms`: its queue stays full for many seconds, so libzmq stops reading its
/// TCP stream. With ZMTP heartbeats on that link, a heartbeat timeout reset
/// the connection in the middle of a multipart event and libzmq aborted the
/// subscriber (`Assertion failed: !_more`, src/fq.cpp:112 in 4.3.4, :80 in
/// 4.3.5; zeromq/libzmq#4767). The event path (PUB, SUB, XPUB, XSUB) therefore runs
/// without heartbeats (shared/src/socket.rs `SocketFactory::configure`);
/// this test keeps it that way.
#[test]
fn slow_subscriber_behind_by_its_hwm_survives_its_heartbeat() {
    slow_subscriber("1000", "20ms");
}

fn slow_subscriber(slow_hwm: &'static str, delay: &'static str) {
    const BULK_RATE: u64 = 1000;
    const BULK_SECS: u64 = 6;
    with_timeout(Duration::from_secs(110), move || {
        // HWM 500 per subscriber at the proxy. Everything queued ahead of
        // the first drop (the HWMs plus a few MiB the kernel holds of a slow
        // reader's stream) must be consumed before the slow subscriber can
        // see the gap: with `--delay 10ms` and its HWM at 10, about 12 s.
        let stack = Stack::builder()
            .servers(1)
            .proxy_args(&["--hwm", "500"])
            .start();
        let xpub = stack.xpub().to_owned();
        let p = stack.proxy.http;
        // Normal subscribers keep the default receive HWM (10000): room for
        // scheduling hiccups on a busy CI machine.
        let fast_flags = ["--rate", "0", "--topics", "requests,bulk"];
        let fast: Vec<ClientRun> = (0..2)
            .map(|_| ClientRun::ready(&stack, &fast_flags, &[]))
            .collect();
        let slow_totals = SummaryFile::new();
        let slow_args = ["requests", "bulk", "--delay", delay, "--hwm", slow_hwm];
        let mut slow = slow_totals.subscribe(&xpub, &slow_args, &[]);
        // The proxy registers three subscribers per topic.
        wait_proxy_subscriptions(p, "bulk", 3.0);
        wait_proxy_subscriptions(p, "requests", 3.0);

        // Prime: publish until every subscriber has a bulk event, so every
        // one sees all that follow (or counts them lost).
        let ctx = zmq::Context::new();
        let mut bulk = BulkPublisher::connect(&ctx, &stack.proxy.xsub);
        wait_until(
            "every subscriber to receive a priming event",
            Duration::from_secs(15),
            || {
                bulk.publish();
                thread::sleep(Duration::from_millis(10)); // pacing
                (slow.stdout_len() >= 1 && fast.iter().all(|f| f.stats().received("bulk") >= 1.0))
                    .then_some(())
            },
        );
        let primed_seq = bulk.seq;
        let fast_at_prime: Vec<f64> = fast.iter().map(|f| f.stats().received("bulk")).collect();

        // Load through the servers too (their events reach every subscriber).
        let load = ClientRun::steady(&stack, "200", &[]);

        let sampler = RssSampler::start(&[("proxy", p)], Duration::from_millis(250));
        let started = Instant::now();
        let per_tick = BULK_RATE / 100; // every 10 ms
        let mut tick = started;
        while started.elapsed() < Duration::from_secs(BULK_SECS) {
            for _ in 0..per_tick {
                bulk.publish();
            }
            tick += Duration::from_millis(10);
            thread::sleep(tick.saturating_duration_since(Instant::now())); // pacing
        }
        let bulk_secs = started.elapsed().as_secs_f64();
        let bulk_end = bulk.seq;
        // Trickle on until the slow subscriber has worked through its backlog
        // and received an event published after the burst: every gap in
        // front of it is then counted.
        let after_burst = |lines: &[String]| {
            lines.iter().rev().take(5).any(|l| {
                l.starts_with("bulk.data ")
                    && l.split(' ')
                        .nth(2)
                        .and_then(|s| s.strip_prefix("seq=")?.parse::<u64>().ok())
                        .is_some_and(|seq| seq > bulk_end)
            })
        };
        wait_until(
            "the slow subscriber to reach events published after the burst",
            Duration::from_secs(60),
            || {
                bulk.publish();
                thread::sleep(Duration::from_millis(50)); // pacing
                if let Some(status) = slow.try_status() {
                    panic!(
                        "the slow subscriber died ({status:?}):\n{}",
                        slow.diagnostics()
                    );
                }
                after_burst(&slow.stdout_lines()).then_some(())
            },
        );
        let bulk_sent = bulk.seq - primed_seq;

        // Fast subscribers: every bulk event, nothing lost on any topic.
        for (f, at_prime) in fast.iter().zip(&fast_at_prime) {
            let s = f.wait_stats(
                "a fast subscriber to receive every bulk event",
                Duration::from_secs(15),
                |s| s.received("bulk") - at_prime >= bulk_sent as f64,
            );
            assert_eq!(s.received("bulk") - at_prime, bulk_sent as f64, "{s:?}");
            assert_eq!(s.lost, 0.0, "a fast subscriber lost events: {s:?}");
        }
        let fast_stats: Vec<_> = fast.iter().map(ClientRun::stats).collect();
        let load_stats = load.stats();
        assert_eq!(load_stats.failed(), 0.0, "{load_stats:?}");
        let rss = sampler.stop();

        // The slow one: losses counted, consistent with what it received.
        slow.kill(Signal::Term);
        let out = slow.output(GRACE + Duration::from_secs(10));
        assert!(out.status.success(), "{}", e2e::describe(&out));
        let totals = slow_totals.read();
        let (n, m) = (totals.received, totals.lost);
        let lines = EventLines::parse(&slow.stdout_lines());
        assert_eq!(lines.other, 0, "lines that are not events");
        assert_eq!(lines.out_of_order, 0, "events out of order");
        assert_eq!(n, lines.received(), "received N must match the event lines");
        assert_eq!(
            m,
            lines.gaps(),
            "M lost must match the sequence gaps of its lines"
        );
        assert!(
            m > 0,
            "the slow subscriber must lose events at the HWM: {n} received, max lag {} ms; \
             {bulk_sent} bulk events sent; {}",
            lines.max_lag_ms,
            rss.summary()
        );
        let slow_bulk = lines
            .streams
            .iter()
            .filter(|((_, t), _)| t == "bulk.data")
            .map(|(_, s)| s.2)
            .sum::<u64>();
        // Its pace against the burst's: at least 8 times slower.
        let slow_rate = slow_bulk as f64 / started.elapsed().as_secs_f64();
        let ratio = BULK_RATE as f64 / slow_rate;
        assert!(
            ratio >= 8.0,
            "the slow subscriber read {slow_rate:.0} events/s during a {BULK_RATE}/s burst: \
             not slow enough to test"
        );

        // Proxy memory: bounded, and flat once the slow pipe is full.
        let max = rss.max(0);
        let third = Duration::from_secs_f64(bulk_secs / 3.0);
        let peak =
            |from: Duration, to: Duration| rss.values(0, from, to).into_iter().fold(0.0, f64::max);
        let (mid, late) = (peak(third, third * 2), peak(third * 2, Duration::MAX));
        assert!(max < 100.0 * MIB, "proxy RSS reached {:.1} MiB", max / MIB);
        assert!(
            late <= mid * 1.2 + 2.0 * MIB,
            "proxy RSS keeps growing: {:.1} MiB in the middle third, {:.1} MiB in the last",
            mid / MIB,
            late / MIB
        );
        assert_all_healthy(&[("proxy", p), ("broker", stack.broker.http)]);
        eprintln!(
            "RESULT slow-subscriber: {bulk_sent} bulk events in {bulk_secs:.1}s + {} server events; \
             fast subscribers received {:?} lost {:?}; slow (--delay {delay}, HWM {slow_hwm}) received {n} lost {m} \
             ({slow_rate:.0} events/s, {ratio:.1}x slower than the burst; first loss after {:?} events, max lag {:.0} ms); \
             proxy RSS max {:.1} MiB (middle third {:.1}, last third {:.1})",
            load_stats.ok(),
            fast_stats.iter().map(|s| s.received.values().sum::<f64>()).collect::<Vec<_>>(),
            fast_stats.iter().map(|s| s.lost).collect::<Vec<_>>(),
            lines.first_gap_at,
            lines.max_lag_ms,
            max / MIB,
            mid / MIB,
            late / MIB
        );
    });
}

#[test]
fn overload_far_above_max_inflight_is_refused_bounded_and_recovers() {
    with_timeout(Duration::from_secs(100), || {
        let stack = Stack::builder()
            .servers(2)
            .broker_args(&["--max-inflight", "50"])
            .start();
        let b = stack.broker.http;
        let sampler = RssSampler::start(&[("broker", b)], Duration::from_millis(250));
        let baseline = e2e::faults::rss(b).expect("broker RSS");
        let mut flags = vec!["--duration", "5s", "--concurrency", "500"];
        flags.extend(["--payload", "work 5ms", "--retries", "0", "--timeout", "5s"]);
        let mut bench = Some(e2e::spawn_bench(stack.frontend(), &flags));
        let mut max_inflight: f64 = 0.0;
        while bench.as_mut().expect("bench").try_status().is_none() {
            if let Some(v) = metric_opt(b, "mensageria_broker_inflight_requests") {
                max_inflight = max_inflight.max(v);
            }
            thread::sleep(Duration::from_millis(50)); // sampling pace
        }
        let s = e2e::bench_summary(bench.take().expect("bench"), Duration::from_secs(30));
        let rss = sampler.stop();
        let overloaded = s.errors_by_status.get("overloaded").copied().unwrap_or(0);
        assert!(overloaded > 0, "no `overloaded` reply: {s:?}");
        assert!(s.ok > 0, "nothing got through: {s:?}");
        assert_eq!(
            s.errors, overloaded,
            "only `overloaded` refusals are expected: {s:?}"
        );
        assert_eq!(
            metric(b, r#"mensageria_broker_replies_total{status="overloaded"}"#),
            overloaded as f64,
            "the broker counts every refusal"
        );
        assert!(max_inflight <= 50.0, "in flight reached {max_inflight}");
        let max = rss.max(0);
        assert!(
            max < 100.0 * MIB && max < baseline + 50.0 * MIB,
            "broker RSS went from {:.1} to {:.1} MiB",
            baseline / MIB,
            max / MIB
        );

        // Full recovery once the load is normal again.
        let after = e2e::bench(
            &stack,
            &["--requests", "2000", "--concurrency", "16"],
            Duration::from_secs(60),
        );
        assert_eq!((after.ok, after.errors), (2000, 0), "{after:?}");
        assert_eq!(metric(b, "mensageria_broker_inflight_requests"), 0.0);
        assert_all_healthy(&[("broker", b)]);
        eprintln!(
            "RESULT overload: bench c=500 for 5s: {} requests, {} ok, {overloaded} overloaded \
             ({:.0} req/s); max in flight {max_inflight}; broker RSS {:.1} -> max {:.1} MiB; \
             then c=16: {} ok, 0 errors, p99 {} ms",
            s.requests,
            s.ok,
            s.throughput_rps,
            baseline / MIB,
            max / MIB,
            after.ok,
            after.latency_ms.p99
        );
    });
}

/// `client run` keeps reading replies while it is at its concurrency cap
/// and behind its rate (it used to spin without reading them until every
/// request timed out; fixed in ba76132).
#[test]
fn client_run_reads_replies_at_its_concurrency_cap() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(1);
        // 2 workers × `work 20ms` = 100 requests/s at most; asking for 200/s
        // with 4 outstanding keeps the client at its cap and behind.
        let mut flags = vec!["--rate", "200", "--concurrency", "4"];
        flags.extend(["--payload", "work 20ms", "--timeout", "5s"]);
        let client = ClientRun::ready(&stack, &flags, &[]);
        let s = client.wait_stats(
            "requests to complete at the server's pace (about 100/s)",
            Duration::from_secs(10),
            |s| s.ok() >= 200.0,
        );
        assert_eq!(s.failed(), 0.0, "{s:?}");
    });
}
