//! The mensageria proxy: an XSUB/XPUB event forwarder with its own poll loop,
//! so every event and subscription is counted.
//!
//! - [`config`]: options and subcommands.
//! - [`forwarder`]: the forwarding loop.
//! - [`subscriptions`]: the subscription table behind fan-out accounting.
//! - [`metrics`]: the proxy's Prometheus metrics.

pub mod config;
pub mod forwarder;
pub mod metrics;
pub mod subscriptions;

use std::net::SocketAddr;

use anyhow::Context as _;
use mensageria::{socket::set_xpub_verboser, Service};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;

/// A started proxy.
#[derive(Debug)]
pub struct Proxy {
    /// The XSUB endpoint actually bound (publishers connect here).
    pub xsub: String,
    /// The XPUB endpoint actually bound (subscribers connect here).
    pub xpub: String,
    /// The ops HTTP address actually bound.
    pub http_addr: SocketAddr,
    service: Service,
}

impl Proxy {
    /// Waits until the proxy has stopped.
    ///
    /// # Errors
    /// If the forwarding thread failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.join().await
    }
}

/// Binds the sockets and the ops server and starts forwarding.
///
/// # Errors
/// If a socket or the ops server cannot be bound.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Proxy> {
    let (mut service, registry, proxy_metrics) = Service::with_metrics(
        "proxy",
        config.transport.clone(),
        shutdown.clone(),
        metrics::ProxyMetrics::register,
    )?;
    let ready = service.health.check("sockets_bound");
    let heartbeat = service.health.heartbeat("proxy-forwarder");
    let sockets = service.sockets.clone();
    let c = config.clone();
    let (xsub, xpub) = service
        .spawn_socket_thread(
            "proxy-forwarder",
            move || {
                let xsub = sockets.socket(zmq::XSUB, "xsub")?;
                let mut xpub = sockets.socket(zmq::XPUB, "xpub")?;
                set_xpub_verboser(&mut xpub).context("set ZMQ_XPUB_VERBOSER")?;
                let a = sockets.bind(&xsub, &c.xsub_bind).context("xsub")?;
                let b = sockets.bind(&xpub, &c.xpub_bind).context("xpub")?;
                info!(xsub = %a, xpub = %b, "Proxy sockets bound.");
                let f = forwarder::Forwarder::new(xsub, xpub, proxy_metrics, heartbeat, shutdown);
                Ok((f, (a, b)))
            },
            |f| f.run(),
        )
        .await?;
    let http_addr = service
        .serve_ops(
            config.common.http_addr_or(config::DEFAULT_HTTP_PORT),
            registry,
        )
        .await?;
    ready.set(true);
    Ok(Proxy {
        xsub,
        xpub,
        http_addr,
        service,
    })
}

/// Runs the proxy until `shutdown` is cancelled.
///
/// # Errors
/// Start-up or forwarding failures.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}
