//! Logs, metrics and traces. Log fields come before the message; messages are capitalised
//! sentences. Output goes through a non-blocking writer so a slow terminal never stalls requests.

pub mod access;
pub mod memory;
pub mod metrics;
pub mod trace;
pub mod window;

use std::io::IsTerminal as _;

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
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
        .with_ansi(ansi_wanted(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(writer.clone());
    let fmt = if log.format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    // Access lines are formatted by `access` (text, JSON or nginx combined) and printed as
    // they are; every other event goes through the usual formatter.
    let fmt = fmt.with_filter(filter_fn(|m| m.target() != access::TARGET));
    let access_layer = tracing_subscriber::fmt::layer()
        .event_format(MessageOnly)
        .with_writer(writer)
        .with_filter(filter_fn(|m| m.target() == access::TARGET));
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
        .with(access_layer)
        .with(otel)
        .try_init();
    trace::warn_jaeger_agent_env();
    Ok(Guard {
        _writer: Some(guard),
        tracer,
    })
}

/// Colour only for a terminal, and never when `NO_COLOR` is set to something
/// (<https://no-color.org>): log files and collectors get plain text.
pub fn ansi_wanted(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Prints an event's message and nothing else (access lines are complete already).
struct MessageOnly;

impl<S, N> FormatEvent<S, N> for MessageOnly
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        struct Message<'a, 'b>(&'a mut Writer<'b>, std::fmt::Result);
        impl tracing::field::Visit for Message<'_, '_> {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.1 = write!(self.0, "{v:?}");
                }
            }
        }
        let mut m = Message(&mut writer, Ok(()));
        event.record(&mut m);
        m.1?;
        writeln!(writer)
    }
}

/// Plain logging without traces (tools and tests).
pub fn init_logging(level: &str, format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi_wanted(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_target(false);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::ansi_wanted;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi_wanted(true, None));
        assert!(ansi_wanted(true, Some("".into())));
        assert!(!ansi_wanted(true, Some("1".into())));
        assert!(!ansi_wanted(false, None));
    }
}
