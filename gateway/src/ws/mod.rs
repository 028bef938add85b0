//! WebSocket chat: the frame protocol and the per-connection session of `nagare serve`.

pub mod frames;
mod session;

pub use session::{Outbound, WsSettings, close, run};
