//! `nats-bench`: the NATS side of the harness's full-system sweep, the same
//! shape as mensageria's full system, with the async-nats client. Each role
//! runs as its own process so its CPU is attributable:
//!
//! - `nats-bench client --url URL --concurrency N (--duration D | --requests N) --json`:
//!   one connection with N requests outstanding on subject `requests`;
//!   prints the same JSON summary as `client bench --json` (its `Summary`).
//! - `nats-bench responder --url URL --id K [--ready-file PATH]`: queue
//!   group `workers` on `requests`; echoes each request and publishes one
//!   event (responder id, sequence number, timestamp, padding) on `events`
//!   per request.
//! - `nats-bench subscriber --url URL [--ready-file PATH] [--summary-file PATH]`:
//!   counts events on `events`, with sequence gaps per responder as losses;
//!   when SIGTERM ends it, prints `received N events, M lost` on stderr and
//!   writes the same totals to the summary file in `client subscribe
//!   --summary-file`'s format ([`client::SubscribeSummary`]).
//!
//! `--ready-file` is created (holding the process id) once the server has
//! the role's subscription: a starter waits for the file, not for a log line.
//!
//! The server is Debian's `nats-server`, started by the harness.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use client::{bench::Summary, SubscribeSummary};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use mensageria_bench::load::{le_u64, Gaps};

/// The request subject.
const REQUESTS: &str = "requests";
/// The event subject.
const EVENTS: &str = "events";
/// Bytes of an event before its padding: responder id, sequence number, publish time (µs).
const EVENT_HEAD: usize = 24;

/// NATS reference roles for the mensageria benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "nats-bench",
    version,
    about = "NATS reference client, responder and subscriber for the mensageria benchmark (one role per process)."
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// nats-server URL, e.g. nats://127.0.0.1:4222.
    #[arg(long, global = true, default_value = "nats://127.0.0.1:4222")]
    url: String,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// One connection, N requests outstanding; JSON summary on stdout.
    Client {
        /// Requests outstanding at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        concurrency: u32,
        /// Send for this many seconds.
        #[arg(long, conflicts_with = "requests")]
        duration: Option<f64>,
        /// Send this many requests.
        #[arg(long)]
        requests: Option<u64>,
        /// Request payload size, bytes.
        #[arg(long, default_value_t = 32)]
        payload_size: usize,
        /// Per-request timeout, seconds.
        #[arg(long, default_value_t = 2.5)]
        timeout: f64,
        /// Print the summary as JSON (the only format; accepted for symmetry with `client bench`).
        #[arg(long)]
        json: bool,
    },
    /// Queue-group responder publishing one event per request.
    Responder {
        /// Responder id (in every event, for per-responder sequence numbers).
        #[arg(long)]
        id: u64,
        /// Event size, bytes (at least 24).
        #[arg(long, default_value_t = 100)]
        event_size: usize,
        /// Created once subscribed.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Counts events and sequence gaps until SIGTERM.
    Subscriber {
        /// Created once subscribed.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
        /// The totals at exit, as one JSON object (`client subscribe --summary-file`).
        #[arg(long, value_name = "PATH")]
        summary_file: Option<PathBuf>,
    },
}

/// Creates the ready file, if asked for, holding the process id.
fn subscribed(ready_file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("write the ready file {}", path.display()))?;
    }
    Ok(())
}

#[derive(Debug)]
struct Tally {
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    sent: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn connect(url: &str, timeout: Duration) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .request_timeout(Some(timeout))
        .connect(url)
        .await
        .with_context(|| format!("connect to {url}"))
}

async fn client(
    url: &str,
    concurrency: u32,
    stop: (Option<Duration>, Option<u64>),
    payload_size: usize,
    timeout: Duration,
) -> anyhow::Result<Summary> {
    let nats = connect(url, timeout).await?;
    let payload = Bytes::from(vec![b'x'; payload_size]);
    let tally = Rc::new(RefCell::new(Tally {
        hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
        errors: BTreeMap::new(),
        sent: 0,
    }));
    let start = Instant::now();
    let (until, limit) = (stop.0.map(|d| start + d), stop.1);
    let local = tokio::task::LocalSet::new();
    for _ in 0..concurrency {
        let (nats, payload, tally) = (nats.clone(), payload.clone(), tally.clone());
        local.spawn_local(async move {
            loop {
                {
                    let mut t = tally.borrow_mut();
                    if until.is_some_and(|u| Instant::now() >= u)
                        || limit.is_some_and(|n| t.sent >= n)
                    {
                        break;
                    }
                    t.sent += 1;
                }
                let t0 = Instant::now();
                let r = nats.request(REQUESTS, payload.clone()).await;
                let us = t0.elapsed().as_micros().max(1) as u64;
                let mut t = tally.borrow_mut();
                t.hist.saturating_record(us);
                if let Err(e) = r {
                    *t.errors.entry(format!("{:?}", e.kind())).or_default() += 1;
                }
            }
        });
    }
    local.await;
    let t = tally.borrow();
    Ok(Summary::new(
        &t.hist,
        t.errors.clone(),
        0,
        concurrency,
        start.elapsed().as_secs_f64(),
    ))
}

async fn responder(
    url: &str,
    id: u64,
    event_size: usize,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let nats = connect(url, Duration::from_secs(10)).await?;
    let mut sub = nats
        .queue_subscribe(REQUESTS, "workers".to_owned())
        .await
        .context("subscribe")?;
    nats.flush().await.context("flush")?;
    subscribed(ready_file)?;
    let mut event = vec![0u8; event_size.max(EVENT_HEAD)];
    event[..8].copy_from_slice(&id.to_le_bytes());
    let mut seq = 0u64;
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            nats.publish(reply, msg.payload).await.context("reply")?;
        }
        seq += 1;
        event[8..16].copy_from_slice(&seq.to_le_bytes());
        event[16..24].copy_from_slice(&now_us().to_le_bytes());
        nats.publish(EVENTS, Bytes::copy_from_slice(&event))
            .await
            .context("publish event")?;
    }
    Ok(())
}

async fn subscriber(url: &str, ready_file: Option<&Path>) -> anyhow::Result<SubscribeSummary> {
    let nats = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .with_context(|| format!("connect to {url}"))?;
    let mut sub = nats.subscribe(EVENTS).await.context("subscribe")?;
    nats.flush().await.context("flush")?;
    subscribed(ready_file)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (mut received, mut lost, mut gaps) = (0u64, 0u64, Gaps::default());
    loop {
        tokio::select! {
            _ = term.recv() => break,
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                received += 1;
                if msg.payload.len() >= EVENT_HEAD {
                    lost += gaps.event(le_u64(&msg.payload, 0), le_u64(&msg.payload, 8));
                }
            }
        }
    }
    Ok(SubscribeSummary { received, lost })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.role {
        Role::Client {
            concurrency,
            duration,
            requests,
            payload_size,
            timeout,
            json: _,
        } => {
            let stop = match (duration, requests) {
                (None, None) => (None, Some(10_000)),
                (d, n) => (d.map(Duration::from_secs_f64), n),
            };
            let s = rt.block_on(client(
                &cli.url,
                concurrency,
                stop,
                payload_size,
                Duration::from_secs_f64(timeout),
            ))?;
            println!("{}", serde_json::to_string(&s)?);
        }
        Role::Responder {
            id,
            event_size,
            ready_file,
        } => rt.block_on(responder(&cli.url, id, event_size, ready_file.as_deref()))?,
        Role::Subscriber {
            ready_file,
            summary_file,
        } => {
            if let Some(path) = &summary_file {
                SubscribeSummary::prepare(path)?;
            }
            let totals = rt.block_on(subscriber(&cli.url, ready_file.as_deref()))?;
            eprintln!("{totals}");
            if let Some(path) = &summary_file {
                totals.write(path)?;
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nats-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
