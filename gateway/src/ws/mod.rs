//! WebSocket chat: the frame protocol and the per-connection session of `nagare serve`.

pub mod close;
pub mod frames;
mod registry;
mod session;
mod writer;

pub use registry::{LocalConnections, Registration, Seat};
pub use session::{Outbound, Server, WsSettings, run};
