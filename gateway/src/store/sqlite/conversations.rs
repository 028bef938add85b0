//! Conversations in the embedded SQLite database. Writers are serialized by the database lock,
//! so an append reads the exchange count and writes the next exchange in one transaction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Database;
use crate::chat::Role;
use crate::chat::Usage;
use crate::error::Error;
use crate::store::conversations::check_size;
use crate::store::conversations::not_found;
use crate::store::page::{self, ConversationCursor, TurnCursor};
use crate::store::{
    Appended, ConversationMeta, ConversationStore, Exchange, Page, Turn, parse_blocks,
    parse_sources,
};

/// Conversations in the SQLite database.
#[derive(Clone)]
pub struct SqliteConversationStore {
    db: Database,
}

impl SqliteConversationStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

const META_COLUMNS: &str =
    "conversation_id, owner, title, model, created_at, updated_at, exchanges";
const TURN_COLUMNS: &str = "exchange, role, content, request_id, input_tokens, output_tokens, stop_reason, created_at, blocks, sources";

fn meta_of(row: &Row<'_>) -> rusqlite::Result<ConversationMeta> {
    Ok(ConversationMeta {
        conversation_id: row.get(0)?,
        owner: row.get(1)?,
        title: row.get(2)?,
        model: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        exchanges: row.get(6)?,
    })
}

fn turn_of(row: &Row<'_>) -> rusqlite::Result<Turn> {
    let role: u8 = row.get(1)?;
    let input: Option<u64> = row.get(4)?;
    let output: Option<u64> = row.get(5)?;
    Ok(Turn {
        exchange: row.get(0)?,
        role: if role == 0 {
            Role::User
        } else {
            Role::Assistant
        },
        content: row.get(2)?,
        blocks: parse_blocks(row.get::<_, Option<String>>(8)?.as_deref()).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e))
        })?,
        request_id: row.get(3)?,
        usage: input
            .zip(output)
            .map(|(input_tokens, output_tokens)| Usage::new(input_tokens, output_tokens)),
        stop_reason: row.get(6)?,
        sources: parse_sources(row.get::<_, Option<String>>(9)?.as_deref()).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: row.get(7)?,
    })
}

fn owned_meta(
    db: &Connection,
    owner: &str,
    id: &str,
) -> rusqlite::Result<Option<ConversationMeta>> {
    db.query_row(
        &format!(
            "SELECT {META_COLUMNS} FROM conversations WHERE conversation_id = ?1 AND owner = ?2"
        ),
        params![id, owner],
        meta_of,
    )
    .optional()
}

#[async_trait]
impl ConversationStore for SqliteConversationStore {
    async fn history(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<(ConversationMeta, Vec<Turn>)>, Error> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.db
            .with(move |db| {
                let Some(meta) = owned_meta(db, &owner, &id)? else {
                    return Ok(None);
                };
                let turns = db
                    .prepare_cached(&format!(
                        "SELECT {TURN_COLUMNS} FROM turns WHERE conversation_id = ?1
                         ORDER BY exchange, role"
                    ))?
                    .query_map([&id], turn_of)?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(Some((meta, turns)))
            })
            .await
    }

    async fn recent(
        &self,
        owner: &str,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Option<Vec<Turn>>, Error> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        let before = before.unwrap_or(i64::MAX as u64);
        self.db
            .with(move |db| {
                if owned_meta(db, &owner, &id)?.is_none() {
                    return Ok(None);
                }
                let mut turns = db
                    .prepare_cached(&format!(
                        "SELECT {TURN_COLUMNS} FROM turns WHERE conversation_id = ?1 AND exchange < ?2
                         ORDER BY exchange DESC, role DESC LIMIT ?3"
                    ))?
                    .query_map(params![id, before, (limit * 2) as i64], turn_of)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                turns.reverse();
                Ok(Some(turns))
            })
            .await
    }

    async fn exchange_of(
        &self,
        owner: &str,
        id: &str,
        request_id: &str,
    ) -> Result<Option<(Turn, Turn)>, Error> {
        let (owner, id, request_id) = (owner.to_owned(), id.to_owned(), request_id.to_owned());
        self.db
            .with(move |db| {
                if owned_meta(db, &owner, &id)?.is_none() {
                    return Ok(None);
                }
                let turns = db
                    .prepare_cached(&format!(
                        "SELECT {TURN_COLUMNS} FROM turns WHERE conversation_id = ?1 AND request_id = ?2
                         ORDER BY role"
                    ))?
                    .query_map(params![id, request_id], turn_of)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut turns = turns.into_iter();
                Ok(turns.next().zip(turns.next()))
            })
            .await
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
        let (owner, id, title, x) = (
            owner.to_owned(),
            id.to_owned(),
            title.to_owned(),
            exchange.clone(),
        );
        self.db
            .with(move |db| {
                let tx = db.savepoint()?;
                let found: Option<(String, u64)> = tx
                    .prepare_cached(
                        "SELECT owner, exchanges FROM conversations WHERE conversation_id = ?1",
                    )?
                    .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                let exchanges = match found {
                    Some((o, _)) if o != owner => return Ok(Err(not_found())),
                    Some((_, n)) => {
                        let earlier: Option<u64> = tx
                            .prepare_cached(
                                "SELECT exchange FROM turns
                                 WHERE conversation_id = ?1 AND request_id = ?2 AND role = 0",
                            )?
                            .query_row(params![id, x.request_id], |row| row.get(0))
                            .optional()?;
                        if let Some(n) = earlier {
                            return Ok(Ok(Appended::Duplicate(n)));
                        }
                        n
                    }
                    None => {
                        tx.prepare_cached(
                            "INSERT INTO conversations
                             (conversation_id, owner, title, model, created_at, updated_at, exchanges)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0)",
                        )?
                        .execute(params![id, owner, title, x.model, now])?;
                        0
                    }
                };
                let n = exchanges + 1;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO turns (conversation_id, exchange, role, content, request_id,
                                        input_tokens, output_tokens, stop_reason, created_at, blocks,
                                        sources)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                let none = None::<u64>;
                insert.execute(params![
                    id,
                    n,
                    0,
                    x.user.text,
                    x.request_id,
                    none,
                    none,
                    None::<String>,
                    now,
                    x.user.blocks,
                    x.user.sources
                ])?;
                insert.execute(params![
                    id,
                    n,
                    1,
                    x.assistant.text,
                    x.request_id,
                    x.usage.input_tokens,
                    x.usage.output_tokens,
                    x.stop_reason,
                    now,
                    x.assistant.blocks,
                    x.assistant.sources
                ])?;
                drop(insert);
                let mut refer = tx.prepare_cached(
                    "INSERT OR IGNORE INTO blob_refs (sha256, conversation_id, exchange)
                     VALUES (?1, ?2, ?3)",
                )?;
                for sha256 in &x.user.blobs {
                    refer.execute(params![sha256, id, n])?;
                }
                drop(refer);
                tx.prepare_cached(
                    "UPDATE conversations SET exchanges = ?2, updated_at = ?3, model = ?4
                     WHERE conversation_id = ?1",
                )?
                .execute(params![id, n, now, x.model])?;
                tx.commit()?;
                Ok(Ok(Appended::New(n)))
            })
            .await?
    }

    async fn list(
        &self,
        owner: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Page<ConversationMeta>, Error> {
        let cursor = page.map(page::decode::<ConversationCursor>).transpose()?;
        let owner = owner.to_owned();
        let (u, c) = cursor.map_or((i64::MAX as u64, String::new()), |c| (c.u, c.c));
        let first = page.is_none();
        let mut items: Vec<ConversationMeta> = self
            .db
            .with(move |db| {
                db.prepare_cached(&format!(
                    "SELECT {META_COLUMNS} FROM conversations
                     WHERE owner = ?1 AND (?4 OR updated_at < ?2 OR (updated_at = ?2 AND conversation_id < ?3))
                     ORDER BY updated_at DESC, conversation_id DESC LIMIT ?5"
                ))?
                .query_map(params![owner, u, c, first, limit + 1], meta_of)?
                .collect()
            })
            .await?;
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|m| {
                page::encode(&ConversationCursor {
                    u: m.updated_at,
                    c: m.conversation_id.clone(),
                })
            })
        });
        Ok(Page {
            items,
            next: next.flatten(),
        })
    }

    async fn turns(
        &self,
        owner: &str,
        id: &str,
        limit: usize,
        page: Option<&str>,
    ) -> Result<Option<Page<Turn>>, Error> {
        let cursor = page.map(page::decode::<TurnCursor>).transpose()?;
        let (owner, id) = (owner.to_owned(), id.to_owned());
        let (e, r) = cursor.map_or((0, 0), |c| (c.e, c.r));
        let first = page.is_none();
        let items: Option<Vec<Turn>> = self
            .db
            .with(move |db| {
                if owned_meta(db, &owner, &id)?.is_none() {
                    return Ok(None);
                }
                db.prepare_cached(&format!(
                    "SELECT {TURN_COLUMNS} FROM turns
                     WHERE conversation_id = ?1 AND (?4 OR exchange > ?2 OR (exchange = ?2 AND role > ?3))
                     ORDER BY exchange, role LIMIT ?5"
                ))?
                .query_map(params![id, e, r, first, limit + 1], turn_of)?
                .collect::<rusqlite::Result<_>>()
                .map(Some)
            })
            .await?;
        Ok(items.map(|mut items| {
            let next = (items.len() > limit)
                .then(|| {
                    items.truncate(limit);
                    items.last().map(|t| {
                        page::encode(&TurnCursor {
                            e: t.exchange,
                            r: u8::from(t.role == Role::Assistant),
                        })
                    })
                })
                .flatten();
            Page { items, next }
        }))
    }

    async fn delete(&self, owner: &str, id: &str) -> Result<bool, Error> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.db
            .with(move |db| {
                db.execute(
                    "DELETE FROM conversations WHERE conversation_id = ?1 AND owner = ?2",
                    params![id, owner],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn expire(&self, before_ms: u64) -> Result<u64, Error> {
        self.db
            .with(move |db| {
                let tx = db.savepoint()?;
                // An exchange's two turns are written together: the answer's time stands for it.
                let gone = tx.execute(
                    "DELETE FROM turns WHERE (conversation_id, exchange) IN
                       (SELECT conversation_id, exchange FROM turns WHERE role = 1 AND created_at < ?1)",
                    [before_ms],
                )?;
                // Their blob references go with the turns (a cascade).
                tx.execute(
                    "DELETE FROM conversations WHERE updated_at < ?1 AND NOT EXISTS
                       (SELECT 1 FROM turns WHERE turns.conversation_id = conversations.conversation_id)",
                    [before_ms],
                )?;
                tx.commit()?;
                Ok((gone / 2) as u64)
            })
            .await
    }

    async fn names_blob(&self, sha256: &str) -> Result<bool, Error> {
        let sha256 = sha256.to_owned();
        self.db
            .with(move |db| {
                db.prepare_cached("SELECT 1 FROM blob_refs WHERE sha256 = ?1 LIMIT 1")?
                    .exists([sha256])
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::chat::Block;
    use crate::store::Stored;
    use crate::store::sqlite::MIGRATIONS;

    /// A conversation written before content blocks existed reads and continues.
    #[tokio::test]
    async fn conversations_from_before_blocks_read_and_continue() {
        let dir = std::env::temp_dir().join(format!("nagare-blocks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nagare.db");
        {
            // The schema as the previous release left it, with one exchange in it.
            let mut old = Connection::open(&path).unwrap();
            for (n, step) in MIGRATIONS[..4].iter().enumerate() {
                let tx = old.transaction().unwrap();
                tx.execute_batch(step).unwrap();
                tx.pragma_update(None, "user_version", n + 1).unwrap();
                tx.commit().unwrap();
            }
            old.execute_batch(
                "INSERT INTO conversations VALUES ('c1', 'alice', 'hi', 'm', 1, 1, 1);
                 INSERT INTO turns (conversation_id, exchange, role, content, request_id,
                                    input_tokens, output_tokens, stop_reason, created_at)
                 VALUES ('c1', 1, 0, 'hi', 'r1', NULL, NULL, NULL, 1),
                        ('c1', 1, 1, 'hello', 'r1', 1, 2, 'end_turn', 1);",
            )
            .unwrap();
        }
        let store = SqliteConversationStore::new(Database::open(&path, 0).unwrap());
        let (_, turns) = store.history("alice", "c1").await.unwrap().unwrap();
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[1].blocks(), [Block::text("hello")]);
        let call = vec![Block::ToolUse {
            id: "t1".into(),
            name: "n".into(),
            input: serde_json::json!({"a": 1}),
        }];
        let x = Exchange {
            request_id: "r2".into(),
            user: "again".into(),
            assistant: Stored::of(&call),
            usage: Usage::new(1, 1),
            stop_reason: "tool_use".into(),
            model: "m".into(),
        };
        store.append("alice", "c1", "hi", &x, 2).await.unwrap();
        let (_, turns) = store.history("alice", "c1").await.unwrap().unwrap();
        assert_eq!(turns.len(), 4);
        assert_eq!(turns[2].blocks, None, "a text message stays text");
        assert_eq!(turns[3].blocks.as_deref(), Some(&call[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
