//! The mensageria broker: a service broker compatible with the Majordomo
//! Protocol (ZeroMQ RFC 7, 18 and 8) with its own poll loop, so every
//! request is counted, timed and bounded. Requests queue per service and go
//! to the least recently used worker with room; plain REQ/REP peers keep
//! working for the default service.
//!
//! - [`config`]: options and subcommands.
//! - [`router`]: the loop, deadlines, heartbeats and the drain.
//! - [`client`]: telling clients and workers apart, and answering each in its protocol.
//! - [`requests`]: the request path: answer at once, queue, or the REP backend.
//! - [`dispatch`]: queued requests to the least recently used worker with room.
//! - [`replies`]: answers in each client's protocol.
//! - [`rep`]: the plain REP backend for the default service.
//! - [`worker_commands`]: the Majordomo worker commands and our extensions.
//! - [`services`], [`workers`]: the service registry with its queues, the worker table.
//! - [`mmi`]: `mmi.service` and `mmi.services`.
//! - [`snapshot`]: the `/services` view.
//! - [`inflight`]: the table of accepted requests and their deadlines.
//! - [`route`]: a request's envelope, kept without allocating in the common case.
//! - [`view`]: a received message's frame bytes, looked up once.
//! - [`metrics`]: the broker's Prometheus metrics.

pub mod client;
pub mod config;
pub mod dispatch;
pub mod inflight;
pub mod metrics;
pub mod mmi;
pub mod rep;
pub mod replies;
pub mod requests;
pub mod route;
pub mod router;
pub mod services;
pub mod snapshot;
pub mod view;
pub mod worker_commands;
pub mod workers;

use std::net::SocketAddr;

use anyhow::Context as _;
use mensageria::Service;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;

/// A started broker.
#[derive(Debug)]
pub struct Broker {
    /// The frontend endpoint actually bound.
    pub frontend: String,
    /// The backend endpoint actually bound.
    pub backend: String,
    /// The ops HTTP address actually bound.
    pub http_addr: SocketAddr,
    service: Service,
}

impl Broker {
    /// Waits until the broker has drained and stopped.
    ///
    /// # Errors
    /// If the routing thread failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.join().await
    }
}

/// Binds the sockets and the ops server and starts routing; returns once
/// everything is bound. The broker drains and stops when `shutdown` is cancelled.
///
/// # Errors
/// If a socket or the ops server cannot be bound.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Broker> {
    let (mut service, registry, broker_metrics) = Service::with_metrics(
        "broker",
        config.transport.clone(),
        shutdown.clone(),
        metrics::BrokerMetrics::register,
    )?;
    let socket_metrics = service.socket_metrics.clone();
    let ready = service.health.check("sockets_bound");
    let heartbeat = service.health.heartbeat("broker-router");
    let sockets = service.sockets.clone();
    let snapshot = snapshot::SnapshotCell::default();
    let view = snapshot.clone();
    service.add_json_route(("/services", std::sync::Arc::new(move || view.read())));
    let c = config.clone();
    let (frontend, backend) = service
        .spawn_socket_thread(
            "broker-router",
            move || {
                let frontend = sockets.socket(zmq::ROUTER, "frontend")?;
                frontend.set_router_mandatory(true)?;
                let backend = sockets.socket(zmq::DEALER, "backend")?;
                let f = sockets
                    .bind(&frontend, &c.frontend_bind)
                    .context("frontend")?;
                let b = sockets.bind(&backend, &c.backend_bind).context("backend")?;
                info!(frontend = %f, backend = %b, "Broker sockets bound.");
                let router = router::Router::new(router::RouterParts {
                    frontend,
                    backend,
                    settings: router::Settings {
                        request_timeout: c.request_timeout,
                        max_inflight: c.max_inflight as usize,
                        max_queue: c.max_queue as usize,
                        default_service: c.default_service,
                        heartbeat_ivl: c.worker_heartbeat_ivl,
                        liveness: c.worker_liveness,
                        no_worker_grace: c.no_worker_grace,
                        shutdown_grace: c.common.shutdown_grace,
                    },
                    metrics: broker_metrics,
                    sockets: socket_metrics,
                    heartbeat,
                    shutdown,
                    snapshot,
                    max_services: c.max_services as usize,
                });
                Ok((router, (f, b)))
            },
            |router| router.run(),
        )
        .await?;
    let http_addr = service
        .serve_ops(
            config.common.http_addr_or(config::DEFAULT_HTTP_PORT),
            registry,
        )
        .await?;
    ready.set(true);
    Ok(Broker {
        frontend,
        backend,
        http_addr,
        service,
    })
}

/// Runs the broker until `shutdown` is cancelled and the drain completes.
///
/// # Errors
/// Start-up or routing failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}
