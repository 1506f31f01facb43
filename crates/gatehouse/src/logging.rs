//! Process-wide log setup: with `GATEHOUSE_LOG_FORMAT=json`, one JSON object per line with
//! `severity` (as Cloud Logging reads it), `time`, `target`, `message` and the event's
//! fields; compact text otherwise. `RUST_LOG` filters.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GATEHOUSE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) is harmless; ignore it.
    let _ = if json {
        builder.event_format(CloudLoggingJson).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Cloud Logging's severities for tracing's levels.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

struct CloudLoggingJson;

#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

impl<S, N> FormatEvent<S, N> for CloudLoggingJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        let mut line = Map::new();
        // An event may name its own severity (e.g. NOTICE); otherwise the level's.
        let own = fields.0.remove("severity");
        line.insert(
            "severity".into(),
            own.unwrap_or_else(|| Value::String(severity(meta.level()).into())),
        );
        line.insert("time".into(), Value::String(rfc3339_now()));
        line.insert("target".into(), Value::String(meta.target().into()));
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<FormattedFields<N>>()
                        .map(|f| f.fields.as_str().to_owned())
                        .unwrap_or_default();
                    Value::String(format!("{}{{{fields}}}", span.name()))
                })
                .collect();
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Array(spans));
            }
        }
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// RFC 3339 UTC, formatted by tracing-subscriber's own clock (log timestamps only).
fn rfc3339_now() -> String {
    let mut time = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut time));
    time
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(emit: impl FnOnce()) -> Vec<(String, Value)> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(CloudLoggingJson)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| (l.to_owned(), serde_json::from_str(l).unwrap()))
            .collect()
    }

    #[test]
    fn json_lines_carry_cloud_logging_severity_once() {
        let out = lines(|| {
            tracing::warn!(route = "api", status = 403u64, "denied");
            tracing::info!(severity = "NOTICE", "explicit");
            tracing::error!("broken");
        });
        let (raw, line) = &out[0];
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "denied");
        assert_eq!(line["route"], "api");
        assert_eq!(line["status"], 403);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(!raw.contains("\"level\""));
        // An event's own severity wins, and appears once (a duplicate key is invalid JSON
        // for strict readers).
        let (raw, line) = &out[1];
        assert_eq!(line["severity"], "NOTICE");
        assert_eq!(raw.matches("\"severity\"").count(), 1);
        assert_eq!(out[2].1["severity"], "ERROR");
    }
}
