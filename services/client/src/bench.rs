//! `client bench`: drive requests as fast as the concurrency allows and
//! summarise throughput, latency percentiles, errors, retries and (with
//! `--events`) the events of the requests received and lost. A list of
//! concurrencies runs one point after another (a sweep); a live progress
//! line shows on a terminal.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use mensageria::{socket::SocketFactory, Endpoints, Status};
use serde::{Deserialize, Serialize};

use crate::{
    config::BenchArgs,
    metrics::ClientMetrics,
    requester::{Outcome, Payload, Requester},
    subscriber::Subscriber,
};

/// What a bench run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Requests finished.
    pub requests: u64,
    /// Finished with `ok`.
    pub ok: u64,
    /// Finished with anything else.
    pub errors: u64,
    /// Non-ok outcomes by status.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Retries sent.
    pub retries: u64,
    /// Concurrency used.
    pub concurrency: u32,
    /// Wall time.
    pub elapsed_s: f64,
    /// Requests per second.
    pub throughput_rps: f64,
    /// Latency percentiles, milliseconds.
    pub latency_ms: Latency,
    /// Events of this run's requests, when `--events` subscribed to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventCounts>,
}

/// Events seen by `--events` during one bench run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Events received.
    pub received: u64,
    /// Events missed, from the publishers' sequence gaps.
    pub lost: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// When to stop sending.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many requests.
    Count(u64),
    /// After this long.
    Duration(Duration),
}

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Whether to draw a live progress line: only for a person watching
/// (stdout and stderr both terminals) and not for `--json`.
pub fn progress_wanted(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// Counts one bench run keeps while it goes.
#[derive(Debug)]
struct Tally {
    hist: Histogram<u64>,
    by_status: BTreeMap<String, u64>,
    done: u64,
    retries: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            by_status: BTreeMap::new(),
            done: 0,
            retries: 0,
        }
    }

    fn record(&mut self, o: &Outcome) {
        self.done += 1;
        self.retries += u64::from(o.attempts.saturating_sub(1));
        self.hist
            .saturating_record(o.latency.as_micros().max(1) as u64);
        if o.status != Status::Ok {
            *self
                .by_status
                .entry(o.status.as_str().to_owned())
                .or_default() += 1;
        }
    }

    fn errors(&self) -> u64 {
        self.by_status.values().sum()
    }
}

/// The live progress line (on stderr), redrawn at most every [`PROGRESS_EVERY`].
struct Progress {
    concurrency: u32,
    stop: Stop,
    start: Instant,
    next: Instant,
}

impl Progress {
    fn line(&self, t: &Tally, now: Instant) -> String {
        let secs = now.duration_since(self.start).as_secs_f64();
        let done = match self.stop {
            Stop::Count(n) => format!("{}/{n} requests", t.done),
            Stop::Duration(d) => {
                format!("{:.1}/{:.1} s, {} requests", secs, d.as_secs_f64(), t.done)
            }
        };
        let rate = if secs > 0.0 {
            t.done as f64 / secs
        } else {
            0.0
        };
        format!(
            "concurrency {}: {done}, {rate:.0} req/s, p50 {:.3} ms, {} errors, {} retries",
            self.concurrency,
            t.hist.value_at_quantile(0.5) as f64 / 1000.0,
            t.errors(),
            t.retries
        )
    }

    fn tick(&mut self, t: &Tally) {
        let now = Instant::now();
        if now >= self.next {
            self.next = now + PROGRESS_EVERY;
            eprint!("\r\x1b[K{}", self.line(t, now));
            let _ = std::io::stderr().flush();
        }
    }

    fn clear() {
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
}

/// Runs the load and returns the summary. `keep_going` is polled so a
/// signal can cut the run short (outstanding requests are still awaited).
/// With `progress`, a live line is drawn on stderr (and cleared at the end).
pub fn drive(
    req: &mut Requester,
    payload: &[u8],
    concurrency: u32,
    stop: Stop,
    keep_going: &dyn Fn() -> bool,
    progress: bool,
) -> Summary {
    let mut t = Tally::new();
    let mut sent = 0u64;
    let start = Instant::now();
    let mut progress = progress.then(|| Progress {
        concurrency,
        stop,
        start,
        next: start + PROGRESS_EVERY,
    });
    let more = |sent: u64| match stop {
        Stop::Count(n) => sent < n,
        Stop::Duration(d) => start.elapsed() < d,
    };
    let mut out: Vec<Outcome> = Vec::with_capacity(concurrency as usize);
    // One copy of the frames for every request.
    let payload: Payload = vec![payload.to_vec()].into();
    loop {
        while req.has_capacity() && more(sent) && keep_going() {
            req.submit(payload.clone());
            sent += 1;
        }
        if req.in_flight() == 0 {
            break;
        }
        let wait = if progress.is_some() {
            PROGRESS_EVERY
        } else {
            Duration::from_millis(100)
        };
        req.poll(wait, &mut out);
        for o in out.drain(..) {
            t.record(&o);
        }
        if let Some(p) = progress.as_mut() {
            p.tick(&t);
        }
    }
    if progress.is_some() {
        Progress::clear();
    }
    Summary::new(
        &t.hist,
        t.by_status,
        t.retries,
        concurrency,
        start.elapsed().as_secs_f64(),
    )
}

impl Summary {
    /// A summary from a latency histogram in microseconds (every finished
    /// request), the non-ok outcomes by status, the retries sent and the
    /// wall time.
    pub fn new(
        hist: &Histogram<u64>,
        errors_by_status: BTreeMap<String, u64>,
        retries: u64,
        concurrency: u32,
        elapsed_s: f64,
    ) -> Summary {
        let done = hist.len();
        let errors: u64 = errors_by_status.values().sum();
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            requests: done,
            ok: done.saturating_sub(errors),
            errors,
            errors_by_status,
            retries,
            concurrency,
            elapsed_s,
            throughput_rps: if elapsed_s > 0.0 {
                done as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                max: hist.max() as f64 / 1000.0,
            },
            events: None,
        }
    }
}

/// Runs `client bench`: one [`drive`] per `--concurrency` value, each
/// summary printed when it is done (one JSON line each with `--json`),
/// then a table when there were several.
///
/// # Errors
/// If a socket cannot be set up, or `--events` sees no event at all.
pub fn sweep(
    sockets: &SocketFactory,
    args: &BenchArgs,
    stop: Stop,
    keep_going: &dyn Fn() -> bool,
) -> anyhow::Result<Vec<Summary>> {
    let progress = progress_wanted(args.json);
    let payload = args.payload.as_bytes();
    let events = if args.events {
        Some(EventCounter::start(
            sockets,
            &args.subscribe.proxy_endpoints,
        )?)
    } else {
        None
    };
    let mut all = Vec::new();
    for &c in &args.concurrency {
        if !keep_going() {
            break;
        }
        let cfg = crate::requester_config(&args.requests, c as usize);
        let mut req = Requester::new(sockets.clone(), cfg, ClientMetrics::unregistered())?;
        // Only statuses and latencies are counted.
        req.discard_payloads();
        let before = match &events {
            Some(e) if all.is_empty() => Some(e.first_event(&mut req, payload)?),
            Some(e) => Some(e.counts()),
            None => None,
        };
        let mut s = drive(&mut req, payload, c, stop, keep_going, progress);
        if let (Some(e), Some(before)) = (&events, before) {
            let after = e.settle();
            s.events = Some(EventCounts {
                received: after.received - before.received,
                lost: after.lost - before.lost,
            });
        }
        if args.json {
            println!("{}", serde_json::to_string(&s)?);
        } else {
            if !all.is_empty() {
                println!();
            }
            println!("{s}");
        }
        all.push(s);
    }
    if !args.json && all.len() > 1 {
        println!("\n{}", sweep_table(&all));
    }
    if let Some(e) = events {
        e.stop();
    }
    Ok(all)
}

/// `--events`: a SUB socket on its own thread counting the `requests`
/// events and their sequence gaps while the bench runs.
struct EventCounter {
    received: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl EventCounter {
    fn start(sockets: &SocketFactory, proxies: &Endpoints) -> anyhow::Result<Self> {
        let socket = sockets.socket(zmq::SUB, "sub")?;
        sockets.connect_all(&socket, proxies)?;
        let mut sub = Subscriber::new(
            socket,
            &["requests".to_owned()],
            ClientMetrics::unregistered(),
        )?;
        let (received, lost, done) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, l, d) = (received.clone(), lost.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("bench-events".into())
            .spawn(move || {
                while !d.load(Ordering::Relaxed) {
                    if let Some(ev) = sub.next(Duration::from_millis(50)) {
                        r.fetch_add(1, Ordering::Relaxed);
                        l.fetch_add(ev.gap, Ordering::Relaxed);
                    }
                }
            })
            .context("start the event counter thread")?;
        Ok(EventCounter {
            received,
            lost,
            done,
            thread,
        })
    }

    fn counts(&self) -> EventCounts {
        EventCounts {
            received: self.received.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    /// Sends requests one at a time until one's event arrives, so the
    /// subscription is known to be in place before the measured run;
    /// returns the counts then.
    fn first_event(&self, req: &mut Requester, payload: &[u8]) -> anyhow::Result<EventCounts> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        while Instant::now() < deadline {
            req.submit(vec![payload.to_vec()]);
            while req.in_flight() > 0 {
                req.poll(Duration::from_millis(100), &mut out);
            }
            out.clear();
            let wait = Instant::now() + Duration::from_millis(100);
            while Instant::now() < wait {
                if self.received.load(Ordering::Relaxed) > 0 {
                    return Ok(self.settle());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        anyhow::bail!(
            "--events: no `requests` event arrived within 5 s (is a proxy running at the \
             --proxy-endpoints, and are the servers publishing to it?)"
        )
    }

    /// The counts once no event has arrived for 100 ms (at most 2 s).
    fn settle(&self) -> EventCounts {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = self.counts();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.counts();
            if now == last || Instant::now() >= deadline {
                return now;
            }
            last = now;
        }
    }

    fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Parses `--concurrency`: one number or a comma-separated list, each
/// 1..=100000 (a list runs one bench after another).
///
/// # Errors
/// Naming the first bad value.
pub fn parse_concurrency(s: &str) -> Result<Vec<u32>, String> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let n: u32 = part
            .parse()
            .map_err(|_| format!("{part:?} is not a number (expected e.g. 16 or 1,16,64,256)"))?;
        if !(1..=100_000).contains(&n) {
            return Err(format!("{n} is not in 1..=100000"));
        }
        v.push(n);
    }
    Ok(v)
}

/// A sweep's results as a table, one row per concurrency.
pub fn sweep_table(points: &[Summary]) -> String {
    let mut o = String::from(
        "concurrency      req/s    p50 ms    p99 ms    max ms   errors  retries  events lost\n",
    );
    for s in points {
        let lost = s
            .events
            .map_or_else(|| "—".to_owned(), |e| e.lost.to_string());
        let _ = writeln!(
            o,
            "{:>11} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>8} {:>12}",
            s.concurrency,
            s.throughput_rps,
            s.latency_ms.p50,
            s.latency_ms.p99,
            s.latency_ms.max,
            s.errors,
            s.retries,
            lost
        );
    }
    o
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "requests:    {} ({} ok, {} errors, {} retries)",
            self.requests, self.ok, self.errors, self.retries
        )?;
        for (status, n) in &self.errors_by_status {
            writeln!(f, "  {status}: {n}")?;
        }
        if let Some(e) = self.events {
            writeln!(f, "events:      {} received, {} lost", e.received, e.lost)?;
        }
        writeln!(f, "concurrency: {}", self.concurrency)?;
        writeln!(f, "elapsed:     {:.3} s", self.elapsed_s)?;
        writeln!(f, "throughput:  {:.0} req/s", self.throughput_rps)?;
        write!(
            f,
            "latency:     p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            self.latency_ms.p50, self.latency_ms.p90, self.latency_ms.p99, self.latency_ms.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_takes_one_value_or_a_list() {
        assert_eq!(parse_concurrency("16"), Ok(vec![16]));
        assert_eq!(parse_concurrency("1,16, 64,256"), Ok(vec![1, 16, 64, 256]));
        assert!(parse_concurrency("0").unwrap_err().contains("1..=100000"));
        assert!(parse_concurrency("100001").is_err());
        assert!(parse_concurrency("1,,2")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_concurrency("x").unwrap_err().contains("\"x\""));
    }

    fn summary(c: u32, lost: Option<u64>) -> Summary {
        Summary {
            requests: 10,
            ok: 9,
            errors: 1,
            errors_by_status: BTreeMap::from([("timeout".to_owned(), 1)]),
            retries: 2,
            concurrency: c,
            elapsed_s: 1.0,
            throughput_rps: 10.0,
            latency_ms: Latency {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                max: 4.0,
            },
            events: lost.map(|lost| EventCounts {
                received: 9 - lost,
                lost,
            }),
        }
    }

    #[test]
    fn summaries_show_errors_retries_and_events() {
        let text = summary(16, Some(2)).to_string();
        assert!(text.contains("(9 ok, 1 errors, 2 retries)"), "{text}");
        assert!(text.contains("timeout: 1"), "{text}");
        assert!(text.contains("events:      7 received, 2 lost"), "{text}");
        assert!(!summary(16, None).to_string().contains("events:"));
        let table = sweep_table(&[summary(1, None), summary(256, Some(0))]);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(
            rows[1].trim_start().starts_with("1 ") && rows[1].ends_with('—'),
            "{table}"
        );
        assert!(
            rows[2].trim_start().starts_with("256 ") && rows[2].ends_with(" 0"),
            "{table}"
        );
    }

    #[test]
    fn the_progress_line_counts_what_is_done() {
        let start = Instant::now();
        let mut t = Tally::new();
        for (status, attempts) in [(Status::Ok, 1), (Status::Timeout, 3)] {
            t.record(&Outcome {
                id: 1,
                status,
                frames: Vec::new(),
                latency: Duration::from_millis(2),
                attempts,
            });
        }
        let p = Progress {
            concurrency: 64,
            stop: Stop::Count(10),
            start,
            next: start,
        };
        let line = p.line(&t, start + Duration::from_secs(1));
        assert!(
            line.starts_with("concurrency 64: 2/10 requests, 2 req/s"),
            "{line}"
        );
        assert!(line.ends_with("1 errors, 2 retries"), "{line}");
    }
}
