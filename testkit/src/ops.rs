//! A service's ops HTTP server as seen from outside: `/healthz`, `/readyz`
//! and one series of `/metrics` (parsed by [`crate::metrics`]).

use std::{net::SocketAddr, time::Duration};

/// How long one ops request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` on an ops server (the services' own client,
/// [`mensageria::ops::http_get`]): status and body.
///
/// # Errors
/// Connection failures and timeouts ([`HTTP_TIMEOUT`]).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    mensageria::ops::http_get(addr, path, HTTP_TIMEOUT)
}

/// The `/metrics` text of an ops server.
///
/// # Errors
/// If the scrape fails or is not HTTP 200.
pub fn try_metrics_text(addr: SocketAddr) -> Result<String, String> {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => Ok(body),
        Ok((code, body)) => Err(format!("GET http://{addr}/metrics: HTTP {code}: {body}")),
        Err(e) => Err(format!("GET http://{addr}/metrics: {e}")),
    }
}

/// The value of one series on `addr` ([`crate::metrics::value`]), `None` if
/// not exposed or the scrape fails.
pub fn scrape(addr: SocketAddr, series: &str) -> Option<f64> {
    crate::metrics::value(&try_metrics_text(addr).ok()?, series)
}

/// Whether `GET path` answers 200 now.
pub fn answers_ok(addr: SocketAddr, path: &str) -> bool {
    matches!(http_get(addr, path), Ok((200, _)))
}
