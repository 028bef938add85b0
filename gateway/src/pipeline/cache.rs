//! The response cache in the pipeline. A cacheable request is keyed on the final model request
//! (history included) and its scope. A hit is replayed as a normal stream with `cached: true`.
//! A miss joins an identical request already in flight, or leads a new flight whose producer
//! stores the complete answer (see [`crate::pipeline::flight`]); a failed, cancelled or oversized
//! one is not stored.

use std::sync::Arc;

use nagare_authorizer::Principal;
use nagare_cache::key::{KeyContent, KeyInput, key};
use nagare_cache::{
    CacheKey, CacheSettings, CachedResponse, Flight, Flights, Joined, Mode, ResponseCache,
};

use nagare_cache::MetricsSnapshot;
use tracing::Instrument;

use crate::chat::{Block, Role, Route};
use crate::chat::{CacheMode, CacheScope};
use crate::error::Error;
use crate::pipeline::embeddings::vector_base64;
use crate::pipeline::event_stream::EventStream;
use crate::pipeline::flight::{Delivery, Piece, Store, Upstream, deliver, replay, spawn_producer};
use crate::pipeline::kept::parts_of;
use crate::provider::ProviderRequest;

/// The token scope that lets a request read and write the `global` cache scope.
pub const GLOBAL_SCOPE: &str = "cache:global";

/// The key scope of answers shared with every tenant.
const SHARED_SCOPE: &str = "";

/// The cache and the flights in progress.
pub struct ChatCache {
    cache: Arc<ResponseCache>,
    flights: Arc<Flights<Piece>>,
    settings: CacheSettings,
}

/// What a request asks of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheAsk {
    pub mode: CacheMode,
    pub scope: Option<CacheScope>,
    /// It continues a conversation.
    pub multi_turn: bool,
}

/// What the cache may do for one request.
pub struct Plan {
    key: CacheKey,
    read: bool,
    write: bool,
}

impl ChatCache {
    pub fn new(cache: Arc<ResponseCache>, settings: CacheSettings) -> Self {
        Self {
            cache,
            flights: Arc::new(Flights::default()),
            settings,
        }
    }

    /// The cache's counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.cache.snapshot()
    }

    /// Decides how `request` may use the cache; `None` when it may not at all.
    pub fn plan(
        &self,
        principal: &Principal,
        route: Route,
        ask: CacheAsk,
        model_request: &ProviderRequest,
    ) -> Result<Option<Plan>, Error> {
        let scope = match ask.scope.unwrap_or_default() {
            CacheScope::Tenant => principal.tenant.as_str(),
            // No tenant is empty (a tenant is its claim or the token's non-empty `sub`), so no
            // tenant's own scope is the global one; a tenant named "global" once could be.
            CacheScope::Global if principal.has_scope(GLOBAL_SCOPE) => SHARED_SCOPE,
            CacheScope::Global => {
                return Err(Error::Forbidden(format!(
                    "cache_scope: global needs the {GLOBAL_SCOPE} scope"
                )));
            }
        };
        Ok(self
            .allowed(principal, route, ask)
            .map(|(read, write)| Plan {
                key: key_of(scope, model_request),
                read,
                write,
            }))
    }

    /// Whether a request may read and write the cache; `None` when it may do neither.
    fn allowed(&self, principal: &Principal, route: Route, ask: CacheAsk) -> Option<(bool, bool)> {
        let mode = self
            .settings
            .mode_for(route.name(), &principal.tenant, ask.multi_turn);
        let (read, write) = match ask.mode {
            CacheMode::Default => (mode.reads(), mode.writes()),
            CacheMode::Refresh => (false, mode.writes()),
            CacheMode::Bypass => (false, false),
        };
        (mode != Mode::Off && (read || write)).then_some((read, write))
    }

    /// How the embedding of `text` may use the cache, in the caller's tenant; `None` when it may
    /// not at all.
    pub fn vector_plan(
        &self,
        principal: &Principal,
        route: Route,
        mode: CacheMode,
        vector: VectorKey<'_>,
    ) -> Option<Plan> {
        let ask = CacheAsk {
            mode,
            scope: None,
            multi_turn: false,
        };
        let options =
            canonical(&serde_json::json!({"embedding": {"dimensions": vector.dimensions}}));
        self.allowed(principal, route, ask)
            .map(|(read, write)| Plan {
                key: key(&KeyInput {
                    scope: &principal.tenant,
                    model_id: vector.model_id,
                    system: None,
                    messages: &[("embed", KeyContent::Text(vector.text))],
                    max_tokens: None,
                    temperature: None,
                    top_p: None,
                    stop: &[],
                    options: Some(&options),
                }),
                read,
                write,
            })
    }

    /// A kept vector and the tokens it cost, when `plan` may read one.
    pub async fn vector(&self, plan: &Plan) -> Option<(Vec<f32>, u64)> {
        if !plan.read {
            return None;
        }
        let (hit, _) = self.cache.get(&plan.key).await?;
        let vector = decode_vector(&hit.text)?;
        self.cache.saved(&hit);
        Some((vector, hit.input_tokens))
    }

    /// Keeps a vector, when `plan` may write.
    pub async fn keep_vector(&self, plan: &Plan, model: &str, vector: &[f32], tokens: u64) {
        if !plan.write {
            return;
        }
        let entry = CachedResponse {
            model: model.to_owned(),
            text: vector_base64(vector),
            breaks: Vec::new(),
            parts: String::new(),
            stop_reason: "embedding".into(),
            input_tokens: tokens,
            output_tokens: 0,
            created_at_ms: crate::store::unix_now_ms(),
        };
        self.cache.put(&plan.key, entry).await;
    }

    /// Serves `plan` from the cache or a flight, or starts the upstream call with `upstream`.
    pub async fn serve<F>(
        &self,
        plan: Plan,
        mut delivery: Delivery,
        upstream: F,
    ) -> Result<EventStream, Error>
    where
        F: Future<Output = Result<Upstream, Error>>,
    {
        if plan.read
            && let Some((hit, _tier)) = self
                .cache
                .get(&plan.key)
                .instrument(crate::trace_span!("cache.lookup"))
                .await
        {
            // An entry whose parts do not decode is a miss.
            if let Some(parts) = parts_of(&hit) {
                self.cache.saved(&hit);
                return Ok(replay(hit, parts, delivery, true));
            }
        }
        // Only a request that may read the cache may share another's answer.
        let (flight, subscription, registered) = if plan.read {
            match self.flights.join(plan.key) {
                Joined::Follower(sub) => {
                    self.cache
                        .metrics()
                        .coalesced
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(deliver(sub, delivery, true));
                }
                Joined::Leader(flight, sub) => (flight, sub, true),
            }
        } else {
            // A refresh must not share another request's answer: it flies alone.
            let (flight, sub) = Flight::lead();
            (flight, sub, false)
        };
        let upstream = match upstream.await {
            Ok(upstream) => upstream,
            Err(e) => {
                if registered {
                    // Followers that joined meanwhile get the same failure.
                    flight.push(Piece::Failed(e.body()));
                    flight.finish();
                    self.flights.land(&plan.key, &flight);
                }
                return Err(e);
            }
        };
        let store = Store {
            cache: self.cache.clone(),
            key: plan.key,
            write: plan.write,
            flights: registered.then(|| self.flights.clone()),
        };
        delivery.model.clone_from(&upstream.model);
        spawn_producer(upstream, flight, &delivery, Some(store));
        Ok(deliver(subscription, delivery, false))
    }
}

/// What an embedding's key is made of.
#[derive(Debug, Clone, Copy)]
pub struct VectorKey<'a> {
    pub model_id: &'a str,
    pub dimensions: u32,
    pub text: &'a str,
}

/// The inverse of [`vector_base64`], which is how the cache keeps a vector.
fn decode_vector(text: &str) -> Option<Vec<f32>> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let chunks = bytes.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(
        chunks
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Everything in a model request besides its messages and sampling that shapes the answer.
#[derive(serde::Serialize)]
struct KeyOptions<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [crate::chat::Tool],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a crate::chat::ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a crate::chat::Reasoning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a crate::chat::ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guardrail: Option<&'a crate::provider::Guardrail>,
    /// A knowledge-base chat's passages: their ids and content hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    grounding: Option<Vec<(&'a str, String)>>,
}

/// Canonical JSON: struct fields in declaration order, object keys sorted (serde_json's maps are
/// ordered), so equal values always encode alike.
fn canonical(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The key of a model request in `scope`.
fn key_of(scope: &str, r: &ProviderRequest) -> CacheKey {
    // A message of one text block keys as text, as before blocks existed; any other as JSON.
    let contents: Vec<Result<&str, String>> = r
        .messages
        .iter()
        .map(|m| match &m.content[..] {
            [Block::Text { text }] => Ok(text.as_str()),
            blocks => Err(canonical(&blocks)),
        })
        .collect();
    let messages: Vec<(&str, KeyContent<'_>)> = r
        .messages
        .iter()
        .zip(&contents)
        .map(|(m, content)| {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let content = match content {
                Ok(text) => KeyContent::Text(text),
                Err(json) => KeyContent::Blocks(json),
            };
            (role, content)
        })
        .collect();
    let options = KeyOptions {
        tools: &r.tools,
        tool_choice: r.tool_choice.as_ref(),
        reasoning: r.reasoning.as_ref(),
        response_format: r.response_format.as_ref(),
        guardrail: r.guardrail.as_ref(),
        grounding: r.grounding.as_ref().map(crate::chat::Grounding::key),
    };
    // Cache points change the cost, never the answer: they are not part of the key.
    let has_options = !r.tools.is_empty()
        || r.tool_choice.is_some()
        || r.reasoning.is_some()
        || r.response_format.is_some()
        || r.guardrail.is_some()
        || r.grounding.is_some();
    let options = has_options.then(|| canonical(&options));
    key(&KeyInput {
        scope,
        model_id: &r.model_id,
        system: r.system.as_deref(),
        messages: &messages,
        max_tokens: r.inference.max_tokens,
        temperature: r.inference.temperature,
        top_p: r.inference.top_p,
        stop: r.inference.stop.as_deref().unwrap_or_default(),
        options: options.as_deref(),
    })
}
