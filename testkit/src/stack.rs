//! The one way the suites and the harness start mensageria's services: a
//! [`Launcher`] (which binaries, environment, logs, time limits) starts one
//! [`Broker`], [`Proxy`] or [`Server`] on ephemeral loopback ports read back
//! from its ready record, and [`StackBuilder`] starts a whole [`Stack`]:
//! broker, proxy and N servers, with flags and environment per service.
//!
//! **Ready**, the one definition: every service has written its ready record
//! (each checks its own readiness before it does), and the servers are
//! attached, measured from the broker's and the proxy's counters taken
//! before the servers started ([`Baseline`]): the broker has one more
//! Majordomo registration per service of every Majordomo server (or one more
//! backend handshake per worker of every REP server), and the proxy one more
//! XSUB handshake per server. Counting from a baseline makes the same test
//! hold for a server added to a running stack.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mensageria::ready::ReadyRecord;

use crate::{
    bins,
    metrics::families,
    ops,
    process::{Proc, ProcBuilder},
    wait::POLL_INTERVAL,
};

/// The shutdown grace every service gets by default (`--shutdown-grace`).
pub const GRACE: Duration = Duration::from_secs(3);
/// [`GRACE`] as a command-line value.
pub const GRACE_ARG: &str = "3s";
/// Longest wait for a service to become ready by default.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Worker threads per server unless asked otherwise.
pub const DEFAULT_WORKERS: u32 = 2;

/// Server flags of a plain REP server (the seed's way: round-robin from the
/// broker's backend, default service only).
pub const REP_ARGS: [&str; 2] = ["--worker-protocol", "rep"];

const BACKEND_HANDSHAKES: &str =
    r#"mensageria_zmq_socket_events_total{socket="backend",event="handshake_succeeded"}"#;
const WORKERS: &str = "mensageria_broker_workers";
const XSUB_HANDSHAKES: &str =
    r#"mensageria_zmq_socket_events_total{socket="xsub",event="handshake_succeeded"}"#;

/// How services are started.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// Where the binaries are ([`bins::bin_dir`] by default).
    pub bin_dir: PathBuf,
    /// Environment of every service, before its own (default: JSON logs at
    /// info, for the diagnostics a failing test prints).
    pub env: Vec<(String, String)>,
    /// Start from a cleared environment ([`ProcBuilder::clean_env`]; default).
    pub clean_env: bool,
    /// Also write each service's stderr to a log file here.
    pub log_dir: Option<PathBuf>,
    /// `--shutdown-grace` of every service.
    pub shutdown_grace: String,
    /// How long a [`Proc`] gets after SIGTERM when stopped (zero: dropping
    /// it sends SIGKILL at once).
    pub stop_grace: Duration,
    /// Longest wait for a service to become ready.
    pub ready_timeout: Duration,
    /// Command the broker runs under (e.g. `valgrind --tool=callgrind`);
    /// empty: none.
    pub broker_wrapper: Vec<String>,
    /// Stop grace and ready timeout of a wrapped broker.
    pub wrapped_broker_time: Duration,
}

impl Default for Launcher {
    fn default() -> Launcher {
        Launcher {
            bin_dir: bins::bin_dir(),
            env: vec![
                ("LOG_FORMAT".into(), "json".into()),
                ("RUST_LOG".into(), "info".into()),
            ],
            clean_env: true,
            log_dir: None,
            shutdown_grace: GRACE_ARG.into(),
            stop_grace: Duration::ZERO,
            ready_timeout: START_TIMEOUT,
            broker_wrapper: Vec::new(),
            wrapped_broker_time: Duration::from_secs(120),
        }
    }
}

/// `defaults` (flag, value) pairs whose flag is not in `extra`, then `extra`.
fn merge_args(defaults: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, value) in defaults {
        let overridden = extra
            .iter()
            .any(|e| e == flag || e.starts_with(&format!("{flag}=")));
        if !overridden {
            args.push((*flag).to_owned());
            args.push((*value).to_owned());
        }
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// The first endpoint socket `socket` bound, from a ready record.
fn bound(record: &ReadyRecord, socket: &str) -> anyhow::Result<String> {
    record
        .bound_endpoint(socket)
        .map(str::to_owned)
        .with_context(|| format!("no `{socket}` endpoint in the ready record {record:?}"))
}

/// The detail `key` of a ready record.
fn detail<'a>(record: &'a ReadyRecord, key: &str) -> anyhow::Result<&'a str> {
    record
        .details
        .get(key)
        .map(String::as_str)
        .with_context(|| format!("no detail `{key}` in the ready record {record:?}"))
}

/// A broker or a proxy: a service that binds two endpoints.
trait Binds: Sized {
    const BIN: &'static str;
    /// (bind flag, socket name in the ready record) of both endpoints.
    const BINDS: [(&'static str, &'static str); 2];
    fn new(proc: Proc, endpoints: [String; 2], http: SocketAddr) -> Self;
    fn endpoints(&self) -> [&str; 2];
}

impl Launcher {
    /// Starts binary `bin` (called `name`) with `args`, the launcher's
    /// environment then `env`, and a fresh ready file.
    ///
    /// # Errors
    /// If the binary is missing or cannot be started.
    pub fn spawn(
        &self,
        name: &str,
        bin: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let program = bins::bin_in(&self.bin_dir, bin)?;
        let wrapper = self
            .broker_wrapper
            .split_first()
            .filter(|_| bin == "broker");
        let mut b = match wrapper {
            Some((wrapper, rest)) => ProcBuilder::new(name, wrapper)
                .args(rest)
                .args([program])
                .grace(self.wrapped_broker_time),
            None => ProcBuilder::new(name, program).grace(self.stop_grace),
        };
        if self.clean_env {
            b = b.clean_env();
        }
        b = b
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .ready_file();
        if let Some(dir) = &self.log_dir {
            b = b.log_to(dir);
        }
        b.spawn()
    }

    /// [`Launcher::spawn`] on a chosen ops port (`args` must not set
    /// `--http-addr`), waiting until its `/healthz` answers 200: for a
    /// service that may not become ready (no broker yet, bad keys), so has
    /// no ready record to wait for.
    ///
    /// # Errors
    /// If it cannot start or does not answer in time.
    pub fn spawn_alive(
        &self,
        name: &str,
        bin: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Proc, SocketAddr)> {
        let http: SocketAddr = ([127, 0, 0, 1], crate::ports::unused_port()).into();
        let mut all = args.to_vec();
        all.extend(["--http-addr".to_owned(), http.to_string()]);
        let mut proc = self.spawn(name, bin, &all, env)?;
        proc.try_wait_alive(http, self.ready_timeout)?;
        Ok((proc, http))
    }

    fn timeout_of(&self, bin: &str) -> Duration {
        if bin == "broker" && !self.broker_wrapper.is_empty() {
            self.wrapped_broker_time
        } else {
            self.ready_timeout
        }
    }

    /// Starts a broker or proxy on ephemeral loopback ports, without waiting.
    fn spawn_binding<T: Binds>(
        &self,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let [(first, _), (second, _)] = T::BINDS;
        let any = "tcp://127.0.0.1:*";
        let defaults = [
            ("--http-addr", "127.0.0.1:0"),
            (first, any),
            (second, any),
            ("--shutdown-grace", &self.shutdown_grace),
        ];
        self.spawn(T::BIN, T::BIN, &merge_args(&defaults, extra), env)
    }

    fn finish_binding<T: Binds>(&self, proc: Proc) -> anyhow::Result<T> {
        let ready = proc.try_ready_record(self.timeout_of(T::BIN))?;
        let [(_, first), (_, second)] = T::BINDS;
        let endpoints = [bound(&ready, first)?, bound(&ready, second)?];
        Ok(T::new(proc, endpoints, ready.http_addr))
    }

    /// Starts a broker on ephemeral loopback ports (`extra` flags override
    /// the defaults; `env` on top of the launcher's) and waits until ready.
    ///
    /// # Errors
    /// If it cannot start or does not become ready in time.
    pub fn broker(&self, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Broker> {
        self.finish_binding(self.spawn_binding::<Broker>(extra, env)?)
    }

    /// Starts a proxy like [`Launcher::broker`].
    ///
    /// # Errors
    /// If it cannot start or does not become ready in time.
    pub fn proxy(&self, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Proxy> {
        self.finish_binding(self.spawn_binding::<Proxy>(extra, env)?)
    }

    /// Starts a server called `name` connected to `brokers` (frontend
    /// endpoints, or backend endpoints with [`REP_ARGS`]) and `proxies` (XSUB
    /// endpoints), [`DEFAULT_WORKERS`] workers unless `extra` says
    /// otherwise, without waiting.
    fn spawn_server(
        &self,
        name: &str,
        (brokers, proxies): (&str, &str),
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let workers = DEFAULT_WORKERS.to_string();
        let args = merge_args(
            &[
                ("--http-addr", "127.0.0.1:0"),
                ("--broker-endpoints", brokers),
                ("--proxy-endpoints", proxies),
                ("--workers", &workers),
                ("--shutdown-grace", &self.shutdown_grace),
            ],
            extra,
        );
        self.spawn(name, "server", &args, env)
    }

    fn finish_server(&self, proc: Proc) -> anyhow::Result<Server> {
        let ready = proc.try_ready_record(self.ready_timeout)?;
        Ok(Server {
            instance: detail(&ready, "instance")?.to_owned(),
            workers: detail(&ready, "workers")?
                .parse()
                .context("`workers` in the ready record is not a number")?,
            services: detail(&ready, "services")?
                .split(',')
                .map(str::to_owned)
                .collect(),
            rep: detail(&ready, "protocol")? == "rep",
            http: ready.http_addr,
            proc,
        })
    }

    /// Starts `n` servers side by side, named `server#<first>`,
    /// `server#<first + 1>`…, and waits for their ready records (not for
    /// them to be attached: [`wait_attached`]).
    ///
    /// # Errors
    /// If one cannot start or does not become ready in time.
    pub fn servers(
        &self,
        (n, first): (usize, usize),
        endpoints: (&str, &str),
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Vec<Server>> {
        let procs = (first..first + n)
            .map(|i| self.spawn_server(&format!("server#{i}"), endpoints, extra, env))
            .collect::<anyhow::Result<Vec<Proc>>>()?;
        procs.into_iter().map(|p| self.finish_server(p)).collect()
    }

    /// One server like [`Launcher::servers`], called `server`.
    ///
    /// # Errors
    /// If it cannot start or does not become ready in time.
    pub fn server(
        &self,
        endpoints: (&str, &str),
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        self.finish_server(self.spawn_server("server", endpoints, extra, env)?)
    }

    /// Starts a server like [`Launcher::server`] without waiting for it to
    /// be ready (its broker may not be up): its ops port is chosen here and
    /// it is waited for until `/healthz` answers.
    ///
    /// # Errors
    /// If it cannot start or does not answer in time.
    pub fn server_alive(
        &self,
        endpoints: (&str, &str),
        extra: &[&str],
    ) -> anyhow::Result<(Proc, SocketAddr)> {
        let http: SocketAddr = ([127, 0, 0, 1], crate::ports::unused_port()).into();
        let addr = http.to_string();
        let mut args = vec!["--http-addr", &addr];
        args.extend_from_slice(extra);
        let mut proc = self.spawn_server("server", endpoints, &args, &[])?;
        proc.try_wait_alive(http, self.ready_timeout)?;
        Ok((proc, http))
    }
}

fn or_panic<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// A service like `old` (which must have exited), bound to the same
/// endpoints with the default [`Launcher`] and `extra` flags: what a
/// restarted pod looks like to its peers.
fn restarted<T: Binds>(old: &T, extra: &[&str]) -> T {
    let ends = old.endpoints();
    let [(first, _), (second, _)] = T::BINDS;
    let mut args = vec![first, ends[0], second, ends[1]];
    args.extend_from_slice(extra);
    let l = Launcher::default();
    let new: T = or_panic(
        l.spawn_binding::<T>(&args, &[])
            .and_then(|p| l.finish_binding(p)),
    );
    assert_eq!(
        new.endpoints(),
        ends,
        "the restarted service must be on the same ports"
    );
    new
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    /// The process.
    pub proc: Proc,
    /// Frontend endpoint (clients and Majordomo workers connect).
    pub frontend: String,
    /// Backend endpoint (REP servers connect).
    pub backend: String,
    /// Ops HTTP address.
    pub http: SocketAddr,
}

impl Binds for Broker {
    const BIN: &'static str = "broker";
    const BINDS: [(&'static str, &'static str); 2] = [
        ("--frontend-bind", "frontend"),
        ("--backend-bind", "backend"),
    ];
    fn new(proc: Proc, [frontend, backend]: [String; 2], http: SocketAddr) -> Broker {
        Broker {
            proc,
            frontend,
            backend,
            http,
        }
    }
    fn endpoints(&self) -> [&str; 2] {
        [&self.frontend, &self.backend]
    }
}

impl Broker {
    /// A broker on the same endpoints as this one, which must have exited.
    ///
    /// # Panics
    /// If it cannot start, is not ready in time or not on the same endpoints.
    pub fn restart(&self, extra: &[&str]) -> Broker {
        restarted(self, extra)
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    /// The process.
    pub proc: Proc,
    /// XSUB endpoint (publishers connect).
    pub xsub: String,
    /// XPUB endpoint (subscribers connect).
    pub xpub: String,
    /// Ops HTTP address.
    pub http: SocketAddr,
}

impl Binds for Proxy {
    const BIN: &'static str = "proxy";
    const BINDS: [(&'static str, &'static str); 2] =
        [("--xsub-bind", "xsub"), ("--xpub-bind", "xpub")];
    fn new(proc: Proc, [xsub, xpub]: [String; 2], http: SocketAddr) -> Proxy {
        Proxy {
            proc,
            xsub,
            xpub,
            http,
        }
    }
    fn endpoints(&self) -> [&str; 2] {
        [&self.xsub, &self.xpub]
    }
}

impl Proxy {
    /// A proxy on the same endpoints as this one, as [`Broker::restart`].
    ///
    /// # Panics
    /// As [`Broker::restart`].
    pub fn restart(&self, extra: &[&str]) -> Proxy {
        restarted(self, extra)
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Ops HTTP address.
    pub http: SocketAddr,
    /// Instance id (what `whoami` answers).
    pub instance: String,
    /// Worker threads.
    pub workers: u32,
    /// Services it registers (Majordomo), from its ready record.
    pub services: Vec<String>,
    /// Whether its workers are plain REP sockets (`--worker-protocol rep`).
    pub rep: bool,
}

impl Server {
    /// `mensageria_server_requests_total{status="ok"}`.
    ///
    /// # Panics
    /// If the scrape fails or the series is not exposed.
    pub fn handled_ok(&self) -> f64 {
        const SERIES: &str = r#"mensageria_server_requests_total{status="ok"}"#;
        ops::metric(self.http, SERIES)
    }

    /// Broker registrations this server makes per broker: one per service
    /// (none for REP workers, which the broker sees as backend peers).
    pub fn registrations(&self) -> usize {
        if self.rep {
            0
        } else {
            self.services.len()
        }
    }
}

/// The sum of `mensageria_broker_workers` samples on a broker whose labels
/// include `matching` (e.g. `[("service", "echo"), ("state", "busy")]`):
/// Majordomo workers registered.
///
/// # Panics
/// If the scrape fails.
pub fn broker_workers(broker_http: SocketAddr, matching: &[(&str, &str)]) -> f64 {
    const FAMILY: &str = "mensageria_broker_workers";
    let text = ops::metrics_text(broker_http);
    families(&text)
        .get(FAMILY)
        .map_or(0.0, |f| f.sum(FAMILY, matching))
}

/// Waits until `broker_http` has at least `min` Majordomo workers registered.
///
/// # Panics
/// After the default ready timeout, with the last count.
pub fn wait_registered(broker_http: SocketAddr, min: f64) {
    let mut last = 0.0;
    crate::wait::poll_until(START_TIMEOUT, || {
        last = broker_workers(broker_http, &[]);
        (last >= min).then_some(())
    })
    .unwrap_or_else(|| {
        panic!("{min} Majordomo workers never registered with the broker at {broker_http}; last count {last}")
    });
}

/// What the broker and proxy had counted before servers started: ready
/// servers are measured from here (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline {
    backend_handshakes: f64,
    registered: f64,
    xsub_handshakes: f64,
}

impl Baseline {
    /// The counts of `broker` and `proxy` now (zero when not exposed yet).
    pub fn take(broker: &Broker, proxy: Option<&Proxy>) -> Baseline {
        Baseline {
            backend_handshakes: ops::scrape(broker.http, BACKEND_HANDSHAKES).unwrap_or(0.0),
            registered: ops::scrape(broker.http, WORKERS).unwrap_or(0.0),
            xsub_handshakes: proxy
                .map_or(0.0, |p| ops::scrape(p.http, XSUB_HANDSHAKES).unwrap_or(0.0)),
        }
    }
}

/// Waits until `servers` (ready, with their records) are attached to
/// `broker` and `proxy`, counting from `before` (see the module
/// documentation): the second half of the one definition of ready.
///
/// # Errors
/// If they are not attached within `timeout`, saying which count is short.
pub fn wait_attached(
    broker: &Broker,
    proxy: Option<&Proxy>,
    servers: &[&Server],
    before: Baseline,
    timeout: Duration,
) -> anyhow::Result<()> {
    let rep_workers: u32 = servers.iter().filter(|s| s.rep).map(|s| s.workers).sum();
    let registrations: usize = servers.iter().map(|s| s.registrations()).sum();
    let mut wants = vec![
        (
            "REP workers' handshakes with the broker backend",
            broker.http,
            BACKEND_HANDSHAKES,
            before.backend_handshakes + f64::from(rep_workers),
        ),
        (
            "Majordomo registrations with the broker",
            broker.http,
            WORKERS,
            before.registered + registrations as f64,
        ),
    ];
    if let Some(p) = proxy {
        wants.push((
            "server publishers' handshakes with the proxy",
            p.http,
            XSUB_HANDSHAKES,
            before.xsub_handshakes + servers.len() as f64,
        ));
    }
    let deadline = Instant::now() + timeout;
    for (what, addr, series, want) in wants {
        loop {
            let now = ops::scrape(addr, series).unwrap_or(0.0);
            if now >= want {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{what}: {series} on {addr} is {now}, not yet {want}, after {timeout:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    Ok(())
}

/// A service's flags and environment in a [`StackBuilder`].
#[derive(Debug, Clone, Default)]
struct Flags {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Flags {
    fn add(&mut self, args: &[&str], env: &[(&str, &str)]) {
        self.args.extend(args.iter().map(|s| (*s).to_owned()));
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        self.env.extend(env);
    }

    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Builds a [`Stack`]: [`Stack::builder`].
#[derive(Debug, Clone, Default)]
pub struct StackBuilder {
    launcher: Launcher,
    servers: usize,
    rep: bool,
    broker: Flags,
    proxy: Flags,
    server: Flags,
}

impl StackBuilder {
    /// How services are started (binaries, logs, time limits).
    pub fn launcher(mut self, launcher: Launcher) -> StackBuilder {
        self.launcher = launcher;
        self
    }

    /// Number of servers (default 0).
    pub fn servers(mut self, n: usize) -> StackBuilder {
        self.servers = n;
        self
    }

    /// Plain REP servers on the broker's backend ([`REP_ARGS`]) instead of
    /// Majordomo workers on its frontend.
    pub fn rep(mut self) -> StackBuilder {
        self.rep = true;
        self
    }

    /// Extra broker flags (override the defaults).
    pub fn broker_args(mut self, args: &[&str]) -> StackBuilder {
        self.broker.add(args, &[]);
        self
    }

    /// Extra proxy flags.
    pub fn proxy_args(mut self, args: &[&str]) -> StackBuilder {
        self.proxy.add(args, &[]);
        self
    }

    /// Extra server flags.
    pub fn server_args(mut self, args: &[&str]) -> StackBuilder {
        self.server.add(args, &[]);
        self
    }

    /// Environment of the broker and the proxy (e.g. CURVE server keys).
    pub fn bind_env(mut self, env: &[(&str, &str)]) -> StackBuilder {
        self.broker.add(&[], env);
        self.proxy.add(&[], env);
        self
    }

    /// Environment of the servers (e.g. CURVE client keys).
    pub fn server_env(mut self, env: &[(&str, &str)]) -> StackBuilder {
        self.server.add(&[], env);
        self
    }

    /// Environment of every service (e.g. OTLP export).
    pub fn env(self, env: &[(&str, &str)]) -> StackBuilder {
        self.bind_env(env).server_env(env)
    }

    /// Starts broker and proxy side by side, then the servers side by side,
    /// and waits until all are ready (see the module documentation).
    ///
    /// # Errors
    /// If a service cannot start or is not ready in time.
    pub fn try_start(self) -> anyhow::Result<Stack> {
        let l = &self.launcher;
        let (b, p) = (
            l.spawn_binding::<Broker>(&self.broker.args(), &self.broker.env())?,
            l.spawn_binding::<Proxy>(&self.proxy.args(), &self.proxy.env())?,
        );
        let (broker, proxy) = (l.finish_binding(b)?, l.finish_binding(p)?);
        let mut stack = Stack {
            broker,
            proxy,
            servers: Vec::new(),
            rep: self.rep,
            launcher: self.launcher.clone(),
            server: self.server.clone(),
        };
        stack.add_servers(self.servers, &[])?;
        Ok(stack)
    }

    /// [`StackBuilder::try_start`], panicking on failure.
    ///
    /// # Panics
    /// If a service cannot start or is not ready in time.
    pub fn start(self) -> Stack {
        or_panic(self.try_start())
    }
}

/// Broker, proxy and servers, all ready.
#[derive(Debug)]
pub struct Stack {
    /// The broker.
    pub broker: Broker,
    /// The proxy.
    pub proxy: Proxy,
    /// The servers, in start order.
    pub servers: Vec<Server>,
    /// Whether the servers are plain REP servers on the broker's backend
    /// rather than Majordomo workers on its frontend.
    pub rep: bool,
    launcher: Launcher,
    server: Flags,
}

impl Stack {
    /// A builder with the default [`Launcher`] and no servers.
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// Starts a broker, a proxy and `servers` default servers (Majordomo
    /// workers on the broker's frontend), all ready.
    ///
    /// # Panics
    /// If a service cannot start or is not ready in time.
    pub fn start(servers: usize) -> Stack {
        Stack::builder().servers(servers).start()
    }

    /// Starts `n` more servers side by side (the stack's server flags, then
    /// `extra`; REP when the stack is) and waits until they are ready and
    /// attached.
    ///
    /// # Errors
    /// If one cannot start or is not ready in time.
    pub fn add_servers(&mut self, n: usize, extra: &[&str]) -> anyhow::Result<()> {
        let before = Baseline::take(&self.broker, Some(&self.proxy));
        let (endpoint, mut args) = if self.rep {
            (&self.broker.backend, REP_ARGS.to_vec())
        } else {
            (&self.broker.frontend, Vec::new())
        };
        args.extend(self.server.args());
        args.extend_from_slice(extra);
        let env = self.server.env();
        let first = self.servers.len();
        let started =
            self.launcher
                .servers((n, first + 1), (endpoint, &self.proxy.xsub), &args, &env)?;
        self.servers.extend(started);
        let new: Vec<&Server> = self.servers[first..].iter().collect();
        wait_attached(
            &self.broker,
            Some(&self.proxy),
            &new,
            before,
            self.launcher.ready_timeout,
        )
    }

    /// Starts one more server (`extra` flags) like [`Stack::add_servers`]
    /// and returns its index in [`Stack::servers`].
    ///
    /// # Panics
    /// If it cannot start or is not ready in time.
    pub fn add_server(&mut self, extra: &[&str]) -> usize {
        or_panic(self.add_servers(1, extra));
        self.servers.len() - 1
    }

    /// The launcher the stack was started with (to start more services alike).
    pub fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    /// The broker frontend endpoint.
    pub fn frontend(&self) -> &str {
        &self.broker.frontend
    }

    /// The proxy XPUB endpoint.
    pub fn xpub(&self) -> &str {
        &self.proxy.xpub
    }

    /// Every process: broker, proxy, then the servers in start order.
    pub fn into_procs(self) -> Vec<Proc> {
        let mut all = vec![self.broker.proc, self.proxy.proc];
        all.extend(self.servers.into_iter().map(|s| s.proc));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kept_unless_a_flag_overrides_them() {
        let args = merge_args(
            &[("--workers", "2"), ("--http-addr", "127.0.0.1:0")],
            &["--workers=4", "--services", "echo"],
        );
        assert_eq!(
            args,
            [
                "--http-addr",
                "127.0.0.1:0",
                "--workers=4",
                "--services",
                "echo"
            ]
        );
        let args = merge_args(&[("--workers", "2")], &["--workers", "8"]);
        assert_eq!(args, ["--workers", "8"]);
    }

    /// A stand-in process for a service whose `/metrics` a test serves.
    fn sleeper() -> Proc {
        ProcBuilder::new("sleep", "sleep")
            .args(["30"])
            .spawn()
            .unwrap()
    }

    #[test]
    fn servers_are_attached_once_the_broker_counts_their_registrations_past_the_baseline() {
        use std::sync::{
            atomic::{AtomicU64, Ordering},
            Arc,
        };
        let workers = Arc::new(AtomicU64::new(1));
        let w = workers.clone();
        let metrics =
            crate::http::HttpServer::start("fake-broker", move |_| crate::http::Response {
                status: 200,
                content_type: "text/plain",
                body: format!(
                    "mensageria_broker_workers{{service=\"echo\",state=\"idle\"}} {}\n",
                    w.load(Ordering::SeqCst)
                )
                .into_bytes(),
            })
            .unwrap();
        let broker = Broker {
            proc: sleeper(),
            frontend: String::new(),
            backend: String::new(),
            http: metrics.addr(),
        };
        let server = Server {
            proc: sleeper(),
            http: metrics.addr(),
            instance: "s1".into(),
            workers: 2,
            services: vec!["echo".into(), "other".into()],
            rep: false,
        };
        let before = Baseline::take(&broker, None);
        let short = Duration::from_millis(100);
        let err = wait_attached(&broker, None, &[&server], before, short).unwrap_err();
        assert!(err.to_string().contains("is 1, not yet 3"), "{err}");
        workers.store(3, Ordering::SeqCst);
        wait_attached(&broker, None, &[&server], before, Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn a_missing_binary_is_an_error_that_says_how_to_build_it() {
        let launcher = Launcher {
            bin_dir: PathBuf::from("/nonexistent-mensageria-bins"),
            ..Launcher::default()
        };
        let err = launcher.broker(&[], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("cargo build --bins"), "{err:#}");
    }
}
