//! `mensageria`: the library every mensageria service is built on.
//!
//! - [`cli`]: the command line and `main` shared by the long-running services.
//! - [`config`]: shared options (ops address, logging, grace, ZeroMQ transport) and value parsers.
//! - [`header`]: the versioned header frame of requests, replies and events.
//! - [`mdp`]: the Majordomo Protocol frames (RFC 7, 18, 8) and our extensions.
//! - [`socket`], [`monitor`], [`curve`]: configured, monitored, optionally CURVE-secured ZeroMQ sockets.
//! - [`service`]: socket threads, ops server and the shutdown order, shared by all services.
//! - [`health`], [`ops`], [`metrics`]: liveness/readiness, the ops HTTP server, Prometheus metrics.
//! - [`ready`]: the ready record a service writes once ready (`--ready-file`).
//! - [`telemetry`], [`otel`], [`shutdown`]: logging and trace export set-up, trace context glue, signal handling.

pub mod cli;
pub mod config;
pub mod curve;
pub mod header;
pub mod health;
pub mod mdp;
pub mod metrics;
pub mod monitor;
pub mod ops;
pub mod otel;
pub mod ready;
pub mod service;
pub mod shutdown;
pub mod socket;
pub mod telemetry;

pub use config::{CommonArgs, Endpoints, TransportArgs};
pub use header::{EventHeader, Header, ReplyHeader, RequestHeader, Status, TraceContext};
pub use service::Service;
