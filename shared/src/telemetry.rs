//! The one place that initialises logging (and, when configured, tracing
//! export) for a service.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::{CommonArgs, LogFormat};

/// Installs the global tracing subscriber: `RUST_LOG` filter, text or JSON
/// lines on stderr. Safe to call more than once (later calls are no-ops), so
/// tests can call it freely.
pub fn init(service: &'static str, common: &CommonArgs) {
    let filter = EnvFilter::try_new(&common.log_filter).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid RUST_LOG {:?} ({e}); using \"info\"",
            common.log_filter
        );
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let result = match common.log_format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(false)
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if result.is_ok() {
        tracing::debug!(service, "Telemetry initialised.");
    }
}

/// For tests: logs to stderr at `TEST_LOG`'s level when that variable is set,
/// and nowhere otherwise.
pub fn init_for_tests() {
    if let Ok(level) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(if level.is_empty() {
                "debug".into()
            } else {
                level
            }))
            .with_test_writer()
            .try_init();
    }
}
