//! Support shared by mensageria's end-to-end suites (`e2e`), benchmark
//! harness (`bench`) and the services' own tests, one concept per module:
//!
//! - [`bins`]: where the service binaries are.
//! - [`process`]: the one supervisor of child processes (spawn, captured
//!   logs, signals, stop by PID, CPU and memory accounting); [`signal`]: the
//!   signals it sends; [`watchdog`]: the time limit of a test body.
//! - [`stack`]: the one way to start broker, proxy, servers and clients, with
//!   one definition of ready.
//! - [`wait`]: polling for a condition with a deadline.
//! - [`ops`]: a service's ops HTTP server seen from outside.
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
//! - [`tempdir`]: temporary directories removed on drop.

pub mod bins;
mod capture;
pub mod http;
pub mod inproc;
pub mod metrics;
pub mod ops;
pub mod otlp;
pub mod ports;
pub mod process;
pub mod procfs;
pub mod prometheus;
pub mod signal;
pub mod sink;
pub mod stack;
pub mod tempdir;
pub mod wait;
pub mod watchdog;
