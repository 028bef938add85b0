//! Retrieval for chats that name a knowledge base: before the model call, in its own span, with
//! a timeout and retries, the question (with enough of the conversation to resolve a follow-up)
//! becomes the numbered passages the model answers from.

use std::sync::Arc;
use std::time::Duration;

use nagare_authorizer::Principal;
use tracing::Instrument;

use crate::chat::{Block, Found, Grounding, KnowledgeAsk, Message, Role, Route, joined_text};
use crate::error::Error;
use crate::knowledge::{KnowledgeDefault, Retriever, Scope, owner};

/// How long one retrieval may take, and how often a failed one is tried again.
#[derive(Debug, Clone, Copy)]
pub struct RetrievalPolicy {
    pub timeout: Duration,
    /// Further attempts after a retryable failure (throttled, unavailable, timed out).
    pub retries: u32,
    /// The wait before the first retry; doubled for each next one.
    pub backoff: Duration,
}

impl Default for RetrievalPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(100),
        }
    }
}

/// The most characters of a conversation's earlier question a retrieval takes along.
const CONTEXT_CHARS: usize = 500;

/// Finds the passages a knowledge-base chat is answered from.
#[derive(Clone)]
pub struct Grounder {
    retriever: Arc<dyn Retriever>,
    policy: RetrievalPolicy,
    defaults: Vec<KnowledgeDefault>,
}

impl Grounder {
    pub fn new(retriever: Arc<dyn Retriever>, policy: RetrievalPolicy) -> Self {
        Self {
            retriever,
            policy,
            defaults: Vec::new(),
        }
    }

    /// Answers chats on the routes and tenants `defaults` name from their knowledge base when
    /// they name none; the first that applies wins.
    pub fn with_defaults(mut self, defaults: Vec<KnowledgeDefault>) -> Self {
        self.defaults = defaults;
        self
    }

    /// The knowledge base a chat answers from: the one it names, or its route's and tenant's
    /// default.
    fn ask_of(
        &self,
        named: Option<&KnowledgeAsk>,
        route: Route,
        tenant: &str,
    ) -> Option<KnowledgeAsk> {
        named
            .cloned()
            .or_else(|| self.defaults.iter().find_map(|d| d.applies(route, tenant)))
    }

    /// The passages of `ask`'s knowledge base for the new turn, given the conversation so far.
    pub async fn ground(
        &self,
        principal: &Principal,
        ask: &KnowledgeAsk,
        history: &[Message],
        new_turn: &[Block],
    ) -> Result<Grounding, Error> {
        let question = question_of(history, new_turn);
        if question.trim().is_empty() {
            // A turn of tool results only: nothing to look up.
            return Ok(Grounding::default());
        }
        let scope = Scope {
            tenant: owner(principal, ask.scope),
            name: &ask.name,
        };
        let span = crate::trace_span!("knowledge.retrieve", knowledge_base = %ask.name);
        let found = self
            .retrieve(scope, &question, ask)
            .instrument(span)
            .await?;
        Ok(Grounding::new(found.into_iter().map(|p| Found {
            id: p.id,
            title: p.title,
            uri: p.uri,
            heading: p.heading,
            text: p.text,
            score: p.score,
        })))
    }

    async fn retrieve(
        &self,
        scope: Scope<'_>,
        question: &str,
        ask: &KnowledgeAsk,
    ) -> Result<Vec<crate::knowledge::Passage>, Error> {
        let policy = self.policy;
        let mut wait = policy.backoff;
        let mut attempt = 0;
        loop {
            let call = self.retriever.retrieve(
                scope,
                question,
                ask.results() as usize,
                ask.filter.as_ref(),
            );
            let result = match tokio::time::timeout(policy.timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(Error::UpstreamTimeout(format!(
                    "knowledge base {} did not answer within {} ms",
                    scope.name,
                    policy.timeout.as_millis()
                ))),
            };
            match result {
                Err(e) if e.retryable() && attempt < policy.retries => {
                    attempt += 1;
                    let pause = e.retry_after().unwrap_or(wait).min(Duration::from_secs(2));
                    tracing::info!(attempt, code = e.code().as_str(), "retrying retrieval");
                    tokio::time::sleep(pause).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
    }
}

/// The passages a chat answers from: those of the knowledge base it names, or else of its
/// route's and tenant's default; `None` for a chat with neither. Naming one on a server without
/// knowledge bases (no `grounder`) is [`off`].
pub async fn ground(
    grounder: Option<&Grounder>,
    principal: &Principal,
    route: Route,
    named: Option<&KnowledgeAsk>,
    history: &[Message],
    new_turn: &[Block],
) -> Result<Option<Grounding>, Error> {
    let Some(grounder) = grounder else {
        return match named {
            Some(_) => Err(off()),
            None => Ok(None),
        };
    };
    match grounder.ask_of(named, route, &principal.tenant) {
        Some(ask) => grounder
            .ground(principal, &ask, history, new_turn)
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// A chat names a knowledge base on a server that has none.
pub fn off() -> Error {
    Error::InvalidRequest("knowledge_base: knowledge bases are not enabled on this server".into())
}

/// What is retrieved for a turn: its text, after the conversation's previous user question
/// (at most [`CONTEXT_CHARS`] of it), so that "and the second one?" finds what it refers to.
pub fn question_of(history: &[Message], new_turn: &[Block]) -> String {
    let asked = joined_text(new_turn);
    let previous = history
        .iter()
        .rev()
        .filter(|m| m.role == Role::User)
        .map(|m| joined_text(&m.content))
        .find(|t| !t.trim().is_empty());
    match previous {
        Some(previous) => {
            let previous: String = previous.chars().take(CONTEXT_CHARS).collect();
            format!("{previous}\n{asked}")
        }
        None => asked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_up_carries_the_previous_question() {
        let history = [
            Message {
                role: Role::User,
                content: vec![Block::text("How does carry-over of leave work?")],
            },
            Message {
                role: Role::Assistant,
                content: vec![Block::text("Up to 5 days [1].")],
            },
        ];
        let q = question_of(&history, &[Block::text("and for part-time staff?")]);
        assert!(q.starts_with("How does carry-over"), "{q}");
        assert!(q.ends_with("part-time staff?"), "{q}");
        assert_eq!(question_of(&[], &[Block::text("x")]), "x");
    }
}
