//! Nagare's model request and Bedrock's Converse types, both ways: messages and their blocks,
//! tools, reasoning per model family, the response format; and each stream event back as a
//! [`ProviderEvent`].

use aws_sdk_bedrockruntime::types::{
    self as bt, AnyToolChoice, AutoToolChoice, CachePointBlock, CachePointType, ContentBlock,
    ContentBlockDelta, ContentBlockStart, ConversationRole, ConverseStreamOutput,
    InferenceConfiguration, JsonSchemaDefinition, OutputConfig, OutputFormat,
    OutputFormatStructure, OutputFormatType, ReasoningContentBlock, ReasoningContentBlockDelta,
    ReasoningTextBlock, SpecificToolChoice, SystemContentBlock, TokenUsage, ToolConfiguration,
    ToolInputSchema, ToolResultBlock, ToolResultContentBlock, ToolResultStatus, ToolSpecification,
    ToolUseBlock,
};
use aws_sdk_bedrockruntime::types::{
    GuardrailConfiguration, GuardrailStreamConfiguration, GuardrailStreamProcessingMode,
};
use aws_smithy_types::{Blob, Document, Number};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use crate::chat::{
    Block, Message, Part, Reasoning, ResponseFormat, Role, Source, Tool, ToolChoice,
    ToolResultContent, ToolStatus, Usage,
};
use crate::error::Error;
use crate::provider::guardrail_trace::summarize;
use crate::provider::{
    CacheTtl, Family, Guardrail, GuardrailTrace, ProviderEvent, ProviderRequest,
    StreamProcessingMode,
};

/// Everything of a Converse request but the model id.
pub struct ConverseInput {
    pub system: Option<Vec<SystemContentBlock>>,
    pub messages: Vec<bt::Message>,
    pub inference: InferenceConfiguration,
    pub tools: Option<ToolConfiguration>,
    pub additional: Option<Document>,
    pub output: Option<OutputConfig>,
    pub guardrail: Option<Guardrail>,
}

/// The Converse request for `request`.
pub fn to_converse(request: &ProviderRequest) -> Result<ConverseInput, Error> {
    let points = request.cache_points();
    let cache_point = points.map(|p| cache_point(p.ttl)).transpose()?;
    let mut system: Vec<SystemContentBlock> = request
        .system
        .iter()
        .map(|s| SystemContentBlock::Text(s.clone()))
        .collect();
    if !system.is_empty() {
        system.extend(cache_point.clone().map(SystemContentBlock::CachePoint));
    }
    // After the cache point: the passages change with every question, the system prompt does not.
    if let Some(grounding) = &request.grounding {
        system.push(SystemContentBlock::Text(grounding.prompt()));
    }
    let system = (!system.is_empty()).then_some(system);
    let after = points.and_then(|p| p.after_message);
    let messages = request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(m, cache_point.as_ref().filter(|_| after == Some(i))))
        .collect::<Result<Vec<_>, _>>()?;
    let p = &request.inference;
    let inference = InferenceConfiguration::builder()
        .set_max_tokens(p.max_tokens.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
        .set_temperature(p.temperature)
        .set_top_p(p.top_p)
        .set_stop_sequences(p.stop.clone())
        .build();
    let tools = tool_config(&request.tools, request.tool_choice.as_ref(), cache_point)?;
    let family = Family::of(&request.model_id);
    let additional = request
        .reasoning
        .as_ref()
        .and_then(|r| reasoning_fields(family, r))
        .map(|v| document(&v));
    let output = request
        .response_format
        .as_ref()
        .map(output_config)
        .transpose()?;
    Ok(ConverseInput {
        system,
        messages,
        inference,
        tools,
        additional,
        output,
        guardrail: request.guardrail.clone(),
    })
}

/// A cache point: Bedrock caches the prompt up to it.
fn cache_point(ttl: CacheTtl) -> Result<CachePointBlock, Error> {
    CachePointBlock::builder()
        .r#type(CachePointType::Default)
        .ttl(match ttl {
            CacheTtl::FiveMinutes => bt::CacheTtl::FiveMinutes,
            CacheTtl::OneHour => bt::CacheTtl::OneHour,
        })
        .build()
        .map_err(built)
}

fn message(m: &Message, cache_point: Option<&CachePointBlock>) -> Result<bt::Message, Error> {
    let mut content = m.content.iter().map(block).collect::<Result<Vec<_>, _>>()?;
    content.extend(cache_point.cloned().map(ContentBlock::CachePoint));
    bt::Message::builder()
        .role(match m.role {
            Role::User => ConversationRole::User,
            Role::Assistant => ConversationRole::Assistant,
        })
        .set_content(Some(content))
        .build()
        .map_err(built)
}

fn block(b: &Block) -> Result<ContentBlock, Error> {
    Ok(match b {
        Block::Text { text } => ContentBlock::Text(text.clone()),
        Block::ToolUse { id, name, input } => ContentBlock::ToolUse(
            ToolUseBlock::builder()
                .tool_use_id(id)
                .name(name)
                .input(document(input))
                .build()
                .map_err(built)?,
        ),
        Block::ToolResult {
            tool_use_id,
            content,
            status,
        } => {
            let content = content
                .iter()
                .map(|c| match c {
                    ToolResultContent::Text(t) => ToolResultContentBlock::Text(t.clone()),
                    ToolResultContent::Json(v) => ToolResultContentBlock::Json(document(v)),
                })
                .collect();
            ContentBlock::ToolResult(
                ToolResultBlock::builder()
                    .tool_use_id(tool_use_id)
                    .set_content(Some(content))
                    .set_status(status.map(|s| match s {
                        ToolStatus::Success => ToolResultStatus::Success,
                        ToolStatus::Error => ToolResultStatus::Error,
                    }))
                    .build()
                    .map_err(built)?,
            )
        }
        Block::Reasoning { text, signature } => {
            ContentBlock::ReasoningContent(ReasoningContentBlock::ReasoningText(
                ReasoningTextBlock::builder()
                    .text(text)
                    .set_signature(signature.clone())
                    .build()
                    .map_err(built)?,
            ))
        }
        Block::RedactedReasoning { data } => {
            let bytes = BASE64.decode(data).map_err(|e| {
                Error::InvalidRequest(format!("redacted_reasoning: not base64: {e}"))
            })?;
            ContentBlock::ReasoningContent(ReasoningContentBlock::RedactedContent(Blob::new(bytes)))
        }
        Block::Image { format, source } => ContentBlock::Image(
            bt::ImageBlock::builder()
                .format(bt::ImageFormat::from(resolved(*format)?.as_str()))
                .source(bt::ImageSource::Bytes(loaded(source)?))
                .build()
                .map_err(built)?,
        ),
        Block::Document {
            format,
            name,
            source,
        } => ContentBlock::Document(
            bt::DocumentBlock::builder()
                .format(bt::DocumentFormat::from(resolved(*format)?.as_str()))
                .name(name.as_deref().unwrap_or("document"))
                .source(bt::DocumentSource::Bytes(loaded(source)?))
                .build()
                .map_err(built)?,
        ),
    })
}

/// An attachment's format, which the pipeline fills in before any model call.
fn resolved<F>(format: Option<F>) -> Result<F, Error> {
    format.ok_or_else(|| Error::Internal("an attachment reached the model unresolved".into()))
}

/// An attachment's bytes, which the pipeline loads before any model call.
fn loaded(source: &Source) -> Result<Blob, Error> {
    source
        .bytes()
        .map(|b| Blob::new(b.to_vec()))
        .ok_or_else(|| Error::Internal("an attachment reached the model unloaded".into()))
}

fn tool_config(
    tools: &[Tool],
    choice: Option<&ToolChoice>,
    cache_point: Option<CachePointBlock>,
) -> Result<Option<ToolConfiguration>, Error> {
    if tools.is_empty() {
        return Ok(None);
    }
    let mut specs = tools
        .iter()
        .map(|t| {
            ToolSpecification::builder()
                .name(&t.name)
                .set_description(t.description.clone())
                .input_schema(ToolInputSchema::Json(document(&t.input_schema)))
                .set_strict(t.strict)
                .build()
                .map(bt::Tool::ToolSpec)
                .map_err(built)
        })
        .collect::<Result<Vec<_>, _>>()?;
    specs.extend(cache_point.map(bt::Tool::CachePoint));
    let choice = match choice {
        None => None,
        Some(ToolChoice::Auto) => Some(bt::ToolChoice::Auto(AutoToolChoice::builder().build())),
        Some(ToolChoice::Any) => Some(bt::ToolChoice::Any(AnyToolChoice::builder().build())),
        Some(ToolChoice::Tool { name }) => Some(bt::ToolChoice::Tool(
            SpecificToolChoice::builder()
                .name(name)
                .build()
                .map_err(built)?,
        )),
    };
    ToolConfiguration::builder()
        .set_tools(Some(specs))
        .set_tool_choice(choice)
        .build()
        .map(Some)
        .map_err(built)
}

/// `additionalModelRequestFields` that turn reasoning on, in each family's own words.
pub fn reasoning_fields(family: Family, r: &Reasoning) -> Option<Value> {
    match family {
        Family::Claude | Family::Mock => Some(serde_json::json!({
            "thinking": {"type": "enabled", "budget_tokens": r.budget()}
        })),
        Family::Nova => Some(serde_json::json!({
            "reasoningConfig": {"type": "enabled", "maxReasoningEffort": r.effort().as_str()}
        })),
        Family::OpenAi => Some(serde_json::json!({ "reasoning_effort": r.effort().as_str() })),
        Family::Other => None,
    }
}

fn output_config(format: &ResponseFormat) -> Result<OutputConfig, Error> {
    let ResponseFormat::JsonSchema {
        name,
        description,
        schema,
    } = format;
    let definition = JsonSchemaDefinition::builder()
        .schema(schema.to_string())
        .name(name)
        .set_description(description.clone())
        .build()
        .map_err(built)?;
    let format = OutputFormat::builder()
        .r#type(OutputFormatType::JsonSchema)
        .structure(OutputFormatStructure::JsonSchema(definition))
        .build()
        .map_err(built)?;
    Ok(OutputConfig::builder().text_format(format).build())
}

/// The guardrail of a streamed call.
pub fn stream_guardrail(g: &Guardrail) -> GuardrailStreamConfiguration {
    GuardrailStreamConfiguration::builder()
        .guardrail_identifier(&g.identifier)
        .guardrail_version(&g.version)
        .trace(trace(g.trace))
        .stream_processing_mode(match g.stream_processing_mode {
            StreamProcessingMode::Sync => GuardrailStreamProcessingMode::Sync,
            StreamProcessingMode::Async => GuardrailStreamProcessingMode::Async,
        })
        .build()
}

/// The guardrail of a whole (unstreamed) call.
pub fn whole_guardrail(g: &Guardrail) -> GuardrailConfiguration {
    GuardrailConfiguration::builder()
        .guardrail_identifier(&g.identifier)
        .guardrail_version(&g.version)
        .trace(trace(g.trace))
        .build()
}

fn trace(t: GuardrailTrace) -> bt::GuardrailTrace {
    match t {
        GuardrailTrace::Enabled => bt::GuardrailTrace::Enabled,
        GuardrailTrace::Disabled => bt::GuardrailTrace::Disabled,
        GuardrailTrace::EnabledFull => bt::GuardrailTrace::EnabledFull,
    }
}

fn built(e: aws_smithy_types::error::operation::BuildError) -> Error {
    Error::Internal(format!("building a Bedrock request: {e}"))
}

/// A JSON value as a Smithy document.
pub fn document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(document).collect()),
        Value::Object(o) => {
            Document::Object(o.iter().map(|(k, v)| (k.clone(), document(v))).collect())
        }
    }
}

/// A Smithy document as JSON: the way back, to prove the way there loses nothing.
#[cfg(test)]
fn json_of(doc: &Document) -> Value {
    match doc {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(a) => Value::Array(a.iter().map(json_of).collect()),
        Document::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), json_of(v))).collect())
        }
    }
}

/// One ConverseStream event as what the pipeline reads: none, one, or (`metadata` with a
/// guardrail trace) two.
pub fn from_stream_event(event: ConverseStreamOutput) -> [Option<ProviderEvent>; 2] {
    if let ConverseStreamOutput::Metadata(meta) = &event {
        let guardrail = meta
            .trace
            .as_ref()
            .and_then(|t| t.guardrail.as_ref())
            .map(|g| ProviderEvent::Guardrail(summarize(g)));
        let usage = meta
            .usage
            .as_ref()
            .map(|u| ProviderEvent::Usage(to_usage(u)));
        // The assessment first: the producer has it when the stream ends.
        return [guardrail, usage];
    }
    [one_event(event), None]
}

fn one_event(event: ConverseStreamOutput) -> Option<ProviderEvent> {
    let index = |i: i32| u32::try_from(i).unwrap_or_default();
    match event {
        ConverseStreamOutput::ContentBlockStart(s) => match s.start {
            Some(ContentBlockStart::ToolUse(t)) => Some(ProviderEvent::Part(Part::ToolStart {
                index: index(s.content_block_index),
                id: t.tool_use_id,
                name: t.name,
            })),
            _ => None,
        },
        ConverseStreamOutput::ContentBlockDelta(d) => {
            let index = index(d.content_block_index);
            let part = match d.delta? {
                ContentBlockDelta::Text(text) => Part::Text { index, text },
                ContentBlockDelta::ToolUse(t) => Part::ToolInput {
                    index,
                    json: t.input,
                },
                ContentBlockDelta::ReasoningContent(r) => match r {
                    ReasoningContentBlockDelta::Text(text) => Part::Reasoning { index, text },
                    ReasoningContentBlockDelta::Signature(signature) => {
                        Part::Signature { index, signature }
                    }
                    ReasoningContentBlockDelta::RedactedContent(blob) => Part::Redacted {
                        index,
                        data: BASE64.encode(blob.as_ref()),
                    },
                    _ => return None,
                },
                _ => return None,
            };
            Some(ProviderEvent::Part(part))
        }
        ConverseStreamOutput::ContentBlockStop(s) => {
            Some(ProviderEvent::BlockStop(index(s.content_block_index)))
        }
        ConverseStreamOutput::MessageStop(stop) => Some(ProviderEvent::Stop {
            stop_reason: stop.stop_reason.as_str().to_owned(),
        }),
        _ => None,
    }
}

pub fn to_usage(u: &TokenUsage) -> Usage {
    let count = |n: i32| u64::try_from(n).unwrap_or(0);
    Usage {
        input_tokens: count(u.input_tokens),
        output_tokens: count(u.output_tokens),
        cache_read_input_tokens: u.cache_read_input_tokens.map_or(0, count),
        cache_write_input_tokens: u.cache_write_input_tokens.map_or(0, count),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_survives_the_trip_through_a_document() {
        let v = json!({"a": [1, -2, 2.5, "x", null, true], "b": {"c": "東京"}});
        assert_eq!(json_of(&document(&v)), v);
    }

    #[test]
    fn reasoning_is_asked_for_in_each_family_s_words() {
        let r = Reasoning {
            budget_tokens: Some(2048),
            effort: None,
        };
        assert_eq!(
            reasoning_fields(Family::Claude, &r),
            Some(json!({"thinking": {"type": "enabled", "budget_tokens": 2048}}))
        );
        assert_eq!(
            reasoning_fields(Family::Nova, &r),
            Some(json!({"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "low"}}))
        );
        assert_eq!(reasoning_fields(Family::Other, &r), None);
    }
}
