//! The skeleton every service shares: health state, the socket factory and
//! its monitor hub, named socket threads whose start-up result and end are
//! awaited from async code, the ops HTTP server, and the shutdown order:
//! readiness off → socket threads drain and close → monitor hub → ops server.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{anyhow, Context as _};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    config::TransportArgs,
    health::{lock, Health},
    metrics::SocketMetrics,
    ops::{self, OpsState},
    ready,
    socket::SocketFactory,
};

/// One running service instance's shared machinery.
pub struct Service {
    name: &'static str,
    /// The ops address once bound (for the ready record).
    ops_addr: Arc<Mutex<Option<SocketAddr>>>,
    /// The ready file, when asked for and written.
    ready_file: Option<(PathBuf, tokio::task::JoinHandle<bool>)>,
    /// Health state (readiness checks, heartbeats, draining).
    pub health: Health,
    /// Creates configured, monitored sockets.
    pub sockets: SocketFactory,
    /// The metrics of those sockets (peers, connection events).
    pub socket_metrics: SocketMetrics,
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
    hub_cancel: CancellationToken,
    hub: Option<thread::JoinHandle<()>>,
    threads: Vec<(String, oneshot::Receiver<anyhow::Result<()>>)>,
    ops_cancel: CancellationToken,
    ops: Option<ops::OpsServer>,
    routes: Vec<ops::JsonRoute>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("name", &self.name).finish()
    }
}

impl Service {
    /// Creates the machinery; readiness turns false as soon as `shutdown` is
    /// cancelled. Must be called inside a tokio runtime. Inside a
    /// [`ready::scope`] with a path, the service writes its ready record there
    /// once ready.
    ///
    /// # Errors
    /// If the monitor thread cannot be spawned, or the ready file's directory
    /// does not exist.
    pub fn new(
        name: &'static str,
        transport: TransportArgs,
        socket_metrics: SocketMetrics,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let ready_path = ready::current_path();
        if let Some(p) = &ready_path {
            ready::check_path(p)?;
        }
        let health = Health::new();
        let hub_cancel = CancellationToken::new();
        let (sockets, hub) =
            SocketFactory::new(transport, socket_metrics.clone(), hub_cancel.clone())
                .context("spawn the socket monitor thread")?;
        let h = health.clone();
        let s = shutdown.clone();
        tokio::spawn(async move {
            s.cancelled().await;
            h.set_draining();
        });
        let ops_addr = Arc::new(Mutex::new(None));
        let ready_file = ready_path.map(|path| {
            let writer = write_when_ready(
                name,
                path.clone(),
                health.clone(),
                sockets.ready_log().clone(),
                ops_addr.clone(),
                shutdown.clone(),
            );
            (path, tokio::spawn(writer))
        });
        Ok(Service {
            name,
            ops_addr,
            ready_file,
            health,
            sockets,
            socket_metrics,
            shutdown,
            hub_cancel,
            hub: Some(hub),
            threads: Vec::new(),
            ops_cancel: CancellationToken::new(),
            ops: None,
            routes: Vec::new(),
        })
    }

    /// [`Service::new`] for a service with its own metrics: builds the
    /// registry the ops server serves ([`crate::metrics::service_registry`]:
    /// the socket metrics and the service's, registered by `register`).
    /// Returns the service, that registry and the service's metrics.
    ///
    /// # Errors
    /// As [`Service::new`].
    pub fn with_metrics<M>(
        name: &'static str,
        transport: TransportArgs,
        shutdown: CancellationToken,
        register: impl FnOnce(&mut Registry) -> M,
    ) -> anyhow::Result<(Self, Registry, M)> {
        let (registry, socket_metrics, own) = crate::metrics::service_registry(name, register);
        let service = Service::new(name, transport, socket_metrics, shutdown)?;
        Ok((service, registry, own))
    }

    /// Adds the readiness check `check`: it holds while the socket named
    /// `socket` has at least one connected peer.
    pub fn ready_when_connected(&self, check: &str, socket: &'static str) {
        let peers = self.socket_metrics.clone();
        self.health
            .check_with(check, move || peers.peer_count(socket) > 0);
    }

    /// Spawns a named OS thread that owns sockets: `setup` runs on the thread
    /// (create, bind, connect) and its `info` is returned here once it
    /// succeeds; then `run` takes the state and loops until it returns.
    ///
    /// # Errors
    /// The error of `setup`, or a spawn failure.
    pub async fn spawn_socket_thread<S, T, Setup, Run>(
        &mut self,
        name: &str,
        setup: Setup,
        run: Run,
    ) -> anyhow::Result<T>
    where
        T: Send + 'static,
        Setup: FnOnce() -> anyhow::Result<(S, T)> + Send + 'static,
        Run: FnOnce(S) -> anyhow::Result<()> + Send + 'static,
    {
        let (started_tx, started_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let thread_name = name.to_owned();
        thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let (state, info) = match setup() {
                        Ok(x) => x,
                        Err(e) => {
                            let msg = format!("{e:#}");
                            let _ = started_tx.send(Err(e));
                            return Err(anyhow!("start-up failed: {msg}"));
                        }
                    };
                    let _ = started_tx.send(Ok(info));
                    run(state)
                }));
                let result = result.unwrap_or_else(|p| {
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(anyhow!("thread {thread_name} panicked: {what}"))
                });
                let _ = done_tx.send(result);
            })
            .with_context(|| format!("spawn thread {name}"))?;
        self.threads.push((name.to_owned(), done_rx));
        started_rx
            .await
            .map_err(|_| anyhow!("thread {name} ended during start-up"))?
    }

    /// Adds a read-only JSON route to the ops server (call before
    /// [`Service::serve_ops`]).
    pub fn add_json_route(&mut self, route: ops::JsonRoute) {
        self.routes.push(route);
    }

    /// Starts the ops HTTP server on `addr` and returns the bound address.
    ///
    /// # Errors
    /// If the address cannot be bound.
    pub async fn serve_ops(
        &mut self,
        addr: SocketAddr,
        registry: Registry,
    ) -> anyhow::Result<SocketAddr> {
        let server = ops::serve(
            addr,
            OpsState {
                health: self.health.clone(),
                registry: Arc::new(registry),
                routes: std::mem::take(&mut self.routes),
            },
            self.ops_cancel.clone(),
        )
        .await
        .with_context(|| format!("bind the ops HTTP server on {addr}"))?;
        let local = server.local_addr;
        *lock(&self.ops_addr) = Some(local);
        self.ops = Some(server);
        Ok(local)
    }

    /// Adds `key: value` to the `details` of the ready record (call before
    /// the service turns ready, e.g. a server's `instance`).
    pub fn ready_detail(&self, key: &str, value: impl std::fmt::Display) {
        self.sockets.ready_log().detail(key, value.to_string());
    }

    /// Waits for every socket thread to end (they end after `shutdown`, or on
    /// a fatal error, which also triggers shutdown of the rest), then stops
    /// the monitor hub and the ops server.
    ///
    /// # Errors
    /// The first thread error.
    pub async fn join(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        let mut pending: Vec<_> = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|(name, rx)| Box::pin(async move { (name, rx.await) }))
            .collect();
        while !pending.is_empty() {
            let ((name, result), _, rest) = futures_select_all(pending).await;
            pending = rest;
            let result = result.unwrap_or_else(|_| Err(anyhow!("thread {name} vanished")));
            if let Err(e) = result {
                error!(thread = %name, error.cause_chain = ?e, error.message = %e, "Socket thread failed; shutting down.");
                self.shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        self.hub_cancel.cancel();
        if let Some(hub) = self.hub.take() {
            let _ = tokio::task::spawn_blocking(move || hub.join()).await;
        }
        self.ops_cancel.cancel();
        if let Some(ops) = self.ops.take() {
            let _ = ops.task.await;
        }
        if let Some((path, writer)) = self.ready_file.take() {
            writer.abort();
            if writer.await.unwrap_or(false) {
                if let Err(e) = std::fs::remove_file(&path) {
                    warn!(path = %path.display(), error.message = %e, "Could not remove the ready file.");
                }
            }
        }
        info!(service = self.name, "Stopped.");
        first_error.map_or(Ok(()), Err)
    }
}

/// How often readiness is polled until the ready record is written.
const READY_POLL: Duration = Duration::from_millis(10);

/// Waits until the service is ready (every readiness check holds) and its ops
/// server is bound, then writes the ready record; gives up when shutdown
/// starts first. Returns whether the file was written.
async fn write_when_ready(
    name: &'static str,
    path: PathBuf,
    health: Health,
    gathered: ready::ReadyLog,
    ops_addr: Arc<Mutex<Option<SocketAddr>>>,
    shutdown: CancellationToken,
) -> bool {
    let http_addr = loop {
        if let (true, Some(addr)) = (health.readiness().0, *lock(&ops_addr)) {
            break addr;
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(READY_POLL) => {}
        }
    };
    let record = gathered.record(name, http_addr);
    match tokio::task::spawn_blocking(move || record.write(&path).map(|()| path)).await {
        Ok(Ok(path)) => {
            info!(path = %path.display(), "Ready file written.");
            true
        }
        Ok(Err(e)) => {
            error!(error.cause_chain = ?e, error.message = %e, "Could not write the ready file.");
            false
        }
        Err(e) => {
            error!(error.message = %e, "Could not write the ready file.");
            false
        }
    }
}

/// Awaits the first of several futures (a tiny `select_all`, to avoid pulling
/// in the futures crate for one call).
async fn futures_select_all<F: std::future::Future + Unpin>(
    mut futures: Vec<F>,
) -> (F::Output, usize, Vec<F>) {
    let (out, idx) = std::future::poll_fn(|cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if let std::task::Poll::Ready(o) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready((o, i));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    drop(futures.swap_remove(idx));
    (out, idx, futures)
}

/// Runs a service's async `main` body on a multi-threaded runtime with the
/// signal handler installed; returns the process exit code.
pub fn run_main<F, Fut>(body: F) -> std::process::ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tokio")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        crate::shutdown::install(shutdown.clone()).context("install signal handlers")?;
        body(shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(error.cause_chain = ?e, error.message = %e, "Exiting on error.");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connected_check_holds_once_the_socket_has_a_peer() {
        let shutdown = CancellationToken::new();
        let (service, _registry, own) =
            Service::with_metrics("test", TransportArgs::default(), shutdown.clone(), |_| 7)
                .unwrap();
        assert_eq!(own, 7, "the service's own metrics are returned");
        service.ready_when_connected("peer_connected", "sub");
        assert!(!service.health.readiness().0, "no peer yet");

        let ctx = zmq::Context::new();
        let publisher = ctx.socket(zmq::PUB).unwrap();
        publisher.set_linger(0).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
        let sub = service.sockets.socket(zmq::SUB, "sub").unwrap();
        sub.connect(&endpoint).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !service.health.readiness().0 {
            assert!(
                Instant::now() < deadline,
                "{}",
                service.health.readiness().1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(sub);
        shutdown.cancel();
        service.join().await.unwrap();
    }
}
