//! Medians over runs, the comparison rows with their targets, and the
//! Markdown and JSON renderings.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use testkit::process::Usage;

use crate::scenario::{Sample, Settings, Side, Workload, OTHER};

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `nproc`.
    pub nproc: usize,
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// libzmq version.
    pub libzmq: String,
    /// Git revision of the checkout (with `-dirty` when modified), if known.
    pub git: String,
    /// UTC time of the run.
    pub date: String,
    /// /proc/loadavg when the run started.
    pub loadavg: String,
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Machine {
    /// Reads the machine description.
    pub fn detect() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let (a, b, c) = zmq::version();
        let git = command_output("git", &["describe", "--always", "--dirty"])
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            cpu_model,
            kernel,
            libzmq: format!("{a}.{b}.{c}"),
            git,
            date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }
}

/// Median of `v` (mean of the middle two for an even count); NaN if empty.
pub fn median(v: &mut Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_side(sides: &[&Side]) -> Side {
    let mut metrics: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut procs: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for s in sides {
        for (k, v) in &s.metrics {
            metrics.entry(k.clone()).or_default().push(*v);
        }
        for u in &s.procs {
            match procs.iter_mut().find(|(n, _, _)| *n == u.name) {
                Some((_, c, r)) => {
                    c.push(u.cpu_s);
                    r.push(u.peak_rss_mb);
                }
                None => procs.push((u.name.clone(), vec![u.cpu_s], vec![u.peak_rss_mb])),
            }
        }
    }
    Side {
        metrics: metrics
            .into_iter()
            .map(|(k, mut v)| (k, median(&mut v)))
            .collect(),
        procs: procs
            .into_iter()
            .map(|(name, mut c, mut r)| Usage {
                name,
                cpu_s: median(&mut c),
                peak_rss_mb: median(&mut r),
            })
            .collect(),
    }
}

/// Per-metric medians of several runs of one workload.
pub fn median_sample(runs: &[Sample]) -> Sample {
    let ours: Vec<&Side> = runs.iter().map(|s| &s.ours).collect();
    let refs: Vec<&Side> = runs.iter().filter_map(|s| s.reference.as_ref()).collect();
    Sample {
        ours: median_side(&ours),
        reference: (!refs.is_empty()).then(|| median_side(&refs)),
    }
}

/// Everything measured for one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// Which.
    pub workload: Workload,
    /// Title.
    pub title: String,
    /// Every run.
    pub runs: Vec<Sample>,
    /// Medians.
    pub median: Option<Sample>,
    /// Errors of failed runs.
    pub errors: Vec<String>,
}

/// A target a figure is checked against.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// mensageria / reference ≥ x.
    RatioAtLeast(f64),
    /// mensageria / reference ≤ x.
    RatioAtMost(f64),
    /// mensageria ≥ x.
    AtLeast(f64),
    /// mensageria ≤ x.
    AtMost(f64),
    /// mensageria = 0 when reference = 0.
    ZeroIfReferenceZero,
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast(x) => format!("≥ {x:.2}× ref"),
            Target::RatioAtMost(x) => format!("≤ {x:.2}× ref"),
            Target::AtLeast(x) => format!("≥ {} {unit}", fmt_num(x)),
            Target::AtMost(x) => format!("≤ {} {unit}", fmt_num(x)),
            Target::ZeroIfReferenceZero => "0 where ref has 0".into(),
        }
    }

    fn check(self, ours: Option<f64>, reference: Option<f64>) -> Option<bool> {
        let ratio = ratio(ours, reference);
        match self {
            Target::RatioAtLeast(x) => ratio.map(|r| r >= x),
            Target::RatioAtMost(x) => ratio.map(|r| r <= x),
            Target::AtLeast(x) => ours.map(|o| o >= x),
            Target::AtMost(x) => ours.map(|o| o <= x),
            Target::ZeroIfReferenceZero => match (ours, reference) {
                (Some(o), Some(0.0)) => Some(o == 0.0),
                _ => None,
            },
        }
    }
}

fn ratio(ours: Option<f64>, reference: Option<f64>) -> Option<f64> {
    match (ours, reference) {
        (Some(o), Some(r)) if r != 0.0 && o.is_finite() && r.is_finite() => Some(o / r),
        _ => None,
    }
}

/// One line of the comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Workload id.
    pub workload: String,
    /// Workload title.
    pub title: String,
    /// What is measured.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// mensageria's median.
    pub mensageria: Option<f64>,
    /// The reference's median (for tracing rows: the untraced full system).
    pub reference: Option<f64>,
    /// mensageria / reference.
    pub ratio: Option<f64>,
    /// Target, if any.
    pub target: Option<String>,
    /// Whether the target is met.
    pub pass: Option<bool>,
}

/// One line of the process table.
#[derive(Debug, Clone, Serialize)]
pub struct ProcRow {
    /// Workload id.
    pub workload: String,
    /// `mensageria` or `reference`.
    pub side: String,
    /// Process label.
    pub process: String,
    /// Median CPU seconds during the measured phase.
    pub cpu_s: f64,
    /// CPU microseconds per operation (request or delivery) of the phase.
    pub cpu_us_per_op: Option<f64>,
    /// Median peak RSS, MiB.
    pub peak_rss_mb: f64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Machine.
    pub machine: Machine,
    /// Settings used.
    pub settings: Settings,
    /// Runs per workload.
    pub runs: usize,
    /// Whether this was a `--smoke` run.
    pub smoke: bool,
    /// Wall time of the whole harness run, seconds.
    pub elapsed_s: f64,
    /// Comparison table.
    pub rows: Vec<Row>,
    /// Process table.
    pub processes: Vec<ProcRow>,
    /// Raw data.
    pub workloads: Vec<WorkloadReport>,
}

struct RowBuilder<'a> {
    rows: &'a mut Vec<Row>,
    w: Workload,
    sample: &'a Sample,
}

impl RowBuilder<'_> {
    /// A row of the sample's figure `key`, both sides.
    fn add(&mut self, key: &str, metric: &str, unit: &str) -> &mut Row {
        let get = |side: &Side| side.metrics.get(key).copied();
        let (ours, reference) = (get(&self.sample.ours), self.sample.reference.as_ref());
        self.push(metric, unit, ours, reference.and_then(get))
    }

    fn push(
        &mut self,
        metric: &str,
        unit: &str,
        ours: Option<f64>,
        reference: Option<f64>,
    ) -> &mut Row {
        self.rows.push(Row {
            workload: self.w.id(),
            title: self.w.title(),
            metric: metric.into(),
            unit: unit.into(),
            mensageria: ours,
            reference,
            ratio: ratio(ours, reference),
            target: None,
            pass: None,
        });
        self.rows.last_mut().expect("just pushed")
    }
}

impl Row {
    /// Sets the row's target (if any) and whether it is met.
    fn target(&mut self, target: Option<Target>) {
        self.target = target.map(|t| t.describe(&self.unit));
        self.pass = target.and_then(|t| t.check(self.mensageria, self.reference));
    }
}

/// Builds the comparison rows from the medians.
pub fn rows(workloads: &[WorkloadReport]) -> Vec<Row> {
    let mut rows = Vec::new();
    let median_of = |w: Workload| {
        workloads
            .iter()
            .find(|r| r.workload == w)
            .and_then(|r| r.median.as_ref())
    };
    let tracing_c = workloads
        .iter()
        .find(|w| {
            w.workload == Workload::TracingUnsampled || w.workload == Workload::TracingSampled
        })
        .and_then(|w| w.runs.first())
        .and_then(|s| s.ours.metrics.get("concurrency").copied())
        .map(|c| c as u32);
    let baseline_rps = tracing_c
        .and_then(|c| median_of(Workload::Full(c)))
        .and_then(|s| s.ours.metrics.get("rps").copied());
    for wr in workloads {
        let Some(sample) = wr.median.as_ref() else {
            continue;
        };
        let w = wr.workload;
        let mut b = RowBuilder {
            rows: &mut rows,
            w,
            sample,
        };
        match w {
            Workload::Lockstep1 | Workload::Lockstep8 => {
                b.add("rps", "round trips/s", "/s");
                b.add("p50_us", "p50 latency", "µs")
                    .target(Some(Target::RatioAtMost(1.10)));
                b.add("p99_us", "p99 latency", "µs");
                b.add("errors", "errors", "");
            }
            Workload::Pipelined => {
                b.add("rps", "requests/s", "/s")
                    .target(Some(Target::RatioAtLeast(0.90)));
                b.add("p50_us", "p50 latency", "µs");
                b.add("p99_us", "p99 latency", "µs");
                b.add("errors", "errors", "");
            }
            Workload::Fanout | Workload::FanoutMax => {
                let paced = w == Workload::Fanout;
                b.add("publish_rate", "events published/s", "/s");
                b.add("deliveries_per_s", "deliveries/s", "/s")
                    .target(paced.then_some(Target::RatioAtLeast(0.90)));
                b.add("lost", "events lost (all subscribers)", "")
                    .target(paced.then_some(Target::ZeroIfReferenceZero));
                b.add("loss_pct", "loss", "%");
                b.add("lag_p50_us", "lag p50", "µs");
                b.add("lag_p99_us", "lag p99", "µs");
            }
            // In the sweep table only, beside the NATS rows.
            Workload::Bare(_) => {}
            Workload::Full(c) => {
                b.add("rps", "requests/s", "/s")
                    .target(Some(Target::RatioAtLeast(1.0)));
                b.add("p50_us", "p50 latency", "µs")
                    .target((c == 1).then_some(Target::RatioAtMost(1.0)));
                b.add("p99_us", "p99 latency", "µs");
                b.add("errors", "errors", "")
                    .target(Some(Target::ZeroIfReferenceZero));
                b.add("events_received", "events received", "");
                b.add("events_lost", "events lost (sequence gaps)", "")
                    .target(Some(Target::ZeroIfReferenceZero));
                b.add(
                    "events_missing",
                    "events missing (ok replies − received)",
                    "",
                );
            }
            Workload::TracingUnsampled | Workload::TracingSampled => {
                let ours = sample.ours.metrics.get("rps").copied();
                let unsampled = w == Workload::TracingUnsampled;
                b.push(
                    "requests/s (ref = untraced full system)",
                    "/s",
                    ours,
                    baseline_rps,
                )
                .target(unsampled.then_some(Target::RatioAtLeast(0.97)));
                if unsampled {
                    b.push("capacity, every metric on", "/s", ours, None)
                        .target(Some(Target::AtLeast(150_000.0)));
                }
                if let (Some(o), Some(r)) = (ours, baseline_rps) {
                    b.push("throughput cost", "%", Some(100.0 * (1.0 - o / r)), None);
                }
                b.add("p50_us", "p50 latency", "µs");
                b.add("p99_us", "p99 latency", "µs");
                b.add("otlp_posts", "OTLP export requests", "");
            }
            Workload::Idle => {
                for (k, name) in [
                    ("broker_rss_mb", "broker RSS"),
                    ("proxy_rss_mb", "proxy RSS"),
                    ("server_rss_mb", "server RSS (ref: worker)"),
                    ("client_rss_mb", "client run RSS"),
                ] {
                    b.add(k, name, "MiB").target(Some(Target::AtMost(15.0)));
                }
            }
            Workload::DispatchLockstep1 | Workload::DispatchPipelined => {
                // Compared with the same run's REP path (pipelined) and
                // bare-libzmq reference (lockstep1), like the tracing rows.
                let get =
                    |side: Option<&Side>, k: &str| side.and_then(|s| s.metrics.get(k).copied());
                let ours = |k: &str| get(Some(&sample.ours), k);
                if w == Workload::DispatchPipelined {
                    let rep = get(median_of(Workload::Pipelined).map(|s| &s.ours), "rps");
                    b.push("requests/s (ref = REP path)", "/s", ours("rps"), rep)
                        .target(Some(Target::RatioAtLeast(0.90)));
                    b.add("p50_us", "p50 latency", "µs");
                } else {
                    let bare = median_of(Workload::Lockstep1).and_then(|s| s.reference.as_ref());
                    b.add("rps", "round trips/s", "/s");
                    let p50 = get(bare, "p50_us");
                    b.push("p50 latency (ref = bare libzmq)", "µs", ours("p50_us"), p50)
                        .target(Some(Target::RatioAtMost(1.10)));
                }
                b.add("p99_us", "p99 latency", "µs");
                b.add("errors", "errors", "");
            }
            Workload::Inflight => {
                b.add("rss_mb", "broker VmRSS, 100k in flight", "MiB")
                    .target(Some(Target::AtMost(100.0)));
                b.add("hwm_mb", "broker VmHWM", "MiB");
                b.add("idle_rss_mb", "broker VmRSS before", "MiB");
                b.add("inflight", "in-flight gauge", "");
                b.add("flood_s", "time to put them in flight", "s");
                b.add("rejected", "answered at once and re-sent", "");
            }
        }
    }
    rows
}

/// Builds the process table from the medians.
pub fn proc_rows(workloads: &[WorkloadReport]) -> Vec<ProcRow> {
    let mut out = Vec::new();
    for wr in workloads {
        let Some(m) = wr.median.as_ref() else {
            continue;
        };
        if wr.workload == Workload::Idle {
            continue;
        }
        let (ours, reference) = match wr.workload {
            Workload::Full(_) => ("mensageria", "NATS"),
            Workload::Bare(_) => ("bare libzmq", "reference"),
            _ => ("mensageria", "reference"),
        };
        for (side, s) in [(ours, Some(&m.ours)), (reference, m.reference.as_ref())] {
            let Some(s) = s else { continue };
            let ops = s.metrics.get("ops").copied().filter(|o| *o > 0.0);
            let started: Vec<&Usage> = s.started().collect();
            let total = Usage {
                name: "Σ started processes".into(),
                cpu_s: started.iter().map(|u| u.cpu_s).sum(),
                peak_rss_mb: started.iter().map(|u| u.peak_rss_mb).sum(),
            };
            for u in s.procs.iter().chain((started.len() > 1).then_some(&total)) {
                out.push(ProcRow {
                    workload: wr.workload.id(),
                    side: side.into(),
                    process: u.name.clone(),
                    cpu_s: u.cpu_s,
                    cpu_us_per_op: ops
                        .filter(|_| u.peak_rss_mb.is_finite())
                        .map(|o| u.cpu_s * 1e6 / o),
                    peak_rss_mb: u.peak_rss_mb,
                });
            }
        }
    }
    out
}

/// Formats a number for the table: integers with thin grouping, small values with decimals.
pub fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut g = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                g.push(',');
            }
            g.push(c);
        }
        if v < 0.0 {
            format!("-{g}")
        } else {
            g
        }
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), fmt_num)
}

impl Report {
    /// The Markdown rendering.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let s = &self.settings;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "## mensageria benchmark{}\n",
            if self.smoke { " (smoke)" } else { "" }
        );
        let _ = writeln!(
            o,
            "Machine: nproc {}, {}, Linux {}, libzmq {}; git {}; {}; load average at start {}.  ",
            m.nproc, m.cpu_model, m.kernel, m.libzmq, m.git, m.date, m.loadavg
        );
        let _ = writeln!(
            o,
            "Median of {} run(s); {:.1} s measured per phase after {:.1} s warm-up; requests {} B, events {} B; \
             {} server(s) × {} workers (reference: {} worker process(es) × {} REP threads); \
             paced fan-out at {} events/s; total {:.0} s.\n",
            self.runs,
            s.duration.as_secs_f64(),
            s.warmup.as_secs_f64(),
            s.payload_size,
            s.event_size,
            s.servers,
            s.workers,
            s.servers,
            s.workers,
            fmt_num(s.fanout_rate),
            self.elapsed_s
        );
        let busiest = self
            .processes
            .iter()
            .filter(|p| p.process == OTHER)
            .map(|p| p.cpu_s / s.duration.as_secs_f64())
            .fold(0.0f64, f64::max);
        if busiest > 0.1 {
            let _ = writeln!(
                o,
                "⚠ Processes not started by the harness used up to {busiest:.2} CPU cores during a measured \
                 phase (rows `{OTHER}` below): those figures are disturbed.\n"
            );
        }
        let _ = writeln!(
            o,
            "| workload | metric | mensageria | reference | ratio | target | |\n|---|---|---:|---:|---:|---|---|"
        );
        let mut last = String::new();
        for r in &self.rows {
            let title = if r.title == last {
                String::new()
            } else {
                last = r.title.clone();
                r.title.clone()
            };
            let unit = if r.unit.is_empty() || r.unit == "/s" {
                String::new()
            } else {
                format!(" {}", r.unit)
            };
            let mark = match r.pass {
                Some(true) => "✅",
                Some(false) => "❌",
                None => "",
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} | {} | {} | {} |",
                title,
                r.metric,
                opt(r.mensageria),
                unit,
                opt(r.reference),
                r.ratio.map_or_else(|| "—".into(), |x| format!("{x:.2}×")),
                r.target.clone().unwrap_or_default(),
                mark
            );
        }
        let failures: Vec<String> = self
            .workloads
            .iter()
            .flat_map(|w| w.errors.iter().map(move |e| (w.workload.id(), e)))
            .map(|(id, e)| format!("- {id}: {}\n", e.lines().next().unwrap_or("")))
            .collect();
        if !failures.is_empty() {
            let _ = write!(o, "\n**Failures:**\n\n{}", failures.concat());
        }
        o.push_str(&self.sweep_markdown());
        let _ = writeln!(
            o,
            "\n### Processes (median CPU s during the measured phase, CPU µs per request/delivery, peak RSS)\n"
        );
        let _ = writeln!(
            o,
            "| workload | side | process | CPU s | CPU µs/op | peak RSS MiB |\n|---|---|---|---:|---:|---:|"
        );
        let mut last = (String::new(), String::new());
        for p in &self.processes {
            let key = (p.workload.clone(), p.side.clone());
            let (w, sd) = if key == last {
                (String::new(), String::new())
            } else {
                last = key.clone();
                key
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.2} | {} | {} |",
                w,
                sd,
                p.process,
                p.cpu_s,
                p.cpu_us_per_op
                    .map_or_else(|| "—".into(), |x| format!("{x:.2}")),
                if p.peak_rss_mb.is_nan() {
                    "—".into()
                } else {
                    format!("{:.1}", p.peak_rss_mb)
                }
            );
        }
        let _ = writeln!(
            o,
            "\nReference = bare libzmq: `zmq::proxy(ROUTER, DEALER)` with trivial echoing REP workers, \
             `zmq::proxy(XSUB, XPUB)`; same HWMs (10000), separate processes. Full-system rows compare with \
             NATS (nats-server and the async-nats client, same shape). Tracing rows compare with the \
             untraced full system at the same concurrency (ratio ≥ 0.97 = cost ≤ 3%). Request/reply workloads run without a proxy \
             (the servers' events are built and dropped). Targets are informational."
        );
        o
    }
}

/// CPU µs per operation of each started process of `side` (the harness and
/// the machine's other load left out), and their sum.
fn cpu_per_op(side: &Side) -> (Vec<(String, f64)>, f64) {
    let ops = side.metrics.get("ops").copied().unwrap_or(0.0);
    if ops <= 0.0 {
        return (Vec::new(), f64::NAN);
    }
    let each: Vec<(String, f64)> = side
        .started()
        .map(|u| (u.name.clone(), u.cpu_s * 1e6 / ops))
        .collect();
    let total = each.iter().map(|(_, c)| c).sum();
    (each, total)
}

impl Report {
    /// The full-system sweep, mensageria and NATS side by side, with the
    /// same shape in bare libzmq where it ran.
    fn sweep_markdown(&self) -> String {
        let mut o = String::new();
        let bare = |c: u32| {
            self.workloads
                .iter()
                .find(|w| w.workload == Workload::Bare(c))
                .and_then(|w| w.median.as_ref())
        };
        let points: Vec<(u32, &Sample)> = self
            .workloads
            .iter()
            .filter_map(|w| match (w.workload, w.median.as_ref()) {
                (Workload::Full(c), Some(m)) => Some((c, m)),
                _ => None,
            })
            .collect();
        if points.is_empty() {
            return o;
        }
        let _ = writeln!(
            o,
            "\n### Full system: mensageria vs NATS ({} servers/responders, one event per request to 1 subscriber)\n",
            self.settings.full_servers
        );
        if self.settings.nats_server.is_none() {
            let _ = writeln!(o, "NATS rows skipped: {}\n", crate::scenario::NATS_MISSING);
        }
        let _ = writeln!(
            o,
            "| outstanding | system | req/s | p50 µs | p99 µs | errors | events received | events lost | CPU µs/request by process | Σ CPU µs/req |\n\
             |---:|---|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for &(c, m) in &points {
            let mut line = |name: &str, side: &Side| {
                let g = |k: &str| fmt_num(side.value(k));
                let (each, total) = cpu_per_op(side);
                let each: Vec<String> = each.iter().map(|(n, v)| format!("{n} {v:.1}")).collect();
                let _ = writeln!(
                    o,
                    "| {c} | {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    g("rps"),
                    g("p50_us"),
                    g("p99_us"),
                    g("errors"),
                    g("events_received"),
                    g("events_lost"),
                    each.join(", "),
                    if total.is_nan() {
                        "—".into()
                    } else {
                        format!("{total:.1}")
                    }
                );
            };
            line("mensageria", &m.ours);
            let bare = bare(c).map(|b| &b.ours);
            if let Some(b) = bare {
                line("bare libzmq", b);
            }
            if let Some(r) = m.reference.as_ref() {
                line("NATS", r);
                let mut ratios = vec![("*ratio* (mensageria / NATS)", &m.ours, true)];
                ratios.extend(bare.map(|b| ("*bare libzmq / NATS*", b, false)));
                for (name, side, with_cpu) in ratios {
                    let ratio = |k: &str| ratio_opt(side.value(k), r.value(k));
                    let cpu = if with_cpu {
                        ratio_opt(cpu_per_op(side).1, cpu_per_op(r).1)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        o,
                        "| {c} | {name} | {} | {} | {} | | | | | {cpu} |",
                        ratio("rps"),
                        ratio("p50_us"),
                        ratio("p99_us"),
                    );
                }
            }
        }
        if points.iter().any(|(c, _)| bare(*c).is_some()) {
            let _ = writeln!(
                o,
                "\n*bare libzmq*: the same shape with `zmq::proxy` as broker and proxy and REP \
                 workers that publish one event each; the load (one DEALER) and the subscriber \
                 run inside the harness, so their CPU is not in its Σ. At 1 outstanding it bounds \
                 the latency any libzmq system of this shape can reach, at 256 the CPU per \
                 request; at 16–64 its REP workers, which hold one request at a time, are the \
                 limit, so it can fall below mensageria's credit-based workers there."
            );
        }
        o
    }
}

fn ratio_opt(a: f64, b: f64) -> String {
    ratio(Some(a), Some(b)).map_or_else(|| "—".into(), |x| format!("{x:.2}×"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_nan_and_handles_even_counts() {
        assert_eq!(median(&mut vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut vec![f64::NAN, 5.0]), 5.0);
        assert!(median(&mut vec![]).is_nan());
    }

    #[test]
    fn targets_compare_the_right_way() {
        assert_eq!(
            Target::RatioAtLeast(0.9).check(Some(95.0), Some(100.0)),
            Some(true)
        );
        assert_eq!(
            Target::RatioAtMost(1.1).check(Some(120.0), Some(100.0)),
            Some(false)
        );
        assert_eq!(Target::AtMost(15.0).check(Some(14.0), None), Some(true));
        assert_eq!(
            Target::ZeroIfReferenceZero.check(Some(3.0), Some(0.0)),
            Some(false)
        );
        assert_eq!(
            Target::ZeroIfReferenceZero.check(Some(3.0), Some(1.0)),
            None
        );
        assert_eq!(Target::RatioAtLeast(0.9).check(Some(1.0), Some(0.0)), None);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(-1500.0), "-1,500");
        assert_eq!(fmt_num(12.345), "12.3");
        assert_eq!(fmt_num(0.5), "0.50");
        assert_eq!(fmt_num(f64::NAN), "—");
    }
}
