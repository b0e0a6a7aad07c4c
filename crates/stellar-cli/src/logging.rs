//! The process's tracing subscriber: the binary's job, never a library's.
//!
//! Log lines go to stderr. Spans also go to OpenTelemetry's layer, which gives them trace and
//! span ids (so trace context travels to other nodes and log lines name their `trace_id`) and,
//! with `otlp_endpoint` set, exports them to a collector.

use std::{io::IsTerminal, time::Duration};

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource, runtime,
    trace::{Sampler, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

/// How long an export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the process waits for buffered spans to go out when it ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The span pipeline installed with the subscriber; [`Telemetry::shutdown`] exports what is
/// still buffered.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Flushes buffered spans to the collector (if any) and stops the exporter, waiting at
    /// most [`FLUSH_TIMEOUT`]: an unreachable collector must not hold up the exit (the
    /// processor's own shutdown waits for every batch's export timeout). Call it with the tokio
    /// runtime still running.
    pub(crate) fn shutdown(self) {
        let (done, finished) = std::sync::mpsc::channel();
        let provider = self.provider;
        std::thread::spawn(move || {
            let _ = done.send(provider.shutdown());
        });
        match finished.recv_timeout(FLUSH_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "spans may not all have been exported"),
            Err(_) => tracing::warn!(
                waited_ms = FLUSH_TIMEOUT.as_millis() as u64,
                "the span collector did not take the last spans in time; they are dropped"
            ),
        }
    }
}

/// Parses the config key `log`.
pub(crate) fn filter(filter: &str) -> Result<EnvFilter> {
    EnvFilter::try_new(filter).with_context(|| {
        format!("invalid value for `log`: expected a tracing filter such as `info`, got {filter:?}")
    })
}

/// Installs a subscriber writing to stderr with `filter` (the config key `log`), with spans
/// exported to `otlp_endpoint` when set. Must run inside the tokio runtime (the exporter runs on
/// it). Returns `None` if a subscriber is installed already (an embedding binary or a test may
/// have done it).
pub(crate) fn init(filter: EnvFilter, otlp_endpoint: Option<&str>) -> Result<Option<Telemetry>> {
    let provider = provider(otlp_endpoint)?;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("stellar"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A supervised worker whose supervisor died writes to a closed pipe: drop the lines
        // quietly instead of reporting each failure with `eprintln!`, which panics.
        .log_internal_errors(false);
    // The log filter chooses log lines only: spans are traced at INFO whatever it says, so
    // `log = "warn"` does not stop trace context from travelling.
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(layer.with_filter(LevelFilter::INFO))
        .try_init()
        .is_ok();
    Ok(installed.then_some(Telemetry { provider }))
}

/// Spans are always given ids; they are recorded and exported only with an endpoint.
fn provider(otlp_endpoint: Option<&str>) -> Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("stellar").build());
    let Some(endpoint) = otlp_endpoint else {
        // Ids without recording: trace context travels and log lines name their trace, at the
        // cost of an id per span.
        return Ok(builder.with_sampler(Sampler::AlwaysOff).build());
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("could not set up the OTLP span exporter")?;
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    Ok(builder
        .with_sampler(Sampler::AlwaysOn)
        .with_span_processor(processor)
        .build())
}
