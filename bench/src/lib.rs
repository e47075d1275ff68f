//! mensageria's benchmark harness: starts the real binaries on loopback,
//! puts load through them and through a bare-libzmq reference
//! (`reference` binary), and reports throughput, latency, loss, CPU and
//! memory side by side. See `harness --help`.
//!
//! - [`load`]: the load generators (plain libzmq sockets).
//! - [`sink`]: the OTLP/HTTP sink of the tracing workloads (`testkit::sink`).
//! - [`scenario`]: the workloads.
//! - [`report`]: medians, targets, Markdown and JSON.

pub mod load;
pub mod report;
pub mod scenario;
pub use testkit::sink;
