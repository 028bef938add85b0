//! Which transport a chat came in on: a metric label, and the cache mode can differ per route.

/// Which transport a request came in on; the cache mode can differ per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat`
    Chat,
    /// `POST /v1/chat/stream`
    ChatStream,
    /// `GET /v1/ws`
    WebSocket,
    /// The API Gateway WebSocket API (`nagare-ws`).
    LambdaWebSocket,
    /// gRPC `ChatService.Converse` and `ConverseStream`.
    Grpc,
    /// An asynchronous task (`POST /v1/tasks`), run by a worker.
    Task,
    /// `POST /v1/chat/completions`, the OpenAI dialect.
    ChatCompletions,
    /// `POST /v1/messages`, the Anthropic dialect.
    Messages,
    /// `POST /v1/embeddings` (not a chat: its limits and cache policy).
    Embeddings,
}

impl Route {
    pub const ALL: [Self; 9] = [
        Self::Chat,
        Self::ChatStream,
        Self::WebSocket,
        Self::LambdaWebSocket,
        Self::Grpc,
        Self::Task,
        Self::ChatCompletions,
        Self::Messages,
        Self::Embeddings,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::ChatStream => "chat_stream",
            Self::WebSocket => "websocket",
            Self::LambdaWebSocket => "lambda_websocket",
            Self::Grpc => "grpc",
            Self::Task => "task",
            Self::ChatCompletions => "chat_completions",
            Self::Messages => "messages",
            Self::Embeddings => "embeddings",
        }
    }

    /// The OpenAI and Anthropic chat routes, whose clients send the whole conversation.
    pub fn is_dialect(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Messages)
    }

    /// Whether an operator's rule for `routes` and `tenants` (each meaning all when empty)
    /// covers a chat on this route for `tenant`.
    pub fn covered_by(self, routes: &[String], tenants: &[String], tenant: &str) -> bool {
        (routes.is_empty() || routes.iter().any(|n| n == self.name()))
            && (tenants.is_empty() || tenants.iter().any(|t| t == tenant))
    }

    /// The first of `names` that is no route's name.
    pub fn unknown(names: &[String]) -> Option<&String> {
        names
            .iter()
            .find(|n| !Self::ALL.iter().any(|r| r.name() == *n))
    }
}
