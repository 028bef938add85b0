//! Embeddings through the pipeline: the caller's request rate and token budget, the response
//! cache (one entry per text, in the caller's tenant), and the model provider's `embed` with its
//! retries. Texts of one request are embedded a few at a time, in order.

use futures::{StreamExt, TryStreamExt};
use nagare_authorizer::Principal;
use serde::{Deserialize, Serialize};

use crate::chat::{CacheMode, Route};
use crate::error::Error;
use crate::limits::Limits;
use crate::pipeline::ChatCache;
use crate::pipeline::cache::VectorKey;
use crate::pipeline::estimate::estimate_tokens;
use crate::provider::{EmbedRequest, ModelProvider, embedding_dimensions};

/// `[embeddings]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSettings {
    /// The Bedrock model every embedding uses.
    pub model: String,
    /// Other names a client may send as `model` for it (an SDK's hard-coded default, say).
    pub aliases: Vec<String>,
    /// Texts per request.
    pub max_inputs: usize,
    /// Characters per text (Titan Text Embeddings v2 takes 50,000).
    pub max_input_chars: usize,
    /// Model calls one request makes at a time.
    pub concurrency: usize,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        Self {
            model: "amazon.titan-embed-text-v2:0".into(),
            aliases: vec!["embed".into()],
            max_inputs: 256,
            max_input_chars: 50_000,
            concurrency: 4,
        }
    }
}

impl EmbeddingSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("embeddings.model: must name a model id".into());
        }
        if self.max_inputs == 0 || self.max_input_chars == 0 || self.concurrency == 0 {
            return Err(
                "embeddings: max_inputs, max_input_chars and concurrency must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// The model a request's `model` names: the configured one, by its id or an alias.
    fn model_for(&self, asked: Option<&str>) -> Result<&str, Error> {
        match asked {
            None => Ok(&self.model),
            Some(name) if name == self.model || self.aliases.iter().any(|a| a == name) => {
                Ok(&self.model)
            }
            Some(name) => Err(Error::InvalidRequest(format!(
                "model: '{name}' is not an embedding model here; use {}{}",
                self.model,
                if self.aliases.is_empty() {
                    String::new()
                } else {
                    format!(" or {}", self.aliases.join(", "))
                }
            ))),
        }
    }
}

/// What a client asks to embed.
#[derive(Debug, Clone)]
pub struct EmbedAsk {
    pub model: Option<String>,
    pub inputs: Vec<String>,
    pub dimensions: Option<u32>,
    pub cache: CacheMode,
}

/// The vectors, in the order of the inputs.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    /// The tokens of every input, as the model counted them (originally, for cached ones).
    pub input_tokens: u64,
    /// How many came from the cache.
    pub cached: usize,
}

/// What embedding needs of the pipeline.
pub(super) struct Embedder<'a> {
    pub provider: &'a dyn ModelProvider,
    pub settings: &'a EmbeddingSettings,
    pub cache: Option<&'a ChatCache>,
    pub limits: Option<&'a Limits>,
}

impl Embedder<'_> {
    pub async fn embed(
        &self,
        principal: &Principal,
        route: Route,
        ask: EmbedAsk,
    ) -> Result<Embedded, Error> {
        let model = self.settings.model_for(ask.model.as_deref())?.to_owned();
        let dimensions = embedding_dimensions(&model, ask.dimensions)?;
        self.check(&ask.inputs)?;
        let reservation = match self.limits {
            Some(limits) => {
                limits.admit(principal).await?;
                let estimate = ask.inputs.iter().map(|t| estimate_tokens(t) as u64).sum();
                Some(limits.reserve(principal, estimate, Some(0)).await?)
            }
            None => None,
        };
        let results: Vec<(Vec<f32>, u64, bool)> = futures::stream::iter(ask.inputs)
            .map(|text| self.one(principal, route, ask.cache, &model, dimensions, text))
            .buffered(self.settings.concurrency)
            .try_collect()
            .await?;
        let spent: u64 = results.iter().filter(|r| !r.2).map(|r| r.1).sum();
        if let Some(reservation) = reservation {
            reservation.settle(spent).await;
        }
        Ok(Embedded {
            model,
            input_tokens: results.iter().map(|r| r.1).sum(),
            cached: results.iter().filter(|r| r.2).count(),
            vectors: results.into_iter().map(|r| r.0).collect(),
        })
    }

    fn check(&self, inputs: &[String]) -> Result<(), Error> {
        let max = self.settings.max_inputs;
        if inputs.is_empty() || inputs.len() > max {
            return Err(Error::InvalidRequest(format!(
                "input: send 1 to {max} texts"
            )));
        }
        for (i, text) in inputs.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(Error::InvalidRequest(format!(
                    "input[{i}]: must be non-empty text"
                )));
            }
            if text.chars().count() > self.settings.max_input_chars {
                return Err(Error::InvalidRequest(format!(
                    "input[{i}]: at most {} characters",
                    self.settings.max_input_chars
                )));
            }
        }
        Ok(())
    }

    /// One text's vector and tokens, and whether it came from the cache.
    async fn one(
        &self,
        principal: &Principal,
        route: Route,
        mode: CacheMode,
        model: &str,
        dimensions: u32,
        text: String,
    ) -> Result<(Vec<f32>, u64, bool), Error> {
        let key = VectorKey {
            model_id: model,
            dimensions,
            text: &text,
        };
        let plan = self
            .cache
            .and_then(|c| c.vector_plan(principal, route, mode, key).map(|p| (c, p)));
        if let Some((cache, plan)) = &plan
            && let Some((vector, tokens)) = cache.vector(plan).await
        {
            return Ok((vector, tokens, true));
        }
        let embedding = self
            .provider
            .embed(EmbedRequest {
                model_id: model.to_owned(),
                text,
                dimensions: Some(dimensions),
            })
            .await?;
        if let Some((cache, plan)) = &plan {
            cache
                .keep_vector(plan, model, &embedding.vector, embedding.input_tokens)
                .await;
        }
        Ok((embedding.vector, embedding.input_tokens, false))
    }
}

/// A vector as its little-endian `f32`s in base64: OpenAI's `encoding_format: "base64"`, and
/// how the response cache keeps it.
pub fn vector_base64(vector: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_the_model_or_an_alias() {
        let s = EmbeddingSettings::default();
        assert_eq!(s.model_for(None).unwrap(), s.model);
        assert_eq!(s.model_for(Some("embed")).unwrap(), s.model);
        let e = s.model_for(Some("text-embedding-3-small")).unwrap_err();
        assert!(
            e.to_string().contains("amazon.titan-embed-text-v2:0"),
            "{e}"
        );
    }
}
