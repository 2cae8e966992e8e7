//! Traces: `tracing` spans exported through `tracing-opentelemetry` and OTLP/gRPC (Jaeger
//! ingests OTLP natively), W3C `traceparent` in and out, and a bounded export queue whose
//! drops are counted, so a slow or dead collector never slows a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanProcessor,
};

use crate::config::file::TelemetrySection;

struct HeaderExtract<'a>(&'a HeaderMap);

impl Extractor for HeaderExtract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInject<'a>(&'a mut HeaderMap);

impl Injector for HeaderInject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The W3C trace context of a request's headers.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtract(headers))
}

/// Writes `cx` as `traceparent`/`tracestate` into `headers`.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInject(headers));
}

/// Export counters.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans handed to the exporter queue.
    pub queued: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans in batches the collector did not accept.
    pub failed: AtomicU64,
    in_queue: AtomicU64,
}

/// Counts what the batch processor takes, and drops (rather than blocks) past the queue
/// size: the SDK's own drop counter is private.
#[derive(Debug)]
struct Counting {
    inner: BatchSpanProcessor,
    stats: Arc<ExportStats>,
    max: u64,
}

impl SpanProcessor for Counting {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.stats.in_queue.load(Ordering::Relaxed) >= self.max {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.in_queue.fetch_add(1, Ordering::Relaxed);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Releases queue slots as batches leave (exported or failed).
#[derive(Debug)]
struct Release<E> {
    inner: E,
    stats: Arc<ExportStats>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Release<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.inner.export(batch).await;
        let _ = self
            .stats
            .in_queue
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(n))
            });
        if r.is_err() {
            self.stats.failed.fetch_add(n, Ordering::Relaxed);
        }
        r
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A running tracer; flushes on `shutdown`.
#[derive(Debug)]
pub struct Tracer {
    provider: SdkTracerProvider,
    /// Export counters.
    pub stats: Arc<ExportStats>,
}

impl Tracer {
    /// Flushes and stops the exporter without blocking the runtime.
    pub async fn shutdown(self) {
        let p = self.provider;
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
}

/// Whether traces are to be exported: config, or the standard OTLP variables.
pub fn wanted(cfg: &TelemetrySection) -> bool {
    cfg.enabled
        || std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

/// Logs the mapping for the Jaeger agent variables, which OTLP cannot use.
pub fn warn_jaeger_agent_env() {
    for v in ["JAEGER_AGENT_HOST", "JAEGER_AGENT_PORT"] {
        if let Ok(val) = std::env::var(v) {
            tracing::warn!(
                variable = v,
                value = %val,
                "Jaeger agent variables do not work with OTLP export; set OTEL_EXPORTER_OTLP_ENDPOINT=http://<jaeger-host>:4317 (or [telemetry] otlp_endpoint) instead."
            );
        }
    }
}

/// `OTEL_SERVICE_NAME` (read by the SDK's resource detector) wins over the config.
fn resource(cfg: &TelemetrySection) -> Resource {
    let b = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        b.build()
    } else {
        b.with_service_name(cfg.service_name.clone()).build()
    }
}

/// Builds the OTLP exporter and tracer provider; must run inside the Tokio runtime.
pub fn build(
    cfg: &TelemetrySection,
) -> anyhow::Result<(Tracer, opentelemetry_sdk::trace::SdkTracer)> {
    use opentelemetry_otlp::WithExportConfig as _;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(ep) = &cfg.otlp_endpoint {
        exporter = exporter.with_endpoint(ep.clone());
    }
    let exporter = exporter.build()?;
    let stats = Arc::new(ExportStats::default());
    let exporter = Release {
        inner: exporter,
        stats: stats.clone(),
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(cfg.max_queue_size)
                .build(),
        )
        .build();
    let ratio = Sampler::TraceIdRatioBased(cfg.sampling_ratio);
    let sampler = if cfg.ignore_client_sampling {
        ratio
    } else {
        Sampler::ParentBased(Box::new(ratio))
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Counting {
            inner: batch,
            stats: stats.clone(),
            max: cfg.max_queue_size as u64,
        })
        .with_sampler(sampler)
        .with_resource(resource(cfg))
        .build();
    let tracer = provider.tracer("seawall");
    Ok((Tracer { provider, stats }, tracer))
}
