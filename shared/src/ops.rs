//! The ops HTTP server every service runs beside its sockets: `/healthz`,
//! `/readyz`, `/metrics`. Hardened against slow or hostile clients: bounded
//! header read time, bounded request size, bounded connection lifetime and a
//! cap on concurrent connections.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{health::Health, metrics::render};

/// Time a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a single connection may stay open.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head we buffer.
const MAX_BUF: usize = 16 * 1024;
/// Concurrent connections served; more wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 1024;

/// The content type of `/metrics` (prometheus-client writes OpenMetrics text).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An extra read-only JSON route a service adds (e.g. the broker's
/// `/services`): its path and the function that renders its body.
pub type JsonRoute = (&'static str, Arc<dyn Fn() -> Arc<str> + Send + Sync>);

/// What the ops server serves.
#[derive(Clone)]
pub struct OpsState {
    /// Health state.
    pub health: Health,
    /// The service's registry.
    pub registry: Arc<Registry>,
    /// Extra JSON routes (GET only).
    pub routes: Vec<JsonRoute>,
}

/// A running ops server.
#[derive(Debug)]
pub struct OpsServer {
    /// The address actually bound.
    pub local_addr: SocketAddr,
    /// The accept loop; ends after cancellation.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves until `cancel`.
///
/// # Errors
/// If the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    state: OpsState,
    cancel: CancellationToken,
) -> std::io::Result<OpsServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    info!(%local_addr, "Ops HTTP server bound.");
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error.message = %e, "Accept failed.");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, &req)) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_BUF)
                    .serve_connection(TokioIo::new(stream), svc);
                match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(%peer, error.message = %e, "Ops connection error."),
                    Err(_) => debug!(%peer, "Ops connection closed at its lifetime limit."),
                }
            });
        }
        debug!("Ops HTTP server stopped.");
    });
    Ok(OpsServer { local_addr, task })
}

fn route(state: &OpsState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let extra = state.routes.iter().find(|(p, _)| *p == path);
    if extra.is_none() && !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some((_, render)) = extra {
        let mut r = Response::new(Full::new(Bytes::from(format!("{}\n", render()))));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return r;
    }
    match path {
        "/healthz" => json_status(state.health.liveness()),
        "/readyz" => json_status(state.health.readiness()),
        _ => {
            let body = render(&state.registry);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            r
        }
    }
}

fn json_status((ok, body): (bool, serde_json::Value)) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A minimal blocking HTTP/1.0 GET against `addr` (for the `healthcheck`
/// subcommand and tests; the runtime image has no curl). Returns the status
/// code and body.
///
/// # Errors
/// On connection failure, timeout, or a response that is not HTTP.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(8 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response")
        })?;
    Ok((status, body.to_owned()))
}

/// The address a local probe should use for a bind address: wildcard binds
/// are probed on loopback.
pub fn probe_addr(bind: SocketAddr) -> SocketAddr {
    let mut a = bind;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

/// The `healthcheck` subcommand: GET `/readyz` on the service's own ops
/// address; exit code 0 when ready, 1 otherwise.
pub fn healthcheck(bind: SocketAddr) -> std::process::ExitCode {
    let addr = probe_addr(bind);
    match http_get(addr, "/readyz", Duration::from_secs(3)) {
        Ok((200, _)) => std::process::ExitCode::SUCCESS,
        Ok((code, body)) => {
            eprintln!("not ready: HTTP {code} from {addr}: {}", body.trim());
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("not ready: cannot reach {addr}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
