//! The WebSocket connections of the API Gateway deployment: every frame arrives in a different
//! Lambda invocation, so each connection's owner and its chats in flight live here.

use async_trait::async_trait;
use nagare_authorizer::Principal;

use crate::error::Error;

/// One WebSocket connection on API Gateway, written on `$connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub connection_id: String,
    /// The authorizer's verified subject; every chat on the connection runs as this user.
    pub sub: String,
    pub tenant: String,
    /// Space-separated scopes of the token the connection was opened with.
    pub scopes: String,
    /// `requestContext.domainName` and `.stage`: where the Management API for it lives.
    pub domain: String,
    pub stage: String,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// When the record expires, seconds since the Unix epoch. `$disconnect` is best effort, so
    /// every record carries one (API Gateway closes connections after 2 h anyway).
    pub ttl: u64,
}

impl ConnectionRecord {
    /// Who the connection's chats run as.
    pub fn principal(&self) -> Principal {
        connection_principal(&self.sub, &self.tenant, &self.scopes)
    }
}

/// The principal a connection's chats run as: the verified subject and tenant of `$connect`, with
/// its space-separated scopes. It does not expire with the token; the connection's record does.
pub fn connection_principal(sub: &str, tenant: &str, scopes: &str) -> Principal {
    Principal {
        sub: sub.to_owned(),
        tenant: tenant.to_owned(),
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        groups: Vec::new(),
        expires_at: 0,
    }
}

/// Where one chat stands, as seen by the invocation streaming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatState {
    Active,
    /// A `cancel` frame asked to stop it.
    Cancelled,
    /// The connection is gone (`$disconnect`, or its record expired).
    Gone,
}

/// Why a chat could not be admitted on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitRefusal {
    /// No such connection (it closed, or `$connect` never stored it).
    UnknownConnection,
    /// The request id is already in flight on the connection.
    Duplicate,
    /// The connection has `max` chats in flight.
    AtLimit { max: usize },
}

/// The WebSocket connections of the API Gateway deployment.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Stores (or replaces) a connection.
    async fn put(&self, record: &ConnectionRecord) -> Result<(), Error>;
    /// Takes a seat for `record`'s connection among its principal's open connections: false
    /// when `max` live connections of that principal hold one already. Seats of connections
    /// that expired without a `$disconnect` do not count.
    async fn seat(&self, record: &ConnectionRecord, max: usize) -> Result<bool, Error>;
    /// Gives `record`'s seat back (on `$disconnect`). Giving back a seat not held is not an
    /// error.
    async fn unseat(&self, record: &ConnectionRecord) -> Result<(), Error>;
    /// The connection, unless it is unknown or expired.
    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error>;
    /// Forgets a connection and its chats. Deleting an unknown connection is not an error.
    async fn delete(&self, connection_id: &str) -> Result<(), Error>;
    /// Marks a chat as in flight, atomically refusing duplicates and chats over `max_inflight`.
    async fn admit(
        &self,
        connection_id: &str,
        request_id: &str,
        max_inflight: usize,
    ) -> Result<Result<(), AdmitRefusal>, Error>;
    /// Asks the invocation streaming `request_id` to stop. Returns false when no such chat is in
    /// flight (it may have just ended: a cancel and a `done` can cross on the wire).
    async fn cancel(&self, connection_id: &str, request_id: &str) -> Result<bool, Error>;
    /// Polled by the streaming invocation.
    async fn chat_state(&self, connection_id: &str, request_id: &str) -> Result<ChatState, Error>;
    /// The chat ended; its slot is free again.
    async fn finish(&self, connection_id: &str, request_id: &str) -> Result<(), Error>;
}
