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
}

impl Route {
    pub const ALL: [Self; 6] = [
        Self::Chat,
        Self::ChatStream,
        Self::WebSocket,
        Self::LambdaWebSocket,
        Self::Grpc,
        Self::Task,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::ChatStream => "chat_stream",
            Self::WebSocket => "websocket",
            Self::LambdaWebSocket => "lambda_websocket",
            Self::Grpc => "grpc",
            Self::Task => "task",
        }
    }
}
