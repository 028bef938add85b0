//! The fake Bedrock's answers to the Converse contract (tools, reasoning, prompt caching,
//! guardrails, structured output): the frames of each `fake.*` scenario, chosen by model id and
//! the request, the way Bedrock would stream them. See the table in [`crate::fake_bedrock`].

use axum::body::Bytes;
use serde_json::{Value, json};

use crate::fake_bedrock::event;

/// The signature the fake gives its reasoning.
pub const SIGNATURE: &str = "fake-signature-1";
/// Redacted reasoning, base64, as the fake streams it.
pub const REDACTED: &str = "AAECAw==";
/// The input of `fake.tools`'s call, as the fragments below concatenate.
pub const TOOL_INPUT: &str = r#"{"city":"Paris \"Île\"","note":"caf\u00e9 ☕"}"#;
/// Tokens the fake reports as written to, then read from, the prompt cache.
pub const CACHED_TOKENS: u64 = 1000;

/// How many fragments `fake.tools` streams its input in.
pub const TOOL_FRAGMENTS_SENT: usize = TOOL_FRAGMENTS.len();

/// `fake.tools`'s input, cut inside a string, between a backslash and the quote it escapes,
/// and inside a `\u` escape.
const TOOL_FRAGMENTS: &[&str] = &[
    r#"{"ci"#,
    r#"ty":"Par"#,
    r#"is \"#,
    r#""Île\"#,
    r#""","note":"caf\u00"#,
    r#"e9 "#,
    r#"☕"}"#,
];

/// The tool the `fake.tools` scenarios call, as a chat request offers it.
pub fn weather_tool() -> Value {
    json!({
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    })
}

/// `fake.parallel-tools`'s second tool.
pub fn time_tool() -> Value {
    json!({"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}})
}

/// What a scripted model answers: frames, or an error type Bedrock would return.
pub type Scripted = Result<Vec<Bytes>, &'static str>;

/// The scripted answer of `model` to `request` (its `call`-th), or `None` when `model` is not
/// one of these scenarios.
pub fn script(model: &str, request: &Value, call: u64) -> Option<Scripted> {
    let results = tool_results(request);
    let mut s = Script::default();
    match model {
        "fake.tools" | "fake.parallel-tools" if !results.is_empty() => {
            s.text(0, &["The tool said: ", &results.join("; ")]);
            s.end("end_turn");
        }
        "fake.tools" => {
            s.text(0, &["Let me ", "check."]);
            s.tool(1, "tooluse_fake_1", "get_weather");
            for fragment in TOOL_FRAGMENTS {
                s.input(1, fragment);
            }
            s.stop(1);
            s.end("tool_use");
        }
        "fake.parallel-tools" => {
            s.tool(0, "tooluse_fake_a", "get_weather");
            s.tool(1, "tooluse_fake_b", "get_time");
            for (index, fragment) in [
                (0, r#"{"city""#),
                (1, r#"{"zone":"As"#),
                (0, r#":"Pa"#),
                (1, r#"ia/Tokyo"}"#),
                (0, r#"ris"}"#),
            ] {
                s.input(index, fragment);
            }
            s.stop(1);
            s.stop(0);
            s.end("tool_use");
        }
        "fake.reasoning" => {
            if let Some(why) = unsigned_reasoning(request) {
                return Some(Err(why));
            }
            s.reasoning(0, json!({"text": "Let me think"}));
            s.reasoning(0, json!({"text": " about it."}));
            s.reasoning(0, json!({"signature": SIGNATURE}));
            s.stop(0);
            if request.get("toolConfig").is_some() && results.is_empty() {
                s.tool(1, "tooluse_fake_r", "get_weather");
                s.input(1, r#"{"city":"Paris"}"#);
                s.stop(1);
                s.end("tool_use");
            } else {
                s.text(1, &["Done thinking."]);
                s.end("end_turn");
            }
        }
        "fake.redacted" => {
            s.reasoning(0, json!({"redactedContent": REDACTED}));
            s.stop(0);
            s.text(1, &["Hidden thoughts."]);
            s.end("end_turn");
        }
        "fake.cache" => {
            s.text(0, &["Cached ", "prefix."]);
            s.end("end_turn");
            if cache_points(request) > 0 {
                s.cache = Some(if call == 1 {
                    (0, CACHED_TOKENS)
                } else {
                    (CACHED_TOKENS, 0)
                });
            }
        }
        "fake.guardrail" => {
            s.text(0, &["I can "]);
            s.end("guardrail_intervened");
            s.trace = Some(json!({"guardrail": {"outputAssessments": {"g1": [{
                "topicPolicy": {"topics": [{"name": "forbidden", "type": "DENY", "action": "BLOCKED"}]}
            }]}}}));
        }
        "fake.bad-tool-json" => {
            s.tool(0, "tooluse_fake_bad", "get_weather");
            s.input(0, r#"{"city":"#);
            s.stop(0);
            s.end("tool_use");
        }
        "fake.json" => {
            s.text(0, &[r#"{"answer":"#, r#""42"}"#]);
            s.end("end_turn");
        }
        _ => return None,
    }
    Some(Ok(s.finish()))
}

#[derive(Default)]
struct Script {
    frames: Vec<Bytes>,
    stop_reason: &'static str,
    output: u64,
    /// Prompt-cache (read, write) tokens.
    cache: Option<(u64, u64)>,
    trace: Option<Value>,
}

impl Script {
    fn text(&mut self, index: u32, pieces: &[&str]) {
        for text in pieces {
            self.delta(index, json!({ "text": text }));
        }
        self.stop(index);
    }

    fn tool(&mut self, index: u32, id: &str, name: &str) {
        self.frames.push(event(
            "contentBlockStart",
            json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
        ));
    }

    fn input(&mut self, index: u32, fragment: &str) {
        self.delta(index, json!({ "toolUse": { "input": fragment } }));
    }

    fn reasoning(&mut self, index: u32, delta: Value) {
        self.delta(index, json!({ "reasoningContent": delta }));
    }

    fn delta(&mut self, index: u32, delta: Value) {
        self.output += 1;
        self.frames.push(event(
            "contentBlockDelta",
            json!({ "contentBlockIndex": index, "delta": delta }),
        ));
    }

    fn stop(&mut self, index: u32) {
        self.frames.push(event(
            "contentBlockStop",
            json!({ "contentBlockIndex": index }),
        ));
    }

    fn end(&mut self, stop_reason: &'static str) {
        self.stop_reason = stop_reason;
    }

    fn finish(mut self) -> Vec<Bytes> {
        self.frames.push(event(
            "messageStop",
            json!({ "stopReason": self.stop_reason }),
        ));
        let input = 10;
        let mut usage = json!({
            "inputTokens": input, "outputTokens": self.output, "totalTokens": input + self.output
        });
        if let Some((read, write)) = self.cache {
            usage["cacheReadInputTokens"] = json!(read);
            usage["cacheWriteInputTokens"] = json!(write);
        }
        let mut metadata = json!({ "usage": usage, "metrics": { "latencyMs": 1 } });
        if let Some(trace) = self.trace {
            metadata["trace"] = trace;
        }
        self.frames.push(event("metadata", metadata));
        self.frames
    }
}

/// The text of every tool result in the request's last message.
fn tool_results(request: &Value) -> Vec<String> {
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| &m["content"]);
    last.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|block| block.get("toolResult"))
        .flat_map(|result| result["content"].as_array().cloned().unwrap_or_default())
        .map(|content| match content.get("text") {
            Some(Value::String(text)) => text.clone(),
            _ => content["json"].to_string(),
        })
        .collect()
}

/// Bedrock's refusal when an answer's reasoning comes back without its signature.
fn unsigned_reasoning(request: &Value) -> Option<&'static str> {
    let unsigned = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|block| block.get("reasoningContent").cloned())
        .any(|r| {
            r.get("reasoningText")
                .is_some_and(|t| t.get("signature").and_then(Value::as_str) != Some(SIGNATURE))
        });
    unsigned.then_some("ValidationException")
}

/// The cache points anywhere in the request: system, messages, tools.
pub fn cache_points(request: &Value) -> usize {
    let in_list = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|b| b.get("cachePoint").is_some())
            .count()
    };
    let in_messages: usize = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| in_list(&m["content"]))
        .sum();
    in_list(&request["system"]) + in_messages + in_list(&request["toolConfig"]["tools"])
}

/// Bedrock's rules for images and documents in a Converse request, as its `ValidationException`
/// enforces them: known formats, bytes that are base64, at most 20 images and 5 documents, only
/// in user messages, a document beside a text block, a document name of letters, digits, single
/// spaces, hyphens, parentheses and brackets. The reason it would refuse, or `None`.
pub fn attachment_violation(request: &Value) -> Option<String> {
    use base64::Engine;
    const IMAGES: [&str; 4] = ["png", "jpeg", "gif", "webp"];
    const DOCUMENTS: [&str; 9] = [
        "pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md",
    ];
    let (mut images, mut documents) = (0, 0);
    for message in request["messages"].as_array().into_iter().flatten() {
        let content = message["content"].as_array().cloned().unwrap_or_default();
        let user = message["role"] == "user";
        let has_text = content.iter().any(|b| b.get("text").is_some());
        for block in &content {
            let (kind, allowed) = match (block.get("image"), block.get("document")) {
                (Some(image), _) => {
                    images += 1;
                    (image, &IMAGES[..])
                }
                (_, Some(document)) => {
                    documents += 1;
                    let name = document["name"].as_str().unwrap_or_default();
                    let ok = |c: char| c.is_alphanumeric() || " -()[]".contains(c);
                    if name.is_empty() || !name.chars().all(ok) || name.contains("  ") {
                        return Some(format!("bad document name {name:?}"));
                    }
                    if !has_text {
                        return Some("a document needs a text block beside it".into());
                    }
                    (document, &DOCUMENTS[..])
                }
                _ => continue,
            };
            if !user {
                return Some("attachments are for user messages".into());
            }
            if !allowed.contains(&kind["format"].as_str().unwrap_or_default()) {
                return Some(format!("unknown format {}", kind["format"]));
            }
            let bytes = kind["source"]["bytes"].as_str().unwrap_or_default();
            if base64::engine::general_purpose::STANDARD
                .decode(bytes)
                .map_or(true, |b| b.is_empty())
            {
                return Some("source.bytes must be base64 bytes".into());
            }
        }
    }
    if images > 20 || documents > 5 {
        return Some(format!("{images} images and {documents} documents"));
    }
    None
}

/// The bytes of every attachment in `request`, in order: `(format, bytes)`.
pub fn attachments(request: &Value) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b.get("image").or_else(|| b.get("document")).cloned())
        .map(|a| {
            let bytes = a["source"]["bytes"].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(bytes)
                .unwrap_or_default();
            (a["format"].as_str().unwrap_or_default().to_owned(), bytes)
        })
        .collect()
}
