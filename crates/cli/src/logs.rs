//! `--log-json`: one JSON object per line, `{"timestamp", "level", "target", "fields"}`,
//! with each field a JSON value of its own type (numbers stay numbers) and a field named
//! `data` that holds JSON text (an effect's details) embedded as that JSON, not a string.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format of `--log-json`.
pub(crate) struct JsonLines;

/// Collects an event's fields as JSON values.
#[derive(Default)]
pub(crate) struct Fields(pub(crate) Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let v = match field.name() {
            "data" => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            _ => Value::String(text),
        };
        self.0.insert(field.name().to_string(), v);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let v = match field.name() {
            "data" => serde_json::from_str(value).unwrap_or_else(|_| value.into()),
            _ => value.into(),
        };
        self.0.insert(field.name().to_string(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "fields": Value::Object(fields.0),
        });
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_json_and_numbers_stay_numbers() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let b = buf.clone();
        let sub = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || Writer2(b.clone()))
            .finish();
        tracing::subscriber::with_default(sub, || {
            let data = serde_json::json!({"tags": ["a"], "n": 2});
            tracing::info!(workflow = "w", effect = "tag", n = 3u64, data = %data, "tag");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["fields"]["data"]["tags"][0], "a", "{text}");
        assert_eq!(v["fields"]["n"], 3, "{text}");
        assert_eq!(v["fields"]["workflow"], "w", "{text}");
        assert_eq!(v["fields"]["message"], "tag", "{text}");
        assert_eq!(v["level"], "INFO");
    }

    struct Writer2(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Writer2 {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
