//! Support shared by mensageria's end-to-end suites (`e2e`), benchmark
//! harness (`bench`) and the services' own tests, one concept per module:
//!
//! - [`inproc`]: fixtures of the services' own tests (a service started
//!   in-process, driven by plain sockets and read through its ops server).
//! - [`http`]: the one HTTP server of the test doubles, on hyper.
//! - [`metrics`]: the one parser of `/metrics` text (series values and
//!   families).
//! - [`otlp`]: an OTLP/HTTP JSON trace collector.
//! - [`ports`]: free loopback ports for services started on a fixed port.
//! - [`procfs`]: the one reader of `/proc` (CPU time, memory).
//! - [`prometheus`]: a real Prometheus scraping static jobs, and its
//!   query API.
//! - [`sink`]: an HTTP sink that counts what it receives (OTLP export
//!   without a collector).

pub mod http;
pub mod inproc;
pub mod metrics;
pub mod otlp;
pub mod ports;
pub mod procfs;
pub mod prometheus;
pub mod sink;
