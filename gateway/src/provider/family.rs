//! Model families: the settings that differ between the models Bedrock serves (how reasoning is
//! asked for, what it may not be combined with, whether prompt caching exists) are per family,
//! told by the model id.

/// A family of models, by the vendor part of its Bedrock id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Anthropic Claude: extended thinking with a token budget.
    Claude,
    /// Amazon Nova: `reasoningConfig` with an effort level.
    Nova,
    /// OpenAI's open-weight models: `reasoning_effort`.
    OpenAi,
    /// The embedded mock, which follows Claude's rules so every path can be tried without AWS.
    Mock,
    /// Any other model: reasoning is not asked for.
    Other,
}

impl Family {
    /// The family of `model_id`, with or without a cross-region prefix (`us.`, `eu.`, `global.`)
    /// or an inference-profile ARN around it.
    pub fn of(model_id: &str) -> Self {
        if model_id == "mock" || model_id.starts_with("mock.") {
            return Self::Mock;
        }
        let id = model_id.rsplit('/').next().unwrap_or(model_id);
        let vendor = |name: &str| {
            id.starts_with(&format!("{name}.")) || id.split('.').nth(1).is_some_and(|v| v == name)
        };
        if vendor("anthropic") {
            Self::Claude
        } else if vendor("amazon") && id.contains("nova") {
            Self::Nova
        } else if vendor("openai") {
            Self::OpenAi
        } else {
            Self::Other
        }
    }

    /// Whether Claude's rules for reasoning apply (see [`crate::chat::check_reasoning`]).
    pub fn checks_reasoning(self) -> bool {
        matches!(self, Self::Claude | Self::Mock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_from_the_vendor() {
        let cases = [
            ("anthropic.claude-sonnet-4-20250514-v1:0", Family::Claude),
            (
                "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
                Family::Claude,
            ),
            (
                "arn:aws:bedrock:us-east-1:1:inference-profile/global.anthropic.claude-x",
                Family::Claude,
            ),
            ("amazon.nova-pro-v1:0", Family::Nova),
            ("us.amazon.nova-2-lite-v1:0", Family::Nova),
            ("amazon.titan-text-express-v1", Family::Other),
            ("openai.gpt-oss-120b-1:0", Family::OpenAi),
            ("mock.slow", Family::Mock),
            ("meta.llama3-8b-instruct-v1:0", Family::Other),
        ];
        for (id, family) in cases {
            assert_eq!(Family::of(id), family, "{id}");
        }
    }
}
