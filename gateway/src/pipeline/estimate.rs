//! Token estimates made before the model has counted: what the limits reserve, what history is
//! trimmed to, and what `/v1/messages/count_tokens` answers.

use crate::chat::{Block, ChatRequest};

/// A rough, deliberately high token estimate: about 4 bytes per token in English and 3 in CJK
/// scripts, so dividing by 3 errs on the side of trimming a little too much.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

/// [`estimate_tokens`] of a message's blocks (tool input and results as their JSON).
pub fn estimate_block_tokens(blocks: &[Block]) -> usize {
    blocks.iter().map(|b| b.estimate_len().div_ceil(3)).sum()
}

/// The prompt's tokens as the limits count them before the model has: system and messages.
pub fn estimate_prompt_tokens<'a>(
    system: Option<&str>,
    turns: impl Iterator<Item = &'a [Block]>,
) -> u64 {
    let system = system.map_or(0, estimate_tokens);
    let messages: usize = turns.map(estimate_block_tokens).sum();
    (system + messages) as u64
}

/// What a stateless request sends the model: its system prompt, messages and tool definitions.
pub fn estimate_request_tokens(request: &ChatRequest) -> u64 {
    let turns = request
        .messages
        .iter()
        .flatten()
        .map(|m| m.content.as_slice());
    let tools = serde_json::to_string(&request.tools).map_or(0, |t| estimate_tokens(&t));
    estimate_prompt_tokens(request.system.as_deref(), turns) + tools as u64
}
