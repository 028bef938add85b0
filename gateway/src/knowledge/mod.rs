//! Knowledge bases: a tenant's documents, cut into passages, retrieved for a chat so the model
//! answers from them and cites them. Retrieval is one trait ([`Retriever`]) with an embedded
//! implementation (SQLite FTS5, BM25, in the database Nagare already keeps) and, on AWS, Amazon
//! Bedrock Knowledge Bases. The embedded store is filled through [`KnowledgeStore`].

pub mod bedrock;
pub mod chunk;
pub mod query;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::chat::{Filter, KnowledgeAsk, KnowledgeScope, Route};
pub use crate::chat::{MAX_RESULTS, check_name};
use crate::error::Error;
pub use bedrock::{BedrockBase, BedrockKnowledgeSettings, BedrockRetriever};
use nagare_authorizer::Principal;

/// `[knowledge]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeSettings {
    /// `/v1/knowledge-bases` on the embedded store (SQLite).
    pub enabled: bool,
    /// The largest document a PUT takes, in bytes.
    pub max_document_bytes: usize,
    /// How long one retrieval for a chat may take before it is tried again.
    pub retrieve_timeout_ms: u64,
    /// Further attempts after a retrieval failed in a way worth retrying.
    pub retrieve_retries: u32,
    /// Amazon Bedrock Knowledge Bases chats may name.
    pub bedrock: BedrockKnowledgeSettings,
    /// The knowledge base a chat that names none answers from, by route and tenant.
    pub defaults: Vec<KnowledgeDefault>,
}

/// One `[[knowledge.defaults]]` entry: a knowledge base, and the chats that answer from it when
/// they name none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeDefault {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<u32>,
    /// `global` for one an operator shares.
    #[serde(default)]
    pub scope: KnowledgeScope,
    /// Routes it applies to (the names of [`crate::chat::Route`]); all when empty.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Tenants it applies to; all when empty.
    #[serde(default)]
    pub tenants: Vec<String>,
}

impl KnowledgeDefault {
    /// The request a chat on `route` of `tenant` gets, if this default applies to it.
    pub fn applies(&self, route: Route, tenant: &str) -> Option<KnowledgeAsk> {
        route
            .covered_by(&self.routes, &self.tenants, tenant)
            .then(|| self.ask())
    }

    fn ask(&self) -> KnowledgeAsk {
        KnowledgeAsk {
            name: self.name.clone(),
            results: self.results,
            filter: None,
            scope: self.scope,
        }
    }
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_document_bytes: 2 * 1024 * 1024,
            retrieve_timeout_ms: 5_000,
            retrieve_retries: 2,
            bedrock: BedrockKnowledgeSettings::default(),
            defaults: Vec::new(),
        }
    }
}

impl KnowledgeSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.retrieve_timeout_ms == 0 {
            return Err("knowledge.retrieve_timeout_ms: must be at least 1".into());
        }
        for (i, d) in self.defaults.iter().enumerate() {
            d.ask()
                .check()
                .map_err(|e| format!("knowledge.defaults[{i}]: {e}"))?;
            if let Some(bad) = Route::unknown(&d.routes) {
                return Err(format!(
                    "knowledge.defaults[{i}].routes: unknown route '{bad}'"
                ));
            }
        }
        self.bedrock.check()
    }
}

/// The embedded knowledge bases as the API uses them: the store, its retrieval, and the checks
/// in front of both.
#[derive(Clone)]
pub struct KnowledgeBases {
    pub store: Arc<dyn KnowledgeStore>,
    pub retriever: Arc<dyn Retriever>,
    pub max_document_bytes: usize,
}

impl KnowledgeBases {
    /// Puts a document as it was sent: its text extracted, checked, then cut into passages.
    /// `now` in milliseconds since the Unix epoch.
    pub async fn put(
        &self,
        scope: Scope<'_>,
        sent: SentDocument<'_>,
        now: u64,
    ) -> Result<DocumentInfo, Error> {
        let SentDocument {
            document_id,
            title,
            uri,
            content_type,
            body,
        } = sent;
        check_name("document_id", document_id)?;
        if body.len() > self.max_document_bytes {
            return Err(Error::PayloadTooLarge {
                limit: self.max_document_bytes,
            });
        }
        // PDFs take CPU time to read: off the request threads.
        let (bytes, kind, id) = (
            body.to_vec(),
            content_type.to_owned(),
            document_id.to_owned(),
        );
        let text =
            tokio::task::spawn_blocking(move || crate::workflow::text_of(&bytes, &kind, &id))
                .await
                .map_err(|e| Error::Internal(format!("reading a document: {e}")))?
                .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        if text.trim().is_empty() {
            return Err(Error::InvalidRequest(
                "the document has no text to search".into(),
            ));
        }
        let title = title
            .filter(|t| !t.trim().is_empty())
            .or_else(|| first_heading(&text))
            .unwrap_or_else(|| document_id.to_owned());
        let document = NewDocument {
            document_id: document_id.to_owned(),
            title,
            uri,
            text,
        };
        self.store.put_document(scope, document, now).await
    }

    /// At most `results` (1 to [`MAX_RESULTS`]) passages for `question`.
    pub async fn retrieve(
        &self,
        scope: Scope<'_>,
        question: &str,
        results: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Passage>, Error> {
        if !(1..=MAX_RESULTS as usize).contains(&results) {
            return Err(Error::InvalidRequest(format!(
                "results: must be 1 to {MAX_RESULTS}"
            )));
        }
        if question.trim().is_empty() {
            return Err(Error::InvalidRequest(
                "question: must be non-empty text".into(),
            ));
        }
        self.retriever
            .retrieve(scope, question, results, filter)
            .await
    }
}

/// A document as a client sends it: text, Markdown or HTML (`content_type`, UTF-8), or PDF.
pub struct SentDocument<'a> {
    pub document_id: &'a str,
    pub title: Option<String>,
    pub uri: Option<String>,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// A Markdown document's first heading, as its title.
fn first_heading(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix('#')
                .map(|h| h.trim_start_matches('#').trim())
        })
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// One passage found for a question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passage {
    /// Stable across retrievals of the same content: the document and the passage's place.
    pub id: String,
    pub document_id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The headings above the passage, joined with ` › `.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub heading: String,
    pub text: String,
    /// Higher is better; comparable within one retrieval only.
    pub score: f64,
}

/// The token scope that lets a caller create and change the knowledge bases shared with every
/// tenant (`?scope=global`).
pub const GLOBAL_SCOPE: &str = "knowledge:global";

/// The owner of the shared knowledge bases: no principal's tenant is empty (a tenant is its
/// claim or the token's non-empty `sub`), so none can reach them as its own.
pub const SHARED_TENANT: &str = "";

/// The tenant whose knowledge bases `scope` means for `principal`.
pub fn owner(principal: &Principal, scope: KnowledgeScope) -> &str {
    match scope {
        KnowledgeScope::Tenant => &principal.tenant,
        KnowledgeScope::Global => SHARED_TENANT,
    }
}

/// Which knowledge base a retrieval reads, and for whom.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
}

/// Finds the passages that answer a question.
#[async_trait]
pub trait Retriever: Send + Sync {
    /// At most `results` passages of `scope`'s knowledge base for `question`, best first, of
    /// those `filter` (checked already) lets through; `not_found` when the tenant has no such
    /// knowledge base, `invalid_request` for a filter the store cannot apply.
    async fn retrieve(
        &self,
        scope: Scope<'_>,
        question: &str,
        results: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Passage>, Error>;
}

/// A document as the embedded store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocumentInfo {
    pub document_id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Of the text it was given, hex.
    pub sha256: String,
    pub bytes: u64,
    pub passages: u32,
    /// Milliseconds since the Unix epoch.
    pub updated_at: u64,
}

/// A document to put: its text already extracted.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub document_id: String,
    pub title: String,
    pub uri: Option<String>,
    pub text: String,
}

/// The embedded knowledge bases: created by a tenant, filled with documents.
#[async_trait]
pub trait KnowledgeStore: Send + Sync {
    /// Creates the tenant's knowledge base `name`; false when it existed.
    async fn create(&self, tenant: &str, name: &str, now: u64) -> Result<bool, Error>;

    /// The tenant's knowledge bases, by name.
    async fn list(&self, tenant: &str) -> Result<Vec<String>, Error>;

    /// Deletes the knowledge base and its documents; false when it did not exist.
    async fn delete(&self, scope: Scope<'_>) -> Result<bool, Error>;

    /// Puts a document, replacing one with the same id and its passages in one transaction.
    async fn put_document(
        &self,
        scope: Scope<'_>,
        document: NewDocument,
        now: u64,
    ) -> Result<DocumentInfo, Error>;

    async fn documents(&self, scope: Scope<'_>) -> Result<Vec<DocumentInfo>, Error>;

    /// Deletes a document and its passages; false when there was none.
    async fn delete_document(&self, scope: Scope<'_>, document_id: &str) -> Result<bool, Error>;
}

/// A knowledge base the tenant does not have, reported alike whether it exists for another.
pub fn not_found(name: &str) -> Error {
    Error::NotFound(format!("no knowledge base {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_by_route_and_tenant_and_are_checked() {
        let default = KnowledgeDefault {
            name: "handbook".into(),
            results: None,
            scope: KnowledgeScope::Tenant,
            routes: vec!["websocket".into()],
            tenants: vec!["acme".into()],
        };
        assert!(default.applies(Route::WebSocket, "acme").is_some());
        assert!(default.applies(Route::Chat, "acme").is_none());
        assert!(default.applies(Route::WebSocket, "globex").is_none());
        let mut settings = KnowledgeSettings {
            defaults: vec![default],
            ..KnowledgeSettings::default()
        };
        settings.validate().unwrap();
        settings.defaults[0].routes = vec!["telepathy".into()];
        assert!(settings.validate().unwrap_err().contains("telepathy"));
        settings.defaults[0].routes.clear();
        settings.defaults[0].results = Some(99);
        assert!(settings.validate().unwrap_err().contains("results"));
    }

    #[test]
    fn names_are_never_paths() {
        for good in ["docs", "hr-policies_2026", "v1.2"] {
            check_name("name", good).unwrap();
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", "x\\y", &"n".repeat(65)] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
    }
}
