//! Conversation memory in the pipeline. Before the model is called, a chat's conversation is
//! recalled: earlier exchanges become the messages the model sees (the oldest dropped first to
//! fit the context budget), and a retried request id gets its stored answer back without a new
//! model call. After the stream completes, the exchange is recorded. A chat that fails or is
//! cancelled records nothing, so history always alternates user/assistant.

use std::collections::BTreeMap;
use std::sync::Arc;

use nagare_authorizer::Principal;
use sha2::{Digest, Sha256};

use crate::chat::{Block, ChatRequest, Usage, check_tool_results, tool_result_ids};
use crate::chat::{Message, Reference, Role};
use crate::error::Error;
use crate::pipeline::estimate::{estimate_block_tokens, estimate_tokens};
use crate::pipeline::in_progress::{Claim, InProgress, Running};
use crate::store::{
    ConversationStore, Exchange, MAX_TURN_BYTES, Stored, Turn, not_found, unix_now_ms,
    valid_conversation_id,
};

/// `[memory]` settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Keep conversations. Off, a chat with `conversation_id` is refused.
    pub enabled: bool,
    /// The context budget in tokens: history is trimmed so that it, the system prompt, the new
    /// message and the answer's `max_tokens` fit.
    pub context_tokens: u32,
    /// Budgets for particular model ids.
    pub context_tokens_by_model: BTreeMap<String, u32>,
    /// How many days an exchange is kept after it is written (0: for ever). A conversation
    /// whose exchanges are all gone is gone.
    pub retention_days: u32,
    /// Record the chats of the OpenAI and Anthropic routes, which send their whole conversation
    /// each time: each request's new message and its answer are appended to a conversation (see
    /// [`Memory::transcript`]). Off, those routes record nothing.
    pub record_dialects: bool,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            context_tokens: 100_000,
            context_tokens_by_model: BTreeMap::new(),
            retention_days: 0,
            record_dialects: false,
        }
    }
}

impl MemorySettings {
    /// How long an exchange is kept; `None`: for ever.
    pub fn retention(&self) -> Option<std::time::Duration> {
        (self.retention_days > 0)
            .then(|| std::time::Duration::from_secs(u64::from(self.retention_days) * 24 * 3600))
    }

    /// Checks the values memory cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.context_tokens == 0 {
            return Err("memory.context_tokens: must be at least 1".into());
        }
        Ok(())
    }
}

/// What is reserved for the answer when a request does not set `max_tokens`.
const DEFAULT_ANSWER_TOKENS: usize = 4096;
/// Titles are the start of the first message.
const TITLE_CHARS: usize = 80;

/// The conversation store and how to use it.
pub struct Memory {
    store: Arc<dyn ConversationStore>,
    settings: MemorySettings,
    in_progress: Arc<InProgress>,
}

/// What memory decided for one chat.
pub enum Recall {
    /// The request id was answered before in this conversation: its stored answer.
    Replay {
        conversation_id: String,
        answer: Turn,
    },
    /// Earlier messages for the model, and what to record when the answer is complete.
    Continue {
        history: Vec<Message>,
        recorder: Recorder,
    },
}

/// Records a chat's exchange once its answer is complete.
pub struct Recorder {
    /// Held until the chat ends: retries of its request id wait for it meanwhile.
    _running: Running,
    store: Arc<dyn ConversationStore>,
    owner: String,
    conversation_id: String,
    title: String,
    request_id: String,
    user: Stored,
}

impl Recorder {
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }

    /// Appends the exchange, answered by `model` with `assistant`'s blocks.
    pub async fn record(
        &self,
        model: &str,
        assistant: Vec<Block>,
        usage: Usage,
        stop_reason: &str,
        sources: Option<&[Reference]>,
    ) -> Result<(), Error> {
        let exchange = Exchange {
            request_id: self.request_id.clone(),
            user: self.user.clone(),
            assistant: Stored::of(&assistant).with_sources(sources),
            usage,
            stop_reason: stop_reason.to_owned(),
            model: model.to_owned(),
        };
        self.store
            .append(
                &self.owner,
                &self.conversation_id,
                &self.title,
                &exchange,
                unix_now_ms(),
            )
            .await
            .map(drop)
    }
}

impl Memory {
    pub fn new(store: Arc<dyn ConversationStore>, settings: MemorySettings) -> Self {
        Self {
            store,
            settings,
            in_progress: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ConversationStore> {
        &self.store
    }

    /// Whether `principal` may continue conversation `id`: someone else's is reported exactly like
    /// a missing one.
    pub async fn check_owner(&self, principal: &Principal, id: &str) -> Result<(), Error> {
        if !valid_conversation_id(id) {
            return Err(unissued_id());
        }
        self.store
            .recent(&principal.sub, id, None, 1)
            .await?
            .map(drop)
            .ok_or_else(not_found)
    }

    /// Whether the chats of the dialect routes are recorded.
    pub fn records_dialects(&self) -> bool {
        self.settings.record_dialects
    }

    /// The recorder of a chat whose client sent the whole conversation (`request.messages`):
    /// its new message and answer go to `request.conversation_id` (the caller's own; someone
    /// else's is reported as missing) or, without one, to a new conversation. The model sees
    /// what the client sent, not what was recorded.
    pub async fn transcript(
        &self,
        principal: &Principal,
        request: &ChatRequest,
        user_blocks: &[Block],
    ) -> Result<Recorder, Error> {
        let user = stored_turn(user_blocks)?;
        let id = match &request.conversation_id {
            Some(id) => {
                self.check_owner(principal, id).await?;
                id.clone()
            }
            None => first_conversation_id(&principal.sub, request.id()),
        };
        let running = loop {
            match self.in_progress.claim(&principal.sub, &id, request.id()) {
                Claim::Mine(running) => break running,
                Claim::Wait(ended) => ended.await,
            }
        };
        Ok(self.recorder(principal, id, request, user, running))
    }

    /// What records `request`'s exchange in conversation `id`, holding its claim.
    fn recorder(
        &self,
        principal: &Principal,
        id: String,
        request: &ChatRequest,
        user: Stored,
        running: Running,
    ) -> Recorder {
        Recorder {
            _running: running,
            store: self.store.clone(),
            owner: principal.sub.clone(),
            title: user.text.chars().take(TITLE_CHARS).collect(),
            conversation_id: id,
            request_id: request.id().to_owned(),
            user,
        }
    }

    /// Recalls the conversation of `request` (validated), whose new message is `user_blocks`,
    /// or starts a new one.
    pub async fn recall(
        &self,
        principal: &Principal,
        request: &ChatRequest,
        user_blocks: &[Block],
        model_id: &str,
    ) -> Result<Recall, Error> {
        let user = stored_turn(user_blocks)?;
        let (id, started) = match &request.conversation_id {
            Some(id) if !valid_conversation_id(id) => return Err(unissued_id()),
            Some(id) => (id.clone(), true),
            None => (first_conversation_id(&principal.sub, request.id()), false),
        };
        let id = &id;
        let reserved = estimate_block_tokens(user_blocks)
            + request.system.as_deref().map_or(0, estimate_tokens)
            + request
                .inference
                .max_tokens
                .map_or(DEFAULT_ANSWER_TOKENS, |n| n as usize);
        let budget = self.budget(model_id).saturating_sub(reserved);
        // A try of this request id that is still running is waited for, then its answer read.
        let (turns, running) = loop {
            // Someone else's conversation is reported exactly like a missing one.
            let (turns, whole) = match self.load(&principal.sub, id, budget).await? {
                Some(loaded) => loaded,
                // A first message starts its conversation.
                None if !started => (Vec::new(), true),
                None => return Err(not_found()),
            };
            let earlier = match turns
                .iter()
                .position(|t| t.role == Role::User && t.request_id == request.id())
            {
                Some(at) => turns.get(at).cloned().zip(turns.get(at + 1).cloned()),
                // Older than what the budget loaded: the store finds it by its request id.
                None if !whole => {
                    self.store
                        .exchange_of(&principal.sub, id, request.id())
                        .await?
                }
                None => None,
            };
            if let Some((earlier, answer)) = earlier {
                if earlier.blocks() != user_blocks {
                    return Err(Error::InvalidRequest(format!(
                        "request_id: '{}' was already used for a different message in this conversation",
                        request.id()
                    )));
                }
                return Ok(Recall::Replay {
                    conversation_id: id.clone(),
                    answer,
                });
            }
            match self.in_progress.claim(&principal.sub, id, request.id()) {
                Claim::Mine(running) => break (turns, running),
                Claim::Wait(ended) => ended.await,
            }
        };
        // Tool results answer the calls of the conversation's last answer, and only those.
        let last_answer = match turns.last() {
            Some(t) if t.role == Role::Assistant => t.blocks(),
            _ => Vec::new(),
        };
        check_tool_results("content", &last_answer, user_blocks)?;
        let continues_tools = tool_result_ids(user_blocks).next().is_some();
        Ok(Recall::Continue {
            history: trim(&turns, budget, continues_tools),
            recorder: self.recorder(principal, id.clone(), request, user, running),
        })
    }

    /// The conversation's newest exchanges, a page at a time, until they hold more than
    /// `budget` tokens (and do not begin inside a tool loop) or the conversation is read whole:
    /// a long conversation costs what its budget costs. The turns, and whether they are all of
    /// it; `None` if it is not the owner's.
    async fn load(
        &self,
        owner: &str,
        id: &str,
        budget: usize,
    ) -> Result<Option<(Vec<Turn>, bool)>, Error> {
        let mut turns: Vec<Turn> = Vec::new();
        let mut used = 0;
        let mut before = None;
        loop {
            let Some(page) = self.store.recent(owner, id, before, HISTORY_PAGE).await? else {
                return Ok(None);
            };
            let whole = page.len() < HISTORY_PAGE * 2;
            before = page.first().map(|t| t.exchange);
            used += page.iter().map(turn_tokens).sum::<usize>();
            turns.splice(0..0, page);
            let in_tool_loop = turns
                .first()
                .and_then(|t| t.blocks.as_deref())
                .is_some_and(|b| tool_result_ids(b).next().is_some());
            if whole || (used > budget && !in_tool_loop) {
                return Ok(Some((turns, whole)));
            }
        }
    }

    fn budget(&self, model_id: &str) -> usize {
        self.settings
            .context_tokens_by_model
            .get(model_id)
            .copied()
            .unwrap_or(self.settings.context_tokens) as usize
    }
}

/// A user message as history keeps it, if it fits a turn.
fn stored_turn(blocks: &[Block]) -> Result<Stored, Error> {
    let user = Stored::of(blocks);
    if user.bytes() > MAX_TURN_BYTES {
        return Err(Error::PayloadTooLarge {
            limit: MAX_TURN_BYTES,
        });
    }
    Ok(user)
}

/// Exchanges read per page of history.
const HISTORY_PAGE: usize = 16;

/// A `conversation_id` that cannot be one of ours.
fn unissued_id() -> Error {
    Error::InvalidRequest("conversation_id: not an id this server issued".into())
}

/// The id of the conversation a chat without `conversation_id` starts, from its owner and request
/// id: a retried first message lands in the conversation its first try started, and is answered
/// from there, instead of starting another. The request ids the server makes up are random, and
/// so are their conversations' ids. Formatted as a UUID (version 8: made by the application).
fn first_conversation_id(owner: &str, request_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(owner.as_bytes())
        .chain_update([0])
        .chain_update(request_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// The newest whole exchanges that fit `budget` tokens, oldest first. An exchange that answers
/// tool calls stays with the exchange that made them (Bedrock refuses a tool result without its
/// call), and when the new message answers tool calls (`continues_tools`) the newest exchanges
/// stay whatever the budget: without them the request cannot be sent at all.
pub fn trim(turns: &[Turn], budget: usize, continues_tools: bool) -> Vec<Message> {
    // Exchanges, oldest first; history is stored whole, user then assistant.
    let exchanges: Vec<&[Turn]> = turns.rchunks_exact(2).rev().collect();
    let answers_tools = |exchange: &[Turn]| {
        exchange[0]
            .blocks
            .as_deref()
            .is_some_and(|b| tool_result_ids(b).next().is_some())
    };
    let mut end = exchanges.len();
    let mut used = 0;
    let mut required = continues_tools;
    while end > 0 {
        let mut start = end - 1;
        while start > 0 && answers_tools(exchanges[start]) {
            start -= 1;
        }
        let cost: usize = exchanges[start..end]
            .iter()
            .flat_map(|e| e.iter())
            .map(turn_tokens)
            .sum();
        if used + cost > budget && !required {
            break;
        }
        used += cost;
        end = start;
        required = false;
    }
    let kept = (exchanges.len() - end) * 2;
    turns[turns.len() - kept..]
        .iter()
        .map(|t| Message {
            role: t.role,
            content: t.blocks(),
        })
        .collect()
}

fn turn_tokens(turn: &Turn) -> usize {
    match &turn.blocks {
        Some(blocks) => estimate_block_tokens(blocks),
        None => estimate_tokens(&turn.content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(n: u64, size: usize) -> Vec<Turn> {
        (1..=n)
            .flat_map(|e| {
                [Role::User, Role::Assistant].map(|role| Turn {
                    exchange: e,
                    role,
                    content: format!("{e}:{}", "x".repeat(size)),
                    blocks: None,
                    request_id: format!("r{e}"),
                    usage: None,
                    stop_reason: None,
                    sources: None,
                    created_at: 0,
                })
            })
            .collect()
    }

    #[test]
    fn trimming_drops_whole_exchanges_oldest_first() {
        let all = turns(10, 298); // "N:" + 298 bytes = 300 or 301 bytes: 100 or 101 tokens
        assert_eq!(trim(&all, usize::MAX, false).len(), 20);
        let kept = trim(&all, 700, false);
        assert_eq!(kept.len(), 6, "three exchanges fit, the fourth does not");
        assert!(kept[0].joined_text().starts_with("8:"));
        assert_eq!(kept[0].role, Role::User);
        assert_eq!(kept.last().map(|m| m.role), Some(Role::Assistant));
        assert!(trim(&all, 10, false).is_empty());
    }

    #[test]
    fn trimming_keeps_a_tool_result_with_its_call() {
        let mut all = turns(6, 298);
        // Exchange 5 answered with a tool call; exchange 6 sent its result.
        all[9].blocks = Some(vec![Block::ToolUse {
            id: "t1".into(),
            name: "n".into(),
            input: serde_json::json!({}),
        }]);
        all[10].blocks = Some(vec![Block::ToolResult {
            tool_use_id: "t1".into(),
            content: vec![crate::chat::ToolResultContent::Text("x".repeat(300))],
            status: None,
        }]);
        // Room for about three exchanges: 6 goes only with 5, then 4 fits.
        let kept = trim(&all, 700, false);
        assert_eq!(kept.len(), 6);
        assert!(kept[0].joined_text().starts_with("4:"));
        // Room for one: 6 cannot go without 5, so neither goes.
        assert!(trim(&all, 250, false).is_empty());
        // The new message answers tool calls: the newest exchanges stay whatever the budget.
        let kept = trim(&all, 10, true);
        assert_eq!(kept.len(), 4);
        assert!(matches!(kept[1].content[0], Block::ToolUse { .. }));
    }

    #[test]
    fn the_estimate_errs_high() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("hello world!"), 4);
        assert_eq!(estimate_tokens("こんにちは"), 5);
    }
}
