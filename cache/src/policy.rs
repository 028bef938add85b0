//! When the cache may be read and written: a mode per route and per tenant, with multi-turn
//! requests (continuing a conversation) governed separately, off by default.

use serde::Deserialize;

/// What a request may do with the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    ReadWrite,
    ReadOnly,
    WriteOnly,
    Off,
}

impl Mode {
    pub fn reads(self) -> bool {
        matches!(self, Self::ReadWrite | Self::ReadOnly)
    }

    pub fn writes(self) -> bool {
        matches!(self, Self::ReadWrite | Self::WriteOnly)
    }
}

/// The routes a mode can be set for.
pub const ROUTES: &[&str] = &[
    "chat",
    "chat_stream",
    "websocket",
    "lambda_websocket",
    "grpc",
    "task",
    "chat_completions",
    "messages",
    "embeddings",
];
