//! The mensageria broker: a ROUTER/DEALER request router with its own poll
//! loop, so every request is counted, timed and bounded.
//!
//! - [`config`]: options and subcommands.
//! - [`router`]: the routing loop.
//! - [`inflight`]: the table of forwarded requests and their deadlines.
//! - [`route`]: a request's envelope, kept without allocating in the common case.
//! - [`metrics`]: the broker's Prometheus metrics.

pub mod config;
pub mod inflight;
pub mod metrics;
pub mod route;
pub mod router;

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
    let (registry, socket_metrics, broker_metrics) =
        mensageria::metrics::service_registry("broker", metrics::BrokerMetrics::register);
    let mut service = Service::new(
        "broker",
        config.transport.clone(),
        socket_metrics,
        shutdown.clone(),
    )?;
    let ready = service.health.check("sockets_bound");
    let heartbeat = service.health.heartbeat("broker-router");
    let sockets = service.sockets.clone();
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
                let router = router::Router::new(
                    frontend,
                    backend,
                    c.request_timeout,
                    c.max_inflight as usize,
                    broker_metrics,
                    heartbeat,
                    shutdown,
                    c.common.shutdown_grace,
                );
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
