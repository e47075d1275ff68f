//! Distributed tracing over OpenTelemetry: OTLP export configured by the
//! standard `OTEL_*` variables, and the glue between our header frame's
//! [`TraceContext`] and `tracing` spans.
//!
//! With no `OTEL_EXPORTER_OTLP_ENDPOINT`, [`enabled`] is false and every
//! helper here returns at once without creating a span: tracing off costs one
//! relaxed atomic load per message. With it set, a span is only created for a
//! request whose incoming context is sampled (parent-based sampling), except
//! at the client, where the root sampler decides.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use clap::{Args, ValueEnum};
use opentelemetry::{
    trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
    },
    Context,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::header::TraceContext;

/// The `tracing` target of every span meant for export.
pub const TARGET: &str = "mensageria::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether the root sampler can ever sample (false for `always_off`,
/// `parentbased_always_off` and a ratio of 0): the client then skips
/// creating root spans at all, so unsampled tracing costs nothing per request.
static ROOTS_SAMPLED: AtomicBool = AtomicBool::new(true);

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (the OTLP default).
    #[default]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// JSON over HTTP.
    #[value(name = "http/json")]
    HttpJson,
}

/// Root sampler, named as in the OpenTelemetry specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
#[allow(clippy::enum_variant_names)]
pub enum SamplerKind {
    /// Sample everything.
    #[value(name = "always_on")]
    AlwaysOn,
    /// Sample nothing.
    #[value(name = "always_off")]
    AlwaysOff,
    /// Sample a fraction (`OTEL_TRACES_SAMPLER_ARG`) of traces.
    #[value(name = "traceidratio")]
    TraceIdRatio,
    /// Follow the parent; sample every root.
    #[default]
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    /// Follow the parent; sample no root.
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    /// Follow the parent; sample a fraction of roots.
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// Trace export options (the standard OpenTelemetry variables).
#[derive(Debug, Clone, Args, Default)]
pub struct OtelArgs {
    /// OTLP/HTTP collector base URL, e.g. http://127.0.0.1:4318; unset or empty: no export.
    #[arg(long = "otel-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub endpoint: Option<String>,
    /// OTLP protocol.
    #[arg(
        long = "otel-protocol",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_enum,
        default_value = "http/protobuf"
    )]
    pub protocol: OtlpProtocol,
    /// Service name on exported spans (default: the binary's role).
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// Sampler.
    #[arg(
        long = "otel-sampler",
        env = "OTEL_TRACES_SAMPLER",
        value_enum,
        default_value = "parentbased_always_on"
    )]
    pub sampler: SamplerKind,
    /// Sampler argument: the ratio for the `*traceidratio` samplers (0.0 to 1.0).
    #[arg(long = "otel-sampler-arg", env = "OTEL_TRACES_SAMPLER_ARG", value_parser = parse_ratio)]
    pub sampler_arg: Option<f64>,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a ratio between 0.0 and 1.0, got {s:?}")),
    }
}

impl OtelArgs {
    /// The configured endpoint, if any (an empty value counts as unset).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    fn sampler(&self) -> Sampler {
        let ratio = self.sampler_arg.unwrap_or(1.0);
        match self.sampler {
            SamplerKind::AlwaysOn => Sampler::AlwaysOn,
            SamplerKind::AlwaysOff => Sampler::AlwaysOff,
            SamplerKind::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
            SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerKind::ParentBasedTraceIdRatio => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }

    /// Whether a root span can ever be sampled under this configuration.
    pub fn roots_can_sample(&self) -> bool {
        let ratio = self.sampler_arg.unwrap_or(1.0);
        match self.sampler {
            SamplerKind::AlwaysOff | SamplerKind::ParentBasedAlwaysOff => false,
            SamplerKind::TraceIdRatio | SamplerKind::ParentBasedTraceIdRatio => ratio > 0.0,
            SamplerKind::AlwaysOn | SamplerKind::ParentBasedAlwaysOn => true,
        }
    }

    /// Builds the tracer provider when an endpoint is configured.
    ///
    /// # Errors
    /// If the exporter cannot be built (e.g. an invalid URL).
    pub fn provider(&self, default_service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
        let Some(endpoint) = self.endpoint() else {
            return Ok(None);
        };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let protocol = match self.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        };
        let service = self
            .service_name
            .clone()
            .unwrap_or_else(|| default_service.to_owned());
        let sampler = self.sampler();
        ROOTS_SAMPLED.store(self.roots_can_sample(), Ordering::Relaxed);
        // The blocking HTTP client must not be created inside an async
        // context (reqwest panics there), so build on a plain thread.
        let built = std::thread::spawn(move || {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_protocol(protocol)
                .with_timeout(Duration::from_secs(5))
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build();
            Ok::<_, anyhow::Error>(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(sampler)
                    .with_resource(resource)
                    .build(),
            )
        })
        .join()
        .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))??;
        Ok(Some(built))
    }
}

/// Installs `provider` as the one whose spans are exported and returns the
/// `tracing` layer feeding it. Marks tracing as enabled.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    ENABLED.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer().with_tracer(provider.tracer("mensageria"))
}

/// Enables span creation without an exporter layer (for tests that install
/// their own layer).
pub fn force_enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The OpenTelemetry context for a remote parent carried in a header.
pub fn remote_context(t: &TraceContext) -> Context {
    let sc = SpanContext::new(
        TraceId::from_bytes(t.trace_id),
        SpanId::from_bytes(t.span_id),
        TraceFlags::new(t.flags),
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}

/// The header form of a span's context; `None` if the span is disabled or
/// its context is invalid.
pub fn trace_context(span: &Span) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// Whether a span should be made for work whose incoming context is
/// `parent` (parent-based: only sampled parents).
pub fn should_trace(parent: Option<&TraceContext>) -> bool {
    enabled() && parent.is_some_and(TraceContext::is_sampled)
}

/// Sets a remote parent on a freshly created span.
pub fn set_remote_parent(span: &Span, parent: &TraceContext) {
    let _ = span.set_parent(remote_context(parent));
}

/// Adds a link to another span context (e.g. consumer → producer).
pub fn add_link(span: &Span, to: &TraceContext) {
    let cx = remote_context(to);
    span.add_link(cx.span().span_context().clone());
}

/// Marks a span as failed (OpenTelemetry status `Error`) with a description.
pub fn set_error(span: &Span, description: impl Into<String>) {
    span.set_status(opentelemetry::trace::Status::error(description.into()));
}

/// A `client`-kind span for sending one request (a root unless the caller
/// has set a parent), or a disabled span when tracing is off.
pub fn client_span(destination: &str, id: u64) -> Span {
    if !enabled() || !ROOTS_SAMPLED.load(Ordering::Relaxed) {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = format!("send {destination}"),
        otel.kind = "client",
        messaging.system = "zeromq",
        messaging.operation.name = "send",
        messaging.operation.type = "send",
        messaging.destination.name = destination,
        messaging.message.id = id,
    )
}

/// A span of `kind` (`server`, `producer`, `consumer`) for an operation on a
/// destination, continuing `parent`; disabled unless [`should_trace`].
pub fn child_span(
    kind: &'static str,
    operation: &'static str,
    destination: &str,
    parent: Option<&TraceContext>,
) -> Span {
    let Some(p) = parent.filter(|_| should_trace(parent)) else {
        return Span::none();
    };
    let op_type = match operation {
        "publish" => "create",
        "receive" => "receive",
        "send" => "send",
        _ => "process",
    };
    let span = tracing::info_span!(
        target: TARGET,
        "op",
        otel.name = format!("{operation} {destination}"),
        otel.kind = kind,
        otel.status_code = tracing::field::Empty,
        messaging.system = "zeromq",
        messaging.operation.name = operation,
        messaging.operation.type = op_type,
        messaging.destination.name = destination,
    );
    set_remote_parent(&span, p);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_by_default_costs_nothing() {
        assert!(
            !enabled(),
            "nothing in this crate's unit tests enables export"
        );
        assert!(client_span("broker", 1).is_disabled());
        let t = TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            flags: 1,
        };
        assert!(child_span("server", "process", "requests", Some(&t)).is_disabled());
        assert_eq!(trace_context(&Span::none()), None);
    }

    #[test]
    fn samplers_that_never_sample_roots_are_recognised() {
        let with = |sampler, arg| OtelArgs {
            sampler,
            sampler_arg: arg,
            ..Default::default()
        };
        assert!(!with(SamplerKind::AlwaysOff, None).roots_can_sample());
        assert!(!with(SamplerKind::ParentBasedAlwaysOff, None).roots_can_sample());
        assert!(!with(SamplerKind::ParentBasedTraceIdRatio, Some(0.0)).roots_can_sample());
        assert!(with(SamplerKind::ParentBasedTraceIdRatio, Some(0.1)).roots_can_sample());
        assert!(with(SamplerKind::ParentBasedAlwaysOn, None).roots_can_sample());
    }

    #[test]
    fn ratios_are_checked() {
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("2").is_err());
        assert!(parse_ratio("half").is_err());
    }

    #[test]
    fn empty_endpoint_means_off() {
        let a = OtelArgs {
            endpoint: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(a.endpoint(), None);
        assert!(a.provider("x").unwrap().is_none());
    }
}
