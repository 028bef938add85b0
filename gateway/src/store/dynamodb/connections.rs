//! WebSocket connections in DynamoDB: one item per connection (PK `connection_id`, TTL attribute `ttl`),
//! with the chats in flight as the string set `inflight` and cancelled ones in `cancelled`.
//! Admission is one conditional update, so two invocations cannot both take the last slot.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, fail, is_condition_failure, n, number, s, set_contains, string};
use crate::error::Error;
use crate::store::{AdmitRefusal, ChatState, ConnectionRecord, ConnectionStore, unix_now};

/// Connections in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoConnectionStore {
    client: Client,
    table: String,
}

impl DynamoConnectionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(connection_id: &str) -> (String, AttributeValue) {
        ("connection_id".into(), s(connection_id))
    }

    /// The live item: unknown and expired ones (TTL deletion lags by up to days) are `None`.
    async fn item(&self, connection_id: &str) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(HashMap::from([Self::key(connection_id)])))
            // A cancel written a moment ago must be seen by the next poll.
            .consistent_read(true)
            .send()
            .await
            .map_err(fail)?;
        Ok(out
            .item
            .filter(|item| number(item, "ttl").is_some_and(|ttl| ttl > unix_now())))
    }
}

/// The item of one principal's seats: a map of connection id to the connection's expiry, and a
/// version for optimistic writes. It lives in the connections table under a key no API Gateway
/// connection id can have (they are base64).
fn seats_key(record: &ConnectionRecord) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(record.principal().key().as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("seats#{hex}")
}

/// Tries of one optimistic seat change before the store is called contended.
const SEAT_TRIES: usize = 8;

impl DynamoConnectionStore {
    /// Changes a principal's seats with `change` (which returns whether to write, and the
    /// answer), retrying when another invocation wrote them in between.
    async fn change_seats(
        &self,
        record: &ConnectionRecord,
        change: impl Fn(&mut HashMap<String, u64>) -> (bool, bool),
    ) -> Result<bool, Error> {
        let key = seats_key(record);
        for _ in 0..SEAT_TRIES {
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(HashMap::from([Self::key(&key)])))
                .consistent_read(true)
                .send()
                .await
                .map_err(fail)?
                .item;
            let version = item.as_ref().and_then(|i| number(i, "version"));
            let now = unix_now();
            let mut seats: HashMap<String, u64> = item
                .as_ref()
                .and_then(|i| i.get("seats"))
                .and_then(|v| v.as_m().ok())
                .map(|m| {
                    m.iter()
                        .filter_map(|(id, ttl)| Some((id.clone(), ttl.as_n().ok()?.parse().ok()?)))
                        .filter(|(_, ttl)| *ttl > now)
                        .collect()
                })
                .unwrap_or_default();
            let (write, answer) = change(&mut seats);
            if !write {
                return Ok(answer);
            }
            let expires = seats.values().copied().max().unwrap_or(now);
            let map = seats.into_iter().map(|(id, ttl)| (id, n(ttl))).collect();
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("connection_id", s(&key))
                .item("seats", AttributeValue::M(map))
                .item("version", n(version.unwrap_or(0) + 1))
                .item("ttl", n(expires));
            put = match version {
                Some(v) => put
                    .condition_expression("version = :v")
                    .expression_attribute_values(":v", n(v)),
                None => put.condition_expression("attribute_not_exists(connection_id)"),
            };
            match put.send().await {
                Ok(_) => return Ok(answer),
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(fail(e)),
            }
        }
        Err(Error::Unavailable {
            message: "too many connections opening at once for this user; retry".into(),
            retry_after: Some(std::time::Duration::from_secs(1)),
        })
    }
}

fn one(value: &str) -> AttributeValue {
    AttributeValue::Ss(vec![value.to_owned()])
}

#[async_trait]
impl ConnectionStore for DynamoConnectionStore {
    async fn put(&self, r: &ConnectionRecord) -> Result<(), Error> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("connection_id", s(&r.connection_id))
            .item("sub", s(&r.sub))
            .item("tenant", s(&r.tenant))
            .item("scopes", s(&r.scopes))
            .item("domain", s(&r.domain))
            .item("stage", s(&r.stage))
            .item("connected_at", n(r.connected_at))
            .item("ttl", n(r.ttl))
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn seat(&self, record: &ConnectionRecord, max: usize) -> Result<bool, Error> {
        let id = record.connection_id.clone();
        let ttl = record.ttl;
        self.change_seats(record, |seats| {
            if seats.contains_key(&id) {
                (false, true)
            } else if seats.len() >= max {
                (false, false)
            } else {
                seats.insert(id.clone(), ttl);
                (true, true)
            }
        })
        .await
    }

    async fn unseat(&self, record: &ConnectionRecord) -> Result<(), Error> {
        let id = &record.connection_id;
        self.change_seats(record, |seats| (seats.remove(id).is_some(), true))
            .await
            .map(drop)
    }

    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>, Error> {
        Ok(self
            .item(connection_id)
            .await?
            .map(|item| ConnectionRecord {
                connection_id: string(&item, "connection_id"),
                sub: string(&item, "sub"),
                tenant: string(&item, "tenant"),
                scopes: string(&item, "scopes"),
                domain: string(&item, "domain"),
                stage: string(&item, "stage"),
                connected_at: number(&item, "connected_at").unwrap_or_default(),
                ttl: number(&item, "ttl").unwrap_or_default(),
            }))
    }

    async fn delete(&self, connection_id: &str) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(HashMap::from([Self::key(connection_id)])))
            .send()
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn admit(
        &self,
        connection_id: &str,
        request_id: &str,
        max_inflight: usize,
    ) -> Result<Result<(), AdmitRefusal>, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(HashMap::from([Self::key(connection_id)])))
            .update_expression("ADD inflight :r")
            .condition_expression(
                "attribute_exists(connection_id) AND #ttl > :now AND \
                 (attribute_not_exists(inflight) OR \
                  (size(inflight) < :max AND NOT contains(inflight, :rid)))",
            )
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":r", one(request_id))
            .expression_attribute_values(":rid", s(request_id))
            .expression_attribute_values(":now", n(unix_now()))
            .expression_attribute_values(":max", n(max_inflight as u64))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_condition_failure(&e) => {
                // Which part of the condition failed decides only the message the client gets.
                Ok(Err(match self.item(connection_id).await? {
                    None => AdmitRefusal::UnknownConnection,
                    Some(item) if set_contains(&item, "inflight", request_id) => {
                        AdmitRefusal::Duplicate
                    }
                    Some(_) => AdmitRefusal::AtLimit { max: max_inflight },
                }))
            }
            Err(e) => Err(fail(e)),
        }
    }

    async fn cancel(&self, connection_id: &str, request_id: &str) -> Result<bool, Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(HashMap::from([Self::key(connection_id)])))
            .update_expression("ADD cancelled :r")
            .condition_expression("contains(inflight, :rid)")
            .expression_attribute_values(":r", one(request_id))
            .expression_attribute_values(":rid", s(request_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(fail(e)),
        }
    }

    async fn chat_state(&self, connection_id: &str, request_id: &str) -> Result<ChatState, Error> {
        Ok(match self.item(connection_id).await? {
            Some(item) if set_contains(&item, "cancelled", request_id) => ChatState::Cancelled,
            Some(item) if set_contains(&item, "inflight", request_id) => ChatState::Active,
            _ => ChatState::Gone,
        })
    }

    async fn finish(&self, connection_id: &str, request_id: &str) -> Result<(), Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(HashMap::from([Self::key(connection_id)])))
            .update_expression("DELETE inflight :r, cancelled :r")
            // Without the condition, an update would recreate a deleted connection's item.
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_values(":r", one(request_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }
}
