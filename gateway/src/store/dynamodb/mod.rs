//! The DynamoDB stores, and the tables they need.

mod connections;
mod conversations;
mod tables;
mod uploads;

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

pub use connections::DynamoConnectionStore;
pub use conversations::DynamoConversationStore;
pub use tables::{Key, KeyKind, TableNames, TableSpec, create_tables, table_specs};
pub use uploads::DynamoUploadStore;

use super::store_error;
use crate::error::Error;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The GSI that lists a user's conversations, newest first (only `META` items carry `owner`).
pub const OWNER_INDEX: &str = "owner-updated";

/// The GSI of blob references (`B#{sha256}#{exchange}` items): which conversations name a blob.
pub const BLOB_INDEX: &str = "blob-refs";

/// A DynamoDB failure as the store error of the error table.
pub(crate) fn fail(e: impl std::error::Error) -> Error {
    store_error("dynamodb", aws_sdk_dynamodb::error::DisplayErrorContext(&e))
}

/// True when a conditional write's condition did not hold.
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

pub(crate) fn string(item: &Item, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn set_contains(item: &Item, name: &str, value: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_ss().ok())
        .is_some_and(|set| set.iter().any(|s| s == value))
}

pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
