//! The mensageria client: the reference well-behaved participant.
//!
//! - [`config`]: subcommands and options.
//! - [`requester`]: outstanding requests, timeouts, retries (Lazy Pirate).
//! - [`subscriber`]: events with loss and lag tracking.
//! - [`bench`]: the load driver and its summary.
//! - [`services`]: a broker's services and workers as a table.
//! - [`metrics`]: the client's Prometheus metrics.

pub mod bench;
pub mod config;
pub mod metrics;
pub mod requester;
pub mod services;
pub mod subscriber;

use std::{
    io::Write,
    net::SocketAddr,
    time::{Duration, Instant},
};

use mensageria::{metrics::SocketMetrics, Service, Status};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;

use config::{BenchArgs, RequestArgs, RequestOptions, RunArgs, SubscribeArgs};
use metrics::ClientMetrics;
use requester::{Outcome, Requester, RequesterConfig};
use subscriber::Subscriber;

/// A started `client run` service.
#[derive(Debug)]
pub struct ClientService {
    /// The ops HTTP address actually bound.
    pub http_addr: SocketAddr,
    service: Service,
}

impl ClientService {
    /// Waits until the client has drained and stopped.
    ///
    /// # Errors
    /// If a socket thread failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.join().await
    }
}

pub(crate) fn requester_config(o: &RequestOptions, concurrency: usize) -> RequesterConfig {
    RequesterConfig {
        endpoints: o.broker_endpoints.clone(),
        timeout: o.timeout,
        retries: o.retries,
        plain: o.plain,
        concurrency,
        service: o.service,
    }
}

/// Starts `client run`: requests at `RATE` with `CONCURRENCY` outstanding, a
/// subscription to `TOPICS`, health and metrics on `HTTP_ADDR`.
///
/// # Errors
/// If a socket or the ops server cannot be set up.
pub async fn start_run(
    args: RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<ClientService> {
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        anyhow::bail!("--rate must be a number >= 0, got {}", args.rate);
    }
    let (mut service, registry, client_metrics) = Service::with_metrics(
        "client",
        args.requests.transport.clone(),
        shutdown.clone(),
        ClientMetrics::register,
    )?;
    service.ready_when_connected("broker_connected", "req");
    service.ready_when_connected("proxy_connected", "sub");

    let (sockets, metrics, sd) = (
        service.sockets.clone(),
        client_metrics.clone(),
        shutdown.clone(),
    );
    let heartbeat = service.health.heartbeat("client-subscriber");
    let (proxies, topics) = (
        args.events.proxy_endpoints.clone(),
        split_topics(&args.topics),
    );
    service
        .spawn_socket_thread(
            "client-subscriber",
            move || {
                let socket = sockets.socket(zmq::SUB, "sub")?;
                sockets.connect_all(&socket, &proxies)?;
                Ok((Subscriber::new(socket, &topics, metrics)?, ()))
            },
            move |mut sub| {
                while !sd.is_cancelled() {
                    heartbeat.beat();
                    let _ = sub.next(Duration::from_millis(100));
                }
                Ok(())
            },
        )
        .await?;

    let (sockets, metrics, sd) = (service.sockets.clone(), client_metrics, shutdown.clone());
    let heartbeat = service.health.heartbeat("client-requester");
    let cfg = requester_config(&args.requests, args.concurrency as usize);
    let (rate, payload, grace) = (
        args.rate,
        args.payload.clone().into_bytes(),
        args.common.shutdown_grace,
    );
    service
        .spawn_socket_thread(
            "client-requester",
            move || Ok((Requester::new(sockets, cfg, metrics)?, ())),
            move |mut req| {
                steady_load(&mut req, rate, &payload, &sd, grace, &heartbeat);
                Ok(())
            },
        )
        .await?;
    let http_addr = service
        .serve_ops(
            args.common.http_addr_or(config::DEFAULT_HTTP_PORT),
            registry,
        )
        .await?;
    info!(rate, concurrency = args.concurrency, brokers = %args.requests.broker_endpoints, proxies = %args.events.proxy_endpoints, "Client running.");
    Ok(ClientService { http_addr, service })
}

/// Requests at `rate` per second until shutdown, then waits (up to `grace`)
/// for the outstanding ones.
fn steady_load(
    req: &mut Requester,
    rate: f64,
    payload: &[u8],
    shutdown: &CancellationToken,
    grace: Duration,
    heartbeat: &mensageria::health::Heartbeat,
) {
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let mut next = Instant::now();
    let mut out: Vec<Outcome> = Vec::new();
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        heartbeat.beat_at(now);
        if drain_until.is_none() && shutdown.is_cancelled() {
            info!(outstanding = req.in_flight(), "Draining: no new requests.");
            drain_until = Some(now + grace);
        }
        if let Some(t) = drain_until {
            if req.in_flight() == 0 || now >= t {
                break;
            }
        } else if let Some(iv) = interval {
            if now.saturating_duration_since(next) > Duration::from_secs(1) {
                next = now; // fell far behind (e.g. at the concurrency cap): do not burst
            }
            while next <= now && req.has_capacity() {
                req.submit(vec![payload.to_vec()]);
                next += iv;
            }
        }
        // At the concurrency cap only a reply (or a timeout) frees a slot:
        // wait for that rather than for the send schedule.
        let wait = if drain_until.is_none() && interval.is_some() && req.has_capacity() {
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        } else {
            Duration::from_millis(100)
        };
        req.poll(wait, &mut out);
        out.clear();
    }
}

fn split_topics(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs one-shot work on a socket thread of a throwaway [`Service`] (for the
/// CLI subcommands) and returns its result.
async fn one_shot<T, F>(
    name: &'static str,
    transport: mensageria::TransportArgs,
    shutdown: CancellationToken,
    work: F,
) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(mensageria::socket::SocketFactory, CancellationToken) -> anyhow::Result<T>
        + Send
        + 'static,
{
    let mut service = Service::new(name, transport, SocketMetrics::default(), shutdown.clone())?;
    let (tx, rx) = oneshot::channel();
    let (sockets, sd) = (service.sockets.clone(), shutdown.clone());
    service
        .spawn_socket_thread(
            name,
            move || Ok(((), ())),
            move |()| {
                let _ = tx.send(work(sockets, sd));
                Ok(())
            },
        )
        .await?;
    let result = rx
        .await
        .map_err(|_| anyhow::anyhow!("{name} thread ended without a result"))?;
    // Let the throwaway service's threads finish.
    shutdown.cancel();
    service.join().await?;
    result
}

/// `client request`: sends one request and returns its outcome.
///
/// # Errors
/// If the socket cannot be set up.
pub async fn request(args: RequestArgs, shutdown: CancellationToken) -> anyhow::Result<Outcome> {
    let cfg = requester_config(&args.requests, 1);
    one_shot(
        "client-request",
        args.requests.transport.clone(),
        shutdown,
        move |sockets, _| {
            let mut req = Requester::new(sockets, cfg, ClientMetrics::unregistered())?;
            req.submit(vec![args.payload.into_bytes()]);
            let mut out = Vec::new();
            while out.is_empty() {
                req.poll(Duration::from_millis(100), &mut out);
            }
            Ok(out.remove(0))
        },
    )
    .await
}

/// Prints an outcome the way `client request` does; returns whether it was `ok`.
pub fn print_outcome(o: &Outcome) -> bool {
    if o.status == Status::Ok {
        let mut stdout = std::io::stdout().lock();
        for f in &o.frames {
            let _ = stdout.write_all(f);
            let _ = stdout.write_all(b"\n");
        }
        true
    } else {
        let msg = o
            .frames
            .first()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        eprintln!("request failed ({}): {msg}", o.status);
        false
    }
}

/// `client bench`: drives the load once per `--concurrency` value, prints
/// each summary as it is done (JSON Lines with `--json`; a table after a
/// sweep otherwise) and returns them.
///
/// # Errors
/// If a socket cannot be set up.
pub async fn bench(
    args: BenchArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<bench::Summary>> {
    let stop = match (args.count, args.duration) {
        (Some(n), _) => bench::Stop::Count(n),
        (None, Some(d)) => bench::Stop::Duration(d),
        (None, None) => bench::Stop::Count(10_000),
    };
    one_shot(
        "client-bench",
        args.requests.transport.clone(),
        shutdown,
        move |sockets, sd| bench::sweep(&sockets, &args, stop, &|| !sd.is_cancelled()),
    )
    .await
}

/// The totals of a `client subscribe` run: printed on stderr at exit for
/// people (`received N events, M lost`, its [`Display`](std::fmt::Display))
/// and written as one JSON object to `--summary-file` for programs. These
/// field names are the file's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscribeSummary {
    /// Events received.
    pub received: u64,
    /// Events lost: sequence gaps per publisher and topic.
    pub lost: u64,
}

impl std::fmt::Display for SubscribeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "received {} events, {} lost", self.received, self.lost)
    }
}

impl SubscribeSummary {
    /// Creates (empties) the summary file before the run, so a bad path is
    /// an error at once rather than after it.
    ///
    /// # Errors
    /// If the file cannot be created.
    pub fn prepare(path: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        std::fs::File::create(path)
            .with_context(|| format!("create the summary file {}", path.display()))?;
        Ok(())
    }

    /// Writes the summary to `path` as one JSON object.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let json = serde_json::to_string(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("write the summary file {}", path.display()))
    }

    /// Reads a summary file.
    ///
    /// # Errors
    /// If it cannot be read or is not a summary.
    pub fn read(path: &std::path::Path) -> anyhow::Result<SubscribeSummary> {
        use anyhow::Context as _;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the summary file {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parse the summary file {}: {text:?}", path.display()))
    }
}

/// `client subscribe`: prints events to stdout until `--count`, `--duration`
/// or shutdown; returns the totals, written to `--summary-file` if given.
///
/// # Errors
/// If the socket cannot be set up or the summary file cannot be written.
pub async fn subscribe(
    args: SubscribeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<SubscribeSummary> {
    let summary_file = args.summary_file.clone();
    if let Some(path) = &summary_file {
        SubscribeSummary::prepare(path)?;
    }
    let summary = one_shot(
        "client-subscribe",
        args.transport.clone(),
        shutdown,
        move |sockets, sd| {
            let socket = sockets.socket(zmq::SUB, "sub")?;
            sockets.connect_all(&socket, &args.events.proxy_endpoints)?;
            let mut sub = Subscriber::new(socket, &args.topics, ClientMetrics::unregistered())?;
            let until = args.duration.map(|d| Instant::now() + d);
            let (mut received, mut lost) = (0u64, 0u64);
            // Buffered: flushed whenever no further event is waiting.
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            while !sd.is_cancelled()
                && args.count.is_none_or(|c| received < c)
                && until.is_none_or(|t| Instant::now() < t)
            {
                let Some(ev) = sub.next(Duration::from_millis(100)) else {
                    continue;
                };
                if let Some(d) = args.delay {
                    std::thread::sleep(d);
                }
                received += 1;
                lost += ev.gap;
                if args.quiet {
                    continue;
                }
                let topic = String::from_utf8_lossy(ev.topic);
                let payload: Vec<_> = ev
                    .payload
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                let line = match ev.header {
                    Some(h) => format!(
                        "{topic} publisher={:016x} seq={} lag_ms={:.3} {}",
                        h.publisher,
                        h.seq,
                        ev.lag.unwrap_or_default().as_secs_f64() * 1e3,
                        payload.join(" ")
                    ),
                    None => format!("{topic} {}", payload.join(" ")),
                };
                let flush = args.delay.is_some() || !sub.has_more();
                if writeln!(stdout, "{line}")
                    .and_then(|()| if flush { stdout.flush() } else { Ok(()) })
                    .is_err()
                {
                    break; // stdout closed (e.g. piped into head)
                }
            }
            Ok(SubscribeSummary { received, lost })
        },
    )
    .await?;
    if let Some(path) = summary_file {
        summary.write(&path)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::SubscribeSummary;

    #[test]
    fn the_subscribe_summary_reads_back_what_it_writes_and_prints_for_people() {
        let dir = std::env::temp_dir().join(format!("client-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        let s = SubscribeSummary {
            received: 12,
            lost: 2,
        };
        s.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"received\":12,\"lost\":2}\n",
            "the documented format"
        );
        assert_eq!(SubscribeSummary::read(&path).unwrap(), s);
        assert_eq!(s.to_string(), "received 12 events, 2 lost");
        std::fs::write(&path, "").unwrap();
        let e = SubscribeSummary::read(&path).unwrap_err();
        assert!(format!("{e:#}").contains("parse the summary file"), "{e:#}");
        let missing = dir.join("no-such-dir").join("summary.json");
        let e = SubscribeSummary::prepare(&missing).unwrap_err();
        assert!(
            format!("{e:#}").contains(&missing.display().to_string()),
            "a bad path is named before the run: {e:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
