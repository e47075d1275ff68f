//! Support shared by mensageria's end-to-end suites (`e2e`) and benchmark
//! harness (`bench`), one concept per module:
//!
//! - [`metrics`]: the one parser of `/metrics` text (series values and
//!   families).
//! - [`ports`]: free loopback ports for services started on a fixed port.
//! - [`procfs`]: the one reader of `/proc` (CPU time, memory).

pub mod metrics;
pub mod ports;
pub mod procfs;
