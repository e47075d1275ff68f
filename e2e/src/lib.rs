//! Helpers of the mensageria end-to-end suite (`e2e/tests/e2e`), which runs
//! the real `broker`, `proxy`, `server` and `client` binaries on loopback
//! with ephemeral ports.
//!
//! - [`bin`]: where the binaries are (`MENSAGERIA_BIN_DIR`, default
//!   `<workspace>/target/debug`; build them first with `cargo build --bins`).
//! - [`Proc`]: a child process whose stdout and stderr lines are captured on
//!   threads; waits with deadlines, signals, and SIGKILL + reap on drop.
//! - [`Broker`], [`Proxy`], [`Server`], [`Stack`]: services started on
//!   ephemeral ports (read back from their ready records) and waited for until
//!   ready; servers are Majordomo workers on the broker's frontend unless a
//!   test asks for plain REP ones ([`Stack::start_rep`], [`REP_ARGS`]).
//! - [`registered_workers`], [`service_workers`], [`broker_workers`],
//!   [`wait_registered`]: the broker's view of its Majordomo workers.
//! - [`metric`], [`http_get`], [`wait_until`]: observing services.
//! - [`run_client`], [`BenchSummary`]: one-shot client subcommands.
//! - [`with_timeout`]: the watchdog every test body runs under.
//!
//! Nothing here sleeps to synchronise: every wait is for a condition, with a
//! deadline, and fails with the captured logs when the deadline passes.

use std::{
    net::SocketAddr,
    process::Output,
    thread,
    time::{Duration, Instant},
};

pub use mensageria::header::{EventHeader, Header};
pub use mensageria::ready::ReadyRecord;
pub use serde_json::Value;

/// The shutdown grace every service gets in the suite (`--shutdown-grace`).
pub const GRACE: Duration = Duration::from_secs(3);
/// [`GRACE`] as a command-line value.
pub const GRACE_ARG: &str = "3s";
/// Longest wait for a service to bind, log its addresses and become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time limit of a one-shot client command.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Worker threads per server unless a test asks otherwise.
pub const DEFAULT_WORKERS: u32 = 2;

// ---------------------------------------------------------------------------
// Binaries and processes (testkit)
// ---------------------------------------------------------------------------

pub use testkit::{
    bins::{bin, bin_dir},
    process::{Proc, ProcBuilder},
    signal::Signal,
    wait::{poll_until, wait_until},
    watchdog::with_timeout,
};

/// Starts the binary `bin_name` (a service binary of [`bin_dir`], or an
/// absolute path) with `args` and `env` on top of a cleared environment
/// ([`ProcBuilder::clean_env`]), a fresh `READY_FILE`, stdin closed and
/// stdout and stderr captured.
///
/// # Panics
/// If the binary is missing or cannot be started.
pub fn spawn(bin_name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let sub = args
        .first()
        .filter(|a| !a.starts_with('-'))
        .map_or(String::new(), |a| format!(" {a}"));
    ProcBuilder::new(format!("{bin_name}{sub}"), bin(bin_name))
        .args(args)
        .clean_env()
        .ready_file()
        .envs(env.iter().copied())
        .spawn()
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs a binary to completion with a time limit and returns its output.
///
/// # Panics
/// If it cannot start or overruns `timeout` (it is then killed).
pub fn run_bin(bin_name: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    spawn(bin_name, args, env).output(timeout)
}

/// Runs `client <args>` to completion with a time limit.
///
/// # Panics
/// As [`run_bin`].
pub fn run_client(args: &[&str], timeout: Duration) -> Output {
    run_bin("client", args, &[], timeout)
}

/// Stdout of an output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of an output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Status, stdout and stderr of an output, for failure messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

// ---------------------------------------------------------------------------
// Waiting and observing
// ---------------------------------------------------------------------------

pub use testkit::ops::http_get;

/// Waits until `/readyz` answers 200.
///
/// # Panics
/// At the deadline, with the last answer.
pub fn wait_ready(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http_get(addr, "/readyz") {
            Ok((200, _)) => return,
            Ok((code, body)) => format!("HTTP {code}: {}", body.trim()),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{addr} not ready within {timeout:?}; last /readyz: {last}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `/metrics` text of an ops server.
///
/// # Panics
/// If the scrape fails or is not HTTP 200.
pub fn metrics_text(addr: SocketAddr) -> String {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!("GET http://{addr}/metrics: HTTP {code}: {body}"),
        Err(e) => panic!("GET http://{addr}/metrics: {e}"),
    }
}

pub use testkit::metrics::value as parse_metric;

/// The value of one series on `addr`, if exposed.
pub fn metric_opt(addr: SocketAddr, series: &str) -> Option<f64> {
    parse_metric(&metrics_text(addr), series)
}

/// The value of one series on `addr`.
///
/// # Panics
/// If the series is not exposed (listing the series of that family).
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = metrics_text(addr);
    parse_metric(&text, series).unwrap_or_else(|| {
        let family = series.split('{').next().unwrap_or(series);
        let similar: Vec<&str> = text.lines().filter(|l| l.starts_with(family)).collect();
        panic!(
            "no series {series} on http://{addr}/metrics; the family has:\n{}",
            similar.join("\n")
        )
    })
}

/// Waits until the series `series` on `addr` satisfies `ok` (counters are
/// updated just after the reply or event they count leaves, so a test that
/// has just seen the reply must wait for them) and returns its value.
///
/// # Panics
/// After 10 s, with the last value.
pub fn wait_metric(addr: SocketAddr, series: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let mut last = None;
    poll_until(Duration::from_secs(10), || {
        last = metric_opt(addr, series);
        last.filter(|v| ok(*v))
    })
    .unwrap_or_else(|| panic!("{series} on {addr} never became {what}; last value {last:?}"))
}

/// [`wait_metric`] until the value is at least `min`.
pub fn wait_metric_at_least(addr: SocketAddr, series: &str, min: f64) -> f64 {
    wait_metric(addr, series, &format!(">= {min}"), |v| v >= min)
}

pub use testkit::ports::unused_port;

// ---------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------

/// Environment of the long-running services: JSON logs at info, for the
/// diagnostics a failing test prints.
const SERVICE_ENV: &[(&str, &str)] = &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")];

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

/// Starts a service with JSON logs at info ([`SERVICE_ENV`]) and `env` on top.
fn spawn_service(bin_name: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
    let mut all = SERVICE_ENV.to_vec();
    all.extend_from_slice(env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(bin_name, &args, &all)
}

/// Starts a service like [`spawn_service`] on a chosen ops port (`args` must
/// not set `--http-addr`) and waits until its `/healthz` answers 200: for a
/// service that may not become ready (no broker yet, bad keys), so has no
/// ready record to wait for.
pub fn spawn_alive(bin_name: &str, args: &[String], env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let http: SocketAddr = ([127, 0, 0, 1], unused_port()).into();
    let mut all = args.to_vec();
    all.extend(["--http-addr".to_owned(), http.to_string()]);
    let proc = spawn_service(bin_name, &all, env);
    wait_alive(&proc, http);
    (proc, http)
}

/// Waits until `proc`'s `/healthz` on `http` answers 200.
fn wait_alive(proc: &Proc, http: SocketAddr) {
    wait_until(
        &format!("{} to answer /healthz on {http}", proc.name()),
        START_TIMEOUT,
        || matches!(http_get(http, "/healthz"), Ok((200, _))).then_some(()),
    );
}

/// The first endpoint socket `socket` bound, from a ready record.
fn bound(record: &ReadyRecord, socket: &str) -> String {
    record
        .bound_endpoint(socket)
        .unwrap_or_else(|| panic!("no `{socket}` endpoint in the ready record {record:?}"))
        .to_owned()
}

/// The detail `key` of a ready record.
fn detail<'a>(record: &'a ReadyRecord, key: &str) -> &'a str {
    record
        .details
        .get(key)
        .unwrap_or_else(|| panic!("no detail `{key}` in the ready record {record:?}"))
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    /// The process.
    pub proc: Proc,
    /// Frontend endpoint (clients connect).
    pub frontend: String,
    /// Backend endpoint (servers connect).
    pub backend: String,
    /// Ops HTTP address.
    pub http: SocketAddr,
}

impl Broker {
    /// Starts a broker on ephemeral loopback ports; `extra` flags override the defaults.
    pub fn start(extra: &[&str]) -> Broker {
        Self::start_env(extra, &[])
    }

    /// [`Broker::start`] with `env` added to the environment.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Broker {
        Self::finish(Self::spawn(extra, env))
    }

    fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let args = merge_args(
            &[
                ("--http-addr", "127.0.0.1:0"),
                ("--frontend-bind", "tcp://127.0.0.1:*"),
                ("--backend-bind", "tcp://127.0.0.1:*"),
                ("--shutdown-grace", GRACE_ARG),
            ],
            extra,
        );
        spawn_service("broker", &args, env)
    }

    fn finish(proc: Proc) -> Broker {
        let ready = proc.ready_record(START_TIMEOUT);
        Broker {
            frontend: bound(&ready, "frontend"),
            backend: bound(&ready, "backend"),
            http: ready.http_addr,
            proc,
        }
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

impl Proxy {
    /// Starts a proxy on ephemeral loopback ports; `extra` flags override the defaults.
    pub fn start(extra: &[&str]) -> Proxy {
        Self::start_env(extra, &[])
    }

    /// [`Proxy::start`] with `env` added to the environment.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Proxy {
        Self::finish(Self::spawn(extra, env))
    }

    fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let args = merge_args(
            &[
                ("--http-addr", "127.0.0.1:0"),
                ("--xsub-bind", "tcp://127.0.0.1:*"),
                ("--xpub-bind", "tcp://127.0.0.1:*"),
                ("--shutdown-grace", GRACE_ARG),
            ],
            extra,
        );
        spawn_service("proxy", &args, env)
    }

    fn finish(proc: Proc) -> Proxy {
        let ready = proc.ready_record(START_TIMEOUT);
        Proxy {
            xsub: bound(&ready, "xsub"),
            xpub: bound(&ready, "xpub"),
            http: ready.http_addr,
            proc,
        }
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
    /// Starts a server connected to `brokers` (frontend endpoints, or backend
    /// endpoints with `--worker-protocol rep` in `extra`) and `proxies` (XSUB
    /// endpoints); `extra` flags override the defaults (2 workers). Waits for
    /// its ready record (it is connected to a broker); see
    /// [`Server::start_unready`] for a server whose broker is not up.
    pub fn start(brokers: &str, proxies: &str, extra: &[&str]) -> Server {
        Self::finish(Self::spawn(brokers, proxies, extra))
    }

    /// [`Server::start`] as a plain REP server on the brokers' `backends`.
    pub fn start_rep(backends: &str, proxies: &str, extra: &[&str]) -> Server {
        let mut args = REP_ARGS.to_vec();
        args.extend_from_slice(extra);
        Self::start(backends, proxies, &args)
    }

    fn spawn(brokers: &str, proxies: &str, extra: &[&str]) -> Proc {
        Self::spawn_env(brokers, proxies, extra, &[])
    }

    /// Spawns a server as [`Server::start`] does, with `env` added to its
    /// environment, without waiting (see [`Server::finish`]).
    pub fn spawn_env(brokers: &str, proxies: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let workers = DEFAULT_WORKERS.to_string();
        let args = merge_args(
            &[
                ("--http-addr", "127.0.0.1:0"),
                ("--broker-endpoints", brokers),
                ("--proxy-endpoints", proxies),
                ("--workers", &workers),
                ("--shutdown-grace", GRACE_ARG),
            ],
            extra,
        );
        spawn_service("server", &args, env)
    }

    /// Waits for the server's ready record (it is connected to a broker).
    pub fn finish(proc: Proc) -> Server {
        let ready = proc.ready_record(START_TIMEOUT);
        Server {
            instance: detail(&ready, "instance").to_owned(),
            workers: detail(&ready, "workers")
                .parse()
                .expect("`workers` in the ready record is a number"),
            services: detail(&ready, "services")
                .split(',')
                .map(str::to_owned)
                .collect(),
            rep: detail(&ready, "protocol") == "rep",
            http: ready.http_addr,
            proc,
        }
    }

    /// Starts a server like [`Server::start`] without waiting for it to be
    /// ready (its broker may not be up): its ops HTTP port is chosen here
    /// ([`unused_port`]) and it is waited for until `/healthz` answers.
    pub fn start_unready(brokers: &str, proxies: &str, extra: &[&str]) -> UnreadyServer {
        let http: SocketAddr = ([127, 0, 0, 1], unused_port()).into();
        let mut args = vec!["--http-addr".to_owned(), http.to_string()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Self::spawn(brokers, proxies, &args);
        wait_alive(&proc, http);
        UnreadyServer { proc, http }
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

    /// Waits until `/readyz` is 200 (connected to a broker).
    pub fn wait_ready(&self) {
        wait_ready(self.http, START_TIMEOUT);
    }

    /// `mensageria_server_requests_total{status="ok"}`.
    pub fn handled_ok(&self) -> f64 {
        metric(
            self.http,
            r#"mensageria_server_requests_total{status="ok"}"#,
        )
    }
}

/// A server started by [`Server::start_unready`]: alive, maybe not ready.
#[derive(Debug)]
pub struct UnreadyServer {
    /// The process.
    pub proc: Proc,
    /// Ops HTTP address.
    pub http: SocketAddr,
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
    /// ([`Stack::start_rep`]) rather than Majordomo workers on its frontend.
    pub rep: bool,
}

/// Server flags of a plain REP server (the seed's way: round-robin from the
/// broker's backend, default service only).
pub const REP_ARGS: [&str; 2] = ["--worker-protocol", "rep"];

const BACKEND_HANDSHAKES: &str =
    r#"mensageria_zmq_socket_events_total{socket="backend",event="handshake_succeeded"}"#;
const XSUB_HANDSHAKES: &str =
    r#"mensageria_zmq_socket_events_total{socket="xsub",event="handshake_succeeded"}"#;

/// Majordomo workers registered with a broker, over every service and state
/// (the sum of `mensageria_broker_workers`).
pub fn registered_workers(broker_http: SocketAddr) -> f64 {
    broker_workers(broker_http, &[])
}

/// Majordomo workers registered with a broker for `service` (idle + busy).
pub fn service_workers(broker_http: SocketAddr, service: &str) -> f64 {
    broker_workers(broker_http, &[("service", service)])
}

/// The sum of `mensageria_broker_workers` samples whose labels include
/// `matching` (e.g. `[("service", "echo"), ("state", "busy")]`).
pub fn broker_workers(broker_http: SocketAddr, matching: &[(&str, &str)]) -> f64 {
    const FAMILY: &str = "mensageria_broker_workers";
    observability::families(&metrics_text(broker_http))
        .get(FAMILY)
        .map_or(0.0, |f| f.sum(FAMILY, matching))
}

/// Waits until `broker_http` has at least `min` Majordomo workers registered.
///
/// # Panics
/// After [`START_TIMEOUT`].
pub fn wait_registered(broker_http: SocketAddr, min: f64) {
    let mut last = 0.0;
    poll_until(START_TIMEOUT, || {
        last = registered_workers(broker_http);
        (last >= min).then_some(())
    })
    .unwrap_or_else(|| {
        panic!("{min} Majordomo workers never registered with the broker at {broker_http}; last count {last}")
    });
}

impl Stack {
    /// Starts a broker, a proxy and `servers` servers (default options:
    /// Majordomo workers on the broker's frontend) and waits until every one
    /// is ready and every server is registered with the broker and attached
    /// to the proxy.
    pub fn start(servers: usize) -> Stack {
        Self::start_with(servers, &[], &[])
    }

    /// [`Stack::start`] with extra broker and server flags.
    pub fn start_with(servers: usize, broker_extra: &[&str], server_extra: &[&str]) -> Stack {
        Self::launch(servers, broker_extra, server_extra, false)
    }

    /// [`Stack::start_with`] with plain REP servers on the broker's backend.
    pub fn start_rep(servers: usize, broker_extra: &[&str], server_extra: &[&str]) -> Stack {
        let mut extra = REP_ARGS.to_vec();
        extra.extend_from_slice(server_extra);
        Self::launch(servers, broker_extra, &extra, true)
    }

    fn launch(servers: usize, broker_extra: &[&str], server_extra: &[&str], rep: bool) -> Stack {
        // Start broker and proxy side by side, then the servers side by side.
        let (b, p) = (Broker::spawn(broker_extra, &[]), Proxy::spawn(&[], &[]));
        let (broker, proxy) = (Broker::finish(b), Proxy::finish(p));
        let endpoint = if rep {
            &broker.backend
        } else {
            &broker.frontend
        };
        let procs: Vec<Proc> = (0..servers)
            .map(|_| Server::spawn(endpoint, &proxy.xsub, server_extra))
            .collect();
        let servers: Vec<Server> = procs.into_iter().map(Server::finish).collect();
        wait_ready(broker.http, START_TIMEOUT);
        wait_ready(proxy.http, START_TIMEOUT);
        let stack = Stack {
            broker,
            proxy,
            servers,
            rep,
        };
        for s in &stack.servers {
            s.wait_ready();
        }
        stack.wait_attached(&stack.servers.iter().collect::<Vec<_>>(), 0.0, 0.0, 0.0);
        stack
    }

    /// Waits until `servers` have attached to the broker (REP workers: backend
    /// handshakes; Majordomo: registrations) and to the proxy, counting from
    /// the given counter and gauge values.
    fn wait_attached(
        &self,
        servers: &[&Server],
        backend_before: f64,
        registered_before: f64,
        xsub_before: f64,
    ) {
        let (b, p) = (self.broker.http, self.proxy.http);
        let rep_workers: u32 = servers.iter().filter(|s| s.rep).map(|s| s.workers).sum();
        wait_until(
            "servers' REP sockets to complete their handshakes with the broker",
            START_TIMEOUT,
            || {
                (metric_opt(b, BACKEND_HANDSHAKES).unwrap_or(0.0)
                    >= backend_before + f64::from(rep_workers))
                .then_some(())
            },
        );
        let registrations: usize = servers.iter().map(|s| s.registrations()).sum();
        wait_registered(b, registered_before + registrations as f64);
        wait_until(
            "servers' PUB sockets to complete their handshakes with the proxy",
            START_TIMEOUT,
            || {
                (metric_opt(p, XSUB_HANDSHAKES).unwrap_or(0.0)
                    >= xsub_before + servers.len() as f64)
                    .then_some(())
            },
        );
    }

    /// Starts one more server (`extra` flags; REP when the stack is), waits
    /// until it is ready and attached, and returns its index in
    /// [`Stack::servers`].
    pub fn add_server(&mut self, extra: &[&str]) -> usize {
        let backend_before = metric_opt(self.broker.http, BACKEND_HANDSHAKES).unwrap_or(0.0);
        let xsub_before = metric_opt(self.proxy.http, XSUB_HANDSHAKES).unwrap_or(0.0);
        let registered_before = registered_workers(self.broker.http);
        let server = if self.rep {
            Server::start_rep(&self.broker.backend, &self.proxy.xsub, extra)
        } else {
            Server::start(&self.broker.frontend, &self.proxy.xsub, extra)
        };
        server.wait_ready();
        self.servers.push(server);
        let new = self.servers.last().expect("just pushed");
        self.wait_attached(&[new], backend_before, registered_before, xsub_before);
        self.servers.len() - 1
    }

    /// The broker frontend endpoint.
    pub fn frontend(&self) -> &str {
        &self.broker.frontend
    }

    /// The proxy XPUB endpoint.
    pub fn xpub(&self) -> &str {
        &self.proxy.xpub
    }

    /// Runs `client request <payload> --broker-endpoints <frontend> <extra…>`.
    pub fn request(&self, payload: &str, extra: &[&str]) -> Output {
        let mut args = vec!["request", payload, "--broker-endpoints", self.frontend()];
        args.extend(extra);
        run_client(&args, CLIENT_TIMEOUT)
    }

    /// Starts `client bench --json --broker-endpoints <frontend> <extra…>` in
    /// the background.
    pub fn spawn_bench(&self, extra: &[&str]) -> Proc {
        let mut args = vec!["bench", "--json", "--broker-endpoints", self.frontend()];
        args.extend(extra);
        spawn("client", &args, &[])
    }

    /// Runs a bench to completion (exit 0 required) and returns its summary.
    pub fn bench(&self, extra: &[&str], timeout: Duration) -> BenchSummary {
        BenchSummary::from_proc(self.spawn_bench(extra), timeout)
    }
}

/// The `--json` summary of `client bench`.
#[derive(Debug, Clone)]
pub struct BenchSummary {
    /// Requests finished.
    pub requests: u64,
    /// Finished `ok`.
    pub ok: u64,
    /// Finished otherwise.
    pub errors: u64,
    /// Retries sent.
    pub retries: u64,
    /// The whole JSON object.
    pub json: Value,
}

impl BenchSummary {
    /// Parses the summary line.
    ///
    /// # Panics
    /// If `line` is not a bench summary.
    pub fn parse(line: &str) -> BenchSummary {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("bench summary is not JSON ({e}): {line}"));
        let n = |k: &str| {
            json[k]
                .as_u64()
                .unwrap_or_else(|| panic!("bench summary without `{k}`: {line}"))
        };
        for k in [
            "errors_by_status",
            "latency_ms",
            "throughput_rps",
            "elapsed_s",
            "concurrency",
        ] {
            assert!(!json[k].is_null(), "bench summary without `{k}`: {line}");
        }
        BenchSummary {
            requests: n("requests"),
            ok: n("ok"),
            errors: n("errors"),
            retries: n("retries"),
            json,
        }
    }

    /// Waits for a background bench to exit 0 and parses its summary.
    ///
    /// # Panics
    /// If it overruns `timeout`, fails, or prints no summary.
    pub fn from_proc(mut proc: Proc, timeout: Duration) -> BenchSummary {
        let out = proc.output(timeout);
        assert!(
            out.status.success(),
            "client bench failed\n{}",
            describe(&out)
        );
        let text = stdout(&out);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary\n{}", describe(&out)));
        BenchSummary::parse(line)
    }
}

impl std::fmt::Display for BenchSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.json)
    }
}

// ---------------------------------------------------------------------------
// Plain ZeroMQ peers
// ---------------------------------------------------------------------------

/// A plain REQ socket connected to `endpoint`, with 5 s send/receive
/// timeouts so a test can never block forever.
pub fn plain_req(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(zmq::REQ).expect("create a REQ socket");
    s.set_linger(0).expect("set linger");
    s.set_rcvtimeo(5000).expect("set receive timeout");
    s.set_sndtimeo(5000).expect("set send timeout");
    s.connect(endpoint).expect("connect REQ");
    s
}

/// Sends `frames` on a REQ socket and returns the reply frames.
///
/// # Panics
/// On a send or receive failure (including the 5 s timeout).
pub fn req_roundtrip(req: &zmq::Socket, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    req.send_multipart(frames.iter().copied(), 0)
        .expect("send the request");
    req.recv_multipart(0)
        .unwrap_or_else(|e| panic!("no reply to {:?}: {e}", show(frames)))
}

/// Frames as lossy text, for messages.
pub fn show<T: AsRef<[u8]>>(frames: &[T]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f.as_ref()).into_owned())
        .collect()
}

/// A plain SUB socket connected to `endpoint` and subscribed to `prefix`.
pub fn plain_sub(ctx: &zmq::Context, endpoint: &str, prefix: &[u8]) -> zmq::Socket {
    let s = ctx.socket(zmq::SUB).expect("create a SUB socket");
    s.set_linger(0).expect("set linger");
    s.set_rcvhwm(100_000).expect("set receive HWM");
    s.connect(endpoint).expect("connect SUB");
    s.set_subscribe(prefix).expect("subscribe");
    s
}

/// Receives one message (all frames) within `timeout`, if any.
pub fn recv_within(s: &zmq::Socket, timeout: Duration) -> Option<Vec<Vec<u8>>> {
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    match s.poll(zmq::POLLIN, ms) {
        Ok(n) if n > 0 => s.recv_multipart(zmq::DONTWAIT).ok(),
        _ => None,
    }
}

/// An event as a plain subscriber receives it.
#[derive(Debug, Clone)]
pub struct PlainEvent {
    /// Topic frame.
    pub topic: String,
    /// Decoded header frame.
    pub header: EventHeader,
    /// Payload frame, parsed as JSON.
    pub payload: Value,
}

/// Decodes `[topic, header, payload]`.
///
/// # Panics
/// If the message does not have exactly that shape.
pub fn decode_event(frames: &[Vec<u8>]) -> PlainEvent {
    let [topic, header, payload] = frames else {
        panic!(
            "an event must be 3 frames (topic, header, payload), got {}: {:?}",
            frames.len(),
            show(frames)
        );
    };
    let header = match Header::decode(header) {
        Ok(Header::Event(h)) => h,
        other => panic!("second frame is not an event header: {other:?}"),
    };
    let payload = serde_json::from_slice(payload).unwrap_or_else(|e| {
        panic!(
            "event payload is not JSON ({e}): {}",
            String::from_utf8_lossy(payload)
        )
    });
    PlainEvent {
        topic: String::from_utf8_lossy(topic).into_owned(),
        header,
        payload,
    }
}
pub mod faults;
pub mod observability;
