//! Conversation memory: who owns a conversation, and its exchanges (a user turn and the
//! assistant's answer), always written together so history alternates user/assistant.

use async_trait::async_trait;
use serde::Serialize;

use crate::chat::{Block, Reference, Role, Source, Usage, is_plain_text, joined_text};
use crate::error::Error;

/// A conversation's metadata: the `META` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationMeta {
    pub conversation_id: String,
    /// The `sub` of its creator; nobody else can read or extend it.
    #[serde(skip)]
    pub owner: String,
    /// The start of the first message.
    pub title: String,
    /// The model of the latest exchange.
    pub model: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// Exchanges so far; the next one is number `exchanges + 1`.
    pub exchanges: u64,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    /// The exchange it belongs to, from 1.
    pub exchange: u64,
    pub role: Role,
    /// Its text blocks, joined: all of a text-only message.
    pub content: String,
    /// Every block, when the message is more than one text block (tool calls and results,
    /// reasoning); `None` for text-only messages and those stored before blocks existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<Block>>,
    /// The chat that wrote it; a retry with the same id gets this exchange back.
    pub request_id: String,
    /// On assistant turns: what the model reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// On a knowledge-base answer: the sources it was given, numbered as it cites them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Reference>>,
    pub created_at: u64,
}

impl Turn {
    /// The message's blocks, whichever way it was stored.
    pub fn blocks(&self) -> Vec<Block> {
        match &self.blocks {
            Some(blocks) => blocks.clone(),
            None => vec![Block::text(self.content.clone())],
        }
    }
}

/// A message as a store writes it: its text, its blocks as JSON when it is more than text, the
/// blobs (SHA-256) its attachments name, which the blob sweep must keep, and for a knowledge-base
/// answer its sources as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub text: String,
    pub blocks: Option<String>,
    pub blobs: Vec<String>,
    pub sources: Option<String>,
}

impl Stored {
    pub fn of(blocks: &[Block]) -> Self {
        let blobs = blocks
            .iter()
            .filter_map(|b| match b {
                Block::Image { source, .. } | Block::Document { source, .. } => match source {
                    Source::Stored { sha256, .. } => Some(sha256.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Self {
            text: joined_text(blocks),
            // Plain data always serializes.
            blocks: (!is_plain_text(blocks))
                .then(|| serde_json::to_string(blocks).unwrap_or_default()),
            blobs,
            sources: None,
        }
    }

    /// With the sources the answer was built on.
    pub fn with_sources(mut self, sources: Option<&[Reference]>) -> Self {
        self.sources = sources.map(|s| serde_json::to_string(s).unwrap_or_default());
        self
    }

    /// Its size as a store counts it.
    pub fn bytes(&self) -> usize {
        let json = [&self.blocks, &self.sources];
        self.text.len()
            + json
                .iter()
                .map(|j| j.as_ref().map_or(0, String::len))
                .sum::<usize>()
    }
}

/// A text-only message.
impl From<String> for Stored {
    fn from(text: String) -> Self {
        Self {
            text,
            blocks: None,
            blobs: Vec::new(),
            sources: None,
        }
    }
}

impl From<&str> for Stored {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

/// Reads a stored `blocks` column or attribute back.
pub fn parse_blocks(json: Option<&str>) -> Result<Option<Vec<Block>>, Error> {
    json.map(|j| {
        serde_json::from_str(j)
            .map_err(|e| Error::Internal(format!("a stored message's blocks do not decode: {e}")))
    })
    .transpose()
}

/// Reads a stored `sources` column or attribute back.
pub fn parse_sources(json: Option<&str>) -> Result<Option<Vec<Reference>>, Error> {
    json.map(|j| {
        serde_json::from_str(j)
            .map_err(|e| Error::Internal(format!("a stored answer's sources do not decode: {e}")))
    })
    .transpose()
}

/// A completed chat, to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub request_id: String,
    pub user: Stored,
    pub assistant: Stored,
    pub usage: Usage,
    pub stop_reason: String,
    pub model: String,
}

/// What [`ConversationStore::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written as exchange `n`.
    New(u64),
    /// This request id was already written, as exchange `n`; nothing changed.
    Duplicate(u64),
}

/// One page of a listing, with the token of the next page when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Conversations, by owner. Every method takes the caller's `sub`: a conversation that belongs
/// to someone else is indistinguishable from one that does not exist.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// The conversation's metadata and every turn in order.
    async fn history(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<(ConversationMeta, Vec<Turn>)>, Error>;

    /// Whole exchanges from the newest backwards, as much as a chat's history needs: those
    /// numbered below `before` (all when `None`), at most `limit` of them, oldest first. `None`
    /// if the conversation is not the owner's.
    async fn recent(
        &self,
        owner: &str,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Option<Vec<Turn>>, Error>;

    /// The exchange `request_id` wrote in the owner's conversation: its user turn and its
    /// answer.
    async fn exchange_of(
        &self,
        owner: &str,
        id: &str,
        request_id: &str,
    ) -> Result<Option<(Turn, Turn)>, Error>;

    /// Appends an exchange, creating the conversation with `title` if it does not exist yet.
    /// Concurrent appends are serialized: each lands whole at the next exchange number. Fails
    /// with `not_found` if the conversation belongs to someone else.
    async fn append(
        &self,
        owner: &str,
        id: &str,
        title: &str,
        exchange: &Exchange,
        now: u64,
    ) -> Result<Appended, Error>;

    /// The owner's conversations, most recently updated first.
    async fn list(
        &self,
        owner: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Page<ConversationMeta>, Error>;

    /// A page of the conversation's turns, oldest first; `None` if it is not the owner's.
    async fn turns(
        &self,
        owner: &str,
        id: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Option<Page<Turn>>, Error>;

    /// Deletes the conversation and all its turns; false if it is not the owner's.
    async fn delete(&self, owner: &str, id: &str) -> Result<bool, Error>;

    /// Deletes the exchanges written before `before_ms` (milliseconds since the Unix epoch),
    /// and the conversations left with none; the count of exchanges deleted. A store whose
    /// items expire by themselves (DynamoDB's TTL) deletes nothing here.
    async fn expire(&self, _before_ms: u64) -> Result<u64, Error> {
        Ok(0)
    }

    /// Whether any conversation names the blob `sha256`: the blob sweep keeps it then. A store
    /// that does not index its blobs answers true, and keeps them all.
    async fn names_blob(&self, _sha256: &str) -> Result<bool, Error> {
        Ok(true)
    }
}

/// Conversation ids are generated by Nagare (UUIDs), so anything else is a client mistake.
pub fn valid_conversation_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// [`valid_conversation_id`], as the client's error.
pub fn check_conversation_id(id: &str) -> Result<(), Error> {
    if valid_conversation_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidRequest(
            "conversation id: not an id this server issued".into(),
        ))
    }
}

/// A listing's page size when the client names none, and the most it may ask for.
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

/// The page size the client asked for in `field`, or the default.
pub fn page_size(field: &str, requested: Option<usize>) -> Result<usize, Error> {
    match requested {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        Some(_) => Err(Error::InvalidRequest(format!(
            "{field}: must be a number from 1 to {MAX_PAGE_SIZE}"
        ))),
    }
}

pub fn not_found() -> Error {
    Error::NotFound("conversation not found".into())
}

/// The largest message a conversation stores, on both backends: DynamoDB items are at most
/// 400 KB, and a turn's text must leave room for its other attributes.
pub const MAX_TURN_BYTES: usize = 350 * 1024;

/// Refuses an exchange too large to store, before anything is written.
pub(super) fn check_size(exchange: &Exchange) -> Result<(), Error> {
    if exchange.user.bytes().max(exchange.assistant.bytes()) > MAX_TURN_BYTES {
        return Err(Error::PayloadTooLarge {
            limit: MAX_TURN_BYTES,
        });
    }
    Ok(())
}

/// How many times an append retries when another append took its exchange number.
pub(super) const APPEND_ATTEMPTS: usize = 20;
