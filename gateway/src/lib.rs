//! Nagare: a streaming gateway for generative AI. This crate holds the chat pipeline, the model
//! providers, the HTTP server and the configuration; the binaries in `src/bin` are thin wrappers.

pub mod app;
pub mod chat;
pub mod client;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod knowledge;
pub mod lambda;
#[cfg(test)]
mod layers;
pub mod lifecycle;
pub mod limits;
pub mod pipeline;
pub mod provider;
pub mod push;
pub mod serve;
pub mod store;
pub mod sweep;
pub mod tasks;
pub mod tcp;
pub mod telemetry;
pub mod uploads;
pub mod web;
pub mod wiring;
pub mod workflow;
pub mod ws;

pub use error::{Error, ErrorCode, StartupError};
