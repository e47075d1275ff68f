//! The one place that initialises logging and, when configured, trace
//! export for a service.

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{filter::Targets, fmt, prelude::*, EnvFilter, Layer};

use crate::config::{CommonArgs, LogFormat};

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Flushing runs on the exporter's own thread; bounded by its timeout.
            if let Err(e) = p.shutdown() {
                eprintln!("warning: flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber: `RUST_LOG`-filtered text or JSON lines on
/// stderr, plus OTLP span export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
/// Safe to call more than once (later calls only log a debug line).
///
/// # Errors
/// If trace export is configured but the exporter cannot be built.
pub fn init(service: &'static str, common: &CommonArgs) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&common.log_filter).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid RUST_LOG {:?} ({e}); using \"info\"",
            common.log_filter
        );
        EnvFilter::new("info")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match common.log_format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = common.otel.provider(service)?;
    let traces = provider.as_ref().map(|p| {
        crate::otel::layer(p)
            .with_filter(Targets::new().with_target(crate::otel::TARGET, tracing::Level::TRACE))
    });
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .is_ok();
    if installed {
        tracing::debug!(
            service,
            tracing = provider.is_some(),
            "Telemetry initialised."
        );
    }
    Ok(TelemetryGuard { provider })
}

/// [`init`], or print the error and exit with status 1 (for `main`).
pub fn init_or_exit(service: &'static str, common: &CommonArgs) -> TelemetryGuard {
    init(service, common).unwrap_or_else(|e| {
        eprintln!("error: cannot set up telemetry: {e:#}");
        std::process::exit(1);
    })
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
