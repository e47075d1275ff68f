//! End-to-end tests of service dispatch (named services, load-aware
//! dispatch, Majordomo) over the real binaries: head-of-line blocking,
//! expiry in the broker's queue, lost workers, several services and
//! brokers, Majordomo peers written from the RFCs, and the plain REP
//! compatibility path.
//!
//! Build the binaries first (`cargo build --bins`), then
//! `cargo nextest run -p e2e --test dispatch`. Every test body runs under a
//! watchdog ([`e2e::with_timeout`]).

mod bad_workers;
mod brokers;
mod compat;
mod majordomo;
mod queue;
mod rfc;
mod services;
mod workers;
