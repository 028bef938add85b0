//! Conversations in DynamoDB, as DESIGN.md lays them out: per conversation a `META` item
//! `{owner, title, model, created_at, updated_at, exchanges}`, turn items `T#{exchange:08}#0`
//! (user) and `#1` (assistant), an `R#{request_id}` item per exchange that makes a retried
//! request a no-op, and a `B#{sha256}#{exchange:08}` item per blob a user turn names (indexed by
//! `blob`, so the sweep can ask whether any conversation names a blob). An append is one transaction, conditional on the exchange count it read,
//! so concurrent appends never interleave: the loser rereads and takes the next number.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, TransactWriteItem, Update, WriteRequest,
};

use super::{BLOB_INDEX, Item, OWNER_INDEX, fail, is_condition_failure, n, number, s, string};
use crate::chat::Role;
use crate::chat::Usage;
use crate::error::Error;
use crate::store::conversations::check_size;
use crate::store::conversations::{APPEND_ATTEMPTS, not_found};
use crate::store::page::{self, ConversationCursor, TurnCursor};
use crate::store::{
    Appended, ConversationMeta, ConversationStore, Exchange, Page, Stored, Turn, parse_blocks,
    parse_sources,
};

const META: &str = "META";

/// Conversations in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoConversationStore {
    client: Client,
    table: String,
    retention: Option<std::time::Duration>,
}

fn turn_key(exchange: u64, role: Role) -> String {
    format!("T#{exchange:08}#{}", u8::from(role == Role::Assistant))
}

fn key(id: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("conversation_id".into(), s(id)), ("sk".into(), s(sk))])
}

fn meta_of(item: &Item) -> ConversationMeta {
    ConversationMeta {
        conversation_id: string(item, "conversation_id"),
        owner: string(item, "owner"),
        title: string(item, "title"),
        model: string(item, "model"),
        created_at: number(item, "created_at").unwrap_or_default(),
        updated_at: number(item, "updated_at").unwrap_or_default(),
        exchanges: number(item, "exchanges").unwrap_or_default(),
    }
}

fn turn_of(item: &Item) -> Result<Turn, Error> {
    let sk = string(item, "sk");
    let role = if sk.ends_with("#1") {
        Role::Assistant
    } else {
        Role::User
    };
    let blocks = item.get("blocks").and_then(|v| v.as_s().ok());
    Ok(Turn {
        exchange: number(item, "exchange").unwrap_or_default(),
        role,
        content: string(item, "content"),
        // Items written before blocks existed have none: they are text.
        blocks: parse_blocks(blocks.map(String::as_str))?,
        request_id: string(item, "request_id"),
        usage: number(item, "input_tokens")
            .zip(number(item, "output_tokens"))
            .map(|(input_tokens, output_tokens)| Usage::new(input_tokens, output_tokens)),
        stop_reason: item.get("stop_reason").and_then(|v| v.as_s().ok()).cloned(),
        sources: parse_sources(
            item.get("sources")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str),
        )?,
        created_at: number(item, "created_at").unwrap_or_default(),
    })
}

impl DynamoConversationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retention: None,
        }
    }

    /// Gives every item it writes a TTL `retention` after it is written (the `META` item's
    /// moves with each exchange), so DynamoDB deletes exchanges past `memory.retention_days`.
    pub fn with_retention(mut self, retention: Option<std::time::Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// The TTL attribute of an item written at `now_ms`, when exchanges expire.
    fn ttl(&self, now_ms: u64) -> Option<AttributeValue> {
        self.retention.map(|r| n(now_ms / 1000 + r.as_secs()))
    }

    async fn item(&self, id: &str, sk: &str) -> Result<Option<Item>, Error> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(id, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(fail)?
            .item)
    }

    /// The `META` item if `owner` owns the conversation.
    async fn owned(&self, owner: &str, id: &str) -> Result<Option<ConversationMeta>, Error> {
        Ok(self
            .item(id, META)
            .await?
            .map(|item| meta_of(&item))
            .filter(|m| m.owner == owner))
    }

    /// Items of the conversation whose sort key begins with `prefix`, from `start` on.
    async fn query(
        &self,
        id: &str,
        prefix: &str,
        start: Option<String>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, Error> {
        let mut items = Vec::new();
        let mut start_key = start.map(|sk| key(id, &sk));
        loop {
            let want = limit.map(|l| l - items.len());
            // An empty prefix means every item: DynamoDB refuses empty key values.
            let condition = if prefix.is_empty() {
                "conversation_id = :id"
            } else {
                "conversation_id = :id AND begins_with(sk, :p)"
            };
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .expression_attribute_values(":id", s(id));
            if !prefix.is_empty() {
                query = query.expression_attribute_values(":p", s(prefix));
            }
            let out = query
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take())
                .set_limit(want.map(|w| i32::try_from(w).unwrap_or(i32::MAX)))
                .send()
                .await
                .map_err(fail)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if limit.is_none_or(|l| items.len() < l) => start_key = Some(k),
                _ => return Ok(items),
            }
        }
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, Error> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(fail)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// One attempt at writing exchange `exchanges + 1`. `Ok(None)`: another append took it.
    async fn try_append(
        &self,
        owner: &str,
        id: &str,
        title: &str,
        x: &Exchange,
        now: u64,
        meta: Option<&ConversationMeta>,
    ) -> Result<Option<Appended>, Error> {
        let next = meta.map_or(0, |m| m.exchanges) + 1;
        let ttl = self.ttl(now);
        let with_ttl = |mut item: Item| {
            if let Some(ttl) = &ttl {
                item.insert("ttl".into(), ttl.clone());
            }
            item
        };
        let meta_write = match meta {
            Some(m) => {
                let set_ttl = if ttl.is_some() { ", #ttl = :ttl" } else { "" };
                let mut update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(id, META)))
                    .update_expression(format!(
                        "SET exchanges = :next, updated_at = :now, model = :model{set_ttl}"
                    ))
                    .condition_expression("exchanges = :seen AND #owner = :owner")
                    .expression_attribute_names("#owner", "owner")
                    .expression_attribute_values(":next", n(next))
                    .expression_attribute_values(":seen", n(m.exchanges))
                    .expression_attribute_values(":now", n(now))
                    .expression_attribute_values(":model", s(&x.model))
                    .expression_attribute_values(":owner", s(owner));
                if let Some(ttl) = &ttl {
                    // `ttl` is one of DynamoDB's reserved words.
                    update = update
                        .expression_attribute_names("#ttl", "ttl")
                        .expression_attribute_values(":ttl", ttl.clone());
                }
                let update = update.build().map_err(fail)?;
                TransactWriteItem::builder().update(update).build()
            }
            None => self.put(
                with_ttl(HashMap::from([
                    ("conversation_id".into(), s(id)),
                    ("sk".into(), s(META)),
                    ("owner".into(), s(owner)),
                    ("title".into(), s(title)),
                    ("model".into(), s(&x.model)),
                    ("created_at".into(), n(now)),
                    ("updated_at".into(), n(now)),
                    ("exchanges".into(), n(1)),
                ])),
                Some("attribute_not_exists(sk)"),
            )?,
        };
        let request = self.put(
            with_ttl(HashMap::from([
                ("conversation_id".into(), s(id)),
                ("sk".into(), s(&format!("R#{}", x.request_id))),
                ("exchange".into(), n(next)),
            ])),
            Some("attribute_not_exists(sk)"),
        )?;
        let turn = |role: Role, content: &Stored| {
            let mut item = HashMap::from([
                ("conversation_id".into(), s(id)),
                ("sk".into(), s(&turn_key(next, role))),
                ("exchange".into(), n(next)),
                ("content".into(), s(&content.text)),
                ("request_id".into(), s(&x.request_id)),
                ("created_at".into(), n(now)),
            ]);
            if let Some(blocks) = &content.blocks {
                item.insert("blocks".into(), s(blocks));
            }
            if let Some(sources) = &content.sources {
                item.insert("sources".into(), s(sources));
            }
            if role == Role::Assistant {
                item.insert("input_tokens".into(), n(x.usage.input_tokens));
                item.insert("output_tokens".into(), n(x.usage.output_tokens));
                item.insert("stop_reason".into(), s(&x.stop_reason));
            }
            self.put(with_ttl(item), Some("attribute_not_exists(sk)"))
        };
        // One item per blob the user's message names, in the blob index, for the sweep.
        let blob_refs = x
            .user
            .blobs
            .iter()
            .map(|sha256| {
                let item = HashMap::from([
                    ("conversation_id".into(), s(id)),
                    ("sk".into(), s(&format!("B#{sha256}#{next:08}"))),
                    ("blob".into(), s(sha256)),
                ]);
                self.put(with_ttl(item), None)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(meta_write)
            .transact_items(request)
            .transact_items(turn(Role::User, &x.user)?)
            .transact_items(turn(Role::Assistant, &x.assistant)?);
        for blob_ref in blob_refs {
            write = write.transact_items(blob_ref);
        }
        let result = write.send().await;
        let e = match result {
            Ok(_) => return Ok(Some(Appended::New(next))),
            Err(e) => e,
        };
        let conflict = e
            .as_service_error()
            .and_then(|s| match s {
                TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                _ => None,
            })
            .is_some_and(|c| {
                c.cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed"))
            });
        if conflict {
            // Either this request id was written before (report where, change nothing), or another
            // append took the number (try again). Reading the request item tells which, whatever
            // order the cancellation reasons come in.
            let earlier = self.item(id, &format!("R#{}", x.request_id)).await?;
            return Ok(
                earlier.map(|i| Appended::Duplicate(number(&i, "exchange").unwrap_or_default()))
            );
        }
        Err(fail(e))
    }
}

#[async_trait]
impl ConversationStore for DynamoConversationStore {
    async fn history(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<(ConversationMeta, Vec<Turn>)>, Error> {
        let Some(meta) = self.owned(owner, id).await? else {
            return Ok(None);
        };
        let turns = self.query(id, "T#", None, None).await?;
        let turns = turns.iter().map(turn_of).collect::<Result<_, _>>()?;
        Ok(Some((meta, turns)))
    }

    async fn recent(
        &self,
        owner: &str,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Option<Vec<Turn>>, Error> {
        if self.owned(owner, id).await?.is_none() {
            return Ok(None);
        }
        // Newest first, from just below `before`'s user turn.
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("conversation_id = :id AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":id", s(id))
            .expression_attribute_values(":low", s("T#"))
            .expression_attribute_values(
                ":high",
                s(&match before {
                    Some(n) => turn_key(n.saturating_sub(1), Role::Assistant),
                    None => "T#~".to_owned(),
                }),
            )
            .scan_index_forward(false)
            .consistent_read(true);
        let mut items = Vec::new();
        loop {
            let want = limit * 2 - items.len();
            let out = query
                .clone()
                .limit(i32::try_from(want).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(fail)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if items.len() < limit * 2 => {
                    query = query.set_exclusive_start_key(Some(k))
                }
                _ => break,
            }
        }
        let mut turns = items.iter().map(turn_of).collect::<Result<Vec<_>, _>>()?;
        turns.reverse();
        Ok(Some(turns))
    }

    async fn exchange_of(
        &self,
        owner: &str,
        id: &str,
        request_id: &str,
    ) -> Result<Option<(Turn, Turn)>, Error> {
        if self.owned(owner, id).await?.is_none() {
            return Ok(None);
        }
        let Some(n) = self
            .item(id, &format!("R#{request_id}"))
            .await?
            .and_then(|i| number(&i, "exchange"))
        else {
            return Ok(None);
        };
        let user = self.item(id, &turn_key(n, Role::User)).await?;
        let answer = self.item(id, &turn_key(n, Role::Assistant)).await?;
        match (user, answer) {
            (Some(u), Some(a)) => Ok(Some((turn_of(&u)?, turn_of(&a)?))),
            _ => Ok(None),
        }
    }

    async fn append(
        &self,
        owner: &str,
        id: &str,
        title: &str,
        exchange: &Exchange,
        now: u64,
    ) -> Result<Appended, Error> {
        check_size(exchange)?;
        for _ in 0..APPEND_ATTEMPTS {
            let meta = self.item(id, META).await?.map(|i| meta_of(&i));
            if meta.as_ref().is_some_and(|m| m.owner != owner) {
                return Err(not_found());
            }
            if let Some(done) = self
                .try_append(owner, id, title, exchange, now, meta.as_ref())
                .await?
            {
                return Ok(done);
            }
        }
        Err(Error::Internal(
            "the conversation is being written by too many requests at once".into(),
        ))
    }

    async fn list(
        &self,
        owner: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Page<ConversationMeta>, Error> {
        let cursor = page.map(page::decode::<ConversationCursor>).transpose()?;
        let start = cursor.map(|c| {
            let mut k = key(&c.c, META);
            k.insert("owner".into(), s(owner));
            k.insert("updated_at".into(), n(c.u));
            k
        });
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OWNER_INDEX)
            .key_condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .scan_index_forward(false)
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            // A start key that does not fit the index is a tampered token.
            Err(e) if e.code() == Some("ValidationException") && page.is_some() => {
                return Err(Error::InvalidRequest(
                    "page_token: not a token this server issued".into(),
                ));
            }
            Err(e) => return Err(fail(e)),
        };
        let mut items: Vec<ConversationMeta> =
            out.items.unwrap_or_default().iter().map(meta_of).collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| {
                page::encode(&ConversationCursor {
                    u: m.updated_at,
                    c: m.conversation_id.clone(),
                })
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn turns(
        &self,
        owner: &str,
        id: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Option<Page<Turn>>, Error> {
        let cursor = page.map(page::decode::<TurnCursor>).transpose()?;
        if self.owned(owner, id).await?.is_none() {
            return Ok(None);
        }
        let start = cursor.map(|c| {
            let role = if c.r == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            turn_key(c.e, role)
        });
        let mut items: Vec<Turn> = self
            .query(id, "T#", start, Some(limit + 1))
            .await?
            .iter()
            .map(turn_of)
            .collect::<Result<_, _>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| {
                page::encode(&TurnCursor {
                    e: t.exchange,
                    r: u8::from(t.role == Role::Assistant),
                })
            })
        } else {
            None
        };
        Ok(Some(Page { items, next }))
    }

    async fn names_blob(&self, sha256: &str) -> Result<bool, Error> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BLOB_INDEX)
            .key_condition_expression("blob = :sha")
            .expression_attribute_values(":sha", s(sha256))
            .limit(1)
            .send()
            .await
            .map_err(fail)?;
        Ok(out.count > 0)
    }

    async fn delete(&self, owner: &str, id: &str) -> Result<bool, Error> {
        // META goes first, and only if it is the owner's: from then on the conversation does not
        // exist for anyone, and what follows only frees the space.
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(id, META)))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match deleted {
            Ok(_) => {}
            Err(e) if is_condition_failure(&e) => return Ok(false),
            Err(e) => return Err(fail(e)),
        }
        let mut rest: Vec<String> = self
            .query(id, "", None, None)
            .await?
            .iter()
            .map(|i| string(i, "sk"))
            .collect();
        while !rest.is_empty() {
            let chunk: Vec<String> = rest.drain(..rest.len().min(25)).collect();
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|sk| {
                    DeleteRequest::builder()
                        .set_key(Some(key(id, sk)))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(fail)
                })
                .collect::<Result<_, _>>()?;
            for _ in 0..5 {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(fail)?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(true)
    }
}
