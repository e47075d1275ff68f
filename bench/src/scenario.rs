//! The workloads: each starts the processes it needs (mensageria's real
//! binaries, or the `reference` binary's roles), puts load through them from
//! the harness, reads CPU and memory from `/proc`, and stops everything.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

#[path = "dispatch.rs"]
mod dispatch;

use crate::{
    load::{self, RpcResult, Window},
    procs::{self, free_port, stop_all, tcp, wait_listening, wait_ready, Proc, Usage},
    sink::Sink,
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
    /// client bench → broker → server → proxy → client subscribe, no tracing.
    Full,
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

impl Workload {
    /// Every workload, in run order.
    pub const ALL: [Workload; 12] = [
        Workload::Lockstep1,
        Workload::Lockstep8,
        Workload::Pipelined,
        Workload::Fanout,
        Workload::FanoutMax,
        Workload::Full,
        Workload::TracingUnsampled,
        Workload::TracingSampled,
        Workload::Idle,
        Workload::Inflight,
        Workload::DispatchLockstep1,
        Workload::DispatchPipelined,
    ];

    /// Short id (as in `--only`).
    pub fn id(self) -> &'static str {
        match self {
            Workload::Lockstep1 => "lockstep1",
            Workload::Lockstep8 => "lockstep8",
            Workload::Pipelined => "pipelined",
            Workload::Fanout => "fanout",
            Workload::FanoutMax => "fanout-max",
            Workload::Full => "full",
            Workload::TracingUnsampled => "tracing-unsampled",
            Workload::TracingSampled => "tracing-sampled",
            Workload::Idle => "idle",
            Workload::Inflight => "inflight",
            Workload::DispatchLockstep1 => "dispatch-lockstep1",
            Workload::DispatchPipelined => "dispatch-pipelined",
        }
    }

    /// Human title.
    pub fn title(self) -> &'static str {
        match self {
            Workload::Lockstep1 => "lockstep, 1 REQ client",
            Workload::Lockstep8 => "lockstep, 8 REQ clients",
            Workload::Pipelined => "pipelined, 4 DEALER × 100 outstanding",
            Workload::Fanout => "fan-out, 1 PUB → 4 SUB, paced",
            Workload::FanoutMax => "fan-out, 1 PUB → 4 SUB, unpaced",
            Workload::Full => "full system, client bench c=16",
            Workload::TracingUnsampled => "full system, tracing on, unsampled",
            Workload::TracingSampled => "full system, tracing on, 100% sampled",
            Workload::Idle => "idle RSS after start-up",
            Workload::Inflight => "broker with 100k requests in flight",
            Workload::DispatchLockstep1 => "service dispatch, lockstep, 1 REQ client",
            Workload::DispatchPipelined => "service dispatch, pipelined, 4 DEALER × 100",
        }
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
    /// Server processes in the full-system workloads.
    pub full_servers: usize,
    /// `client bench --requests N` instead of `--duration` when set.
    pub full_requests: Option<u64>,
    /// Requests put in flight in the `inflight` workload.
    pub inflight_requests: u64,
    /// Command prefix for the broker (e.g. `valgrind --tool=callgrind`); empty: none.
    pub broker_wrapper: Vec<String>,
}

impl Settings {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn spawn(&self, label: &str, bin: &str, args: &[String]) -> anyhow::Result<Proc> {
        self.spawn_env(label, bin, args, &[], false)
    }

    fn spawn_env(
        &self,
        label: &str,
        bin: &str,
        args: &[String],
        envs: &[(String, String)],
        capture: bool,
    ) -> anyhow::Result<Proc> {
        Proc::spawn(label, &self.bin(bin), args, envs, &self.log_dir, capture)
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

fn service_args(http: u16) -> Vec<String> {
    vec![
        "--http-addr".into(),
        format!("127.0.0.1:{http}"),
        "--shutdown-grace".into(),
        "1s".into(),
    ]
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A started request/reply path.
struct RpcStack {
    procs: Vec<Proc>,
    frontend: String,
}

fn start_broker(
    s: &Settings,
    extra: &[&str],
    envs: &[(String, String)],
) -> anyhow::Result<(Proc, String, String, u16)> {
    let (f, b, http) = (free_port()?, free_port()?, free_port()?);
    let mut a = service_args(http);
    a.extend(args(&[
        "--frontend-bind",
        &tcp(f),
        "--backend-bind",
        &tcp(b),
    ]));
    a.extend(args(extra));
    let mut p = match s.broker_wrapper.split_first() {
        None => s.spawn_env("broker", "broker", &a, envs, false)?,
        Some((program, rest)) => {
            let mut wa = rest.to_vec();
            wa.push(s.bin("broker").display().to_string());
            wa.extend(a);
            let mut p = Proc::spawn("broker", Path::new(program), &wa, envs, &s.log_dir, false)?;
            p.set_grace(Duration::from_secs(60));
            p
        }
    };
    let ready = if s.broker_wrapper.is_empty() {
        READY
    } else {
        Duration::from_secs(120)
    };
    wait_ready(&mut p, http, ready)?;
    Ok((p, tcp(f), tcp(b), http))
}

fn start_proxy(
    s: &Settings,
    envs: &[(String, String)],
) -> anyhow::Result<(Proc, String, String, u16)> {
    let (x, p, http) = (free_port()?, free_port()?, free_port()?);
    let mut a = service_args(http);
    a.extend(args(&["--xsub-bind", &tcp(x), "--xpub-bind", &tcp(p)]));
    let mut pr = s.spawn_env("proxy", "proxy", &a, envs, false)?;
    wait_ready(&mut pr, http, READY)?;
    Ok((pr, tcp(x), tcp(p), http))
}

fn start_servers(
    s: &Settings,
    n: usize,
    backend: &str,
    xsub: &str,
    envs: &[(String, String)],
) -> anyhow::Result<Vec<Proc>> {
    let mut out = Vec::new();
    let mut ports = Vec::new();
    for i in 0..n {
        let http = free_port()?;
        let mut a = service_args(http);
        a.extend(args(&[
            "--worker-protocol",
            "rep",
            "--broker-endpoints",
            backend,
            "--proxy-endpoints",
            xsub,
            "--workers",
            &s.workers.to_string(),
        ]));
        out.push(s.spawn_env(&format!("server#{}", i + 1), "server", &a, envs, false)?);
        ports.push(http);
    }
    for (p, http) in out.iter_mut().zip(ports) {
        wait_ready(p, http, READY)?;
    }
    Ok(out)
}

fn ours_rpc(s: &Settings) -> anyhow::Result<RpcStack> {
    let (broker, frontend, backend, _) = start_broker(s, &[], &[])?;
    // No proxy in these workloads: the servers' PUB has nothing to connect
    // to, so their events are built and dropped (ZMQ_IMMEDIATE).
    let nowhere = tcp(free_port()?);
    let mut procs = vec![broker];
    procs.extend(start_servers(s, s.servers, &backend, &nowhere, &[])?);
    Ok(RpcStack { procs, frontend })
}

fn ref_rpc(s: &Settings) -> anyhow::Result<RpcStack> {
    let (f, b) = (free_port()?, free_port()?);
    let mut broker = s.spawn(
        "ref-broker",
        "reference",
        &args(&["broker", "--frontend", &tcp(f), "--backend", &tcp(b)]),
    )?;
    wait_listening(&mut broker, f, READY)?;
    wait_listening(&mut broker, b, READY)?;
    let mut procs = vec![broker];
    for i in 0..s.servers {
        procs.push(s.spawn(
            &format!("ref-worker#{}", i + 1),
            "reference",
            &args(&[
                "worker",
                "--connect",
                &tcp(b),
                "--threads",
                &s.workers.to_string(),
            ]),
        )?);
    }
    Ok(RpcStack {
        procs,
        frontend: tcp(f),
    })
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
        let (p, xsub, xpub, _) = start_proxy(s, &[])?;
        fanout_side(s, &mut [p], &xsub, &xpub, rate)
    };
    let refr = |s: &Settings| -> anyhow::Result<Side> {
        let (x, p) = (free_port()?, free_port()?);
        let mut pr = s.spawn(
            "ref-proxy",
            "reference",
            &args(&["proxy", "--xsub", &tcp(x), "--xpub", &tcp(p)]),
        )?;
        wait_listening(&mut pr, x, READY)?;
        wait_listening(&mut pr, p, READY)?;
        fanout_side(s, &mut [pr], &tcp(x), &tcp(p), rate)
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

fn full_system(s: &Settings, tracing: Tracing, sink: Option<&Sink>) -> anyhow::Result<Sample> {
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
    let (broker, frontend, backend, _) = start_broker(s, &[], &envs)?;
    let (proxy, xsub, xpub, proxy_http) = start_proxy(s, &envs)?;
    let mut procs = vec![broker, proxy];
    procs.extend(start_servers(s, s.full_servers, &backend, &xsub, &envs)?);

    // Warm-up: connections, allocator, page cache.
    let warm_n = ((s.warmup.as_secs_f64() * 20_000.0) as u64).max(1000);
    let mut warm = s.spawn_env(
        "client bench (warm-up)",
        "client",
        &args(&[
            "bench",
            "--broker-endpoints",
            &frontend,
            "--requests",
            &warm_n.to_string(),
            "--concurrency",
            "16",
            "--json",
        ]),
        &client_envs,
        true,
    )?;
    let (st, _) = warm.wait_with_usage(Duration::from_secs(60))?;
    if !st.success() {
        bail!("warm-up client bench failed ({st}):\n{}", warm.log_tail(10));
    }

    let mut sub = s.spawn_env(
        "client subscribe",
        "client",
        &args(&["subscribe", "requests", "--proxy-endpoints", &xpub]),
        &envs,
        false,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while procs::scrape(proxy_http, "mensageria_proxy_subscriptions").unwrap_or(0.0) < 1.0 {
        sub.ensure_alive()?;
        if Instant::now() >= deadline {
            bail!("the subscriber's subscription did not reach the proxy in 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    for p in procs.iter_mut().chain(std::iter::once(&mut sub)) {
        p.ensure_alive()?;
        p.mark();
    }
    let phase = Phase::start();
    let mut bench_args = args(&[
        "bench",
        "--broker-endpoints",
        &frontend,
        "--concurrency",
        "16",
        "--json",
    ]);
    match s.full_requests {
        Some(n) => bench_args.extend(args(&["--requests", &n.to_string()])),
        None => bench_args.extend(args(&["--duration", &dur_arg(s.duration)])),
    }
    let mut bench = s.spawn_env("client bench", "client", &bench_args, &client_envs, true)?;
    let (status, bench_usage) = bench.wait_with_usage(s.duration + Duration::from_secs(120))?;
    let out = bench.take_stdout();
    if !status.success() {
        bail!("client bench failed ({status}):\n{}", bench.log_tail(15));
    }
    let summary = parse_summary(&out)
        .with_context(|| format!("no JSON summary from client bench; stdout: {out:?}"))?;
    let mut side = Side::default();
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let ok = f(&summary["ok"]);
    side.set("rps", f(&summary["throughput_rps"]));
    side.set("requests", f(&summary["requests"]));
    side.set("ok", ok);
    side.set("errors", f(&summary["errors"]));
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
    side.procs.push(sub.usage());
    side.procs.push(bench_usage);
    phase.finish(&mut side.procs);
    sub.stop();
    let log = sub.log_text();
    let (received, lost) = log
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("received ")?;
            let (n, rest) = rest.split_once(" events, ")?;
            let m = rest.strip_suffix(" lost")?;
            Some((n.parse::<f64>().ok()?, m.parse::<f64>().ok()?))
        })
        .with_context(|| format!("no `received N events, M lost` from client subscribe:\n{log}"))?;
    side.set("events_received", received);
    side.set("events_lost", lost);
    side.set("events_missing", (ok - received).max(0.0));
    if let Some(sink) = sink {
        let (r, b) = sink.counts();
        side.set("otlp_posts", (r - sink_before.0) as f64);
        side.set("otlp_bytes", (b - sink_before.1) as f64);
    }
    stop_all(&mut procs);
    Ok(Sample {
        ours: side,
        reference: None,
    })
}

fn idle(s: &Settings) -> anyhow::Result<Sample> {
    let (broker, frontend, backend, _) = start_broker(s, &[], &[])?;
    let (proxy, xsub, xpub, _) = start_proxy(s, &[])?;
    let mut ours = vec![broker, proxy];
    ours.extend(start_servers(s, 1, &backend, &xsub, &[])?);
    let http = free_port()?;
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
    a.extend(service_args(http));
    let mut client = s.spawn("client", "client", &a)?;
    wait_ready(&mut client, http, READY)?;
    ours.push(client);

    let (f, b, x, p) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let mut rb = s.spawn(
        "ref-broker",
        "reference",
        &args(&["broker", "--frontend", &tcp(f), "--backend", &tcp(b)]),
    )?;
    let mut rp = s.spawn(
        "ref-proxy",
        "reference",
        &args(&["proxy", "--xsub", &tcp(x), "--xpub", &tcp(p)]),
    )?;
    wait_listening(&mut rb, b, READY)?;
    wait_listening(&mut rp, x, READY)?;
    let rw = s.spawn(
        "ref-worker",
        "reference",
        &args(&[
            "worker",
            "--connect",
            &tcp(b),
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
    let (mut broker, frontend, backend, http) = start_broker(
        s,
        &["--request-timeout", "60s", "--max-inflight", &max],
        &[],
    )?;
    let (idle_rss, _) = broker.memory().context("read VmRSS")?;
    broker.mark();
    let flood = load::flood(&frontend, &backend, n, 4, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(200));
    broker.ensure_alive()?;
    let (rss, hwm) = broker.memory().context("read VmRSS")?;
    let gauge = procs::scrape(http, "mensageria_broker_inflight_requests").unwrap_or(f64::NAN);
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
    procs::signal(broker.pid(), libc::SIGKILL);
    broker.stop();

    let (f, b) = (free_port()?, free_port()?);
    let mut rb = s.spawn(
        "ref-broker",
        "reference",
        &args(&["broker", "--frontend", &tcp(f), "--backend", &tcp(b)]),
    )?;
    wait_listening(&mut rb, b, READY)?;
    let (ref_idle, _) = rb.memory().context("read VmRSS")?;
    rb.mark();
    let flood = load::flood(&tcp(f), &tcp(b), n, 4, Duration::from_secs(60))?;
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
        Workload::Full => full_system(s, Tracing::Off, sink),
        Workload::TracingUnsampled => full_system(s, Tracing::Unsampled, sink),
        Workload::TracingSampled => full_system(s, Tracing::Sampled, sink),
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
    let missing: Vec<_> = ["broker", "proxy", "server", "client", "reference"]
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
