//! Helpers of the reliability and security suite (`e2e/tests/reliability`):
//!
//! - [`peers`], [`socket_events`], [`assert_all_healthy`]:
//!   what the services say about their peers and health.
//! - [`ClientRun`]: the long-running `client run` load generator and
//!   subscriber, observed through its `/metrics` ([`ClientStats`]).
//! - [`RssSampler`]:
//!   `process_resident_memory_bytes` of several services sampled on a
//!   background thread.
//! - Raw-TCP probes ([`probe_tcp`], [`HTTP_GET`], [`tls_client_hello`],
//!   [`pseudo_random_bytes`]).
//! - [`keygen`]: CURVE key pairs from `broker keygen`.
//! - [`EventLines`]: per-stream accounting of `client subscribe` output;
//!   [`SummaryFile`]: its totals (`--summary-file`).
//!
//! As in the rest of the crate, every wait has a deadline; the only sleeps
//! pace load or sampling, never synchronise.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use crate::{
    http_get, metric_opt, metrics_text, parse_metric, run_bin, stdout, Proc, Server, Stack,
    GRACE_ARG, START_TIMEOUT,
};

/// Fast ZMTP heartbeats (`--heartbeat-ivl 200ms --heartbeat-timeout 1s`), so
/// a frozen peer is dropped within about a second.
pub const FAST_HEARTBEATS: [&str; 4] = ["--heartbeat-ivl", "200ms", "--heartbeat-timeout", "1s"];

/// [`FAST_HEARTBEATS`]' timeout.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Peers and health
// ---------------------------------------------------------------------------

/// `mensageria_zmq_peers{socket="<socket>"}`.
pub fn peers(addr: SocketAddr, socket: &str) -> f64 {
    metric_opt(
        addr,
        &format!(r#"mensageria_zmq_peers{{socket="{socket}"}}"#),
    )
    .unwrap_or(0.0)
}

/// `mensageria_zmq_socket_events_total{socket,event}` (0 when not exposed yet).
pub fn socket_events(addr: SocketAddr, socket: &str, event: &str) -> f64 {
    metric_opt(
        addr,
        &format!(r#"mensageria_zmq_socket_events_total{{socket="{socket}",event="{event}"}}"#),
    )
    .unwrap_or(0.0)
}

/// Waits until `socket_events` of `socket` and `event` is above `before`;
/// returns it.
pub fn wait_socket_events(addr: SocketAddr, socket: &str, event: &str, before: f64) -> f64 {
    let series =
        format!(r#"mensageria_zmq_socket_events_total{{socket="{socket}",event="{event}"}}"#);
    crate::wait_metric(addr, &series, &format!("> {before}"), |v| v > before)
}

/// `/healthz` of every address answers 200.
///
/// # Panics
/// Naming the first that does not.
pub fn assert_all_healthy(addrs: &[(&str, SocketAddr)]) {
    for (name, addr) in addrs {
        match http_get(*addr, "/healthz") {
            Ok((200, _)) => {}
            other => panic!("{name} /healthz is not 200: {other:?}"),
        }
    }
}

/// `/healthz` of `stack`'s broker, proxy and servers (but `skip_server`)
/// and of `client` answers 200.
///
/// # Panics
/// Naming the first that does not.
pub fn assert_stack_healthy(stack: &Stack, client: &ClientRun, skip_server: Option<usize>) {
    let mut addrs = vec![("broker", stack.broker.http), ("proxy", stack.proxy.http)];
    addrs.push(("client", client.http));
    let servers = stack.servers.iter().enumerate();
    addrs.extend(
        servers
            .filter(|(i, _)| Some(*i) != skip_server)
            .map(|(_, s)| ("server", s.http)),
    );
    assert_all_healthy(&addrs);
}

// ---------------------------------------------------------------------------
// `client run`
// ---------------------------------------------------------------------------

/// A running `client run`: steady requests and a subscription, observed
/// through its metrics.
#[derive(Debug)]
pub struct ClientRun {
    /// The process.
    pub proc: Proc,
    /// Ops HTTP address.
    pub http: SocketAddr,
}

impl ClientRun {
    /// Starts `client run` against `stack` with `extra` flags and `env`, and
    /// waits for its ready record (connected to broker and proxy).
    pub fn ready(stack: &Stack, extra: &[&str], env: &[(&str, &str)]) -> ClientRun {
        let mut args = vec!["run", "--broker-endpoints", stack.frontend()];
        args.extend(["--proxy-endpoints", stack.xpub()]);
        args.extend(["--http-addr", "127.0.0.1:0", "--shutdown-grace", GRACE_ARG]);
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let proc = stack
            .launcher()
            .spawn("client run", "client", &args, env)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let http = proc.ready_record(START_TIMEOUT).http_addr;
        ClientRun { proc, http }
    }

    /// Steady load against `stack`: `client run` at `rate` requests/s,
    /// subscribed to `requests`, with a concurrency cap (2000) far above
    /// anything a fault leaves outstanding, and `extra` flags; waits until
    /// it is ready.
    pub fn steady(stack: &Stack, rate: &str, extra: &[&str]) -> ClientRun {
        let mut args = vec!["--rate", rate, "--concurrency", "2000"];
        args.extend(["--topics", "requests"]);
        args.extend_from_slice(extra);
        ClientRun::ready(stack, &args, &[])
    }

    /// The client's counters now.
    pub fn stats(&self) -> ClientStats {
        ClientStats::parse(&metrics_text(self.http))
    }

    /// Waits until `f` holds for the client's counters; returns them.
    pub fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&ClientStats) -> bool,
    ) -> ClientStats {
        let mut last = None;
        crate::poll_until(timeout, || {
            let s = self.stats();
            let ok = f(&s);
            last = Some(s.clone());
            ok.then_some(s)
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for the client: {what}; last {last:?}\n{}",
                self.proc.diagnostics()
            )
        })
    }
}

/// Counters of a `client run`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStats {
    /// `mensageria_client_requests_total` by status.
    pub requests: BTreeMap<String, f64>,
    /// `mensageria_client_retries_total`.
    pub retries: f64,
    /// `mensageria_client_events_received_total` by topic label.
    pub received: BTreeMap<String, f64>,
    /// `mensageria_client_events_lost_total`.
    pub lost: f64,
}

impl ClientStats {
    /// Reads the counters from exposition text.
    pub fn parse(text: &str) -> ClientStats {
        use testkit::metrics::by_label;
        let counter = |name| parse_metric(text, name).unwrap_or(0.0);
        ClientStats {
            requests: by_label(text, "mensageria_client_requests_total", "status"),
            retries: counter("mensageria_client_retries_total"),
            received: by_label(text, "mensageria_client_events_received_total", "topic"),
            lost: counter("mensageria_client_events_lost_total"),
        }
    }

    /// Requests finished `ok`.
    pub fn ok(&self) -> f64 {
        self.requests.get("ok").copied().unwrap_or(0.0)
    }

    /// Requests finished with any other status.
    pub fn failed(&self) -> f64 {
        self.requests
            .iter()
            .filter(|(k, _)| k.as_str() != "ok")
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests finished with `status`.
    pub fn status(&self, status: &str) -> f64 {
        self.requests.get(status).copied().unwrap_or(0.0)
    }

    /// Events received on topics whose first segment is `topic`.
    pub fn received(&self, topic: &str) -> f64 {
        self.received.get(topic).copied().unwrap_or(0.0)
    }
}

/// `mensageria_server_events_published_total{topic}` summed over servers.
pub fn published(servers: &[Server], topic: &str) -> f64 {
    let series = format!(r#"mensageria_server_events_published_total{{topic="{topic}"}}"#);
    servers
        .iter()
        .map(|s| metric_opt(s.http, &series).unwrap_or(0.0))
        .sum()
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// `process_resident_memory_bytes` of several services, sampled on a
/// background thread every `every` until [`RssSampler::stop`].
#[derive(Debug)]
pub struct RssSampler {
    names: Vec<String>,
    /// Dropping it stops the sampling thread at once.
    stop: mpsc::Sender<()>,
    handle: thread::JoinHandle<Vec<RssSample>>,
}

/// One sampling round.
#[derive(Debug, Clone)]
pub struct RssSample {
    /// Since the sampler started.
    pub at: Duration,
    /// Bytes per service (in [`RssSampler`] order); `None` when the scrape failed.
    pub rss: Vec<Option<f64>>,
}

impl RssSampler {
    /// Starts sampling `targets` (name, ops address) every `every`.
    pub fn start(targets: &[(&str, SocketAddr)], every: Duration) -> RssSampler {
        let names = targets.iter().map(|(n, _)| (*n).to_owned()).collect();
        let addrs: Vec<SocketAddr> = targets.iter().map(|(_, a)| *a).collect();
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                let start = Instant::now();
                let mut samples = Vec::new();
                loop {
                    samples.push(RssSample {
                        at: start.elapsed(),
                        rss: addrs.iter().map(|a| rss(*a)).collect(),
                    });
                    // Pacing: the wait ends early when the sender is dropped.
                    if stopped.recv_timeout(every) != Err(RecvTimeoutError::Timeout) {
                        return samples;
                    }
                }
            })
            .expect("spawn the RSS sampler");
        RssSampler {
            names,
            stop,
            handle,
        }
    }

    /// Stops sampling and returns the series.
    pub fn stop(self) -> RssSeries {
        drop(self.stop);
        let samples = self.handle.join().expect("the RSS sampler panicked");
        RssSeries {
            names: self.names,
            samples,
        }
    }
}

/// `process_resident_memory_bytes` of one service, if it answers.
pub fn rss(addr: SocketAddr) -> Option<f64> {
    testkit::ops::scrape(addr, "process_resident_memory_bytes")
}

/// What an [`RssSampler`] collected.
#[derive(Debug, Clone)]
pub struct RssSeries {
    /// Service names.
    pub names: Vec<String>,
    /// Samples in time order.
    pub samples: Vec<RssSample>,
}

impl RssSeries {
    /// The values of service `i` sampled in `[from, to)`.
    pub fn values(&self, i: usize, from: Duration, to: Duration) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .filter_map(|s| s.rss[i])
            .collect()
    }

    /// Largest value of service `i` over the whole run.
    pub fn max(&self, i: usize) -> f64 {
        self.values(i, Duration::ZERO, Duration::MAX)
            .into_iter()
            .fold(0.0, f64::max)
    }

    /// A one-line summary per service: min/max MiB and sample count.
    pub fn summary(&self) -> String {
        let mib = |v: f64| v / (1024.0 * 1024.0);
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v = self.values(i, Duration::ZERO, Duration::MAX);
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                let max = v.iter().copied().fold(0.0, f64::max);
                format!(
                    "{n}: {:.1}–{:.1} MiB over {} samples",
                    mib(min),
                    mib(max),
                    v.len()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// `tcp://host:port` as a socket address.
pub fn tcp_addr(endpoint: &str) -> SocketAddr {
    endpoint
        .strip_prefix("tcp://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a tcp://ip:port endpoint: {endpoint}"))
}

/// An HTTP/1.1 request, as a confused client would send it.
pub const HTTP_GET: &[u8] =
    b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: e2e\r\nAccept: */*\r\n\r\n";

/// A TLS 1.2/1.3 ClientHello record (SNI `localhost`, a few cipher suites,
/// a zero key share), as a TLS client sends it first on connect.
pub fn tls_client_hello() -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&[0x03, 0x03]); // client_version TLS 1.2
    hello.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11))); // random
    hello.push(32); // session id
    hello.extend((0..32u8).map(|i| i ^ 0x5A));
    let suites: [u16; 5] = [0x1301, 0x1302, 0x1303, 0xC02F, 0xC030];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend_from_slice(&s.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    // server_name: localhost
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    push_ext(&mut ext, 0x0000, &sni);
    // supported_versions: TLS 1.3, 1.2
    push_ext(&mut ext, 0x002B, &[4, 0x03, 0x04, 0x03, 0x03]);
    // supported_groups: x25519
    push_ext(&mut ext, 0x000A, &[0, 2, 0x00, 0x1D]);
    // key_share: x25519, 32 zero bytes
    let mut ks = vec![0, 36, 0x00, 0x1D, 0, 32];
    ks.extend_from_slice(&[0u8; 32]);
    push_ext(&mut ext, 0x0033, &ks);
    // signature_algorithms
    push_ext(&mut ext, 0x000D, &[0, 4, 0x04, 0x03, 0x08, 0x04]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

fn push_ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// `n` reproducible pseudo-random bytes (xorshift64*, seeded).
pub fn pseudo_random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Connects to `addr` over plain TCP, writes `bytes`, reads whatever comes
/// back until the peer closes or `read_for` passes, then closes. Returns the
/// bytes read and whether the peer closed the connection itself.
pub fn probe_tcp(addr: SocketAddr, bytes: &[u8], read_for: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("set write timeout");
    // The peer may close before everything is written; that is a refusal too.
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + read_for;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).expect("set read timeout");
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true, // reset by the peer
        }
    };
    (got, closed)
}

// ---------------------------------------------------------------------------
// CURVE keys
// ---------------------------------------------------------------------------

/// A CURVE key pair in Z85.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Public key (40 characters).
    pub public: String,
    /// Secret key (40 characters).
    pub secret: String,
}

/// A fresh key pair from `broker keygen`.
///
/// # Panics
/// If the command fails or prints no `public=`/`secret=` lines.
pub fn keygen() -> KeyPair {
    let out = run_bin("broker", &["keygen"], &[], Duration::from_secs(10));
    assert!(out.status.success(), "{}", crate::describe(&out));
    let text = stdout(&out);
    let find = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} line in `broker keygen` output:\n{text}"))
            .trim()
            .to_owned()
    };
    let pair = KeyPair {
        public: find("public="),
        secret: find("secret="),
    };
    assert_eq!(
        (pair.public.len(), pair.secret.len()),
        (40, 40),
        "Z85 keys are 40 characters"
    );
    pair
}

// ---------------------------------------------------------------------------
// `client subscribe` output
// ---------------------------------------------------------------------------

/// One `client subscribe` event line with a header:
/// `<topic> publisher=<hex> seq=<n> lag_ms=<ms> <payload>`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    /// Topic.
    pub topic: String,
    /// Publisher id, 16 hex digits.
    pub publisher: String,
    /// Sequence number in the publisher's stream.
    pub seq: u64,
    /// Lag from publication, ms.
    pub lag_ms: f64,
}

impl EventLine {
    /// `None` if `line` is not an event line with a header.
    pub fn parse(line: &str) -> Option<EventLine> {
        let mut parts = line.split(' ');
        let topic = parts.next()?.to_owned();
        let publisher = parts.next()?.strip_prefix("publisher=")?.to_owned();
        let seq = parts.next()?.strip_prefix("seq=")?.parse().ok()?;
        let lag_ms = parts.next()?.strip_prefix("lag_ms=")?.parse().ok()?;
        Some(EventLine {
            topic,
            publisher,
            seq,
            lag_ms,
        })
    }
}

/// Per-stream accounting of `client subscribe` event lines ([`EventLine`]).
#[derive(Debug, Default, Clone)]
pub struct EventLines {
    /// (publisher, topic) → (first seq, last seq, events).
    pub streams: BTreeMap<(String, String), (u64, u64, u64)>,
    /// Lines that are not event lines with a header.
    pub other: u64,
    /// Events whose sequence number was not above the previous one.
    pub out_of_order: u64,
    /// Index (0-based) of the first event line that follows a gap.
    pub first_gap_at: Option<usize>,
    /// Largest `lag_ms` seen.
    pub max_lag_ms: f64,
}

impl EventLines {
    /// Reads `lines`.
    pub fn parse(lines: &[String]) -> EventLines {
        let mut e = EventLines::default();
        for (i, line) in lines.iter().enumerate() {
            let Some(ev) = EventLine::parse(line) else {
                e.other += 1;
                continue;
            };
            e.max_lag_ms = e.max_lag_ms.max(ev.lag_ms);
            let seq = ev.seq;
            let entry = e
                .streams
                .entry((ev.publisher, ev.topic))
                .or_insert((seq, seq, 0));
            if entry.2 > 0 && seq <= entry.1 {
                e.out_of_order += 1;
            }
            if entry.2 > 0 && seq > entry.1 + 1 && e.first_gap_at.is_none() {
                e.first_gap_at = Some(i);
            }
            entry.1 = entry.1.max(seq);
            entry.2 += 1;
        }
        e
    }

    /// Events received.
    pub fn received(&self) -> u64 {
        self.streams.values().map(|s| s.2).sum()
    }

    /// Events missing between each stream's first and last one (what the
    /// subscriber counts as lost).
    pub fn gaps(&self) -> u64 {
        self.streams
            .values()
            .map(|(first, last, n)| (last - first + 1).saturating_sub(*n))
            .sum()
    }
}

/// A `--summary-file` for `client subscribe`, in a temporary directory
/// removed on drop, and the totals read back once the subscriber exited.
#[derive(Debug)]
pub struct SummaryFile {
    path: String,
    _dir: testkit::tempdir::TempDir,
}

impl SummaryFile {
    /// A fresh path (no file yet).
    pub fn new() -> SummaryFile {
        let dir = testkit::tempdir::TempDir::new("summary");
        SummaryFile {
            path: dir
                .path()
                .join("summary.json")
                .to_string_lossy()
                .into_owned(),
            _dir: dir,
        }
    }

    /// Starts `client subscribe <args> --proxy-endpoints <xpub>` with `env`,
    /// writing its totals to this file.
    pub fn subscribe(&self, xpub: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut all = vec!["subscribe"];
        all.extend_from_slice(args);
        all.extend(["--proxy-endpoints", xpub, "--summary-file", &self.path]);
        crate::spawn("client", &all, env)
    }

    /// The totals the exited subscriber wrote.
    ///
    /// # Panics
    /// If there are none.
    pub fn read(&self) -> client::SubscribeSummary {
        client::SubscribeSummary::read(std::path::Path::new(&self.path))
            .unwrap_or_else(|e| panic!("no subscriber totals: {e:#}"))
    }
}

impl Default for SummaryFile {
    fn default() -> Self {
        SummaryFile::new()
    }
}
