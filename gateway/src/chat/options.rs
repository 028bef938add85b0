//! What a chat may ask of the model besides its messages: tools and the choice among them,
//! reasoning, and a JSON schema for the answer. Checked here for what any model would refuse;
//! what one model family refuses is checked once the route is known ([`check_reasoning`]).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::InferenceParams;
use crate::chat::request::invalid;
use crate::error::Error;

/// A tool the model may call: `{"name","description","input_schema","strict"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object describing the tool's input.
    pub input_schema: Value,
    /// Ask the model to follow the schema exactly (models that support it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Which tool the model must call: `{"type":"auto"}` (its choice, the default), `{"type":"any"}`
/// (some tool), `{"type":"tool","name":"…"}` (that one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolChoice {
    Auto,
    Any,
    Tool { name: String },
}

/// How much the model should think first: a token budget, or an effort level the gateway maps
/// to each model family's own setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reasoning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effort {
    Low,
    Medium,
    High,
}

/// `{"type":"json_schema","name":"…","schema":{…}}`: the answer is JSON that satisfies `schema`
/// (Bedrock's `outputConfig.textFormat`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    JsonSchema {
        #[serde(default = "default_schema_name")]
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        schema: Value,
    },
}

fn default_schema_name() -> String {
    "answer".into()
}

/// The smallest budget Claude accepts for extended thinking.
pub const MIN_REASONING_BUDGET: u32 = 1024;

impl Effort {
    /// The thinking budget an effort level stands for, on models that take a budget.
    pub fn budget(self) -> u32 {
        match self {
            Self::Low => MIN_REASONING_BUDGET,
            Self::Medium => 4096,
            Self::High => 16_384,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl Reasoning {
    /// The token budget: the one given, or the effort's.
    pub fn budget(&self) -> u32 {
        self.budget_tokens
            .or(self.effort.map(Effort::budget))
            .unwrap_or(MIN_REASONING_BUDGET)
    }

    /// The effort: the one given, or the nearest to the budget.
    pub fn effort(&self) -> Effort {
        self.effort.unwrap_or(match self.budget() {
            ..4096 => Effort::Low,
            4096..16_384 => Effort::Medium,
            _ => Effort::High,
        })
    }
}

/// Checks the tools, the tool choice, reasoning and the response format against what any model
/// accepts.
pub fn check_options(
    tools: &[Tool],
    choice: Option<&ToolChoice>,
    reasoning: Option<&Reasoning>,
    format: Option<&ResponseFormat>,
    max_tools: usize,
) -> Result<(), Error> {
    if tools.len() > max_tools {
        return Err(invalid("tools", &format!("at most {max_tools} tools")));
    }
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        if !valid_tool_name(&tool.name) {
            return Err(invalid(
                &format!("tools[{i}].name"),
                "must be 1 to 64 characters of a-z A-Z 0-9 _ -",
            ));
        }
        if !names.insert(tool.name.as_str()) {
            return Err(invalid(
                &format!("tools[{i}].name"),
                &format!("'{}' is named twice", tool.name),
            ));
        }
        if !tool.input_schema.is_object() {
            return Err(invalid(
                &format!("tools[{i}].input_schema"),
                "must be a JSON Schema object",
            ));
        }
    }
    match choice {
        Some(ToolChoice::Tool { name }) if !names.contains(name.as_str()) => {
            return Err(invalid(
                "tool_choice.name",
                &format!("'{name}' is not one of the request's tools"),
            ));
        }
        Some(ToolChoice::Any | ToolChoice::Tool { .. }) if tools.is_empty() => {
            return Err(invalid("tool_choice", "needs tools"));
        }
        _ => {}
    }
    if let Some(r) = reasoning {
        if r.budget_tokens.is_some() && r.effort.is_some() {
            return Err(invalid(
                "reasoning",
                "give budget_tokens or effort, not both",
            ));
        }
        if r.budget_tokens.is_some_and(|b| b < MIN_REASONING_BUDGET) {
            return Err(invalid(
                "reasoning.budget_tokens",
                &format!("must be at least {MIN_REASONING_BUDGET}"),
            ));
        }
    }
    if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = format {
        if !valid_tool_name(name) {
            return Err(invalid(
                "response_format.name",
                "must be 1 to 64 characters of a-z A-Z 0-9 _ -",
            ));
        }
        if !schema.is_object() {
            return Err(invalid(
                "response_format.schema",
                "must be a JSON Schema object",
            ));
        }
    }
    Ok(())
}

/// What Anthropic's Claude refuses with extended thinking on: sampling changes, a forced tool,
/// and an answer budget no larger than the thinking budget.
pub fn check_reasoning(
    reasoning: &Reasoning,
    inference: &InferenceParams,
    choice: Option<&ToolChoice>,
) -> Result<(), Error> {
    if inference.temperature.is_some() || inference.top_p.is_some() {
        return Err(invalid(
            "reasoning",
            "this model takes no inference.temperature or inference.top_p with reasoning",
        ));
    }
    if matches!(choice, Some(ToolChoice::Any | ToolChoice::Tool { .. })) {
        return Err(invalid(
            "reasoning",
            "this model takes only tool_choice auto with reasoning",
        ));
    }
    if let Some(max) = inference.max_tokens
        && max <= reasoning.budget()
    {
        return Err(invalid(
            "inference.max_tokens",
            &format!(
                "must be larger than the reasoning budget ({})",
                reasoning.budget()
            ),
        ));
    }
    Ok(())
}

/// Bedrock's rule for tool names: `[a-zA-Z0-9_-]{1,64}`.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            input_schema: json!({"type":"object"}),
            strict: None,
        }
    }

    fn message(r: Result<(), Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn bad_tools_are_named() {
        let ok = [tool("get_weather"), tool("time-now")];
        check_options(&ok, None, None, None, 8).unwrap();
        let m = message(check_options(&[tool("has space")], None, None, None, 8));
        assert!(m.contains("tools[0].name"), "{m}");
        let m = message(check_options(&[tool(&"x".repeat(65))], None, None, None, 8));
        assert!(m.contains("tools[0].name"), "{m}");
        let m = message(check_options(&[tool("a"), tool("a")], None, None, None, 8));
        assert!(m.contains("named twice"), "{m}");
        let mut bad = tool("a");
        bad.input_schema = json!("string");
        let m = message(check_options(&[bad], None, None, None, 8));
        assert!(m.contains("input_schema"), "{m}");
        let m = message(check_options(&ok, None, None, None, 1));
        assert!(m.contains("at most 1"), "{m}");
        let choice = ToolChoice::Tool {
            name: "nope".into(),
        };
        let m = message(check_options(&ok, Some(&choice), None, None, 8));
        assert!(m.contains("tool_choice.name"), "{m}");
        let m = message(check_options(&[], Some(&ToolChoice::Any), None, None, 8));
        assert!(m.contains("needs tools"), "{m}");
    }

    #[test]
    fn reasoning_is_checked_against_what_claude_refuses() {
        let r = Reasoning {
            budget_tokens: Some(2048),
            effort: None,
        };
        check_reasoning(&r, &InferenceParams::default(), None).unwrap();
        let hot = InferenceParams {
            temperature: Some(0.5),
            ..Default::default()
        };
        assert!(message(check_reasoning(&r, &hot, None)).contains("temperature"));
        let small = InferenceParams {
            max_tokens: Some(2048),
            ..Default::default()
        };
        assert!(message(check_reasoning(&r, &small, None)).contains("max_tokens"));
        let forced = ToolChoice::Any;
        let m = message(check_reasoning(
            &r,
            &InferenceParams::default(),
            Some(&forced),
        ));
        assert!(m.contains("tool_choice"), "{m}");
        let tiny = Reasoning {
            budget_tokens: Some(10),
            effort: None,
        };
        assert!(message(check_options(&[], None, Some(&tiny), None, 8)).contains("at least"));
        assert_eq!(
            Reasoning {
                budget_tokens: None,
                effort: Some(Effort::High)
            }
            .budget(),
            16_384
        );
    }
}
