//! Which models a request may name: aliases, the allow-list, and what the provider knows.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Error;
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
}

impl ModelCatalog {
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
            fallbacks: Default::default(),
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
        };
        assert_eq!(
            catalog.chain(Some("smart"), "large-1"),
            ["large-1", "large-west", "small-1"]
        );
        assert_eq!(catalog.chain(None, "small-1"), ["small-1", "small-2"]);
        assert_eq!(catalog.chain(Some("other"), "other"), ["other"]);
    }
}
