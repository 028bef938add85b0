//! The Lambda functions' metrics: one CloudWatch Embedded Metric Format line per chat (and per
//! upstream retry) on stdout, which CloudWatch Logs turns into metrics with no API call.
//!
//! Dimensions stay few so the metric count stays bounded: chats by (Route, Code), and latency,
//! time to first delta, gateway overhead, tokens, cache hits and cost by (Route, Model). The
//! tenant and request id are plain properties: searchable in Logs Insights, never a dimension.

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::store::unix_now_ms;
use crate::telemetry::record::{ChatRecord, Recorder};

/// One EMF directive: a dimension set and its metrics as (name, unit).
type Directive<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>);

/// Writes EMF lines to `out` (stdout in Lambda).
pub struct Emf<W> {
    namespace: String,
    out: Mutex<W>,
}

impl<W: Write + Send + 'static> Emf<W> {
    pub fn new(namespace: impl Into<String>, out: W) -> Self {
        Self {
            namespace: namespace.into(),
            out: Mutex::new(out),
        }
    }

    /// Writes one EMF object: `directives` are (dimension set, [(metric, unit)]) pairs whose
    /// members `values` holds.
    fn emit(&self, directives: &[Directive<'_>], values: Map<String, Value>) {
        let metrics: Vec<Value> = directives
            .iter()
            .map(|(dimensions, metrics)| {
                json!({
                    "Namespace": self.namespace,
                    "Dimensions": [dimensions],
                    "Metrics": metrics
                        .iter()
                        .map(|(name, unit)| json!({ "Name": name, "Unit": unit }))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut line = values;
        line.insert(
            "_aws".into(),
            json!({ "Timestamp": unix_now_ms(), "CloudWatchMetrics": metrics }),
        );
        let Ok(mut text) = serde_json::to_vec(&line) else {
            return;
        };
        text.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A lost metric line must not fail a chat.
        let _ = out.write_all(&text).and_then(|()| out.flush());
    }
}

impl<W: Write + Send + 'static> Recorder for Emf<W> {
    fn chat(&self, r: &ChatRecord<'_>) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let mut values = Map::new();
        values.insert("Route".into(), r.route.name().into());
        values.insert("Code".into(), r.outcome.code().into());
        values.insert("Model".into(), r.model.into());
        values.insert("Tenant".into(), r.tenant.into());
        values.insert("Chats".into(), 1.into());
        let mut timed = vec![("Latency", "Milliseconds")];
        values.insert("Latency".into(), ms(r.total).into());
        if let Some(t) = r.first_delta {
            timed.push(("TimeToFirstDelta", "Milliseconds"));
            values.insert("TimeToFirstDelta".into(), ms(t).into());
        }
        if let Some(t) = r.overhead() {
            timed.push(("GatewayOverhead", "Milliseconds"));
            values.insert("GatewayOverhead".into(), ms(t).into());
        }
        timed.extend([
            ("InputTokens", "Count"),
            ("OutputTokens", "Count"),
            ("CacheReadInputTokens", "Count"),
            ("CacheWriteInputTokens", "Count"),
            ("CacheHits", "Count"),
            ("GuardrailInterventions", "Count"),
        ]);
        let u = r.usage;
        values.insert("InputTokens".into(), u.input_tokens.into());
        values.insert("OutputTokens".into(), u.output_tokens.into());
        values.insert(
            "CacheReadInputTokens".into(),
            u.cache_read_input_tokens.into(),
        );
        values.insert(
            "CacheWriteInputTokens".into(),
            u.cache_write_input_tokens.into(),
        );
        values.insert("CacheHits".into(), u64::from(r.cached).into());
        values.insert(
            "GuardrailInterventions".into(),
            u64::from(r.guardrail_intervened).into(),
        );
        self.emit(
            &[
                (&["Route", "Code"], vec![("Chats", "Count")]),
                (&["Route", "Model"], timed),
            ],
            values,
        );
    }

    fn retry(&self, model: &str) {
        let mut values = Map::new();
        values.insert("Model".into(), model.into());
        values.insert("UpstreamRetries".into(), 1.into());
        self.emit(&[(&["Model"], vec![("UpstreamRetries", "Count")])], values);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::chat::{Route, Usage};
    use crate::telemetry::record::Outcome;

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(out: &Lines) -> Vec<Value> {
        String::from_utf8(out.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The rules of the EMF specification: `_aws` with an integer `Timestamp` and directives
    /// whose every dimension and metric is a top-level member, metrics being numbers.
    fn assert_valid_emf(line: &Value) {
        let aws = &line["_aws"];
        assert!(aws["Timestamp"].is_u64(), "{line}");
        for d in aws["CloudWatchMetrics"].as_array().unwrap() {
            assert!(!d["Namespace"].as_str().unwrap().is_empty());
            for set in d["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(!set.is_empty() && set.len() <= 30);
                for dim in set {
                    assert!(line[dim.as_str().unwrap()].is_string(), "{dim} in {line}");
                }
            }
            for m in d["Metrics"].as_array().unwrap() {
                let name = m["Name"].as_str().unwrap();
                assert!(line[name].is_number(), "{name} in {line}");
                assert!(["Count", "Milliseconds"].contains(&m["Unit"].as_str().unwrap()));
            }
        }
    }

    #[test]
    fn a_chat_is_one_valid_emf_line_with_the_tenant_as_a_property() {
        let out = Lines::default();
        let emf = Emf::new("Nagare", out.clone());
        let mut record = ChatRecord {
            route: Route::LambdaWebSocket,
            model: "m",
            tenant: "acme",
            outcome: Outcome::Done,
            guardrail_intervened: false,
            cached: false,
            total: Duration::from_millis(120),
            first_delta: Some(Duration::from_millis(30)),
            upstream: Some(Duration::from_millis(117)),
            usage: Usage::new(7, 11),
        };
        emf.chat(&record);
        record.first_delta = None;
        record.upstream = None;
        record.cached = true;
        emf.chat(&record);
        emf.retry("m");
        let lines = lines(&out);
        assert_eq!(lines.len(), 3);
        lines.iter().for_each(assert_valid_emf);
        assert_eq!(lines[0]["GatewayOverhead"], 3.0);
        assert_eq!(lines[0]["OutputTokens"], 11);
        assert_eq!(lines[0]["Tenant"], "acme");
        assert_eq!(lines[0]["Code"], "ok");
        let dims = &lines[0]["_aws"]["CloudWatchMetrics"];
        assert!(!dims.to_string().contains("Tenant"));
        assert!(lines[1].get("GatewayOverhead").is_none());
        assert!(!lines[1]["_aws"].to_string().contains("GatewayOverhead"));
        assert_eq!(lines[1]["CacheHits"], 1);
        assert_eq!(lines[2]["UpstreamRetries"], 1);
    }
}
