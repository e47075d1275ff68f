//! Reliability and security end-to-end tests of mensageria: the real
//! binaries on loopback under steady load while faults are injected (a
//! server killed, frozen or drained; broker and proxy restarted on the same
//! ports; a slow subscriber; overload), bad input on every ZeroMQ port,
//! CURVE end to end, and an `#[ignore]`d soak.
//!
//! Build the binaries first (`cargo build --bins`), then
//! `cargo nextest run -p e2e --test reliability`. Every test body runs under
//! [`e2e::with_timeout`]; each prints a `RESULT …` line with the figures it
//! observed (shown by `--success-output final` or `--no-capture`).
//!
//! `client run` is started with a `--concurrency` far above what a fault can
//! leave outstanding, so its cap never shapes the figures measured.

mod bad_input;
mod pressure;
mod restarts;
mod security;
mod servers;
mod soak;
