//! Exact counts: after `client bench --requests N` through a broker and two
//! servers, with two subscribers on `requests` (a `client run --rate 0` and
//! a plain SUB socket), every service's counters show exactly N (or N × the
//! subscribers), and the peer gauges match the processes connected. The
//! servers are plain REP servers here, so the broker's backend message
//! counts are exactly N too (Majordomo workers share the frontend with their
//! READY and heartbeat commands).

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, time::Duration};

use e2e::{
    faults::ClientRun,
    metrics_text,
    observability::{families, wait_proxy_subscriptions, wait_status_from_all, Family},
    plain_sub, recv_within, with_timeout, Stack,
};

const N: u64 = 3000;
const SERVERS: usize = 2;
/// The `client run` and the plain SUB socket.
const SUBSCRIBERS: u64 = 2;

/// One expectation: a description, the value seen, the value wanted.
type Check = (String, f64, f64);

fn scrape(addr: SocketAddr) -> BTreeMap<String, Family> {
    families(&metrics_text(addr))
}

/// The sum of the samples `sample` (labels including `labels`) of the family
/// queried as `family` (0 when absent, so a missing series shows as a
/// mismatch with its name rather than a panic).
fn value(f: &BTreeMap<String, Family>, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    f.get(family).map_or(0.0, |f| f.sum(sample, labels))
}

/// Sum of a counter's samples whose `label` is not `except`.
fn others(f: &BTreeMap<String, Family>, family: &str, label: &str, except: &str) -> f64 {
    f.get(family).map_or(0.0, |f| {
        f.samples
            .iter()
            .filter(|(_, l, _)| l.get(label).is_some_and(|v| v != except))
            .map(|(_, _, v)| v)
            .sum()
    })
}

fn check(out: &mut Vec<Check>, what: impl Into<String>, got: f64, want: f64) {
    out.push((what.into(), got, want));
}

/// Every expectation, from fresh scrapes.
fn observe(stack: &Stack, client: &ClientRun, plain_received: u64) -> Vec<Check> {
    let n = N as f64;
    let workers: u32 = stack.servers.iter().map(|s| s.workers).sum();
    let mut c = Vec::new();

    let b = scrape(stack.broker.http);
    let req = "mensageria_broker_requests_total";
    check(&mut c, "broker requests", value(&b, req, req, &[]), n);
    let rep = "mensageria_broker_replies_total";
    check(
        &mut c,
        "broker replies{ok}",
        value(&b, rep, rep, &[("status", "ok")]),
        n,
    );
    check(
        &mut c,
        "broker replies{not ok}",
        others(&b, rep, "status", "ok"),
        0.0,
    );
    let dur = "mensageria_broker_request_duration_seconds";
    check(
        &mut c,
        "broker duration count",
        value(&b, dur, &format!("{dur}_count"), &[]),
        n,
    );
    let inflight = "mensageria_broker_inflight_requests";
    check(
        &mut c,
        "broker inflight",
        value(&b, inflight, inflight, &[]),
        0.0,
    );
    let dropped = "mensageria_broker_dropped_total";
    check(
        &mut c,
        "broker dropped",
        value(&b, dropped, dropped, &[]),
        0.0,
    );
    let msgs = "mensageria_broker_messages_total";
    for socket in ["frontend", "backend"] {
        for direction in ["in", "out"] {
            let l = [("socket", socket), ("direction", direction)];
            check(
                &mut c,
                format!("broker messages{{{socket},{direction}}}"),
                value(&b, msgs, msgs, &l),
                n,
            );
        }
    }
    let peers = "mensageria_zmq_peers";
    check(
        &mut c,
        "broker peers{backend} (one per REP worker)",
        value(&b, peers, peers, &[("socket", "backend")]),
        f64::from(workers),
    );
    check(
        &mut c,
        "broker peers{frontend} (the client run; the bench has gone)",
        value(&b, peers, peers, &[("socket", "frontend")]),
        1.0,
    );

    let (mut ok, mut not_ok, mut count, mut published) = (0.0, 0.0, 0.0, 0.0);
    for (i, s) in stack.servers.iter().enumerate() {
        let f = scrape(s.http);
        let sreq = "mensageria_server_requests_total";
        ok += value(&f, sreq, sreq, &[("status", "ok")]);
        not_ok += others(&f, sreq, "status", "ok");
        let sdur = "mensageria_server_request_duration_seconds";
        count += value(&f, sdur, &format!("{sdur}_count"), &[]);
        let publ = "mensageria_server_events_published_total";
        published += value(&f, publ, publ, &[("topic", "requests")]);
        check(
            &mut c,
            format!("server {i} peers{{rep}}"),
            value(&f, peers, peers, &[("socket", "rep")]),
            f64::from(s.workers),
        );
        check(
            &mut c,
            format!("server {i} peers{{pub}}"),
            value(&f, peers, peers, &[("socket", "pub")]),
            1.0,
        );
    }
    check(&mut c, "Σ servers requests{ok}", ok, n);
    check(&mut c, "Σ servers requests{not ok}", not_ok, 0.0);
    check(&mut c, "Σ servers duration count", count, n);
    check(&mut c, "Σ servers events published{requests}", published, n);

    let p = scrape(stack.proxy.http);
    let evin = "mensageria_proxy_events_in_total";
    check(
        &mut c,
        "proxy events in{requests}",
        value(&p, evin, evin, &[("topic", "requests")]),
        n,
    );
    let del = "mensageria_proxy_deliveries_total";
    check(
        &mut c,
        "proxy deliveries{requests}",
        value(&p, del, del, &[("topic", "requests")]),
        n * SUBSCRIBERS as f64,
    );
    let subs = "mensageria_proxy_subscriptions";
    check(
        &mut c,
        "proxy subscriptions{requests}",
        value(&p, subs, subs, &[("topic", "requests")]),
        SUBSCRIBERS as f64,
    );
    check(
        &mut c,
        "proxy peers{xsub} (one PUB per server)",
        value(&p, peers, peers, &[("socket", "xsub")]),
        SERVERS as f64,
    );
    check(
        &mut c,
        "proxy peers{xpub} (one per subscriber)",
        value(&p, peers, peers, &[("socket", "xpub")]),
        SUBSCRIBERS as f64,
    );

    let k = scrape(client.http);
    let recv = "mensageria_client_events_received_total";
    check(
        &mut c,
        "client received{requests}",
        value(&k, recv, recv, &[("topic", "requests")]),
        n,
    );
    let lost = "mensageria_client_events_lost_total";
    check(&mut c, "client lost", value(&k, lost, lost, &[]), 0.0);
    let lag = "mensageria_client_event_lag_seconds";
    check(
        &mut c,
        "client lag count",
        value(&k, lag, &format!("{lag}_count"), &[]),
        n,
    );
    let creq = "mensageria_client_requests_total";
    check(
        &mut c,
        "client requests (rate 0)",
        value(&k, creq, creq, &[]),
        0.0,
    );
    check(
        &mut c,
        "client peers{req}",
        value(&k, peers, peers, &[("socket", "req")]),
        1.0,
    );
    check(
        &mut c,
        "client peers{sub}",
        value(&k, peers, peers, &[("socket", "sub")]),
        1.0,
    );

    check(
        &mut c,
        "plain SUB received requests.*",
        plain_received as f64,
        n,
    );
    c
}

fn table(checks: &[Check]) -> String {
    let mut s = String::new();
    for (what, got, want) in checks {
        let mark = if got == want { "  " } else { "✗ " };
        let _ = writeln!(s, "{mark}{what:<55} got {got:>8}  want {want:>8}");
    }
    s
}

#[test]
fn bench_counts_are_exact_on_every_service() {
    with_timeout(Duration::from_secs(90), || {
        // Long deadlines at broker and client: a request slowed down by a
        // loaded machine must not time out and be retried, or the counts
        // would be N + retries.
        let stack = Stack::builder()
            .servers(SERVERS)
            .rep()
            .broker_args(&["--request-timeout", "30s"])
            .server_args(&["--status-interval", "200ms"])
            .start();
        let client = ClientRun::ready(
            &stack,
            &["--rate", "0", "--topics", "requests"],
            e2e::observability::JSON_LOGS,
        );
        // The client's subscription first, then a plain SUB's: once status
        // events of every server reach the plain SUB, both subscriptions to
        // `requests` are in every server's PUB socket (see
        // `wait_status_from_all`), so no event of the bench can be dropped for
        // want of a subscriber, and no request was needed to find out.
        wait_proxy_subscriptions(stack.proxy.http, "requests", 1.0);
        let ctx = zmq::Context::new();
        let sub = plain_sub(&ctx, stack.xpub(), b"requests");
        sub.set_subscribe(b"server.status").expect("subscribe");
        wait_proxy_subscriptions(stack.proxy.http, "requests", 2.0);
        let instances: Vec<String> = stack.servers.iter().map(|s| s.instance.clone()).collect();
        let early = wait_status_from_all(&sub, &instances, Duration::from_secs(15));
        assert!(
            early.is_empty(),
            "events before any request: {}",
            early.len()
        );

        let s = e2e::bench(
            &stack,
            &[
                "--requests",
                &N.to_string(),
                "--concurrency",
                "8",
                "--timeout",
                "25s",
            ],
            Duration::from_secs(60),
        );
        assert_eq!((s.requests, s.ok, s.errors), (N, N, 0), "{s:?}");
        assert_eq!(
            s.retries, 0,
            "a retry would make the counts N + retries: {s:?}"
        );

        // Counters move just after the reply or event they count leaves, and
        // the bench's disconnection reaches the broker's monitor a little
        // later: poll until everything settles.
        let mut plain_received = 0u64;
        let mut last = Vec::new();
        let settled = e2e::poll_until(Duration::from_secs(20), || {
            while let Some(frames) = recv_within(&sub, Duration::ZERO) {
                if frames.first().is_some_and(|t| t.starts_with(b"requests")) {
                    plain_received += 1;
                }
            }
            last = observe(&stack, &client, plain_received);
            last.iter().all(|(_, got, want)| got == want).then_some(())
        });
        assert!(
            settled.is_some(),
            "counts did not settle to the exact values within 20 s:\n{}",
            table(&last)
        );
        // Nothing moves further (no late duplicate counting).
        let again = observe(&stack, &client, plain_received);
        assert!(
            again.iter().all(|(_, got, want)| got == want),
            "counts changed after settling:\n{}",
            table(&again)
        );
    });
}
