//! The gRPC contract of Nagare, generated at build time from `proto/nagare/v1/*.proto`.
//!
//! Servers implement [`v1::chat_service_server::ChatService`] and
//! [`v1::conversation_service_server::ConversationService`]; clients use
//! [`v1::chat_service_client::ChatServiceClient`] and its sibling.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("nagare.v1");
}

/// The encoded `FileDescriptorSet` of every file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nagare_v1_descriptor.bin"));
