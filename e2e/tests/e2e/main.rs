//! End-to-end tests of mensageria: the real `broker`, `proxy`, `server` and
//! `client` binaries on loopback, ephemeral ports, driven through the CLI, plain
//! ZeroMQ sockets and the ops HTTP endpoints.
//!
//! Build the binaries first (`cargo build --bins`; `make test` does), then
//! `cargo nextest run -p e2e`. Each test body runs under a watchdog
//! ([`e2e::with_timeout`]) and kills what it started when it fails.

mod cli;
mod events;
mod faults;
mod requests;
mod shutdown;
