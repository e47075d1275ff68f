//! The workloads: each starts the processes it needs (mensageria's real
//! binaries, or the `reference` binary's roles), puts load through them from
//! the harness, reads CPU and memory from `/proc`, and stops everything.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
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
    sink::Sink,
};
use testkit::{
    ops,
    process::{stop_all, Proc, ProcBuilder, Usage},
    procfs,
    signal::Signal,
    stack::{wait_attached, Baseline, Launcher, Stack, REP_ARGS},
    wait::poll_until,
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

    /// (id, title).
    fn names(self) -> (String, String) {
        let (id, title) = match self {
            Self::Full(c) => {
                return (
                    format!("full-c{c}"),
                    format!("full system, {c} outstanding (ref: NATS)"),
                )
            }
            Self::Bare(c) => {
                return (
                    format!("bare-c{c}"),
                    format!("full-system shape in bare libzmq, {c} outstanding"),
                )
            }
            Self::Lockstep1 => ("lockstep1", "lockstep, 1 REQ client"),
            Self::Lockstep8 => ("lockstep8", "lockstep, 8 REQ clients"),
            Self::Pipelined => ("pipelined", "pipelined, 4 DEALER × 100 outstanding"),
            Self::Fanout => ("fanout", "fan-out, 1 PUB → 4 SUB, paced"),
            Self::FanoutMax => ("fanout-max", "fan-out, 1 PUB → 4 SUB, unpaced"),
            Self::TracingUnsampled => ("tracing-unsampled", "full system, tracing on, unsampled"),
            Self::TracingSampled => ("tracing-sampled", "full system, tracing on, 100% sampled"),
            Self::Idle => ("idle", "idle RSS after start-up"),
            Self::Inflight => ("inflight", "broker with 100k requests in flight"),
            Self::DispatchLockstep1 => (
                "dispatch-lockstep1",
                "service dispatch, lockstep, 1 REQ client",
            ),
            Self::DispatchPipelined => (
                "dispatch-pipelined",
                "service dispatch, pipelined, 4 DEALER × 100",
            ),
        };
        (id.into(), title.into())
    }

    /// Short id (as in `--only`); `full-cN` for the sweep.
    pub fn id(self) -> String {
        self.names().0
    }

    /// Human title.
    pub fn title(self) -> String {
        self.names().1
    }

    /// Whether this is a full-system workload (client bench → … → subscriber).
    pub fn is_full(self) -> bool {
        matches!(
            self,
            Workload::Full(_) | Workload::TracingUnsampled | Workload::TracingSampled
        )
    }
}

/// Harness settings the workloads read: `harness`'s options (as clamped and
/// resolved by it) and where the run keeps its process logs.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Settings {
    /// Directory of the binaries (default: this executable's directory, i.e. target/release).
    #[arg(long, default_value_os_t = exe_dir(), hide_default_value = true)]
    pub bin_dir: PathBuf,
    /// Where process logs go.
    #[arg(skip)]
    pub log_dir: PathBuf,
    /// Measured seconds per phase.
    #[arg(long, default_value = "3", value_parser = seconds)]
    pub duration: Duration,
    /// Unmeasured warm-up seconds before each request/reply phase.
    #[arg(long, default_value = "0.5", value_parser = seconds)]
    pub warmup: Duration,
    /// Request payload size, bytes.
    #[arg(long, default_value_t = 32)]
    pub payload_size: usize,
    /// Paced fan-out rate, events/s (the reference loses nothing at the default on 2 cores).
    #[arg(long, default_value_t = 50_000.0)]
    pub fanout_rate: f64,
    /// Event payload size, bytes (at least 16: sequence number and timestamp).
    #[arg(long, default_value_t = 100)]
    pub event_size: usize,
    /// Server processes (and reference worker processes) in the request/reply workloads.
    #[arg(long, default_value_t = 2)]
    pub servers: usize,
    /// Worker threads per server (`--workers`) and REP threads per reference worker.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Server processes (and NATS responders) in the full-system workloads.
    #[arg(long, default_value_t = 2)]
    pub full_servers: usize,
    /// Requests outstanding at each point of the full-system sweep (one
    /// `full-cN` workload each; the tracing workloads use the largest).
    #[arg(long, value_delimiter = ',', default_values_t = SWEEP, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sweep: Vec<u32>,
    /// Requests outstanding in the tracing workloads (the largest of the sweep).
    #[arg(skip)]
    pub tracing_concurrency: u32,
    /// nats-server binary (default: found on PATH or in /usr/sbin).
    #[arg(long, value_name = "PATH")]
    pub nats_server: Option<PathBuf>,
    /// Run `client bench --requests N` in the full-system workloads instead of `--duration`.
    #[arg(long)]
    pub full_requests: Option<u64>,
    /// Requests put in flight in the `inflight` workload.
    #[arg(long, default_value_t = 100_000)]
    pub inflight_requests: u64,
    /// Run the broker under this command prefix, e.g. "valgrind --tool=callgrind
    /// --callgrind-out-file=/tmp/cg.%p" (profiling; slows everything down).
    #[arg(long = "wrap-broker", value_name = "CMD")]
    pub broker_wrapper: Vec<String>,
}

/// The directory of the running executable (where `cargo build` puts the
/// other binaries too).
fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
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
            stop_grace: STOP_GRACE,
            ready_timeout: READY,
            broker_wrapper: self.broker_wrapper.clone(),
            wrapped_broker_time: Duration::from_secs(120),
        }
    }

    /// Starts `bin` of `bin_dir` (a `reference` or `nats-bench` role, or a
    /// load generator) like the services, with `envs` added.
    fn spawn(
        &self,
        label: &str,
        bin: &str,
        args: &[String],
        envs: &[(String, String)],
    ) -> anyhow::Result<Proc> {
        self.launcher().spawn(label, bin, args, &env_refs(envs))
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

    /// Figure `k`; NaN if it was not measured.
    pub fn value(&self, k: &str) -> f64 {
        self.metrics.get(k).copied().unwrap_or(f64::NAN)
    }

    /// The processes the workload started: not the harness's own load, not
    /// the rest of the machine.
    pub fn started(&self) -> impl Iterator<Item = &Usage> {
        let started = |u: &&Usage| u.peak_rss_mb.is_finite() && !u.name.starts_with("harness");
        self.procs.iter().filter(started)
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

const READY: Duration = Duration::from_secs(10);

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The arguments of a command line whose words hold no spaces (flags,
/// numbers, endpoints; not paths).
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// `(key, value)` pairs as the launcher takes them.
fn env_refs(envs: &[(String, String)]) -> Vec<(&str, &str)> {
    envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (distinct within this run).
fn free_port() -> anyhow::Result<u16> {
    testkit::ports::try_unused_port().context("no free port found")
}

fn tcp(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// Polls `ready` until it holds, for at most `timeout`, failing at once if
/// `p` dies; `what` completes "`p` did not … in time".
fn wait_for(
    p: &mut Proc,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    poll_until(timeout, || match p.ensure_alive() {
        Ok(()) => ready().then_some(Ok(())),
        Err(e) => Some(Err(e)),
    })
    .with_context(|| format!("{} did not {what} within {timeout:?}", p.name()))?
}

/// Waits until `p` accepts TCP connections on `port` (the reference
/// processes and nats-server have no ready file).
fn wait_listening(p: &mut Proc, port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(p, &format!("listen on {port}"), READY, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// A request/reply load put through a frontend endpoint for a window.
type RpcLoad<'a> = &'a dyn Fn(&str, Window) -> anyhow::Result<RpcResult>;

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

/// A `reference` `role` with its two sockets (`flags`) bound on free ports,
/// listening: (process, first endpoint, second endpoint).
fn ref_bound(s: &Settings, role: &str, flags: [&str; 2]) -> anyhow::Result<(Proc, String, String)> {
    let ports = [free_port()?, free_port()?];
    let [a, b] = ports.map(tcp);
    let role_args = args(&[role, flags[0], &a, flags[1], &b]);
    let mut p = s.spawn(&format!("ref-{role}"), "reference", &role_args, &[])?;
    for port in ports {
        wait_listening(&mut p, port)?;
    }
    Ok((p, a, b))
}

/// A `reference broker`: (process, frontend, backend).
fn ref_broker(s: &Settings) -> anyhow::Result<(Proc, String, String)> {
    ref_bound(s, "broker", ["--frontend", "--backend"])
}

/// A `reference proxy`: (process, xsub, xpub).
fn ref_proxy(s: &Settings) -> anyhow::Result<(Proc, String, String)> {
    ref_bound(s, "proxy", ["--xsub", "--xpub"])
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
    let mut a = words(&format!(
        "worker --connect {backend} --threads {}",
        s.workers
    ));
    if let Some(xsub) = publish {
        a.extend(words(&format!(
            "--publish {xsub} --event-size {}",
            s.event_size
        )));
    }
    (0..n)
        .map(|i| s.spawn(&format!("ref-worker#{}", i + 1), "reference", &a, &[]))
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
fn measure_rpc(s: &Settings, stack: &mut RpcStack, load: RpcLoad) -> anyhow::Result<Side> {
    load(&stack.frontend, Window::new(s.warmup)).context("warm-up")?;
    let phase = Phase::start(&mut stack.procs)?;
    let window = Window::new(s.duration);
    let r = load(&stack.frontend, window)?;
    let mut side = Side::rpc(&r, window.secs());
    phase.finish(&mut stack.procs, &mut side, [])?;
    stop_all(&mut stack.procs);
    Ok(side)
}

/// CPU accounting of a measured phase: the started processes, the harness
/// itself, and everything else on the machine (other users' builds show up
/// here and make the numbers unreliable).
struct Phase {
    self0: f64,
    busy0: (f64, f64),
}

/// Label of the machine's CPU not used by any process of the harness.
pub const OTHER: &str = "other (not ours)";

impl Phase {
    /// Checks that `procs` are alive and starts their accounting.
    fn start<'a>(procs: impl IntoIterator<Item = &'a mut Proc>) -> anyhow::Result<Phase> {
        for p in procs {
            p.ensure_alive()?;
            p.mark();
        }
        Ok(Phase {
            self0: procfs::self_cpu_seconds(),
            busy0: procfs::machine_busy_seconds(),
        })
    }

    /// Appends to `side` the usage of `procs` (which must still be alive),
    /// then `extra`, the harness's and the rest of the machine's CPU.
    fn finish(
        &self,
        procs: &mut [Proc],
        side: &mut Side,
        extra: impl IntoIterator<Item = Usage>,
    ) -> anyhow::Result<()> {
        for p in procs {
            p.ensure_alive()?;
            side.procs.push(p.usage());
        }
        side.procs.extend(extra);
        side.procs.push(Usage {
            name: "harness (load)".into(),
            cpu_s: procfs::self_cpu_seconds() - self.self0,
            peak_rss_mb: procfs::memory_mb(std::process::id()).map_or(0.0, |(_, h)| h),
        });
        let ours: f64 = side.procs.iter().map(|u| u.cpu_s).sum();
        let (busy, steal) = procfs::machine_busy_seconds();
        side.procs.push(Usage {
            name: OTHER.into(),
            cpu_s: (busy - self.busy0.0 - ours).max(0.0),
            peak_rss_mb: f64::NAN,
        });
        if steal - self.busy0.1 >= 0.05 {
            side.procs.push(Usage {
                name: "steal (hypervisor)".into(),
                cpu_s: steal - self.busy0.1,
                peak_rss_mb: f64::NAN,
            });
        }
        Ok(())
    }
}

/// Runs mensageria's side and, if there is one, the reference's (`what`),
/// the reference first when `reference_first` (the order alternates
/// between runs).
fn pair(
    reference_first: bool,
    what: &'static str,
    ours: impl FnOnce() -> anyhow::Result<Side>,
    reference: Option<impl FnOnce() -> anyhow::Result<Side>>,
) -> anyhow::Result<Sample> {
    let reference = || reference.map(|r| r().context(what)).transpose();
    let (ours, reference) = if reference_first {
        let r = reference()?;
        (ours().context("mensageria")?, r)
    } else {
        (ours().context("mensageria")?, reference()?)
    };
    Ok(Sample { ours, reference })
}

/// Runs both sides of a request/reply workload.
fn rpc_pair(s: &Settings, reference_first: bool, load: RpcLoad) -> anyhow::Result<Sample> {
    pair(
        reference_first,
        "reference",
        || measure_rpc(s, &mut ours_rpc(s)?, load),
        Some(|| measure_rpc(s, &mut ref_rpc(s)?, load)),
    )
}

fn fanout_side(
    s: &Settings,
    procs: &mut [Proc],
    xsub: &str,
    xpub: &str,
    rate: f64,
) -> anyhow::Result<Side> {
    let phase = Phase::start(procs.iter_mut())?;
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
    phase.finish(procs, &mut side, [])?;
    stop_all(procs);
    Ok(side)
}

fn fanout_pair(s: &Settings, rate: f64, reference_first: bool) -> anyhow::Result<Sample> {
    let ours = || {
        let p = s.launcher().proxy(&[], &[])?;
        let (xsub, xpub) = (p.xsub, p.xpub);
        fanout_side(s, &mut [p.proc], &xsub, &xpub, rate)
    };
    let reference = || {
        let (p, xsub, xpub) = ref_proxy(s)?;
        fanout_side(s, &mut [p], &xsub, &xpub, rate)
    };
    pair(reference_first, "reference", ours, Some(reference))
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

/// Requests in the unmeasured warm-up of a full-system run.
fn warmup_requests(s: &Settings) -> u64 {
    ((s.warmup.as_secs_f64() * 20_000.0) as u64).max(1000)
}

/// The load generator of a full-system run: `client bench` or
/// `nats-bench client`, which prints a `client bench --json` summary.
struct LoadGen<'a> {
    label: &'a str,
    bin: &'a str,
    /// Its arguments but the stop condition (`--requests` or `--duration`).
    args: Vec<String>,
    /// `--duration`'s value for `s.duration`.
    duration: String,
    envs: &'a [(String, String)],
}

impl LoadGen<'_> {
    /// Starts it with `--<stop> <value>` added, labelled `label`, and waits
    /// until it exits: its stdout and CPU usage.
    fn run(
        &self,
        s: &Settings,
        label: &str,
        [stop, value]: [&str; 2],
    ) -> anyhow::Result<(String, Usage)> {
        let mut a = self.args.clone();
        a.extend(args(&[stop, value]));
        let mut p = s.spawn(label, self.bin, &a, self.envs)?;
        let (status, usage) = p.wait_with_usage(s.duration + Duration::from_secs(120))?;
        if !status.success() {
            bail!("{label} failed ({status}):\n{}", p.diagnostics());
        }
        Ok((p.stdout_lines().join("\n"), usage))
    }
}

/// A full-system run, the same for both systems: with `procs` (servers or
/// responders) running, an unmeasured warm-up of `load` (connections,
/// allocator, page cache), then `start_sub(summary_file)` (the subscriber,
/// subscribed once it returns), then the measured `load`; lets the last
/// events arrive, stops the subscriber and reads the totals it writes to
/// its `--summary-file` at exit (`client subscribe` and `nats-bench
/// subscriber` write the same [`SubscribeSummary`]).
fn measure_full(
    s: &Settings,
    procs: &mut [Proc],
    load: &LoadGen,
    start_sub: impl FnOnce(&str) -> anyhow::Result<Proc>,
) -> anyhow::Result<Side> {
    let warm_up = format!("{} (warm-up)", load.label);
    load.run(s, &warm_up, ["--requests", &warmup_requests(s).to_string()])?;
    let summary_file = handoff_file(s, "subscriber-summary");
    let mut sub = start_sub(&summary_file.to_string_lossy())?;
    let phase = Phase::start(procs.iter_mut().chain([&mut sub]))?;
    let (out, load_usage) = match s.full_requests {
        Some(n) => load.run(s, load.label, ["--requests", &n.to_string()])?,
        None => load.run(s, load.label, ["--duration", &load.duration])?,
    };
    let summary = parse_summary(&out)
        .with_context(|| format!("no JSON summary from {}; stdout: {out:?}", load.label))?;
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
    phase.finish(procs, &mut side, [sub.usage(), load_usage])?;
    sub.stop();
    let totals = SubscribeSummary::read(&summary_file)
        .with_context(|| format!("no totals from {}\n{}", sub.name(), sub.diagnostics()))?;
    let received = totals.received as f64;
    side.set("events_received", received);
    side.set("events_lost", totals.lost as f64);
    side.set("events_missing", (ok - received).max(0.0));
    stop_all(procs);
    Ok(side)
}

/// mensageria's full system: broker, proxy, `full_servers` servers, one
/// `client subscribe`, and `client bench --concurrency c`. With `sampler`
/// (the client's `OTEL_TRACES_SAMPLER`), every service exports traces to
/// `sink`; without, tracing is compiled in but exports nothing.
fn full_ours(
    s: &Settings,
    concurrency: u32,
    sampler: Option<&str>,
    sink: Option<&Sink>,
) -> anyhow::Result<Side> {
    let mut envs: Vec<(String, String)> = Vec::new();
    if sampler.is_some() {
        let sink = sink.context("tracing workloads need the OTLP sink")?;
        envs.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), sink.url()));
    }
    let mut client_envs = envs.clone();
    client_envs.extend(sampler.map(|v| ("OTEL_TRACES_SAMPLER".into(), v.into())));
    let sink_before = sink.map(Sink::counts).unwrap_or_default();
    let stack = full_stack(s, s.full_servers, &envs)?;
    let (frontend, xpub, proxy_http) = (
        stack.frontend().to_owned(),
        stack.xpub().to_owned(),
        stack.proxy.http,
    );
    let mut procs = stack.into_procs();
    let load = LoadGen {
        label: "client bench",
        bin: "client",
        args: words(&format!(
            "bench --broker-endpoints {frontend} --concurrency {concurrency} --json"
        )),
        duration: format!("{}ms", s.duration.as_millis()),
        envs: &client_envs,
    };
    let start_sub = |summary_file: &str| {
        // Counting only, as the NATS subscriber does.
        let mut a = words(&format!(
            "subscribe requests --quiet --proxy-endpoints {xpub}"
        ));
        a.extend(args(&["--summary-file", summary_file]));
        let mut sub = s.spawn("client subscribe", "client", &a, &envs)?;
        wait_for(
            &mut sub,
            "subscribe at the proxy",
            Duration::from_secs(5),
            || ops::scrape(proxy_http, "mensageria_proxy_subscriptions").unwrap_or(0.0) >= 1.0,
        )?;
        std::thread::sleep(Duration::from_millis(100));
        Ok(sub)
    };
    let mut side = measure_full(s, &mut procs, &load, start_sub)?;
    side.set("concurrency", f64::from(concurrency));
    if let Some(sink) = sink {
        let (r, b) = sink.counts();
        side.set("otlp_posts", (r - sink_before.0) as f64);
        side.set("otlp_bytes", (b - sink_before.1) as f64);
    }
    Ok(side)
}

/// Starts `nats-bench role_args… --ready-file F` and waits until it has
/// created F (once its subscription is at the server).
fn nats_role(s: &Settings, label: &str, mut a: Vec<String>) -> anyhow::Result<Proc> {
    let ready = handoff_file(s, "nats-ready");
    a.extend(args(&["--ready-file", &ready.to_string_lossy()]));
    let mut p = s.spawn(label, "nats-bench", &a, &[])?;
    wait_for(&mut p, "create its ready file", READY, || ready.exists())?;
    Ok(p)
}

/// NATS with the same shape: `nats-server` on loopback, `full_servers`
/// responders in a queue group (one event each per request), one
/// subscriber, one client connection with `concurrency` outstanding.
fn full_nats(s: &Settings, concurrency: u32, server: &Path) -> anyhow::Result<Side> {
    let port = free_port()?;
    let mut nats = ProcBuilder::new("nats-server", server)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .log_to(&s.log_dir)
        .grace(STOP_GRACE)
        .spawn()?;
    wait_listening(&mut nats, port)?;
    let url = format!("nats://127.0.0.1:{port}");
    let mut procs = vec![nats];
    for i in 1..=s.full_servers {
        let a = format!(
            "responder --url {url} --id {i} --event-size {}",
            s.event_size
        );
        procs.push(nats_role(s, &format!("nats responder#{i}"), words(&a))?);
    }
    let size = s.payload_size;
    let load = LoadGen {
        label: "nats client",
        bin: "nats-bench",
        args: words(&format!(
            "client --url {url} --concurrency {concurrency} --payload-size {size} --json"
        )),
        duration: s.duration.as_secs_f64().to_string(),
        envs: &[],
    };
    measure_full(s, &mut procs, &load, |summary_file| {
        let mut a = words(&format!("subscriber --url {url}"));
        a.extend(args(&["--summary-file", summary_file]));
        nats_role(s, "nats subscriber", a)
    })
}

/// Each process's VmRSS as `<key>_rss_mb`.
fn rss(procs: &mut [Proc], keys: &[&str]) -> anyhow::Result<Side> {
    let mut side = Side::default();
    for (p, key) in procs.iter_mut().zip(keys) {
        p.ensure_alive()?;
        let (rss, _) = p.memory().context("read VmRSS")?;
        side.set(&format!("{key}_rss_mb"), rss);
    }
    Ok(side)
}

fn idle(s: &Settings) -> anyhow::Result<Sample> {
    let stack = full_stack(s, 1, &[])?;
    let (frontend, xpub) = (stack.frontend().to_owned(), stack.xpub().to_owned());
    let mut ours = stack.into_procs();
    // `client run` takes its options after the subcommand.
    let a = words(&format!(
        "run --rate 0 --broker-endpoints {frontend} --proxy-endpoints {xpub} \
         --http-addr 127.0.0.1:0 --shutdown-grace 1s"
    ));
    let client = s.launcher().spawn("client", "client", &a, &[])?;
    client.try_ready_record(READY)?;
    ours.push(client);

    let (rb, _, b) = ref_broker(s)?;
    let (rp, _, _) = ref_proxy(s)?;
    let mut refs = vec![rb, rp];
    refs.extend(ref_workers(s, 1, &b, None)?);
    std::thread::sleep(Duration::from_secs(1));
    let services = ["broker", "proxy", "server", "client"];
    let sample = Sample {
        ours: rss(&mut ours, &services)?,
        reference: Some(rss(&mut refs, &services[..3])?),
    };
    stop_all(&mut ours);
    stop_all(&mut refs);
    Ok(sample)
}

/// Floods `broker` (`frontend`, `backend`) with `n` requests it never gets
/// answers to: its memory before and with them in flight.
fn flood_side(broker: &mut Proc, frontend: &str, backend: &str, n: u64) -> anyhow::Result<Side> {
    let (idle_rss, _) = broker.memory().context("read VmRSS")?;
    broker.mark();
    let flood = load::flood(frontend, backend, n, 4, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(200));
    broker.ensure_alive()?;
    let (rss, hwm) = broker.memory().context("read VmRSS")?;
    let mut side = Side::default();
    side.set("idle_rss_mb", idle_rss);
    side.set("rss_mb", rss);
    side.set("hwm_mb", hwm);
    side.set("flood_s", flood.took.as_secs_f64());
    side.set("rejected", flood.rejected as f64);
    side.set("ops", n as f64);
    side.procs.push(broker.usage());
    Ok(side)
}

fn inflight(s: &Settings) -> anyhow::Result<Sample> {
    let n = s.inflight_requests;
    let max = (n * 2).to_string();
    let mut b = s
        .launcher()
        .broker(&["--request-timeout", "60s", "--max-inflight", &max], &[])?;
    let mut ours = flood_side(&mut b.proc, &b.frontend, &b.backend, n)?;
    let gauge = ops::scrape(b.http, "mensageria_broker_inflight_requests").unwrap_or(f64::NAN);
    ours.set("inflight", gauge);
    // The 100k answers on shutdown are not worth waiting for.
    b.proc.kill(Signal::Kill);
    b.proc.stop();

    let (mut rb, f, b) = ref_broker(s)?;
    let reference = flood_side(&mut rb, &f, &b, n)?;
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
    // The same loads through the REP path, the reference and the
    // service-dispatch path.
    let lockstep = |clients| move |ep: &str, win| load::lockstep(ep, clients, win, size);
    let pipelined = |ep: &str, win| load::pipelined(ep, 4, 100, win, size);
    // The full system with the client sampling this way (no reference).
    let traced = |sampler| -> anyhow::Result<Sample> {
        let ours = full_ours(s, s.tracing_concurrency, Some(sampler), sink)?;
        Ok(Sample {
            ours,
            reference: None,
        })
    };
    match w {
        Workload::Lockstep1 => rpc_pair(s, reference_first, &lockstep(1)),
        Workload::Lockstep8 => rpc_pair(s, reference_first, &lockstep(8)),
        Workload::Pipelined => rpc_pair(s, reference_first, &pipelined),
        Workload::DispatchLockstep1 => dispatch::run(s, &lockstep(1)),
        Workload::DispatchPipelined => dispatch::run(s, &pipelined),
        Workload::Fanout => fanout_pair(s, s.fanout_rate, reference_first),
        Workload::FanoutMax => fanout_pair(s, 0.0, reference_first),
        // NATS when `nats-server` is available.
        Workload::Full(c) => pair(
            reference_first,
            "NATS",
            || full_ours(s, c, None, sink),
            s.nats_server
                .as_deref()
                .map(|server| move || full_nats(s, c, server)),
        ),
        Workload::Bare(c) => bare::run(s, c),
        Workload::TracingUnsampled => traced("always_off"),
        Workload::TracingSampled => traced("always_on"),
        Workload::Idle => idle(s),
        Workload::Inflight => inflight(s),
    }
}

/// Fails unless every binary the workloads need is in `dir`.
///
/// # Errors
/// Naming the missing binaries and how to build them.
pub fn check_bins(dir: &Path) -> anyhow::Result<()> {
    let bins = [
        "broker",
        "proxy",
        "server",
        "client",
        "reference",
        "nats-bench",
    ];
    let missing: Vec<_> = bins
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "missing binaries in {}: {} (build them: cargo build --release --bins)",
        dir.display(),
        missing.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_makes_one_full_workload_per_concurrency() {
        let all = Workload::all(&[1, 256]);
        let ids = |pick: fn(&Workload) -> bool| -> Vec<String> {
            all.iter().filter(|w| pick(w)).map(|w| w.id()).collect()
        };
        assert_eq!(
            ids(|w| matches!(w, Workload::Full(_))),
            ["full-c1", "full-c256"]
        );
        assert_eq!(
            ids(|w| matches!(w, Workload::Bare(_))),
            ["bare-c1", "bare-c256"]
        );
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
