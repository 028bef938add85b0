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
}
