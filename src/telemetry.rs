//! Logs, metrics and traces. Log fields come before the message; messages are capitalised
//! sentences. Output goes through a non-blocking writer so a slow terminal never stalls requests.

pub mod memory;
pub mod metrics;
pub mod trace;
pub mod window;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::file::{LogSection, TelemetrySection};

/// Keeps the log writer and the trace exporter alive; flush with `shutdown`.
#[derive(Debug)]
pub struct Guard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
    /// The trace exporter, when traces are exported.
    pub tracer: Option<trace::Tracer>,
}

impl Guard {
    /// Flushes spans still queued.
    pub async fn shutdown(self) {
        if let Some(t) = self.tracer {
            t.shutdown().await;
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` or `[log] level`, text or JSON, plus the
/// OpenTelemetry layer when traces are wanted. Must run inside the Tokio runtime. Later
/// calls (tests) keep the first subscriber.
pub fn init(log: &LogSection, tel: &TelemetrySection) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(writer);
    let fmt = if log.format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let (tracer, otel) = if trace::wanted(tel) {
        let (t, sdk_tracer) = trace::build(tel)?;
        (
            Some(t),
            Some(tracing_opentelemetry::layer().with_tracer(sdk_tracer)),
        )
    } else {
        (None, None)
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    trace::warn_jaeger_agent_env();
    Ok(Guard {
        _writer: Some(guard),
        tracer,
    })
}

/// Plain logging without traces (tools and tests).
pub fn init_logging(level: &str, format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
