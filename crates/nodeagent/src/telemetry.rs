//! Logging and, when `otlp_endpoint` is set, tracing (issue 5).
//!
//! The libraries only make `tracing` spans (`http.request` → `core.create` → `manager.*` →
//! `driver.*`). This is the one place that decides where they go:
//!
//! - **logs**: the fmt layer to stderr, filtered by `log_level`. It takes events only, never
//!   spans, so log lines look the same with tracing on or off;
//! - **traces**: with an endpoint, a `tracing-opentelemetry` layer that turns the agent's own
//!   spans (targets `nodeagent*`, never a dependency's) into OpenTelemetry spans, batched and
//!   exported over OTLP/gRPC (tonic). The W3C trace-context propagator is installed, so the API
//!   continues a caller's `traceparent` and answers with its own.
//!
//! Without an endpoint no layer wants a span: every span callsite is disabled once (tracing's
//! interest cache) and costs a branch, no exporter or thread exists, and no header is added.
//!
//! The batch processor's schedule follows the standard `OTEL_BSP_*` variables
//! (`OTEL_BSP_SCHEDULE_DELAY`, default 5000 ms); `OTEL_RESOURCE_ATTRIBUTES` adds resource
//! attributes.

use anyhow::{anyhow, Context};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::time::Duration;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How long the exporter gets to deliver what is left at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Tracing settings (from [`crate::config::Config`]).
pub struct Settings<'a> {
    pub log_level: &'a str,
    pub otlp_endpoint: Option<&'a str>,
    pub service_name: &'a str,
}

/// Owns the trace exporter, if any; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Call it while the tokio
    /// runtime still runs (the exporter's gRPC channel lives on it), outside `block_on`.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown_with_timeout(FLUSH_TIMEOUT) {
                tracing::warn!(error = %e, "flushing traces at shutdown");
            }
        }
    }
}

/// Installs the global subscriber. With an OTLP endpoint it must run inside the tokio runtime
/// (`Runtime::enter`): the exporter's channel is created on it.
pub fn init(s: &Settings<'_>) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_new(s.log_level).with_context(|| {
        format!(
            "invalid log level {:?} (--log-level / RUST_LOG)",
            s.log_level
        )
    })?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in a file or journal they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(filter_fn(|m| m.is_event())));

    let (otel, provider) = match s.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(10))
                .build()
                .with_context(|| format!("OTLP exporter for {endpoint} (--otlp-endpoint)"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(s.service_name.to_string())
                        .build(),
                )
                .build();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("nodeagent"))
                // Nothing here uses OpenTelemetry's own context; without activation a span
                // starts at its first child or its end, so the API can still name it after
                // its route once routing has matched.
                .with_context_activation(false)
                // No busy/idle timings: two clock reads per enter and exit, for attributes
                // nobody asked for.
                .with_tracked_inactivity(false)
                .with_filter(filter_fn(|m| {
                    m.is_span()
                        && m.target().starts_with("nodeagent")
                        && *m.level() <= tracing::Level::INFO
                }));
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow!("setting up logging: {e}"))?;
    Ok(Telemetry { provider })
}
