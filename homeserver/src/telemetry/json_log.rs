//! JSON log lines with the OpenTelemetry `trace_id` and `span_id` of the span
//! they were written in as top-level fields, so that a log collector can join
//! log lines and traces without knowing which span field holds the id.
//! tracing-subscriber's JSON format has no such option (it knows nothing of
//! OpenTelemetry), so this wraps it.

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// tracing-subscriber's JSON event format, with `"trace_id"` and `"span_id"`
/// first in every line written within a traced span. The layer must format
/// span fields as JSON too (`JsonFields`: `.json()` on the fmt layer before
/// `.event_format(..)`).
#[derive(Debug)]
pub struct JsonWithTraceIds {
    inner: Format<Json>,
}

impl Default for JsonWithTraceIds {
    fn default() -> Self {
        JsonWithTraceIds {
            inner: Format::default().json(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(context, Writer::new(&mut line), event)?;
        // The OpenTelemetry layer makes the span it tracks current while a
        // `tracing` span is entered (the nearest one it tracks, for a DEBUG
        // span inside an INFO one).
        let otel_context = opentelemetry::Context::current();
        let span_context = otel_context.span().span_context().clone();
        match line.strip_prefix('{') {
            Some(rest) if span_context.is_valid() => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                span_context.trace_id(),
                span_context.span_id()
            ),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use std::sync::{Arc, Mutex};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Collects what the log layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The JSON lines `f` logs, with the homeserver's layers: the JSON log and
    /// an OpenTelemetry layer tracking INFO spans only.
    fn log_lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(JsonWithTraceIds::default())
                    .with_writer(move || writer.clone()),
            )
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            );
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect()
    }

    #[test]
    fn lines_within_a_traced_span_carry_its_trace_and_span_id() {
        let mut ids = Vec::new();
        let lines = log_lines(|| {
            let request = tracing::info_span!("client_request", rpc.method = "Send");
            let _request = request.enter();
            let span_context = request.context().span().span_context().clone();
            ids.push((
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            ));
            tracing::info!(accepted = 1, "message accepted");
            // A DEBUG span is not traced: its lines carry the INFO span's ids.
            let detail = tracing::debug_span!("detail");
            let _detail = detail.enter();
            tracing::warn!("inside the detail");
        });
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (trace_id, span_id) = &ids[0];
        for line in &lines {
            assert_eq!(line["trace_id"].as_str(), Some(trace_id.as_str()), "{line}");
            assert_eq!(line["span_id"].as_str(), Some(span_id.as_str()), "{line}");
            assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
            assert_eq!(line["span_id"].as_str().map(str::len), Some(16));
        }
        // Everything the JSON format writes is still there.
        assert_eq!(lines[0]["fields"]["message"], "message accepted");
        assert_eq!(lines[0]["fields"]["accepted"], 1);
        assert_eq!(lines[0]["span"]["rpc.method"], "Send");
        assert_eq!(lines[0]["level"], "INFO");
    }

    #[test]
    fn lines_outside_any_span_have_no_ids() {
        let lines = log_lines(|| tracing::info!("starting"));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert!(lines[0].get("span_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[0]["fields"]["message"], "starting");
    }
}
