//! The embedded knowledge bases in the SQLite database: documents, their passages, and an FTS5
//! index over the passages (external content, kept in step by triggers), ranked by BM25.

use async_trait::async_trait;
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::Database;
use crate::chat::Filter;
use crate::error::Error;
use crate::knowledge::chunk::chunks;
use crate::knowledge::query::fts_query;
use crate::knowledge::{
    DocumentInfo, KnowledgeStore, NewDocument, Passage, Retriever, Scope, not_found,
};

/// Knowledge bases in the SQLite database.
#[derive(Clone)]
pub struct SqliteKnowledge {
    db: Database,
}

impl SqliteKnowledge {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

fn exists(db: &rusqlite::Connection, tenant: &str, name: &str) -> rusqlite::Result<bool> {
    db.prepare_cached("SELECT 1 FROM knowledge_bases WHERE tenant = ?1 AND name = ?2")?
        .exists(params![tenant, name])
}

const DOCUMENT_COLUMNS: &str = "document_id, title, uri, sha256, bytes, passages, updated_at";

fn document(row: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentInfo> {
    Ok(DocumentInfo {
        document_id: row.get(0)?,
        title: row.get(1)?,
        uri: row.get(2)?,
        sha256: row.get(3)?,
        bytes: row.get(4)?,
        passages: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

#[async_trait]
impl KnowledgeStore for SqliteKnowledge {
    async fn create(&self, tenant: &str, name: &str, now: u64) -> Result<bool, Error> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.db
            .with(move |db| {
                db.execute(
                    "INSERT OR IGNORE INTO knowledge_bases (tenant, name, created_at) VALUES (?1, ?2, ?3)",
                    params![tenant, name, now],
                )
                .map(|n| n == 1)
            })
            .await
    }

    async fn list(&self, tenant: &str) -> Result<Vec<String>, Error> {
        let tenant = tenant.to_owned();
        self.db
            .with(move |db| {
                db.prepare_cached(
                    "SELECT name FROM knowledge_bases WHERE tenant = ?1 ORDER BY name",
                )?
                .query_map([tenant], |row| row.get(0))?
                .collect()
            })
            .await
    }

    async fn delete(&self, scope: Scope<'_>) -> Result<bool, Error> {
        let (tenant, name) = (scope.tenant.to_owned(), scope.name.to_owned());
        self.db
            .with(move |db| {
                // Documents, passages and their index entries go by cascade and trigger.
                db.execute(
                    "DELETE FROM knowledge_bases WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                )
                .map(|n| n == 1)
            })
            .await
    }

    async fn put_document(
        &self,
        scope: Scope<'_>,
        document: NewDocument,
        now: u64,
    ) -> Result<DocumentInfo, Error> {
        let (tenant, name) = (scope.tenant.to_owned(), scope.name.to_owned());
        let passages = chunks(&document.text);
        let info = DocumentInfo {
            document_id: document.document_id,
            title: document.title,
            uri: document.uri,
            sha256: Sha256::digest(document.text.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            bytes: document.text.len() as u64,
            passages: passages.len() as u32,
            updated_at: now,
        };
        let kept = info.clone();
        self.db
            .with(move |db| {
                let tx = db.savepoint()?;
                if !exists(&tx, &tenant, &name)? {
                    return Ok(Err(not_found(&name)));
                }
                // The old passages go with the old document (a cascade), all in this savepoint:
                // a reader sees the old version or the new one, never a mix.
                tx.execute(
                    "DELETE FROM kb_documents WHERE tenant = ?1 AND kb = ?2 AND document_id = ?3",
                    params![tenant, name, kept.document_id],
                )?;
                tx.execute(
                    &format!(
                        "INSERT INTO kb_documents (tenant, kb, {DOCUMENT_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    ),
                    params![
                        tenant,
                        name,
                        kept.document_id,
                        kept.title,
                        kept.uri,
                        kept.sha256,
                        kept.bytes,
                        kept.passages,
                        kept.updated_at
                    ],
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO kb_chunks (tenant, kb, document_id, seq, heading, text)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for p in &passages {
                    insert.execute(params![
                        tenant,
                        name,
                        kept.document_id,
                        p.seq,
                        p.heading,
                        p.text
                    ])?;
                }
                drop(insert);
                tx.commit()?;
                Ok(Ok(()))
            })
            .await??;
        Ok(info)
    }

    async fn documents(&self, scope: Scope<'_>) -> Result<Vec<DocumentInfo>, Error> {
        let (tenant, name) = (scope.tenant.to_owned(), scope.name.to_owned());
        self.db
            .with(move |db| {
                if !exists(db, &tenant, &name)? {
                    return Ok(Err(not_found(&name)));
                }
                db.prepare_cached(&format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM kb_documents
                     WHERE tenant = ?1 AND kb = ?2 ORDER BY document_id"
                ))?
                .query_map(params![tenant, name], document)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(Ok)
            })
            .await?
    }

    async fn delete_document(&self, scope: Scope<'_>, document_id: &str) -> Result<bool, Error> {
        let (tenant, name, id) = (
            scope.tenant.to_owned(),
            scope.name.to_owned(),
            document_id.to_owned(),
        );
        self.db
            .with(move |db| {
                if !exists(db, &tenant, &name)? {
                    return Ok(Err(not_found(&name)));
                }
                db.execute(
                    "DELETE FROM kb_documents WHERE tenant = ?1 AND kb = ?2 AND document_id = ?3",
                    params![tenant, name, id],
                )
                .map(|n| Ok(n == 1))
            })
            .await?
    }
}

#[async_trait]
impl Retriever for SqliteKnowledge {
    async fn retrieve(
        &self,
        scope: Scope<'_>,
        question: &str,
        results: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Passage>, Error> {
        let (tenant, name) = (scope.tenant.to_owned(), scope.name.to_owned());
        let query = fts_query(question);
        let documents = document_filter(filter)?;
        self.db
            .read(move |db| {
                if !exists(db, &tenant, &name)? {
                    return Ok(Err(not_found(&name)));
                }
                let Some(query) = query else {
                    return Ok(Ok(Vec::new()));
                };
                let found = db
                    .prepare_cached(
                        // The best few are chosen first, by id and rank alone: the text and
                        // the document of a match are read only for those (a common word
                        // matches a third of a large index).
                        "SELECT c.document_id, c.seq, c.heading, c.text, d.title, d.uri, best.rank
                         FROM (SELECT m.id AS id, bm25(kb_fts) AS rank
                               FROM kb_fts
                               JOIN kb_chunks m ON m.id = kb_fts.rowid
                               WHERE kb_fts MATCH ?1 AND m.tenant = ?2 AND m.kb = ?3
                                 AND (?5 IS NULL OR m.document_id IN (SELECT value FROM json_each(?5)))
                               ORDER BY rank LIMIT ?4) best
                         JOIN kb_chunks c ON c.id = best.id
                         JOIN kb_documents d
                           ON d.tenant = c.tenant AND d.kb = c.kb AND d.document_id = c.document_id
                         ORDER BY best.rank",
                    )?
                    .query_map(
                        params![query, tenant, name, results as i64, documents],
                        |row| {
                            let document_id: String = row.get(0)?;
                            let seq: u32 = row.get(1)?;
                            let rank: f64 = row.get(6)?;
                            Ok(Passage {
                                id: format!("{document_id}#{seq}"),
                                document_id,
                                heading: row.get(2)?,
                                text: row.get(3)?,
                                title: row.get(4)?,
                                uri: row.get(5)?,
                                // BM25 is lower for better matches.
                                score: -rank,
                            })
                        },
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Ok(found))
            })
            .await?
    }
}

/// The documents a filter allows, as a JSON list for `json_each`; the embedded store keeps no
/// other metadata to filter on.
fn document_filter(filter: Option<&Filter>) -> Result<Option<String>, Error> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    if let Some(other) = filter.0.keys().find(|k| *k != "document_id") {
        return Err(Error::InvalidRequest(format!(
            "filter: the embedded store filters on document_id only, not {other}"
        )));
    }
    Ok(filter
        .strings("document_id")
        .map(|ids| serde_json::Value::from(ids).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(tenant: &'a str, name: &'a str) -> Scope<'a> {
        Scope { tenant, name }
    }

    fn doc(id: &str, text: &str) -> NewDocument {
        NewDocument {
            document_id: id.into(),
            title: format!("Title of {id}"),
            uri: Some(format!("docs/{id}.md")),
            text: text.into(),
        }
    }

    async fn store() -> SqliteKnowledge {
        let store = SqliteKnowledge::new(Database::in_memory().unwrap());
        assert!(store.create("acme", "docs", 1).await.unwrap());
        assert!(!store.create("acme", "docs", 2).await.unwrap());
        store
    }

    #[tokio::test]
    async fn the_best_passage_ranks_first_and_replacing_a_document_replaces_its_passages() {
        let store = store().await;
        let kb = scope("acme", "docs");
        store
            .put_document(
                kb,
                doc("deploy", "# Deploy\n\nRun sam deploy with the template."),
                5,
            )
            .await
            .unwrap();
        let limits = "# Limits\n\nRequests per minute and tokens per day.";
        let info = store
            .put_document(kb, doc("limits", limits), 5)
            .await
            .unwrap();
        assert_eq!((info.passages, info.bytes), (1, limits.len() as u64));
        let found = store
            .retrieve(kb, "how do I deploy the template?", 3, None)
            .await
            .unwrap();
        assert_eq!(found[0].document_id, "deploy");
        assert_eq!(found[0].id, "deploy#0");
        assert_eq!(found[0].heading, "Deploy");
        assert_eq!(found[0].uri.as_deref(), Some("docs/deploy.md"));
        assert!(found.iter().all(|p| p.document_id != "limits"));
        // Put again with other text: the old passages are gone from the index.
        store
            .put_document(kb, doc("deploy", "# Deploy\n\nUse the console now."), 6)
            .await
            .unwrap();
        assert!(
            store
                .retrieve(kb, "template", 3, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.retrieve(kb, "console", 3, None).await.unwrap()[0].document_id,
            "deploy"
        );
        assert!(store.delete_document(kb, "deploy").await.unwrap());
        assert!(!store.delete_document(kb, "deploy").await.unwrap());
        assert!(
            store
                .retrieve(kb, "console", 3, None)
                .await
                .unwrap()
                .is_empty()
        );
        let left: Vec<String> = store
            .documents(kb)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.document_id)
            .collect();
        assert_eq!(left, ["limits"]);
    }

    #[tokio::test]
    async fn a_tenant_sees_only_its_own_knowledge_bases_and_fts_syntax_is_only_text() {
        let store = store().await;
        store
            .put_document(
                scope("acme", "docs"),
                doc("secret", "The launch code is tulip."),
                1,
            )
            .await
            .unwrap();
        let other = scope("globex", "docs");
        assert_eq!(
            store
                .retrieve(other, "launch code", 3, None)
                .await
                .unwrap_err()
                .code(),
            crate::error::ErrorCode::NotFound
        );
        store.create("globex", "docs", 1).await.unwrap();
        assert!(
            store
                .retrieve(other, "launch code", 3, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.list("globex").await.unwrap(), ["docs"]);
        let acme = scope("acme", "docs");
        for hostile in [
            r#"tulip" OR "x"#,
            "NEAR(launch code)",
            "tul*",
            "-launch",
            "text:tulip AND",
        ] {
            let found = store.retrieve(acme, hostile, 3, None).await;
            assert!(found.is_ok(), "{hostile:?}: {found:?}");
        }
        assert!(
            store
                .retrieve(acme, "?!", 3, None)
                .await
                .unwrap()
                .is_empty()
        );
        // Deleting the knowledge base takes its documents and their index entries.
        assert!(store.delete(acme).await.unwrap());
        store.create("acme", "docs", 2).await.unwrap();
        assert!(
            store
                .retrieve(acme, "tulip", 3, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.documents(acme).await.unwrap().is_empty());
        // Not only hidden by the join: the index itself holds nothing of it.
        let indexed: i64 = store
            .db
            .with(|db| {
                db.query_row(
                    "SELECT count(*) FROM kb_fts WHERE kb_fts MATCH 'tulip'",
                    [],
                    |row| row.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(indexed, 0);
    }
}
