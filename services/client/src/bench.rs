//! `client bench`: drive requests as fast as the concurrency allows and
//! summarise throughput, latency percentiles and errors.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use mensageria::Status;
use serde::Serialize;

use crate::requester::{Outcome, Requester};

/// What a bench run measured.
#[derive(Debug, Clone, Serialize)]
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
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
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

/// Runs the load and returns the summary. `keep_going` is polled so a
/// signal can cut the run short (outstanding requests are still awaited).
pub fn drive(
    req: &mut Requester,
    payload: &[u8],
    concurrency: u32,
    stop: Stop,
    keep_going: &dyn Fn() -> bool,
) -> Summary {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut done, mut retries) = (0u64, 0u64, 0u32);
    let start = Instant::now();
    let more = |sent: u64| match stop {
        Stop::Count(n) => sent < n,
        Stop::Duration(d) => start.elapsed() < d,
    };
    let mut out: Vec<Outcome> = Vec::with_capacity(concurrency as usize);
    loop {
        while req.has_capacity() && more(sent) && keep_going() {
            req.submit(vec![payload.to_vec()]);
            sent += 1;
        }
        if req.in_flight() == 0 {
            break;
        }
        req.poll(Duration::from_millis(100), &mut out);
        for o in out.drain(..) {
            done += 1;
            retries += o.attempts.saturating_sub(1);
            let _ = hist.record(o.latency.as_micros().max(1) as u64);
            if o.status != Status::Ok {
                *by_status.entry(o.status.as_str().to_owned()).or_default() += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let errors = by_status.values().sum();
    Summary {
        requests: done,
        ok: done - errors,
        errors,
        errors_by_status: by_status,
        retries: u64::from(retries),
        concurrency,
        elapsed_s: elapsed,
        throughput_rps: if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        },
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: hist.max() as f64 / 1000.0,
        },
    }
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
