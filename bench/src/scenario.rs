//! The workloads: each starts the processes it needs (mensageria's real
//! binaries, or the `reference` binary's roles), puts load through them from
//! the harness, reads CPU and memory from `/proc`, and stops everything.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use client::SubscribeSummary;
use serde::Serialize;

#[path = "bare.rs"]
mod bare;
#[path = "dispatch.rs"]
mod dispatch;

use crate::{
    load::{self, RpcResult, Window},
    procs::{self, free_port, stop_all, tcp, wait_listening, Proc, Usage},
    sink::Sink,
};
use testkit::{
    ops,
    signal::Signal,
    stack::{wait_attached, Baseline, Launcher, Stack, REP_ARGS},
};

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 1 REQ client, lockstep.
    Lockstep1,
    /// 8 REQ clients, lockstep.
    Lockstep8,
    /// 4 DEALER clients × 100 outstanding.
    Pipelined,
    /// 1 PUB → proxy → 4 SUB, paced.
    Fanout,
    /// Same, unpaced (capacity).
    FanoutMax,
    /// client bench with this many requests outstanding → broker → servers →
    /// proxy → one subscriber, no tracing; NATS with the same shape beside it.
    Full(u32),
    /// The same shape in bare libzmq (`zmq::proxy` broker and proxy, REP
    /// workers that publish, load and subscriber in the harness): the
    /// ceiling libzmq puts on `Full` at this concurrency.
    Bare(u32),
    /// Full system, OTLP endpoint set, client sampler always_off.
    TracingUnsampled,
    /// Full system, OTLP endpoint set, client sampler always_on.
    TracingSampled,
    /// RSS of each service idle after start-up.
    Idle,
    /// Broker RSS with 100k requests in flight.
    Inflight,
    /// 1 REQ client, lockstep, through Majordomo workers with credit.
    DispatchLockstep1,
    /// 4 DEALER clients × 100 outstanding, through Majordomo workers with credit.
    DispatchPipelined,
}

/// Why the NATS rows are missing, with the command that brings them.
pub const NATS_MISSING: &str = "nats-server not found (on PATH, in /usr/sbin or --nats-server); \
     install it with `sudo apt-get install -y nats-server` (Debian/Ubuntu) to get the NATS reference";

/// Finds `nats-server`: `explicit`, else on `PATH`, else Debian's `/usr/sbin`.
pub fn find_nats_server(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// The full-system sweep's default concurrencies (requests outstanding).
pub const SWEEP: [u32; 4] = [1, 16, 64, 256];

impl Workload {
    /// Every workload, in run order, with one full-system run per
    /// concurrency of `sweep`.
    pub fn all(sweep: &[u32]) -> Vec<Workload> {
        let mut v = vec![
            Workload::Lockstep1,
            Workload::Lockstep8,
            Workload::Pipelined,
            Workload::Fanout,
            Workload::FanoutMax,
        ];
        v.extend(
            sweep
                .iter()
                .flat_map(|&c| [Workload::Full(c), Workload::Bare(c)]),
        );
        v.extend([
            Workload::TracingUnsampled,
            Workload::TracingSampled,
            Workload::Idle,
            Workload::Inflight,
            Workload::DispatchLockstep1,
            Workload::DispatchPipelined,
        ]);
        v
    }

    /// Short id (as in `--only`); `full-cN` for the sweep.
    pub fn id(self) -> String {
        match self {
            Workload::Lockstep1 => "lockstep1".into(),
            Workload::Lockstep8 => "lockstep8".into(),
            Workload::Pipelined => "pipelined".into(),
            Workload::Fanout => "fanout".into(),
            Workload::FanoutMax => "fanout-max".into(),
            Workload::Full(c) => format!("full-c{c}"),
            Workload::Bare(c) => format!("bare-c{c}"),
            Workload::TracingUnsampled => "tracing-unsampled".into(),
            Workload::TracingSampled => "tracing-sampled".into(),
            Workload::Idle => "idle".into(),
            Workload::Inflight => "inflight".into(),
            Workload::DispatchLockstep1 => "dispatch-lockstep1".into(),
            Workload::DispatchPipelined => "dispatch-pipelined".into(),
        }
    }

    /// Human title.
    pub fn title(self) -> String {
        match self {
            Workload::Lockstep1 => "lockstep, 1 REQ client".into(),
            Workload::Lockstep8 => "lockstep, 8 REQ clients".into(),
            Workload::Pipelined => "pipelined, 4 DEALER × 100 outstanding".into(),
            Workload::Fanout => "fan-out, 1 PUB → 4 SUB, paced".into(),
            Workload::FanoutMax => "fan-out, 1 PUB → 4 SUB, unpaced".into(),
            Workload::Full(c) => format!("full system, {c} outstanding (ref: NATS)"),
            Workload::Bare(c) => format!("full-system shape in bare libzmq, {c} outstanding"),
            Workload::TracingUnsampled => "full system, tracing on, unsampled".into(),
            Workload::TracingSampled => "full system, tracing on, 100% sampled".into(),
            Workload::Idle => "idle RSS after start-up".into(),
            Workload::Inflight => "broker with 100k requests in flight".into(),
            Workload::DispatchLockstep1 => "service dispatch, lockstep, 1 REQ client".into(),
            Workload::DispatchPipelined => "service dispatch, pipelined, 4 DEALER × 100".into(),
        }
    }

    /// Whether this is a full-system workload (client bench → … → subscriber).
    pub fn is_full(self) -> bool {
        matches!(
            self,
            Workload::Full(_) | Workload::TracingUnsampled | Workload::TracingSampled
        )
    }
}

/// Harness settings the workloads read.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Directory with broker, proxy, server, client and reference.
    pub bin_dir: PathBuf,
    /// Where process logs go.
    pub log_dir: PathBuf,
    /// Measured time per phase.
    pub duration: Duration,
    /// Unmeasured warm-up before each request/reply phase.
    pub warmup: Duration,
    /// Request payload size, bytes.
    pub payload_size: usize,
    /// Paced fan-out rate, events/s.
    pub fanout_rate: f64,
    /// Event payload size, bytes.
    pub event_size: usize,
    /// Server processes in the request/reply workloads.
    pub servers: usize,
    /// Worker threads per server (and per reference worker).
    pub workers: usize,
    /// Server processes (and NATS responders) in the full-system workloads.
    pub full_servers: usize,
    /// Requests outstanding in the full-system sweep, one workload each.
    pub sweep: Vec<u32>,
    /// Requests outstanding in the tracing workloads (compared with the
    /// sweep point of the same concurrency).
    pub tracing_concurrency: u32,
    /// `nats-server`, when installed: the NATS side of the sweep.
    pub nats_server: Option<PathBuf>,
    /// `client bench --requests N` instead of `--duration` when set.
    pub full_requests: Option<u64>,
    /// Requests put in flight in the `inflight` workload.
    pub inflight_requests: u64,
    /// Command prefix for the broker (e.g. `valgrind --tool=callgrind`); empty: none.
    pub broker_wrapper: Vec<String>,
}

impl Settings {
    /// How mensageria's services are started in this run: the release
    /// binaries of `bin_dir`, warnings-only logs in `log_dir`, the broker
    /// under `broker_wrapper` (with a longer time to start and stop), and
    /// the caller's environment (which a profiler may need).
    fn launcher(&self) -> Launcher {
        Launcher {
            bin_dir: self.bin_dir.clone(),
            env: vec![("RUST_LOG".into(), "warn".into())],
            clean_env: false,
            log_dir: Some(self.log_dir.clone()),
            shutdown_grace: "1s".into(),
            stop_grace: procs::STOP_GRACE,
            ready_timeout: READY,
            broker_wrapper: self.broker_wrapper.clone(),
            wrapped_broker_time: Duration::from_secs(120),
        }
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn spawn(&self, label: &str, bin: &str, args: &[String]) -> anyhow::Result<Proc> {
        self.spawn_env(label, bin, args, &[])
    }

    fn spawn_env(
        &self,
        label: &str,
        bin: &str,
        args: &[String],
        envs: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        procs::spawn(label, self.bin(bin), args, envs, &self.log_dir)
    }
}

/// What one side (mensageria or reference) measured in one run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Side {
    /// Named figures (see the report for units).
    pub metrics: BTreeMap<String, f64>,
    /// CPU and peak RSS of every process involved.
    pub procs: Vec<Usage>,
}

impl Side {
    fn set(&mut self, k: &str, v: f64) {
        self.metrics.insert(k.to_owned(), v);
    }

    fn rpc(r: &RpcResult, secs: f64) -> Side {
        let mut s = Side::default();
        s.set("rps", r.rps);
        s.set("p50_us", r.p50_us);
        s.set("p99_us", r.p99_us);
        s.set("max_us", r.max_us);
        s.set("ok", r.ok as f64);
        s.set("errors", r.errors as f64);
        s.set("ops", r.rps * secs);
        s
    }
}

/// One run of one workload.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Sample {
    /// mensageria.
    pub ours: Side,
    /// The bare-libzmq reference, where there is one.
    pub reference: Option<Side>,
}

fn dur_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

const READY: Duration = Duration::from_secs(10);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `(key, value)` pairs as the launcher takes them.
fn env_refs(envs: &[(String, String)]) -> Vec<(&str, &str)> {
    envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A started request/reply path.
struct RpcStack {
    procs: Vec<Proc>,
    frontend: String,
}

/// The credit (prefetch) each full-system server announces. The server's
/// default is its `WORKERS` (it never queues a request it cannot start at
/// once, so a slow request delays nothing); a throughput deployment raises it
/// so enough requests are on the wire to hide the broker ↔ server round trip,
/// as NATS's queue-group responders (unbounded prefetch) do. 128 per server
/// covers the sweep's 256 outstanding over 2 servers without a broker queue.
const FULL_CREDIT: &str = "128";

/// Broker, proxy and `servers` Majordomo servers (credit [`FULL_CREDIT`])
/// with `envs`, ready (the test kit's one definition).
fn full_stack(s: &Settings, servers: usize, envs: &[(String, String)]) -> anyhow::Result<Stack> {
    let workers = s.workers.to_string();
    Stack::builder()
        .launcher(s.launcher())
        .servers(servers)
        .server_args(&["--credit", FULL_CREDIT, "--workers", &workers])
        .env(&env_refs(envs))
        .try_start()
}

/// The broker and `s.servers` plain REP servers on its backend, without a
/// proxy: the servers' PUB has nothing to connect to, so their events are
/// built and dropped (ZMQ_IMMEDIATE).
fn ours_rpc(s: &Settings) -> anyhow::Result<RpcStack> {
    let launcher = s.launcher();
    let broker = launcher.broker(&[], &[])?;
    let nowhere = tcp(free_port()?);
    let before = Baseline::take(&broker, None);
    let mut args = REP_ARGS.to_vec();
    let workers = s.workers.to_string();
    args.extend(["--workers", &workers]);
    let servers = launcher.servers((s.servers, 1), (&broker.backend, &nowhere), &args, &[])?;
    wait_attached(
        &broker,
        None,
        &servers.iter().collect::<Vec<_>>(),
        before,
        READY,
    )?;
    let frontend = broker.frontend.clone();
    let mut procs = vec![broker.proc];
    procs.extend(servers.into_iter().map(|s| s.proc));
    Ok(RpcStack { procs, frontend })
}

/// A `reference broker` on two free ports, listening: (process, frontend, backend).
fn ref_broker(s: &Settings) -> anyhow::Result<(Proc, String, String)> {
    let (f, b) = (free_port()?, free_port()?);
    let mut broker = s.spawn(
        "ref-broker",
        "reference",
        &args(&["broker", "--frontend", &tcp(f), "--backend", &tcp(b)]),
    )?;
    wait_listening(&mut broker, f, READY)?;
    wait_listening(&mut broker, b, READY)?;
    Ok((broker, tcp(f), tcp(b)))
}

/// A `reference proxy` on two free ports, listening: (process, xsub, xpub).
fn ref_proxy(s: &Settings) -> anyhow::Result<(Proc, String, String)> {
    let (x, p) = (free_port()?, free_port()?);
    let mut proxy = s.spawn(
        "ref-proxy",
        "reference",
        &args(&["proxy", "--xsub", &tcp(x), "--xpub", &tcp(p)]),
    )?;
    wait_listening(&mut proxy, x, READY)?;
    wait_listening(&mut proxy, p, READY)?;
    Ok((proxy, tcp(x), tcp(p)))
}

/// `n` `reference worker` processes of `s.workers` REP threads each,
/// connected to `backend`; with `publish`, each also publishes one event of
/// `s.event_size` bytes per request to that XSUB endpoint.
fn ref_workers(
    s: &Settings,
    n: usize,
    backend: &str,
    publish: Option<&str>,
) -> anyhow::Result<Vec<Proc>> {
    let (threads, event_size) = (s.workers.to_string(), s.event_size.to_string());
    let mut a = vec!["worker", "--connect", backend, "--threads", &threads];
    if let Some(xsub) = publish {
        a.extend(["--publish", xsub, "--event-size", &event_size]);
    }
    (0..n)
        .map(|i| s.spawn(&format!("ref-worker#{}", i + 1), "reference", &args(&a)))
        .collect()
}

fn ref_rpc(s: &Settings) -> anyhow::Result<RpcStack> {
    let (broker, frontend, backend) = ref_broker(s)?;
    let mut procs = vec![broker];
    procs.extend(ref_workers(s, s.servers, &backend, None)?);
    Ok(RpcStack { procs, frontend })
}

/// Runs `load` once as warm-up, then measured, with CPU accounted to the
/// measured part only.
fn measure_rpc(
    s: &Settings,
    stack: &mut RpcStack,
    load: &dyn Fn(&str, Window) -> anyhow::Result<RpcResult>,
) -> anyhow::Result<Side> {
    load(&stack.frontend, Window::new(Duration::ZERO, s.warmup)).context("warm-up")?;
    for p in &mut stack.procs {
        p.ensure_alive()?;
        p.mark();
    }
    let phase = Phase::start();
    let window = Window::new(Duration::ZERO, s.duration);
    let r = load(&stack.frontend, window)?;
    let mut side = Side::rpc(&r, window.secs());
    for p in &mut stack.procs {
        p.ensure_alive()?;
        side.procs.push(p.usage());
    }
    phase.finish(&mut side.procs);
    stop_all(&mut stack.procs);
    Ok(side)
}

/// CPU accounting of a measured phase beyond the started processes: the
/// harness itself, and everything else on the machine (other users' builds
/// show up here and make the numbers unreliable).
struct Phase {
    self0: f64,
    busy0: (f64, f64),
}

/// Label of the machine's CPU not used by any process of the harness.
pub const OTHER: &str = "other (not ours)";

impl Phase {
    fn start() -> Phase {
        Phase {
            self0: procs::self_cpu_seconds(),
            busy0: procs::machine_busy_seconds(),
        }
    }

    /// Appends the harness's and the rest of the machine's CPU to `procs`.
    fn finish(&self, procs: &mut Vec<Usage>) {
        let harness = Usage {
            name: "harness (load)".into(),
            cpu_s: procs::self_cpu_seconds() - self.self0,
            peak_rss_mb: procs::memory_mb(std::process::id()).map_or(0.0, |(_, h)| h),
        };
        procs.push(harness);
        let ours: f64 = procs.iter().map(|u| u.cpu_s).sum();
        let (busy, steal) = procs::machine_busy_seconds();
        procs.push(Usage {
            name: OTHER.into(),
            cpu_s: (busy - self.busy0.0 - ours).max(0.0),
            peak_rss_mb: f64::NAN,
        });
        if steal - self.busy0.1 >= 0.05 {
            procs.push(Usage {
                name: "steal (hypervisor)".into(),
                cpu_s: steal - self.busy0.1,
                peak_rss_mb: f64::NAN,
            });
        }
    }
}

/// Runs both sides of a request/reply workload (`reference_first` alternates the order).
fn rpc_pair(
    s: &Settings,
    reference_first: bool,
    load: &dyn Fn(&str, Window) -> anyhow::Result<RpcResult>,
) -> anyhow::Result<Sample> {
    let ours = |s: &Settings| -> anyhow::Result<Side> { measure_rpc(s, &mut ours_rpc(s)?, load) };
    let refr = |s: &Settings| -> anyhow::Result<Side> { measure_rpc(s, &mut ref_rpc(s)?, load) };
    let (ours, reference) = if reference_first {
        let r = refr(s).context("reference")?;
        (ours(s).context("mensageria")?, r)
    } else {
        let o = ours(s).context("mensageria")?;
        (o, refr(s).context("reference")?)
    };
    Ok(Sample {
        ours,
        reference: Some(reference),
    })
}

fn fanout_side(
    s: &Settings,
    procs: &mut [Proc],
    xsub: &str,
    xpub: &str,
    rate: f64,
) -> anyhow::Result<Side> {
    for p in procs.iter_mut() {
        p.ensure_alive()?;
        p.mark();
    }
    let phase = Phase::start();
    let r = load::fanout(xsub, xpub, 4, rate, s.duration, s.event_size)?;
    let mut side = Side::default();
    side.set("deliveries_per_s", r.deliveries_per_s);
    side.set("published", r.published as f64);
    side.set("publish_rate", r.publish_rate);
    side.set("delivered", r.delivered as f64);
    side.set("lost", r.lost as f64);
    side.set(
        "loss_pct",
        100.0 * r.lost as f64 / (r.published as f64 * 4.0).max(1.0),
    );
    side.set("lag_p50_us", r.lag_p50_us);
    side.set("lag_p99_us", r.lag_p99_us);
    side.set("ops", r.delivered as f64);
    for p in procs.iter_mut() {
        p.ensure_alive()?;
        side.procs.push(p.usage());
    }
    phase.finish(&mut side.procs);
    stop_all(procs);
    Ok(side)
}

fn fanout_pair(s: &Settings, rate: f64, reference_first: bool) -> anyhow::Result<Sample> {
    let ours = |s: &Settings| -> anyhow::Result<Side> {
        let p = s.launcher().proxy(&[], &[])?;
        let (xsub, xpub) = (p.xsub, p.xpub);
        fanout_side(s, &mut [p.proc], &xsub, &xpub, rate)
    };
    let refr = |s: &Settings| -> anyhow::Result<Side> {
        let (pr, xsub, xpub) = ref_proxy(s)?;
        fanout_side(s, &mut [pr], &xsub, &xpub, rate)
    };
    let (ours, reference) = if reference_first {
        let r = refr(s).context("reference")?;
        (ours(s).context("mensageria")?, r)
    } else {
        let o = ours(s).context("mensageria")?;
        (o, refr(s).context("reference")?)
    };
    Ok(Sample {
        ours,
        reference: Some(reference),
    })
}

/// Trace export settings of a full-system run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracing {
    /// No endpoint: tracing compiled in, export off.
    Off,
    /// Endpoint set; the client samples nothing.
    Unsampled,
    /// Endpoint set; the client samples everything.
    Sampled,
}

fn parse_summary(line: &str) -> Option<serde_json::Value> {
    line.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
}

/// A fresh path in the log directory for a file a process writes for the
/// harness (`--ready-file`, `--summary-file`).
fn handoff_file(s: &Settings, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = s.log_dir.join(format!(
        "{what}-{}.json",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// A subscriber whose totals are read from its `--summary-file` once it is
/// stopped (`client subscribe` and `nats-bench subscriber` write the same
/// [`SubscribeSummary`]).
struct Subscriber {
    proc: Proc,
    summary_file: PathBuf,
}

impl Subscriber {
    /// Stops it and reads its totals.
    fn stop(mut self) -> anyhow::Result<SubscribeSummary> {
        self.proc.stop();
        SubscribeSummary::read(&self.summary_file).with_context(|| {
            format!(
                "no totals from {}\n{}",
                self.proc.name(),
                self.proc.diagnostics()
            )
        })
    }
}

/// Runs a load generator to completion, unmeasured (connections, allocator, page cache).
fn warm_up(
    s: &Settings,
    (label, bin): (&str, &str),
    load_args: &[String],
    envs: &[(String, String)],
) -> anyhow::Result<()> {
    let mut warm = s.spawn_env(label, bin, load_args, envs)?;
    let (st, _) = warm.wait_with_usage(Duration::from_secs(60))?;
    if !st.success() {
        bail!("{label} failed ({st}):\n{}", warm.diagnostics());
    }
    Ok(())
}

/// Requests in the unmeasured warm-up of a full-system run.
fn warmup_requests(s: &Settings) -> u64 {
    ((s.warmup.as_secs_f64() * 20_000.0) as u64).max(1000)
}

/// The measured part of a full-system run, the same for both systems: with
/// `procs` (servers or responders) and `sub` (the subscriber, already
/// subscribed) running, starts the load generator `bin load_args…` (which
/// prints a `client bench --json` summary), waits for it, lets the last
/// events arrive, stops the subscriber and reads its totals.
fn measure_full(
    s: &Settings,
    procs: &mut [Proc],
    mut sub: Subscriber,
    (label, bin, load_args, envs): (&str, &str, Vec<String>, &[(String, String)]),
) -> anyhow::Result<Side> {
    for p in procs.iter_mut().chain(std::iter::once(&mut sub.proc)) {
        p.ensure_alive()?;
        p.mark();
    }
    let phase = Phase::start();
    let mut load = s.spawn_env(label, bin, &load_args, envs)?;
    let (status, load_usage) = load.wait_with_usage(s.duration + Duration::from_secs(120))?;
    let out = load.stdout_lines().join("\n");
    if !status.success() {
        bail!("{label} failed ({status}):\n{}", load.diagnostics());
    }
    let summary = parse_summary(&out)
        .with_context(|| format!("no JSON summary from {label}; stdout: {out:?}"))?;
    let mut side = Side::default();
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let ok = f(&summary["ok"]);
    side.set("rps", f(&summary["throughput_rps"]));
    side.set("requests", f(&summary["requests"]));
    side.set("ok", ok);
    side.set("errors", f(&summary["errors"]));
    side.set("retries", f(&summary["retries"]));
    side.set("ops", f(&summary["requests"]));
    for q in ["p50", "p90", "p99", "max"] {
        side.set(&format!("{q}_us"), 1000.0 * f(&summary["latency_ms"][q]));
    }
    // Let the last events arrive, then stop the subscriber for its totals.
    std::thread::sleep(Duration::from_millis(300));
    for p in procs.iter_mut() {
        p.ensure_alive()?;
        side.procs.push(p.usage());
    }
    side.procs.push(sub.proc.usage());
    side.procs.push(load_usage);
    phase.finish(&mut side.procs);
    let totals = sub.stop()?;
    let received = totals.received as f64;
    side.set("events_received", received);
    side.set("events_lost", totals.lost as f64);
    side.set("events_missing", (ok - received).max(0.0));
    stop_all(procs);
    Ok(side)
}

/// mensageria's full system: broker, proxy, `full_servers` servers, one
/// `client subscribe`, and `client bench --concurrency c`.
fn full_ours(
    s: &Settings,
    concurrency: u32,
    tracing: Tracing,
    sink: Option<&Sink>,
) -> anyhow::Result<Side> {
    let mut envs: Vec<(String, String)> = Vec::new();
    if tracing != Tracing::Off {
        let sink = sink.context("tracing workloads need the OTLP sink")?;
        envs.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), sink.url()));
    }
    let mut client_envs = envs.clone();
    match tracing {
        Tracing::Off => {}
        Tracing::Unsampled => client_envs.push(("OTEL_TRACES_SAMPLER".into(), "always_off".into())),
        Tracing::Sampled => client_envs.push(("OTEL_TRACES_SAMPLER".into(), "always_on".into())),
    }
    let sink_before = sink.map(Sink::counts).unwrap_or_default();
    let stack = full_stack(s, s.full_servers, &envs)?;
    let (frontend, xpub, proxy_http) = (
        stack.frontend().to_owned(),
        stack.xpub().to_owned(),
        stack.proxy.http,
    );
    let mut procs = stack.into_procs();
    let c = concurrency.to_string();

    // Warm-up: connections, allocator, page cache.
    warm_up(
        s,
        ("client bench (warm-up)", "client"),
        &args(&[
            "bench",
            "--broker-endpoints",
            &frontend,
            "--requests",
            &warmup_requests(s).to_string(),
            "--concurrency",
            &c,
            "--json",
        ]),
        &client_envs,
    )?;

    let summary_file = handoff_file(s, "client-subscribe-summary");
    let sub = s.spawn_env(
        "client subscribe",
        "client",
        // Counting only, as the NATS subscriber does.
        &args(&[
            "subscribe",
            "requests",
            "--quiet",
            "--proxy-endpoints",
            &xpub,
            "--summary-file",
            &summary_file.to_string_lossy(),
        ]),
        &envs,
    )?;
    let mut sub = Subscriber {
        proc: sub,
        summary_file,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while ops::scrape(proxy_http, "mensageria_proxy_subscriptions").unwrap_or(0.0) < 1.0 {
        sub.proc.ensure_alive()?;
        if Instant::now() >= deadline {
            bail!("the subscriber's subscription did not reach the proxy in 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut bench_args = args(&[
        "bench",
        "--broker-endpoints",
        &frontend,
        "--concurrency",
        &c,
        "--json",
    ]);
    match s.full_requests {
        Some(n) => bench_args.extend(args(&["--requests", &n.to_string()])),
        None => bench_args.extend(args(&["--duration", &dur_arg(s.duration)])),
    }
    let mut side = measure_full(
        s,
        &mut procs,
        sub,
        ("client bench", "client", bench_args, &client_envs),
    )?;
    side.set("concurrency", f64::from(concurrency));
    if let Some(sink) = sink {
        let (r, b) = sink.counts();
        side.set("otlp_posts", (r - sink_before.0) as f64);
        side.set("otlp_bytes", (b - sink_before.1) as f64);
    }
    Ok(side)
}

/// Waits until `p` has created its `--ready-file` `path` (a `nats-bench`
/// role, once subscribed).
fn wait_ready_file(p: &mut Proc, path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        p.ensure_alive()?;
        if Instant::now() >= deadline {
            bail!(
                "{} did not create its ready file {} within {timeout:?}",
                p.name(),
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// NATS with the same shape: `nats-server` on loopback, `full_servers`
/// responders in a queue group (one event each per request), one
/// subscriber, one client connection with `concurrency` outstanding.
fn full_nats(s: &Settings, concurrency: u32, server: &Path) -> anyhow::Result<Side> {
    let port = free_port()?;
    let mut nats = procs::spawn(
        "nats-server",
        server,
        &args(&["-a", "127.0.0.1", "-p", &port.to_string()]),
        &[],
        &s.log_dir,
    )?;
    wait_listening(&mut nats, port, READY)?;
    let url = format!("nats://127.0.0.1:{port}");
    let mut procs = vec![nats];
    for i in 0..s.full_servers {
        let ready = handoff_file(s, "nats-responder-ready");
        let mut r = s.spawn(
            &format!("nats responder#{}", i + 1),
            "nats-bench",
            &args(&[
                "responder",
                "--url",
                &url,
                "--id",
                &(i + 1).to_string(),
                "--event-size",
                &s.event_size.to_string(),
                "--ready-file",
                &ready.to_string_lossy(),
            ]),
        )?;
        wait_ready_file(&mut r, &ready, READY)?;
        procs.push(r);
    }
    let (c, size) = (concurrency.to_string(), s.payload_size.to_string());
    let client_args = |stop: [&str; 2]| {
        let mut a = args(&[
            "client",
            "--url",
            &url,
            "--concurrency",
            &c,
            "--payload-size",
            &size,
            "--json",
        ]);
        a.extend(args(&stop));
        a
    };
    warm_up(
        s,
        ("nats client (warm-up)", "nats-bench"),
        &client_args(["--requests", &warmup_requests(s).to_string()]),
        &[],
    )?;
    let (ready, summary_file) = (
        handoff_file(s, "nats-subscriber-ready"),
        handoff_file(s, "nats-subscriber-summary"),
    );
    let mut sub = s.spawn(
        "nats subscriber",
        "nats-bench",
        &args(&[
            "subscriber",
            "--url",
            &url,
            "--ready-file",
            &ready.to_string_lossy(),
            "--summary-file",
            &summary_file.to_string_lossy(),
        ]),
    )?;
    wait_ready_file(&mut sub, &ready, READY)?;
    let stop = match s.full_requests {
        Some(n) => ["--requests".to_owned(), n.to_string()],
        None => [
            "--duration".to_owned(),
            format!("{}", s.duration.as_secs_f64()),
        ],
    };
    measure_full(
        s,
        &mut procs,
        Subscriber {
            proc: sub,
            summary_file,
        },
        (
            "nats client",
            "nats-bench",
            client_args([&stop[0], &stop[1]]),
            &[],
        ),
    )
}

/// One full-system sweep point: mensageria, then NATS (or the other way
/// round on odd runs), when `nats-server` is available.
fn full_pair(
    s: &Settings,
    concurrency: u32,
    reference_first: bool,
    sink: Option<&Sink>,
) -> anyhow::Result<Sample> {
    let nats = |s: &Settings| -> anyhow::Result<Option<Side>> {
        s.nats_server
            .as_deref()
            .map(|server| full_nats(s, concurrency, server).context("NATS"))
            .transpose()
    };
    let (ours, reference) = if reference_first {
        let r = nats(s)?;
        (
            full_ours(s, concurrency, Tracing::Off, sink).context("mensageria")?,
            r,
        )
    } else {
        let o = full_ours(s, concurrency, Tracing::Off, sink).context("mensageria")?;
        (o, nats(s)?)
    };
    Ok(Sample { ours, reference })
}

fn idle(s: &Settings) -> anyhow::Result<Sample> {
    let stack = full_stack(s, 1, &[])?;
    let (frontend, xpub) = (stack.frontend().to_owned(), stack.xpub().to_owned());
    let mut ours = stack.into_procs();
    // `client run` takes its options after the subcommand.
    let mut a = args(&[
        "run",
        "--rate",
        "0",
        "--broker-endpoints",
        &frontend,
        "--proxy-endpoints",
        &xpub,
    ]);
    a.extend(args(&[
        "--http-addr",
        "127.0.0.1:0",
        "--shutdown-grace",
        "1s",
    ]));
    let client = s.launcher().spawn("client", "client", &a, &[])?;
    client.try_ready_record(READY)?;
    ours.push(client);

    let (rb, _, b) = ref_broker(s)?;
    let (rp, _, _) = ref_proxy(s)?;
    let rw = s.spawn(
        "ref-worker",
        "reference",
        &args(&[
            "worker",
            "--connect",
            &b,
            "--threads",
            &s.workers.to_string(),
        ]),
    )?;
    let mut refs = vec![rb, rp, rw];
    std::thread::sleep(Duration::from_secs(1));
    let mut sample = Sample {
        ours: Side::default(),
        reference: Some(Side::default()),
    };
    for (p, key) in ours.iter_mut().zip(["broker", "proxy", "server", "client"]) {
        p.ensure_alive()?;
        let (rss, _) = p.memory().context("read VmRSS")?;
        sample.ours.set(&format!("{key}_rss_mb"), rss);
    }
    let r = sample.reference.as_mut().expect("set above");
    for (p, key) in refs.iter_mut().zip(["broker", "proxy", "server"]) {
        p.ensure_alive()?;
        let (rss, _) = p.memory().context("read VmRSS")?;
        r.set(&format!("{key}_rss_mb"), rss);
    }
    stop_all(&mut ours);
    stop_all(&mut refs);
    Ok(sample)
}

fn inflight(s: &Settings) -> anyhow::Result<Sample> {
    let n = s.inflight_requests;
    let max = (n * 2).to_string();
    let b = s
        .launcher()
        .broker(&["--request-timeout", "60s", "--max-inflight", &max], &[])?;
    let (mut broker, frontend, backend, http) = (b.proc, b.frontend, b.backend, b.http);
    let (idle_rss, _) = broker.memory().context("read VmRSS")?;
    broker.mark();
    let flood = load::flood(&frontend, &backend, n, 4, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(200));
    broker.ensure_alive()?;
    let (rss, hwm) = broker.memory().context("read VmRSS")?;
    let gauge = ops::scrape(http, "mensageria_broker_inflight_requests").unwrap_or(f64::NAN);
    let mut ours = Side::default();
    ours.set("idle_rss_mb", idle_rss);
    ours.set("rss_mb", rss);
    ours.set("hwm_mb", hwm);
    ours.set("inflight", gauge);
    ours.set("flood_s", flood.took.as_secs_f64());
    ours.set("rejected", flood.rejected as f64);
    ours.set("ops", n as f64);
    ours.procs.push(broker.usage());
    // The 100k answers on shutdown are not worth waiting for.
    broker.kill(Signal::Kill);
    broker.stop();

    let (mut rb, f, b) = ref_broker(s)?;
    let (ref_idle, _) = rb.memory().context("read VmRSS")?;
    rb.mark();
    let flood = load::flood(&f, &b, n, 4, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(200));
    rb.ensure_alive()?;
    let (rss, hwm) = rb.memory().context("read VmRSS")?;
    let mut reference = Side::default();
    reference.set("idle_rss_mb", ref_idle);
    reference.set("rss_mb", rss);
    reference.set("hwm_mb", hwm);
    reference.set("flood_s", flood.took.as_secs_f64());
    reference.set("rejected", flood.rejected as f64);
    reference.set("ops", n as f64);
    reference.procs.push(rb.usage());
    rb.stop();
    Ok(Sample {
        ours,
        reference: Some(reference),
    })
}

/// Runs one workload once.
///
/// # Errors
/// If a process fails to start or dies, or the load fails outright.
pub fn run(
    s: &Settings,
    w: Workload,
    run_index: usize,
    sink: Option<&Sink>,
) -> anyhow::Result<Sample> {
    let reference_first = run_index % 2 == 1;
    let size = s.payload_size;
    match w {
        Workload::Lockstep1 | Workload::Lockstep8 => {
            let clients = if w == Workload::Lockstep1 { 1 } else { 8 };
            rpc_pair(s, reference_first, &|ep, win| {
                load::lockstep(ep, clients, win, size)
            })
        }
        Workload::Pipelined => rpc_pair(s, reference_first, &|ep, win| {
            load::pipelined(ep, 4, 100, win, size)
        }),
        Workload::Fanout => fanout_pair(s, s.fanout_rate, reference_first),
        Workload::FanoutMax => fanout_pair(s, 0.0, reference_first),
        Workload::Full(c) => full_pair(s, c, reference_first, sink),
        Workload::Bare(_) => bare::run(s, w),
        Workload::TracingUnsampled | Workload::TracingSampled => {
            let tracing = if w == Workload::TracingUnsampled {
                Tracing::Unsampled
            } else {
                Tracing::Sampled
            };
            Ok(Sample {
                ours: full_ours(s, s.tracing_concurrency, tracing, sink)?,
                reference: None,
            })
        }
        Workload::Idle => idle(s),
        Workload::Inflight => inflight(s),
        Workload::DispatchLockstep1 | Workload::DispatchPipelined => dispatch::run(s, w),
    }
}

/// Fails unless every binary the workloads need is in `dir`.
///
/// # Errors
/// Naming the missing binaries and how to build them.
pub fn check_bins(dir: &Path) -> anyhow::Result<()> {
    let missing: Vec<_> = [
        "broker",
        "proxy",
        "server",
        "client",
        "reference",
        "nats-bench",
    ]
    .into_iter()
    .filter(|b| !dir.join(b).is_file())
    .collect();
    if !missing.is_empty() {
        bail!(
            "missing binaries in {}: {} (build them: cargo build --release --bins)",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_makes_one_full_workload_per_concurrency() {
        let all = Workload::all(&[1, 256]);
        let full: Vec<String> = all
            .iter()
            .filter(|w| matches!(w, Workload::Full(_)))
            .map(|w| w.id())
            .collect();
        assert_eq!(full, ["full-c1", "full-c256"]);
        let bare: Vec<String> = all
            .iter()
            .filter(|w| matches!(w, Workload::Bare(_)))
            .map(|w| w.id())
            .collect();
        assert_eq!(bare, ["bare-c1", "bare-c256"]);
        assert!(all.contains(&Workload::TracingUnsampled) && all.contains(&Workload::Inflight));
        assert!(Workload::Full(16).is_full() && !Workload::Pipelined.is_full());
    }

    #[test]
    fn an_explicit_nats_server_must_exist() {
        assert_eq!(
            find_nats_server(Some(Path::new("/nonexistent/nats-server"))),
            None
        );
        let me = std::env::current_exe().unwrap();
        assert_eq!(find_nats_server(Some(&me)), Some(me.clone()));
    }
}
