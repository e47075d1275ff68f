//! The mensageria server: `WORKERS` REP workers answering requests through
//! every broker, and one publisher sending an event per handled request plus
//! a periodic status event through every proxy.
//!
//! - [`config`]: options and subcommands.
//! - [`handler`]: the handler trait and the built-in demo operations.
//! - [`worker`]: the REP worker loop.
//! - [`publisher`]: the PUB thread.
//! - [`metrics`]: the server's Prometheus metrics.

pub mod config;
pub mod handler;
pub mod metrics;
pub mod publisher;
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
    let peers = socket_metrics.clone();
    service
        .health
        .check_with("broker_connected", move || peers.peer_count("rep") > 0);
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

    for i in 0..workers {
        let name = format!("server-worker-{i}");
        let sockets = service.sockets.clone();
        let (brokers, handler, metrics) = (
            config.broker_endpoints.clone(),
            handler.clone(),
            server_metrics.clone(),
        );
        let (heartbeat, shutdown, grace, instance) = (
            // A worker inside one request is alive until MAX_WORK (+ margin).
            service
                .health
                .heartbeat(name.clone())
                .with_busy_limit(config.max_work),
            shutdown.clone(),
            config.common.shutdown_grace,
            instance_arc.clone(),
        );
        let events = events.clone();
        service
            .spawn_socket_thread(
                &name,
                move || {
                    let socket = sockets.socket(zmq::REP, "rep")?;
                    sockets.connect_all(&socket, &brokers)?;
                    let w = worker::Worker::new(
                        socket, brokers, handler, metrics, events, heartbeat, shutdown, grace,
                        instance,
                    );
                    Ok((w, ()))
                },
                |w| w.run(),
            )
            .await?;
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
    info!(%instance, workers, brokers = %config.broker_endpoints, proxies = %config.proxy_endpoints, "Server connecting.");
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

/// Runs the server until `shutdown` is cancelled and the drain completes.
///
/// # Errors
/// Start-up or worker failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}
