//! `harness`: mensageria's benchmark (`make bench`). See `harness --help`.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use mensageria_bench::{
    report::{self, Machine, Report, WorkloadReport},
    scenario::{self, Settings, Workload},
    sink::Sink,
};

const LONG_ABOUT: &str = "\
Benchmarks mensageria's real binaries (broker, proxy, server, client) on loopback against a \
bare-libzmq reference (the `reference` binary: zmq::proxy ROUTER/DEALER with trivial echoing REP \
workers, and zmq::proxy XSUB/XPUB), each role in its own process, with the same load from this \
harness. Every figure is the median of --runs runs.

Workloads (--only takes these ids):
  lockstep1, lockstep8  1 / 8 REQ clients → broker → 2 servers (round trips/s, p50, p99)
  pipelined             4 DEALER clients × 100 outstanding → broker → 2 servers (requests/s, p50, p99)
  fanout                1 PUB → proxy → 4 SUB, 100-byte events paced at --fanout-rate (deliveries/s, loss, lag)
  fanout-max            the same, unpaced (capacity; informational)
  full-cN (or full)     full system with N requests outstanding, for each N of --sweep: client bench → \
broker → 2 servers × 2 workers → reply, one event per request through the proxy to one client \
subscribe; beside it NATS with the same shape (nats-server on loopback, the `nats-bench` client \
with N outstanding on one connection, 2 responders in a queue group publishing one event per \
request, 1 subscriber), skipped with a message when nats-server is not installed
  bare-cN (or bare)     the same shape in bare libzmq, for each N of --sweep (the ceiling libzmq's \
own per-hop cost puts on full-cN): reference broker and proxy, 2 reference workers × 2 REP threads \
that publish one event per request, one DEALER in this harness with N outstanding, one SUB in this \
harness counting; shown in the sweep table beside mensageria and NATS (`full` selects both)
  tracing-unsampled     full at the largest --sweep concurrency, OTLP endpoint set (local sink), \
client sampler always_off
  tracing-sampled       the same, client sampler always_on
  idle                  RSS of every service after start-up
  inflight              broker RSS with --inflight-requests requests in flight (never answered)
  dispatch-lockstep1    lockstep1 through the service-dispatch path: broker → Majordomo workers
                        with credit (harness threads, as many as the REP path's workers)
  dispatch-pipelined    pipelined through the same service-dispatch path

Targets (informational; shown as ratio and ✅/❌): pipelined ≥ 0.90× reference; lockstep p50 ≤ 1.10× \
reference; service-dispatch pipelined ≥ 0.90× the REP path (pipelined, same run) and its lockstep p50 \
≤ 1.10× the reference's (lockstep1, same run); fan-out deliveries/s ≥ 0.90× reference with zero loss \
where the reference has zero; full system ≥ 1.0× NATS at every sweep point, p50 ≤ NATS at 1 \
outstanding, zero errors and events lost where NATS has zero; tracing unsampled costs ≤ 3% and \
carries ≥ 150,000 req/s; idle RSS ≤ 15 MiB per service; broker RSS with 100k in flight ≤ 100 MiB.

Reports CPU seconds (utime+stime from /proc/<pid>/stat) during the measured phase and peak RSS \
(VmHWM) of every process started. Output: a Markdown table on stdout (on stderr when --json writes \
JSON to stdout) and optionally JSON. Progress goes to stderr. Exit status 1 if a workload failed \
outright (a process died, zero throughput, nothing delivered); targets are never asserted.

Needs release binaries: cargo build --release --bins (broker, proxy, server, client, reference, \
nats-bench), and for the NATS rows nats-server (Debian: apt-get install nats-server).";

/// mensageria benchmark harness: the real services against bare libzmq.
#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "mensageria benchmark: the real services against bare libzmq, on loopback (make bench).",
    long_about = LONG_ABOUT
)]
struct Cli {
    /// Runs per workload; figures are medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,
    /// CI mode: every workload briefly (1 s phases, 1 run, 20k in flight,
    /// sweep 16 only); fails only if a workload fails outright. Overrides
    /// --runs/--duration/--sweep.
    #[arg(long)]
    smoke: bool,
    /// Also write JSON: to PATH, or to stdout with no value (Markdown then goes to stderr).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Only these workloads (comma-separated ids, see above).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[command(flatten)]
    settings: Settings,
    /// Keep the processes' logs (default: deleted unless something failed).
    #[arg(long)]
    keep_logs: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(mut cli: Cli) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let machine = Machine::detect();
    let s = &mut cli.settings;
    if cli.smoke {
        cli.runs = 1;
        s.duration = Duration::from_secs(1);
        s.warmup = Duration::from_millis(200);
        s.inflight_requests = s.inflight_requests.min(20_000);
        s.sweep = vec![16];
    }
    s.sweep.sort_unstable();
    s.sweep.dedup();
    let all = Workload::all(&s.sweep);
    let workloads: Vec<Workload> = if cli.only.is_empty() {
        all
    } else {
        let mut v = Vec::new();
        for id in &cli.only {
            let id = id.trim();
            let found: Vec<Workload> = all
                .iter()
                .copied()
                .filter(|w| {
                    w.id() == id
                        || (id == "full" && matches!(w, Workload::Full(_) | Workload::Bare(_)))
                        || (id == "bare" && matches!(w, Workload::Bare(_)))
                })
                .collect();
            if found.is_empty() {
                let ids: Vec<_> = all.iter().map(|w| w.id()).collect();
                anyhow::bail!(
                    "unknown workload {id:?}; known: full, bare, {} (full-cN and bare-cN for N in --sweep)",
                    ids.join(", ")
                );
            }
            v.extend(found);
        }
        v
    };
    s.nats_server = scenario::find_nats_server(s.nats_server.as_deref());
    if s.nats_server.is_none() && workloads.iter().any(|w| matches!(w, Workload::Full(_))) {
        eprintln!("harness: NATS rows skipped: {}", scenario::NATS_MISSING);
    }
    scenario::check_bins(&s.bin_dir)?;
    s.log_dir = std::env::temp_dir().join(format!("mensageria-bench-{}", std::process::id()));
    std::fs::create_dir_all(&s.log_dir)?;
    s.duration = s.duration.max(Duration::from_millis(100));
    s.payload_size = s.payload_size.max(24);
    s.event_size = s.event_size.max(16);
    s.servers = s.servers.max(1);
    s.workers = s.workers.max(1);
    s.full_servers = s.full_servers.max(1);
    s.tracing_concurrency = s.sweep.last().copied().unwrap_or(256);
    s.inflight_requests = s.inflight_requests.max(1);
    // One command line, split into words.
    s.broker_wrapper = s
        .broker_wrapper
        .iter()
        .flat_map(|w| w.split_whitespace())
        .map(str::to_owned)
        .collect();
    let log_dir = s.log_dir.clone();
    let settings = cli.settings;
    let needs_sink = workloads
        .iter()
        .any(|w| matches!(w, Workload::TracingUnsampled | Workload::TracingSampled));
    let sink = needs_sink.then(Sink::start).transpose();
    let sink = sink.context("start the OTLP sink")?;

    let mut reports: Vec<WorkloadReport> = workloads
        .iter()
        .map(|&w| WorkloadReport {
            workload: w,
            title: w.title(),
            runs: Vec::new(),
            median: None,
            errors: Vec::new(),
        })
        .collect();
    let runs = cli.runs as usize;
    for run in 0..runs {
        for wr in reports.iter_mut() {
            let w = wr.workload;
            eprint!("[run {}/{runs}] {:<18} ", run + 1, w.id());
            let t = std::time::Instant::now();
            let sample = scenario::run(&settings, w, run, sink.as_ref());
            match sample.and_then(|s| validate(w, &s).map(|()| s)) {
                Ok(sample) => {
                    eprintln!(
                        "{} ({:.1} s)",
                        headline(w, &sample),
                        t.elapsed().as_secs_f64()
                    );
                    wr.runs.push(sample);
                }
                Err(e) => {
                    eprintln!("FAILED ({:.1} s): {e:#}", t.elapsed().as_secs_f64());
                    wr.errors.push(format!("run {}: {e:#}", run + 1));
                }
            }
        }
    }
    for wr in reports.iter_mut() {
        wr.median = (!wr.runs.is_empty()).then(|| report::median_sample(&wr.runs));
    }
    let report = Report {
        machine,
        settings,
        runs,
        smoke: cli.smoke,
        elapsed_s: started.elapsed().as_secs_f64(),
        rows: report::rows(&reports),
        processes: report::proc_rows(&reports),
        workloads: reports,
    };
    let md = report.markdown();
    let json = serde_json::to_string_pretty(&report)?;
    match cli.json.as_deref() {
        Some("-") => {
            eprintln!("{md}");
            println!("{json}");
        }
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("write {path}"))?;
            println!("{md}");
            eprintln!("JSON written to {path}");
        }
        None => println!("{md}"),
    }
    let ok = report.workloads.iter().all(|w| w.errors.is_empty());
    if ok && !cli.keep_logs {
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        eprintln!("process logs: {}", log_dir.display());
    }
    Ok(ok)
}

/// One line of progress.
fn headline(w: Workload, s: &scenario::Sample) -> String {
    let g = |side: &scenario::Side, k: &str| report::fmt_num(side.value(k));
    let r = s.reference.as_ref();
    let pair = |k: &str, unit: &str| {
        let reference = r.map_or_else(|| "—".into(), |r| g(r, k));
        format!("{} {unit} (ref {reference})", g(&s.ours, k))
    };
    match w {
        Workload::Lockstep1
        | Workload::Lockstep8
        | Workload::Pipelined
        | Workload::DispatchLockstep1
        | Workload::DispatchPipelined => {
            format!("{}, p50 {}", pair("rps", "/s"), pair("p50_us", "µs"))
        }
        Workload::Fanout | Workload::FanoutMax => format!(
            "{}, lost {}",
            pair("deliveries_per_s", "deliveries/s"),
            pair("lost", "")
        ),
        Workload::Full(_)
        | Workload::Bare(_)
        | Workload::TracingUnsampled
        | Workload::TracingSampled => {
            let one = |side: &scenario::Side| {
                format!(
                    "{} req/s, p50 {} µs, events {} received / {} lost",
                    g(side, "rps"),
                    g(side, "p50_us"),
                    g(side, "events_received"),
                    g(side, "events_lost"),
                )
            };
            match r {
                Some(r) => format!("{} (NATS {})", one(&s.ours), one(r)),
                None => one(&s.ours),
            }
        }
        Workload::Idle => format!(
            "RSS MiB broker {} proxy {} server {} client {}",
            g(&s.ours, "broker_rss_mb"),
            g(&s.ours, "proxy_rss_mb"),
            g(&s.ours, "server_rss_mb"),
            g(&s.ours, "client_rss_mb"),
        ),
        Workload::Inflight => format!("broker {}", pair("rss_mb", "MiB RSS")),
    }
}

/// Fails a sample that shows the workload did not work at all.
fn validate(w: Workload, s: &scenario::Sample) -> anyhow::Result<()> {
    let sides = std::iter::once(("mensageria", &s.ours))
        .chain(s.reference.as_ref().map(|r| ("reference", r)));
    for (name, side) in sides {
        let get = |k: &str| side.metrics.get(k).copied().unwrap_or(0.0);
        let zero = match w {
            Workload::Lockstep1
            | Workload::Lockstep8
            | Workload::Pipelined
            | Workload::DispatchLockstep1
            | Workload::DispatchPipelined => get("rps") <= 0.0,
            Workload::Fanout | Workload::FanoutMax => get("delivered") <= 0.0,
            Workload::Full(_)
            | Workload::Bare(_)
            | Workload::TracingUnsampled
            | Workload::TracingSampled => get("ok") <= 0.0 || get("events_received") <= 0.0,
            Workload::Idle => false,
            Workload::Inflight => get("rss_mb") <= 0.0,
        };
        anyhow::ensure!(!zero, "{name}: zero throughput / nothing delivered");
    }
    Ok(())
}
