//! The mock model's answers to the Converse contract, decided from the request alone so every
//! scenario repeats exactly:
//!
//! - **reasoning** asked for: a reasoning block first, signed. Like Claude, the mock refuses a
//!   request whose history holds reasoning with a signature it did not make, and, with
//!   reasoning on, a tool loop whose last answer comes back without its reasoning.
//! - **tools** given and the new message names some of them: a call to each named tool, their
//!   input fragments interleaved when there are several, with every required field filled from
//!   the message (`tool_choice` `any` calls the first tool when none is named; `tool` calls that
//!   one). Stop reason `tool_use`.
//! - the new message holds **tool results**: an answer that uses them.
//! - **response_format**: JSON that satisfies the schema's required fields and types.
//! - **passages** from a knowledge base: the first sentence of passage 1, citing `[1]`; with
//!   none, that it found nothing.
//! - a **guardrail** attached and the word `forbidden` in the new message: the guardrail's
//!   message, stop reason `guardrail_intervened` and an assessment.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chat::{
    Block, Grounding, Message, Part, Role, Tool, ToolChoice, ToolResultContent, joined_text,
    tool_use_ids,
};
use crate::error::Error;
use crate::provider::{ProviderEvent, ProviderRequest};

/// Bytes per tool-input fragment: small, so fragments of parallel calls interleave.
const FRAGMENT: usize = 7;

/// What the mock will say: the blocks before any plain text, and how the answer goes on.
pub struct Agent {
    /// Parts and block ends, in stream order.
    pub events: Vec<ProviderEvent>,
    /// The index the answer's text takes, after the blocks above.
    pub text_index: u32,
    pub ending: Ending,
}

pub enum Ending {
    /// Go on with the mock's usual text (at `text_index`).
    Text,
    /// This text, then `end_turn`.
    Fixed(String),
    /// Nothing more: the tools were called (`tool_use`).
    ToolUse,
    /// The guardrail's message, then `guardrail_intervened`.
    Blocked,
}

/// What the mock's guardrail answers in place of the model.
pub const BLOCKED_MESSAGE: &str = "Sorry, this request is not allowed.";
/// The mock guardrail's assessment.
pub const BLOCKED_ASSESSMENT: &str = "input:topic:forbidden:BLOCKED";

/// The mock's plan for `request`, or the error a real model would give it.
pub fn plan(request: &ProviderRequest) -> Result<Agent, Error> {
    check_signatures(request)?;
    let mut agent = Agent {
        events: Vec::new(),
        text_index: 0,
        ending: Ending::Text,
    };
    let last = request
        .messages
        .last()
        .map(|m| &m.content[..])
        .unwrap_or_default();
    let prompt = joined_text(last);
    if request.guardrail.is_some() && prompt.to_lowercase().contains("forbidden") {
        agent.ending = Ending::Blocked;
        return Ok(agent);
    }
    if request.reasoning.is_some() {
        let text = format!("Thinking about: {}", words(&prompt, 6));
        agent.push(Part::Reasoning {
            index: 0,
            text: text.clone(),
        });
        agent.push(Part::Signature {
            index: 0,
            signature: sign(&text),
        });
        agent.stop_block();
    }
    let results: Vec<String> = last.iter().filter_map(result_text).collect();
    if !results.is_empty() {
        agent.ending = Ending::Fixed(format!("The tool returned: {}.", results.join("; ")));
        return Ok(agent);
    }
    if let Some(described) = super::mock_attachments::describe(last) {
        agent.ending = Ending::Fixed(described);
        return Ok(agent);
    }
    if let Some(grounding) = &request.grounding {
        agent.ending = Ending::Fixed(grounded_answer(grounding));
        return Ok(agent);
    }
    let calls = chosen_tools(&request.tools, request.tool_choice.as_ref(), &prompt);
    if !calls.is_empty() {
        agent.call(&calls, &prompt, &request_seed(request));
        agent.ending = Ending::ToolUse;
        return Ok(agent);
    }
    if let Some(crate::chat::ResponseFormat::JsonSchema { schema, .. }) = &request.response_format {
        agent.ending = Ending::Fixed(fill(schema, &prompt).to_string());
    }
    Ok(agent)
}

/// What the mock answers from a knowledge base's passages.
fn grounded_answer(grounding: &Grounding) -> String {
    let Some(first) = grounding.passages.first() else {
        return "I found nothing about that in the knowledge base.".into();
    };
    let text = first.text.split_whitespace().collect::<Vec<_>>().join(" ");
    let sentence = match text.find(". ") {
        Some(end) => &text[..=end],
        None => &text,
    };
    let sentence: String = sentence.chars().take(300).collect();
    format!(
        "According to {} [1]: {}",
        first.source.title,
        sentence.trim()
    )
}

impl Agent {
    fn push(&mut self, part: Part) {
        self.events.push(ProviderEvent::Part(part));
    }

    /// Ends the block `text_index` names, and moves past it.
    fn stop_block(&mut self) {
        self.events.push(ProviderEvent::BlockStop(self.text_index));
        self.text_index += 1;
    }

    /// Starts every call, then their input fragments round-robin, then ends them.
    fn call(&mut self, tools: &[&Tool], prompt: &str, seed: &str) {
        let first = self.text_index;
        let inputs: Vec<String> = tools
            .iter()
            .map(|t| fill(&t.input_schema, prompt).to_string())
            .collect();
        for (i, tool) in (first..).zip(tools) {
            self.push(Part::ToolStart {
                index: i,
                id: format!("tooluse_mock_{seed}_{i}"),
                name: tool.name.clone(),
            });
        }
        let fragments: Vec<Vec<String>> = inputs.iter().map(|s| fragments(s)).collect();
        let longest = fragments.iter().map(Vec::len).max().unwrap_or(0);
        for round in 0..longest {
            for (i, pieces) in (first..).zip(&fragments) {
                if let Some(json) = pieces.get(round) {
                    self.push(Part::ToolInput {
                        index: i,
                        json: json.clone(),
                    });
                }
            }
        }
        for _ in tools {
            self.stop_block();
        }
    }
}

/// The tools the mock calls for `prompt`.
fn chosen_tools<'a>(tools: &'a [Tool], choice: Option<&ToolChoice>, prompt: &str) -> Vec<&'a Tool> {
    if let Some(ToolChoice::Tool { name }) = choice {
        return tools.iter().filter(|t| &t.name == name).collect();
    }
    let named: Vec<&Tool> = tools.iter().filter(|t| prompt.contains(&t.name)).collect();
    match (named.is_empty(), choice) {
        (true, Some(ToolChoice::Any)) => tools.iter().take(1).collect(),
        _ => named,
    }
}

/// A value that satisfies `schema`'s types and required fields, its strings taken from the
/// prompt's last word.
pub fn fill(schema: &Value, prompt: &str) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") | None if schema.get("properties").is_some() => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            let mut out = Map::new();
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                out.insert(name.to_owned(), fill(property, prompt));
            }
            Value::Object(out)
        }
        Some("object") => Value::Object(Map::new()),
        Some("string") => Value::String(last_word(prompt)),
        Some("integer" | "number") => Value::from(prompt.split_whitespace().count()),
        Some("boolean") => Value::Bool(true),
        Some("array") => Value::Array(Vec::new()),
        _ => Value::Null,
    }
}

fn last_word(prompt: &str) -> String {
    prompt
        .split_whitespace()
        .last()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .unwrap_or("value")
        .to_owned()
}

fn words(prompt: &str, n: usize) -> String {
    prompt
        .split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `json` (or any text) cut every [`FRAGMENT`] bytes, at character boundaries.
pub fn fragments(json: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut piece = String::new();
    for c in json.chars() {
        piece.push(c);
        if piece.len() >= FRAGMENT {
            out.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() || out.is_empty() {
        out.push(piece);
    }
    out
}

fn result_text(block: &Block) -> Option<String> {
    let Block::ToolResult { content, .. } = block else {
        return None;
    };
    let parts: Vec<String> = content
        .iter()
        .map(|c| match c {
            ToolResultContent::Text(t) => t.clone(),
            ToolResultContent::Json(v) => v.to_string(),
        })
        .collect();
    Some(parts.join(" "))
}

/// The mock's signature of its reasoning text.
fn sign(text: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"nagare-mock-reasoning\0")
        .chain_update(text.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A short id part that differs per request, so tool-use ids do not repeat across turns.
fn request_seed(request: &ProviderRequest) -> String {
    let mut hash = Sha256::new();
    for m in &request.messages {
        hash.update(
            serde_json::to_string(&m.content)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    hash.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What Bedrock answers with a `ValidationException`: reasoning that is not the model's own,
/// and, with reasoning on, a tool loop whose answer lost its reasoning.
fn check_signatures(request: &ProviderRequest) -> Result<(), Error> {
    let refused =
        |why: &str| Error::InvalidRequest(format!("the model refused the messages: {why}"));
    for message in request
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
    {
        for block in &message.content {
            if let Block::Reasoning { text, signature } = block
                && signature.as_deref() != Some(sign(text).as_str())
            {
                return Err(refused(
                    "a reasoning block's signature does not match its text",
                ));
            }
        }
    }
    let last_answer = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant);
    if request.reasoning.is_some()
        && let Some(Message { content, .. }) = last_answer
        && tool_use_ids(content).next().is_some()
        && !matches!(
            content.first(),
            Some(Block::Reasoning { .. } | Block::RedactedReasoning { .. })
        )
    {
        return Err(refused(
            "with reasoning on, an answer that called tools must come back with its reasoning first",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::provider::{MockProvider, MockSettings, ModelProvider};

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: None,
            input_schema: json!({
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                               "unit": {"enum": ["c", "f"]}, "note": {"type": "string"}},
                "required": ["city", "days", "unit"]
            }),
            strict: None,
        }
    }

    fn ask(text: &str) -> ProviderRequest {
        ProviderRequest {
            model_id: "mock".into(),
            messages: vec![Message::text(Role::User, text)],
            ..Default::default()
        }
    }

    async fn events(request: ProviderRequest) -> Vec<ProviderEvent> {
        let provider = MockProvider::new(MockSettings::unpaced());
        let stream = provider.converse_stream(request).await.unwrap();
        stream.map(Result::unwrap).collect().await
    }

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            input_schema: serde_json::json!({"type": "object",
                "properties": {"q": {"type": "string"}}, "required": ["q"]}),
            strict: None,
        }
    }

    #[tokio::test]
    async fn named_tools_are_called_in_parallel_with_interleaved_input() {
        let mut request = ask("use alpha and beta on Rome");
        request.tools = vec![tool("alpha"), tool("beta"), tool("gamma")];
        let events = events(request).await;
        let inputs: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                ProviderEvent::Part(Part::ToolInput { index, .. }) => Some(*index),
                _ => None,
            })
            .collect();
        assert!(inputs.starts_with(&[0, 1, 0, 1]), "{inputs:?}");
        let starts = events
            .iter()
            .filter(|e| matches!(e, ProviderEvent::Part(Part::ToolStart { .. })))
            .count();
        assert_eq!(starts, 2, "gamma was not named");
        assert!(events.contains(&ProviderEvent::Stop {
            stop_reason: "tool_use".into()
        }));
    }

    #[tokio::test]
    async fn reasoning_comes_first_then_a_schema_answer() {
        let mut request = ask("the answer please");
        request.reasoning = Some(crate::chat::Reasoning {
            budget_tokens: Some(2048),
            effort: None,
        });
        request.response_format = Some(crate::chat::ResponseFormat::JsonSchema {
            name: "a".into(),
            description: None,
            schema: serde_json::json!({"type": "object",
                "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
                "required": ["n", "ok"]}),
        });
        let events = events(request).await;
        assert!(matches!(
            &events[0],
            ProviderEvent::Part(Part::Reasoning { index: 0, .. })
        ));
        assert!(matches!(
            &events[1],
            ProviderEvent::Part(Part::Signature { index: 0, .. })
        ));
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                ProviderEvent::Part(Part::Text { index: 1, text }) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer, serde_json::json!({"n": 3, "ok": true}));
    }

    #[test]
    fn filled_input_satisfies_the_schema() {
        let v = fill(&weather().input_schema, "What is the weather in Paris?");
        assert_eq!(v, json!({"city": "Paris", "days": 6, "unit": "c"}));
    }

    #[test]
    fn fragments_cut_at_character_boundaries() {
        let s = r#"{"city":"東京\"x"}"#;
        let f = fragments(s);
        assert!(f.len() > 2);
        assert_eq!(f.concat(), s);
    }

    #[test]
    fn signatures_are_checked() {
        let text = "Thinking about: hi".to_owned();
        let signed = Block::Reasoning {
            text: text.clone(),
            signature: Some(sign(&text)),
        };
        let forged = Block::Reasoning {
            text,
            signature: Some("00".into()),
        };
        let request = |answer: Block| ProviderRequest {
            model_id: "mock".into(),
            messages: vec![
                Message::text(Role::User, "hi"),
                Message {
                    role: Role::Assistant,
                    content: vec![answer],
                },
                Message::text(Role::User, "again"),
            ],
            ..Default::default()
        };
        check_signatures(&request(signed)).unwrap();
        let err = check_signatures(&request(forged)).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
    }
}
