//! JSON log lines, written straight into the line.
//!
//! tracing-subscriber's own JSON format keeps each span's fields as a JSON object, parses it
//! back into a map for every line logged inside the span, and collects each event's fields in a
//! map before writing them: at one line per chat, that was about a tenth of a chat's CPU on the
//! unpaced mock. The lines keep its shape: `timestamp`, `level`, the event's fields (`message`
//! first), `target`, `span` (the innermost span's fields and its `name`) and, in Lambda, `spans`
//! (every open span, outermost first). A span field recorded twice appears twice; JSON readers
//! keep the last. Records of the `log` crate show their own level and target, without the
//! `log.*` fields that carry them, as tracing-subscriber shows them.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The line: see the module's comment. `span_list` adds `spans`.
pub struct JsonLine {
    pub span_list: bool,
}

/// A span's fields as JSON members without the braces: `"a":1,"b":"x"`.
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members::new(String::new());
        fields.record(&mut members);
        writer.write_str(&members.out)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = Members::new(std::mem::take(&mut current.fields));
        fields.record(&mut members);
        current.fields = members.out;
        Ok(())
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
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
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut line))?;
        line.push_str("\",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push('"');
        let mut members = Members::new(line);
        event.record(&mut members);
        let mut line = members.out;
        line.push_str(",\"target\":");
        push_str(&mut line, metadata.target());
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<_> = scope.from_root().collect();
            if let Some(innermost) = spans.last() {
                line.push_str(",\"span\":");
                push_span::<N, _>(&mut line, innermost);
            }
            if self.span_list {
                line.push_str(",\"spans\":[");
                for (i, span) in spans.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    push_span::<N, _>(&mut line, span);
                }
                line.push(']');
            }
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// `{<fields>,"name":"<span name>"}`.
fn push_span<N: 'static, R: for<'a> LookupSpan<'a>>(
    line: &mut String,
    span: &tracing_subscriber::registry::SpanRef<'_, R>,
) {
    line.push('{');
    let extensions = span.extensions();
    if let Some(fields) = extensions.get::<FormattedFields<N>>()
        && !fields.fields.is_empty()
    {
        line.push_str(&fields.fields);
        line.push(',');
    }
    line.push_str("\"name\":");
    push_str(line, span.name());
    line.push('}');
}

/// Appends each field to `out` as `"name":value`, after a comma unless `out` was empty.
struct Members {
    out: String,
    first: bool,
}

impl Members {
    fn new(out: String) -> Self {
        let first = out.is_empty();
        Self { out, first }
    }

    /// Starts the member `field`; false for the `log.*` fields, which are left out.
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        push_str(&mut self.out, name.strip_prefix("r#").unwrap_or(name));
        self.out.push(':');
        true
    }

    fn number(&mut self, field: &Field, value: impl fmt::Display) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
}

impl Visit for Members {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            push_str(&mut self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.number(field, value);
        } else {
            self.record_str(field, &value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            push_str(&mut self.out, &format!("{value:?}"));
        }
    }
}

/// `value` as a JSON string.
fn push_str(out: &mut String, value: &str) {
    out.push('"');
    let mut rest = value;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        out.push_str(&rest[..at]);
        let c = rest[at..].chars().next().unwrap_or(' ');
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => {
                let _ = write!(out, "\\u{:04x}", other as u32);
            }
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// The lines a subscriber with this format writes while `f` runs.
    fn lines(span_list: bool, f: impl FnOnce()) -> Vec<Value> {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(JsonLine { span_list })
            .fmt_fields(JsonFields)
            .with_writer(move || Writer2(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    struct Writer2(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer2 {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_has_the_event_its_fields_and_its_spans() {
        let got = lines(true, || {
            let outer = tracing::info_span!("invocation", aws_request_id = "r-1");
            let _o = outer.enter();
            let chat = tracing::info_span!("chat", tenant = "a\"b", model = tracing::field::Empty);
            chat.record("model", "m\n1");
            let _c = chat.enter();
            tracing::info!(tokens = 3u64, ok = true, ratio = 0.5, error = ?"x\\y", "chat finished");
        });
        let line = &got[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "chat finished");
        assert_eq!(line["tokens"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["error"], "\"x\\\\y\"");
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["span"],
            json!({"tenant": "a\"b", "model": "m\n1", "name": "chat"})
        );
        assert_eq!(
            line["spans"][0],
            json!({"aws_request_id": "r-1", "name": "invocation"})
        );
        assert_eq!(line["spans"][1]["name"], "chat");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_log_crate_record_shows_its_own_level_and_target() {
        let got = lines(false, || {
            let record = log::Record::builder()
                .level(log::Level::Warn)
                .target("some_crate::pool")
                .args(format_args!("connection reset"))
                .build();
            tracing_log::format_trace(&record).unwrap();
        });
        assert_eq!(got[0]["level"], "WARN");
        assert_eq!(got[0]["target"], "some_crate::pool");
        assert_eq!(got[0]["message"], "connection reset");
        assert!(got[0].get("log.target").is_none(), "{}", got[0]);
    }

    #[test]
    fn a_line_outside_spans_has_no_span_and_control_characters_are_escaped() {
        let got = lines(false, || tracing::warn!(text = "a\u{1}b\tc", "plain"));
        assert_eq!(got[0]["text"], "a\u{1}b\tc");
        assert!(got[0].get("span").is_none());
        assert!(got[0].get("spans").is_none());
    }
}
