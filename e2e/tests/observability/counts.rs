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

const PEERS: &str = "mensageria_zmq_peers";

/// The expectations on one scrape of one service.
struct Scrape<'a> {
    checks: &'a mut Vec<Check>,
    service: String,
    families: BTreeMap<String, Family>,
}

impl Scrape<'_> {
    fn new(checks: &mut Vec<Check>, service: impl Into<String>, addr: SocketAddr) -> Scrape<'_> {
        let families = families(&metrics_text(addr));
        let service = service.into();
        Scrape {
            checks,
            service,
            families,
        }
    }

    /// The sum of the samples `sample` whose labels include `labels`, in
    /// the family of that name (a histogram's for `…_count`); 0 when
    /// absent, so a missing series shows as a mismatch with its name
    /// rather than a panic.
    fn value(&self, sample: &str, labels: &[(&str, &str)]) -> f64 {
        let family = sample.strip_suffix("_count").unwrap_or(sample);
        self.families
            .get(family)
            .map_or(0.0, |f| f.sum(sample, labels))
    }

    /// Sum of a counter's samples whose `status` is not `ok`.
    fn not_ok(&self, family: &str) -> f64 {
        self.families.get(family).map_or(0.0, |f| {
            f.samples
                .iter()
                .filter(|(_, l, _)| l.get("status").is_some_and(|v| v != "ok"))
                .map(|(_, _, v)| v)
                .sum()
        })
    }

    /// Expects `sample{labels}` to be `want`.
    fn expect(&mut self, sample: &str, labels: &[(&str, &str)], want: f64) {
        let got = self.value(sample, labels);
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let what = format!("{} {sample}{{{}}}", self.service, labels.join(","));
        self.checks.push((what, got, want));
    }

    /// Expects `family`'s samples with a status other than `ok` to sum to 0.
    fn expect_all_ok(&mut self, family: &str) {
        let got = self.not_ok(family);
        let what = format!("{} {family}{{status!=ok}}", self.service);
        self.checks.push((what, got, 0.0));
    }
}

/// Every expectation, from fresh scrapes.
fn observe(stack: &Stack, client: &ClientRun, plain_received: u64) -> Vec<Check> {
    let (n, subscribers) = (N as f64, SUBSCRIBERS as f64);
    let workers: u32 = stack.servers.iter().map(|s| s.workers).sum();
    let (ok, requests) = ([("status", "ok")], [("topic", "requests")]);
    let mut c = Vec::new();

    let mut b = Scrape::new(&mut c, "broker", stack.broker.http);
    b.expect("mensageria_broker_requests_total", &[], n);
    b.expect("mensageria_broker_replies_total", &ok, n);
    b.expect_all_ok("mensageria_broker_replies_total");
    b.expect("mensageria_broker_request_duration_seconds_count", &[], n);
    b.expect("mensageria_broker_inflight_requests", &[], 0.0);
    b.expect("mensageria_broker_dropped_total", &[], 0.0);
    for socket in ["frontend", "backend"] {
        for direction in ["in", "out"] {
            let l = [("socket", socket), ("direction", direction)];
            b.expect("mensageria_broker_messages_total", &l, n);
        }
    }
    // One backend peer per REP worker; on the frontend, the client run
    // (the bench has gone).
    b.expect(PEERS, &[("socket", "backend")], f64::from(workers));
    b.expect(PEERS, &[("socket", "frontend")], 1.0);

    let (mut ok_sum, mut not_ok_sum, mut count, mut published) = (0.0, 0.0, 0.0, 0.0);
    for (i, s) in stack.servers.iter().enumerate() {
        let mut f = Scrape::new(&mut c, format!("server {i}"), s.http);
        ok_sum += f.value("mensageria_server_requests_total", &ok);
        not_ok_sum += f.not_ok("mensageria_server_requests_total");
        count += f.value("mensageria_server_request_duration_seconds_count", &[]);
        published += f.value("mensageria_server_events_published_total", &requests);
        f.expect(PEERS, &[("socket", "rep")], f64::from(s.workers));
        f.expect(PEERS, &[("socket", "pub")], 1.0);
    }
    for (what, got, want) in [
        ("Σ servers requests{ok}", ok_sum, n),
        ("Σ servers requests{not ok}", not_ok_sum, 0.0),
        ("Σ servers duration count", count, n),
        ("Σ servers events published{requests}", published, n),
        ("plain SUB received requests.*", plain_received as f64, n),
    ] {
        c.push((what.to_owned(), got, want));
    }

    let mut p = Scrape::new(&mut c, "proxy", stack.proxy.http);
    p.expect("mensageria_proxy_events_in_total", &requests, n);
    p.expect(
        "mensageria_proxy_deliveries_total",
        &requests,
        n * subscribers,
    );
    p.expect("mensageria_proxy_subscriptions", &requests, subscribers);
    // One XSUB peer per server's PUB, one XPUB peer per subscriber.
    p.expect(PEERS, &[("socket", "xsub")], SERVERS as f64);
    p.expect(PEERS, &[("socket", "xpub")], subscribers);

    let mut k = Scrape::new(&mut c, "client", client.http);
    k.expect("mensageria_client_events_received_total", &requests, n);
    k.expect("mensageria_client_events_lost_total", &[], 0.0);
    k.expect("mensageria_client_event_lag_seconds_count", &[], n);
    // `--rate 0`: no requests.
    k.expect("mensageria_client_requests_total", &[], 0.0);
    k.expect(PEERS, &[("socket", "req")], 1.0);
    k.expect(PEERS, &[("socket", "sub")], 1.0);
    c
}

fn table(checks: &[Check]) -> String {
    let mut s = String::new();
    for (what, got, want) in checks {
        let mark = if got == want { "  " } else { "✗ " };
        let _ = writeln!(s, "{mark}{what:<80} got {got:>8}  want {want:>8}");
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
        let client = ClientRun::ready(&stack, &["--rate", "0", "--topics", "requests"], &[]);
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

        let n = N.to_string();
        let flags = ["--requests", &n, "--concurrency", "8", "--timeout", "25s"];
        let s = e2e::bench(&stack, &flags, Duration::from_secs(60));
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
