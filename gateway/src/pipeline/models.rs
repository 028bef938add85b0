//! Which model serves a request: the one it names (aliases, the allow-lists, what the provider
//! knows), or, when it names none, the routing rules: its task hint, its tenant's default, then
//! small or large by how long the prompt is and whether it continues a conversation.

use std::collections::{BTreeMap, BTreeSet};

use crate::chat::ChatRequest;
use crate::error::Error;
use crate::pipeline::estimate_tokens;
use crate::provider::ModelProvider;

/// The model routing table from `[models]`.
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    /// Used when a request names no model; an alias or a model id.
    pub default: String,
    /// `fast = "anthropic.claude-3-haiku-..."`.
    pub aliases: BTreeMap<String, String>,
    /// Model ids that may be named directly, besides alias targets.
    pub allow: BTreeSet<String>,
    /// Models to try, in order, when an alias's or a model id's own model fails or its circuit
    /// is open: `smart = ["fast"]`. Entries may be aliases.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub routing: RoutingSettings,
}

/// `[routing]` settings: how a request that names no model is routed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Off: every such request gets `models.default`.
    pub enabled: bool,
    /// For simple requests, and for complex ones; aliases or model ids.
    pub small: String,
    pub large: String,
    /// A system prompt and message estimated at this many tokens or more is complex.
    pub long_prompt_tokens: usize,
    /// A request that continues a conversation is complex.
    pub conversations_are_complex: bool,
    /// A request's `task` hint → the model for it: `code = "smart"`.
    pub tasks: BTreeMap<String, String>,
    /// A tenant's own default: `acme = "smart"`.
    pub tenants: BTreeMap<String, String>,
    /// The only models (aliases or ids) a tenant's requests may name.
    pub tenant_allow: BTreeMap<String, BTreeSet<String>>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            small: "fast".into(),
            large: "smart".into(),
            long_prompt_tokens: 2_000,
            conversations_are_complex: true,
            tasks: BTreeMap::new(),
            tenants: BTreeMap::new(),
            tenant_allow: BTreeMap::new(),
        }
    }
}

/// Why a model was chosen, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Named,
    Default,
    Task,
    Tenant,
    Simple,
    LongPrompt,
    Conversation,
}

impl ModelCatalog {
    /// The name (an alias or a model id) that serves `request` for `tenant`, and why.
    pub fn pick<'a>(
        &'a self,
        request: &'a ChatRequest,
        tenant: &str,
    ) -> Result<(&'a str, Why), Error> {
        let r = &self.routing;
        if let Some(named) = request.model.as_deref() {
            if let Some(allowed) = r.tenant_allow.get(tenant)
                && !allowed.contains(named)
            {
                return Err(Error::Forbidden(format!(
                    "model: '{named}' is not allowed for your tenant"
                )));
            }
            return Ok((named, Why::Named));
        }
        if !r.enabled {
            return Ok((&self.default, Why::Default));
        }
        if let Some(model) = request.task.as_deref().and_then(|t| r.tasks.get(t)) {
            return Ok((model, Why::Task));
        }
        if let Some(model) = r.tenants.get(tenant) {
            return Ok((model, Why::Tenant));
        }
        let prompt = request.system.as_deref().map_or(0, estimate_tokens)
            + estimate_tokens(&request.message);
        if prompt >= r.long_prompt_tokens {
            Ok((&r.large, Why::LongPrompt))
        } else if r.conversations_are_complex && request.conversation_id.is_some() {
            Ok((&r.large, Why::Conversation))
        } else {
            Ok((&r.small, Why::Simple))
        }
    }

    /// The model id a request's `model` field routes to, or `invalid_request` for an unknown one.
    pub fn resolve(
        &self,
        requested: Option<&str>,
        provider: &dyn ModelProvider,
    ) -> Result<String, Error> {
        let name = requested.unwrap_or(&self.default);
        if let Some(id) = self.aliases.get(name) {
            return Ok(id.clone());
        }
        let known = self.allow.contains(name)
            || self.aliases.values().any(|id| id == name)
            || provider.recognizes(name);
        if known {
            Ok(name.to_owned())
        } else {
            Err(Error::InvalidRequest(format!(
                "model: unknown model '{name}'; use one of: {}",
                self.names().join(", ")
            )))
        }
    }

    /// The models to try for a request: `model_id` (what `requested` resolved to), then the
    /// fallbacks listed for the name it asked for or for the model id, without repeats.
    pub fn chain(&self, requested: Option<&str>, model_id: &str) -> Vec<String> {
        let name = requested.unwrap_or(&self.default);
        let listed = self
            .fallbacks
            .get(name)
            .or_else(|| self.fallbacks.get(model_id))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut chain = vec![model_id.to_owned()];
        for fallback in listed {
            let id = self.aliases.get(fallback).unwrap_or(fallback);
            if !chain.contains(id) {
                chain.push(id.clone());
            }
        }
        chain
    }

    /// The names `tenant` may ask for: every alias and allowed model, or its allow-list.
    pub fn names_for(&self, tenant: &str) -> Vec<String> {
        match self.routing.tenant_allow.get(tenant) {
            Some(allowed) => allowed.iter().cloned().collect(),
            None => self.names().into_iter().map(str::to_owned).collect(),
        }
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.aliases.keys().map(String::as_str).collect();
        names.extend(self.allow.iter().map(String::as_str));
        if names.is_empty() {
            names.push(&self.default);
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{MockProvider, MockSettings};

    #[test]
    fn aliases_ids_and_provider_models_resolve() {
        let catalog = ModelCatalog {
            default: "fast".into(),
            aliases: [("fast".to_owned(), "mock".to_owned())].into(),
            allow: ["vendor.model-v1".to_owned()].into(),
            ..ModelCatalog::default()
        };
        let p = MockProvider::new(MockSettings::unpaced());
        assert_eq!(catalog.resolve(None, &p).unwrap(), "mock");
        assert_eq!(catalog.resolve(Some("fast"), &p).unwrap(), "mock");
        assert_eq!(
            catalog.resolve(Some("vendor.model-v1"), &p).unwrap(),
            "vendor.model-v1"
        );
        assert_eq!(catalog.resolve(Some("mock.slow"), &p).unwrap(), "mock.slow");
        let err = catalog.resolve(Some("gpt-9"), &p).unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_request");
        assert!(err.to_string().contains("gpt-9"));
    }

    #[test]
    fn chains_start_with_the_model_and_follow_the_listed_fallbacks() {
        let catalog = ModelCatalog {
            default: "fast".into(),
            aliases: [("fast", "small-1"), ("smart", "large-1")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .into(),
            allow: BTreeSet::new(),
            fallbacks: [
                ("smart", vec!["large-west".to_owned(), "fast".to_owned()]),
                ("small-1", vec!["small-2".to_owned(), "small-1".to_owned()]),
            ]
            .map(|(a, b)| (a.to_owned(), b))
            .into(),
            ..ModelCatalog::default()
        };
        assert_eq!(
            catalog.chain(Some("smart"), "large-1"),
            ["large-1", "large-west", "small-1"]
        );
        assert_eq!(catalog.chain(None, "small-1"), ["small-1", "small-2"]);
        assert_eq!(catalog.chain(Some("other"), "other"), ["other"]);
    }

    fn routed() -> ModelCatalog {
        let mut routing = RoutingSettings {
            enabled: true,
            long_prompt_tokens: 10,
            ..RoutingSettings::default()
        };
        routing.tasks.insert("code".into(), "smart".into());
        routing.tenants.insert("acme".into(), "smart".into());
        routing
            .tenant_allow
            .insert("locked".into(), ["fast".to_owned()].into());
        ModelCatalog {
            default: "fast".into(),
            routing,
            ..ModelCatalog::default()
        }
    }

    fn ask(message: &str) -> ChatRequest {
        ChatRequest {
            message: message.into(),
            ..ChatRequest::default()
        }
    }

    #[test]
    fn requests_without_a_model_are_routed_by_the_rules() {
        let c = routed();
        let pick = |r: &ChatRequest, tenant: &str| {
            let (name, why) = c.pick(r, tenant).unwrap();
            (name.to_owned(), why)
        };
        assert_eq!(pick(&ask("hi"), "t"), ("fast".into(), Why::Simple));
        let long = ask(&"word ".repeat(20));
        assert_eq!(pick(&long, "t"), ("smart".into(), Why::LongPrompt));
        let continued = ChatRequest {
            conversation_id: Some("c1".into()),
            ..ask("hi")
        };
        assert_eq!(pick(&continued, "t"), ("smart".into(), Why::Conversation));
        let code = ChatRequest {
            task: Some("code".into()),
            ..ask("hi")
        };
        assert_eq!(pick(&code, "t"), ("smart".into(), Why::Task));
        assert_eq!(pick(&ask("hi"), "acme"), ("smart".into(), Why::Tenant));
        let named = ChatRequest {
            model: Some("vendor.x".into()),
            ..long
        };
        assert_eq!(pick(&named, "t"), ("vendor.x".into(), Why::Named));

        let off = ModelCatalog {
            default: "fast".into(),
            ..ModelCatalog::default()
        };
        assert_eq!(off.pick(&code, "acme").unwrap(), ("fast", Why::Default));
    }

    #[test]
    fn a_tenant_allow_list_refuses_other_models() {
        let c = routed();
        let named = |m: &str| ChatRequest {
            model: Some(m.into()),
            ..ask("hi")
        };
        assert!(c.pick(&named("fast"), "locked").is_ok());
        let err = c.pick(&named("smart"), "locked").unwrap_err();
        assert_eq!(err.code().as_str(), "forbidden");
        assert!(c.pick(&named("smart"), "other").is_ok());
    }
}
