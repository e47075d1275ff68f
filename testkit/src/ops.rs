//! A service's ops HTTP server as seen from outside: `/healthz`, `/readyz`
//! and the series of `/metrics` (parsed by [`crate::metrics`]). The one set
//! of these helpers for the end-to-end suites, the harness and the services'
//! own tests.

use std::{net::SocketAddr, time::Duration};

/// How long one ops request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest [`wait_metric`] and [`expect_metric`] wait for a series.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// `GET path` on an ops server (the services' own client,
/// [`mensageria::ops::http_get`]): status and body.
///
/// # Errors
/// Connection failures and timeouts ([`HTTP_TIMEOUT`]).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    mensageria::ops::http_get(addr, path, HTTP_TIMEOUT)
}

/// The body of `GET path`.
///
/// # Panics
/// If the request fails or is not HTTP 200.
pub fn get(addr: SocketAddr, path: &str) -> String {
    match http_get(addr, path) {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!("GET http://{addr}{path}: HTTP {code}: {body}"),
        Err(e) => panic!("GET http://{addr}{path}: {e}"),
    }
}

/// The `/metrics` text of an ops server.
pub fn metrics_text(addr: SocketAddr) -> String {
    get(addr, "/metrics")
}

/// The value of one series on `addr` ([`crate::metrics::value`]), `None` if
/// not exposed or the scrape fails.
pub fn scrape(addr: SocketAddr, series: &str) -> Option<f64> {
    match http_get(addr, "/metrics") {
        Ok((200, text)) => crate::metrics::value(&text, series),
        _ => None,
    }
}

/// The value of one series on `addr`, `None` if not exposed.
///
/// # Panics
/// If the scrape fails.
pub fn metric_opt(addr: SocketAddr, series: &str) -> Option<f64> {
    crate::metrics::value(&metrics_text(addr), series)
}

/// The value of one series on `addr`.
///
/// # Panics
/// If the scrape fails or the series is not exposed (listing the series of
/// that family).
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = metrics_text(addr);
    crate::metrics::value(&text, series).unwrap_or_else(|| {
        let family = series.split('{').next().unwrap_or(series);
        let similar: Vec<&str> = text.lines().filter(|l| l.starts_with(family)).collect();
        panic!(
            "no series {series} on http://{addr}/metrics; the family has:\n{}",
            similar.join("\n")
        )
    })
}

/// Waits until `ok` holds for the value of `series` on `addr` (0 while not
/// exposed: a counter not yet incremented; services count some things a
/// moment after the reply the test has already seen) and returns it.
///
/// # Panics
/// If it does not within [`WAIT_LIMIT`] (saying `what` and the last value).
pub fn wait_metric(addr: SocketAddr, series: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let mut last = 0.0;
    crate::wait::poll_until(WAIT_LIMIT, || {
        last = metric_opt(addr, series).unwrap_or(0.0);
        ok(last).then_some(last)
    })
    .unwrap_or_else(|| panic!("{series} on {addr} never became {what}; last value {last}"))
}

/// [`wait_metric`] until `series` is `want`.
pub fn expect_metric(addr: SocketAddr, series: &str, want: f64) {
    wait_metric(addr, series, &format!("{want}"), |v| v == want);
}

/// Whether `GET path` answers 200 now.
pub fn answers_ok(addr: SocketAddr, path: &str) -> bool {
    matches!(http_get(addr, path), Ok((200, _)))
}

/// Waits until `/readyz` answers 200.
///
/// # Panics
/// At the deadline, with the last answer.
pub fn wait_ready(addr: SocketAddr, timeout: Duration) {
    let mut last = String::new();
    crate::wait::poll_until(timeout, || match http_get(addr, "/readyz") {
        Ok((200, _)) => Some(()),
        Ok((code, body)) => {
            last = format!("HTTP {code}: {}", body.trim());
            None
        }
        Err(e) => {
            last = e.to_string();
            None
        }
    })
    .unwrap_or_else(|| panic!("{addr} not ready within {timeout:?}; last /readyz: {last}"));
}
