//! Support shared by mensageria's end-to-end suites (`e2e`) and benchmark
//! harness (`bench`), one concept per module:
//!
//! - [`bins`]: where the service binaries are.
//! - [`process`]: the one supervisor of child processes (spawn, captured
//!   logs, signals, stop by PID, CPU and memory accounting); [`signal`]: the
//!   signals it sends; [`watchdog`]: the time limit of a test body.
//! - [`stack`]: the one way to start broker, proxy, servers and clients, with
//!   one definition of ready.
//! - [`wait`]: polling for a condition with a deadline.
//! - [`ops`]: a service's ops HTTP server seen from outside.
//! - [`http`]: the one HTTP server of the test doubles, on hyper.
//! - [`metrics`]: the one parser of `/metrics` text (series values and
//!   families).
//! - [`otlp`]: an OTLP/HTTP JSON trace collector.
//! - [`ports`]: free loopback ports for services started on a fixed port.
//! - [`procfs`]: the one reader of `/proc` (CPU time, memory).
//! - [`sink`]: an HTTP sink that counts what it receives (OTLP export
//!   without a collector).

pub mod bins;
mod capture;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod otlp;
pub mod ports;
pub mod process;
pub mod procfs;
pub mod signal;
pub mod sink;
pub mod stack;
pub mod wait;
pub mod watchdog;
