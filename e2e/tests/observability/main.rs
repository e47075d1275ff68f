//! Observability end-to-end tests of mensageria: what the real binaries
//! expose to operators, checked against the contract (design.md §4, README
//! "Operations" and "Metrics").
//!
//! - [`counts`]: exact counter values and peer gauges after a bench.
//! - [`client_run`]: `client run`'s request metrics agree with the broker's
//!   when requests are slower than its rate.
//! - [`readiness`]: `/readyz` and `/healthz` across start-up, drain and a
//!   broker restart.
//! - [`traces`]: one request is one trace across client, broker, server,
//!   proxy and subscriber, exported over OTLP/HTTP JSON.
//! - [`prometheus`]: a real Prometheus scrapes the four services, and every
//!   Grafana panel query returns data.
//! - [`compose`]: docker-compose.yml's services run as local processes with
//!   exactly their environment (a stand-in for `make up`).
//! - [`readme`]: README's metrics table matches what the services expose.
//!
//! Build the binaries first (`cargo build --bins`), then
//! `cargo nextest run -p e2e --test observability`.

mod client_run;
mod compose;
mod counts;
mod prometheus;
mod readiness;
mod readme;
mod traces;
