//! The mensageria server: `WORKERS` workers answering requests through every
//! broker (as Majordomo workers of `SERVICES`, or as plain REP workers), and
//! one publisher sending an event per handled request plus a periodic status
//! event through every proxy.
//!
//! - [`config`]: options and subcommands.
//! - [`handler`]: the handler trait and the built-in demo operations.
//! - [`worker`]: what a worker does with one request (deadline, handler, reply, event).
//! - [`majordomo`]: the Majordomo links, credit and heartbeats, and the handler threads.
//! - [`rep`]: the plain REP worker loop.
//! - [`publisher`]: the PUB thread.
//! - [`metrics`]: the server's Prometheus metrics.

pub mod config;
pub mod handler;
pub mod majordomo;
pub mod metrics;
pub mod publisher;
pub mod rep;
pub mod worker;

use std::{
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use mensageria::{metrics::TopicCounters, Service, Status};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;
use config::WorkerProtocol;
use handler::{DemoHandler, Handler};

/// A started server.
#[derive(Debug)]
pub struct Server {
    /// This instance's id (what `whoami` answers).
    pub instance: String,
    /// The ops HTTP address actually bound.
    pub http_addr: SocketAddr,
    service: Service,
    metrics: metrics::ServerMetrics,
}

impl Server {
    /// Waits until the server has drained and stopped.
    ///
    /// # Errors
    /// If a worker or the publisher failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.service.join().await;
        let by_status = |s| self.metrics.answered(s);
        info!(
            instance = %self.instance,
            answered = Status::ALL.into_iter().map(by_status).sum::<u64>(),
            ok = by_status(Status::Ok),
            refused_draining = by_status(Status::Unavailable),
            "Server stopped."
        );
        result
    }
}

/// A random 64-bit id (std's hasher keys are random per process).
pub fn random_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Escapes a string for a JSON string literal.
pub fn json_escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return std::borrow::Cow::Borrowed(s);
    }
    // serde_json writes a quoted literal; strip the quotes.
    let quoted = serde_json::to_string(s).unwrap_or_default();
    std::borrow::Cow::Owned(quoted[1..quoted.len() - 1].to_owned())
}

/// This machine's host name, for instance ids.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Starts the server with the built-in [`DemoHandler`].
///
/// # Errors
/// If a socket or the ops server cannot be set up.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let instance = format!(
        "{}-{}-{:04x}",
        hostname(),
        std::process::id(),
        random_id() & 0xffff
    );
    let handler = Arc::new(DemoHandler {
        instance: instance.clone(),
        max_work: config.max_work,
    });
    start_with_handler(config, shutdown, instance, handler).await
}

/// Starts the server with a custom handler.
///
/// # Errors
/// If a socket or the ops server cannot be set up.
pub async fn start_with_handler(
    config: Config,
    shutdown: CancellationToken,
    instance: String,
    handler: Arc<dyn Handler>,
) -> anyhow::Result<Server> {
    let (registry, socket_metrics, server_metrics) =
        mensageria::metrics::service_registry("server", metrics::ServerMetrics::register);
    let mut service = Service::new(
        "server",
        config.transport.clone(),
        socket_metrics.clone(),
        shutdown.clone(),
    )?;
    let protocol = config.worker_protocol;
    let peers = socket_metrics.clone();
    let link_socket = match protocol {
        WorkerProtocol::Majordomo => majordomo::LINK_SOCKET,
        WorkerProtocol::Rep => "rep",
    };
    service.health.check_with("broker_connected", move || {
        peers.peer_count(link_socket) > 0
    });
    let instance_arc: Arc<str> = Arc::from(instance.as_str());
    let workers = config.worker_count();

    // One PUB socket (one publisher id) per server, shared by the workers
    // behind a mutex: publishing happens on the worker's own thread, with no
    // hand-off to another thread, and the lock is held for one send.
    let events = {
        let socket = service.sockets.socket(zmq::PUB, "pub")?;
        service
            .sockets
            .connect_all(&socket, &config.proxy_endpoints)?;
        Arc::new(Mutex::new(publisher::EventPublisher::new(
            socket,
            random_id(),
            TopicCounters::new(server_metrics.events_published.clone()),
        )))
    };
    let worker_settings = worker::WorkerSettings {
        handler,
        metrics: server_metrics.clone(),
        events: events.clone(),
        instance: instance_arc,
    };
    match protocol {
        WorkerProtocol::Majordomo => {
            start_majordomo(&mut service, &config, &instance, worker_settings).await?;
        }
        WorkerProtocol::Rep => start_rep(&mut service, &config, worker_settings).await?,
    }

    let status_events = events.clone();
    let heartbeat = service.health.heartbeat("server-status");
    let (interval, sd) = (config.status_interval, shutdown.clone());
    let (status_metrics, status_instance, started) =
        (server_metrics.clone(), instance.clone(), Instant::now());
    let status = move || {
        format!(
            r#"{{"server":"{}","workers":{},"uptime_s":{},"handled":{}}}"#,
            json_escape(&status_instance),
            workers,
            started.elapsed().as_secs(),
            status_metrics.duration.count()
        )
        .into_bytes()
    };
    service
        .spawn_socket_thread(
            "server-status",
            move || Ok((status_events, ())),
            move |p| publisher::run_status(p, interval, status, heartbeat, sd),
        )
        .await?;
    // What a starter learns from the ready record (README, docs/design.md).
    use clap::ValueEnum as _;
    let protocol_name = protocol
        .to_possible_value()
        .map(|v| v.get_name().to_owned());
    service.ready_detail("instance", &instance);
    service.ready_detail("workers", workers);
    service.ready_detail("services", config.services.0.join(","));
    service.ready_detail("protocol", protocol_name.unwrap_or_default());
    info!(
        %instance,
        workers,
        protocol = ?protocol,
        services = %config.services.0.join(","),
        credit = config.credit(),
        brokers = %config.broker_endpoints,
        proxies = %config.proxy_endpoints,
        "Server connecting."
    );
    let http_addr = service
        .serve_ops(
            config.common.http_addr_or(config::DEFAULT_HTTP_PORT),
            registry,
        )
        .await?;
    Ok(Server {
        instance,
        http_addr,
        service,
        metrics: server_metrics,
    })
}

/// Starts the Majordomo I/O thread and `WORKERS` handler threads.
async fn start_majordomo(
    service: &mut Service,
    config: &Config,
    instance: &str,
    worker: worker::WorkerSettings,
) -> anyhow::Result<()> {
    let credit = config.credit();
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel(credit as usize);
    let jobs: majordomo::Jobs = Arc::new(Mutex::new(jobs_rx));
    let replies_endpoint = format!("inproc://server-replies-{:016x}", random_id());
    let settings = majordomo::MajordomoSettings {
        sockets: service.sockets.clone(),
        brokers: config.broker_endpoints.clone(),
        services: config.services.0.clone(),
        credit,
        instance: instance.to_owned(),
        heartbeat_ivl: config.worker_heartbeat_ivl,
        liveness: config.worker_liveness,
        replies_endpoint: replies_endpoint.clone(),
        jobs: jobs_tx,
        heartbeat: service.health.heartbeat("server-mdp"),
        shutdown: service.shutdown.clone(),
        grace: config.common.shutdown_grace,
        metrics: worker.metrics.clone(),
        worker: worker.clone(),
    };
    service
        .spawn_socket_thread(
            "server-mdp",
            move || Ok((majordomo::Dispatcher::new(settings)?, ())),
            majordomo::Dispatcher::run,
        )
        .await?;
    for i in 0..config.worker_count() {
        let name = format!("server-worker-{i}");
        let ctx = service.sockets.context().clone();
        let (endpoint, jobs, worker) = (replies_endpoint.clone(), jobs.clone(), worker.clone());
        // A handler inside one request is alive until MAX_WORK (+ margin).
        let heartbeat = service
            .health
            .heartbeat(name.clone())
            .with_busy_limit(config.max_work);
        service
            .spawn_socket_thread(
                &name,
                move || {
                    let replies = ctx.socket(zmq::PUSH)?;
                    replies.set_linger(0)?;
                    replies.connect(&endpoint)?;
                    let s = majordomo::HandlerSettings {
                        jobs,
                        replies,
                        worker,
                        heartbeat,
                    };
                    Ok((s, ()))
                },
                majordomo::run_handler,
            )
            .await?;
    }
    Ok(())
}

/// Starts `WORKERS` REP worker threads, each connected to every broker.
async fn start_rep(
    service: &mut Service,
    config: &Config,
    worker: worker::WorkerSettings,
) -> anyhow::Result<()> {
    for i in 0..config.worker_count() {
        let name = format!("server-worker-{i}");
        let sockets = service.sockets.clone();
        let brokers = config.broker_endpoints.clone();
        let (heartbeat, shutdown, grace, worker) = (
            // A worker inside one request is alive until MAX_WORK (+ margin).
            service
                .health
                .heartbeat(name.clone())
                .with_busy_limit(config.max_work),
            service.shutdown.clone(),
            config.common.shutdown_grace,
            worker.clone(),
        );
        service
            .spawn_socket_thread(
                &name,
                move || {
                    let socket = sockets.socket(zmq::REP, "rep")?;
                    sockets.connect_all(&socket, &brokers)?;
                    let w = rep::Worker::new(rep::RepSettings {
                        socket,
                        brokers,
                        worker,
                        heartbeat,
                        shutdown,
                        grace,
                    });
                    Ok((w, ()))
                },
                rep::Worker::run,
            )
            .await?;
    }
    Ok(())
}

/// Runs the server until `shutdown` is cancelled and the drain completes.
///
/// # Errors
/// Start-up or worker failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}
