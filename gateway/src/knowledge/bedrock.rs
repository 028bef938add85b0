//! Amazon Bedrock Knowledge Bases as a [`Retriever`]: `Retrieve` through the real
//! aws-sdk-bedrockagentruntime, with the knowledge-base ids mapped by name in `[knowledge.bedrock]`
//! and the tenants each may serve. Names it does not map go to the embedded store, when there is
//! one. Ingestion stays Bedrock's (an S3 data source and `StartIngestionJob`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_bedrockagentruntime::Client;
use aws_sdk_bedrockagentruntime::config::Region;
use aws_sdk_bedrockagentruntime::config::retry::RetryConfig;
use aws_sdk_bedrockagentruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockagentruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockagentruntime::operation::retrieve::RetrieveError;
use aws_sdk_bedrockagentruntime::types::{
    FilterAttribute, GuadrailAction, KnowledgeBaseQuery, KnowledgeBaseRetrievalConfiguration,
    KnowledgeBaseRetrievalResult, KnowledgeBaseVectorSearchConfiguration, RetrievalFilter,
    SearchType,
};
use aws_smithy_types::{Document, Number};
use serde::{Deserialize, Serialize};

use crate::chat::{Filter, FilterValue};
use crate::error::Error;
use crate::knowledge::{Passage, Retriever, Scope, not_found};

/// `[knowledge.bedrock]`: the Bedrock knowledge bases chats may name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BedrockKnowledgeSettings {
    /// Overrides `AWS_REGION`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Sends requests here instead of the regional endpoint (VPC endpoints, tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    pub bases: Vec<BedrockBase>,
}

/// One Bedrock knowledge base, by the name chats give it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BedrockBase {
    pub name: String,
    /// Its knowledge-base id (`KB12345678`).
    pub id: String,
    /// The tenants that may use it; `["*"]` for every tenant.
    pub tenants: Vec<String>,
    /// `HYBRID` or `SEMANTIC`; Bedrock chooses when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_type: Option<String>,
}

impl BedrockKnowledgeSettings {
    /// Checks names, ids and search types at start-up.
    pub fn check(&self) -> Result<(), String> {
        for (i, base) in self.bases.iter().enumerate() {
            let at = format!("knowledge.bedrock.bases[{i}]");
            super::check_name("name", &base.name).map_err(|e| format!("{at}.{e}"))?;
            let id_ok = (1..=10).contains(&base.id.len())
                && base.id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !id_ok {
                return Err(format!(
                    "{at}.id: a knowledge-base id is 1 to 10 letters and digits"
                ));
            }
            if base.tenants.is_empty() {
                return Err(format!(
                    "{at}.tenants: list the tenants that may use it, or \"*\" for all"
                ));
            }
            if let Some(kind) = &base.search_type
                && !matches!(kind.as_str(), "HYBRID" | "SEMANTIC")
            {
                return Err(format!("{at}.search_type: HYBRID or SEMANTIC"));
            }
            if self.bases[..i].iter().any(|b| b.name == base.name) {
                return Err(format!("{at}.name: {} is listed twice", base.name));
            }
        }
        Ok(())
    }

    /// The knowledge-base ids, for the IAM policy and the docs.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.bases.iter().map(|b| b.id.as_str())
    }
}

/// How many pages of one retrieval are read at most.
const MAX_PAGES: usize = 10;

/// Retrieval from Bedrock Knowledge Bases.
pub struct BedrockRetriever {
    client: Client,
    bases: Vec<BedrockBase>,
    /// For names not mapped to Bedrock.
    fallback: Option<Arc<dyn Retriever>>,
}

impl BedrockRetriever {
    /// The client on the shared AWS config. Retries belong to the pipeline's retrieval policy.
    pub fn new(
        sdk: &SdkConfig,
        settings: &BedrockKnowledgeSettings,
        fallback: Option<Arc<dyn Retriever>>,
    ) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .build();
        let mut config = aws_sdk_bedrockagentruntime::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url);
        }
        if let Some(region) = &settings.region {
            config = config.region(Region::new(region.clone()));
        }
        Self {
            client: Client::from_conf(config.build()),
            bases: settings.bases.clone(),
            fallback,
        }
    }

    async fn page(
        &self,
        base: &BedrockBase,
        question: &str,
        results: usize,
        filter: Option<&Filter>,
        next: Option<String>,
    ) -> Result<aws_sdk_bedrockagentruntime::operation::retrieve::RetrieveOutput, Error> {
        let search = KnowledgeBaseVectorSearchConfiguration::builder()
            .number_of_results(results as i32)
            .set_override_search_type(base.search_type.as_deref().map(SearchType::from))
            .set_filter(filter.map(retrieval_filter).transpose()?)
            .build();
        self.client
            .retrieve()
            .knowledge_base_id(&base.id)
            .retrieval_query(KnowledgeBaseQuery::builder().text(question).build())
            .retrieval_configuration(
                KnowledgeBaseRetrievalConfiguration::builder()
                    .vector_search_configuration(search)
                    .build(),
            )
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| retrieve_error(&base.name, e))
    }
}

#[async_trait]
impl Retriever for BedrockRetriever {
    async fn retrieve(
        &self,
        scope: Scope<'_>,
        question: &str,
        results: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Passage>, Error> {
        let Some(base) = self.bases.iter().find(|b| b.name == scope.name) else {
            return match &self.fallback {
                Some(embedded) => embedded.retrieve(scope, question, results, filter).await,
                None => Err(not_found(scope.name)),
            };
        };
        if !base.tenants.iter().any(|t| t == "*" || t == scope.tenant) {
            return Err(not_found(scope.name));
        }
        let mut found = Vec::new();
        let mut next = None;
        for _ in 0..MAX_PAGES {
            let page = self.page(base, question, results, filter, next).await?;
            if page.guardrail_action() == Some(&GuadrailAction::Intervened) {
                tracing::warn!(knowledge_base = %base.name, "a guardrail intervened in a retrieval");
            }
            found.extend(page.retrieval_results().iter().map(passage));
            next = page.next_token().map(str::to_owned);
            if found.len() >= results || next.is_none() {
                break;
            }
        }
        found.truncate(results);
        Ok(found)
    }
}

/// A Bedrock result as a passage: its chunk id, the document it came from and its text.
fn passage(result: &KnowledgeBaseRetrievalResult) -> Passage {
    let metadata = result.metadata();
    let text_of = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Document::as_string)
            .map(str::to_owned)
    };
    let location = result.location();
    let uri = location
        .and_then(|l| l.s3_location())
        .and_then(|s| s.uri())
        .or_else(|| {
            location
                .and_then(|l| l.web_location())
                .and_then(|w| w.url())
        })
        .map(str::to_owned)
        .or_else(|| text_of("x-amz-bedrock-kb-source-uri"));
    let document_id = result
        .document_id()
        .map(str::to_owned)
        .or_else(|| uri.clone())
        .unwrap_or_default();
    let text = result.content().map(|c| c.text().to_owned());
    let text = text.unwrap_or_default();
    let id = text_of("x-amz-bedrock-kb-chunk-id")
        .unwrap_or_else(|| format!("{document_id}#{:x}", fnv(text.as_bytes())));
    let title = text_of("title").unwrap_or_else(|| {
        let name = document_id.rsplit('/').next().unwrap_or_default();
        if name.is_empty() {
            "untitled".into()
        } else {
            name.to_owned()
        }
    });
    Passage {
        id,
        document_id,
        title,
        uri,
        heading: String::new(),
        text,
        score: result.score().unwrap_or_default(),
    }
}

/// A short, stable hash, for the id of a chunk Bedrock gave none.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The documented filter as Bedrock's: `equals` for a value, `in` for a list, all of them
/// together under `andAll` (which takes two or more).
fn retrieval_filter(filter: &Filter) -> Result<RetrievalFilter, Error> {
    let mut each = filter
        .0
        .iter()
        .map(|(key, value)| {
            let attribute = |value| {
                FilterAttribute::builder()
                    .key(key)
                    .value(value)
                    .build()
                    .map_err(|e| Error::Internal(format!("a retrieval filter: {e}")))
            };
            Ok(match value {
                FilterValue::One(v) => RetrievalFilter::Equals(attribute(document(v))?),
                FilterValue::Any(list) => RetrievalFilter::In(attribute(Document::Array(
                    list.iter().map(document).collect(),
                ))?),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(if each.len() == 1 {
        each.remove(0)
    } else {
        RetrievalFilter::AndAll(each)
    })
}

/// A filter's scalar value (checked already: a string, number or boolean).
fn document(value: &serde_json::Value) -> Document {
    match value {
        serde_json::Value::Bool(b) => Document::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Document::Number(Number::PosInt(u)),
            (None, Some(i)) => Document::Number(Number::NegInt(i)),
            _ => Document::Number(Number::Float(n.as_f64().unwrap_or_default())),
        },
        serde_json::Value::String(s) => Document::String(s.clone()),
        _ => Document::Null,
    }
}

/// A failed `Retrieve` on the error table: throttling and server trouble are retryable
/// (`upstream_throttled`, `upstream_unavailable`), a missing knowledge base is `not_found`, a
/// refused request `invalid_request`, a broken dependency or missing permission `upstream_error`.
fn retrieve_error(name: &str, err: SdkError<RetrieveError>) -> Error {
    let service = match &err {
        SdkError::TimeoutError(_) => {
            return Error::UpstreamTimeout(format!("knowledge base {name} did not answer in time"));
        }
        SdkError::DispatchFailure(_) => {
            return Error::UpstreamUnavailable(format!(
                "could not reach Bedrock Knowledge Bases for {name}"
            ));
        }
        SdkError::ServiceError(service) => service.err(),
        _ => {
            return Error::UpstreamError {
                message: format!("retrieving from knowledge base {name}: {err}"),
                retryable: false,
            };
        }
    };
    let message = service.message().unwrap_or_default();
    let said = |what: &str| format!("knowledge base {name}: {what}: {message}");
    match service.code().unwrap_or_default() {
        "ThrottlingException" | "ServiceQuotaExceededException" => Error::UpstreamThrottled {
            message: said("throttled"),
            retry_after: None,
        },
        "InternalServerException" | "BadGatewayException" => {
            Error::UpstreamUnavailable(said("Bedrock failed"))
        }
        "ResourceNotFoundException" => {
            tracing::error!(knowledge_base = %name, "Bedrock has no such knowledge base: check [knowledge.bedrock]");
            not_found(name)
        }
        "ValidationException" => Error::InvalidRequest(said("Bedrock refused the retrieval")),
        "DependencyFailedException" => Error::UpstreamError {
            message: said("a dependency of the knowledge base failed"),
            retryable: false,
        },
        "AccessDeniedException" => Error::UpstreamError {
            message: said("access denied (check the bedrock:Retrieve permission)"),
            retryable: false,
        },
        other => Error::UpstreamError {
            message: said(other),
            retryable: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_at_start_up() {
        let base = |name: &str, id: &str, tenants: &[&str]| BedrockBase {
            name: name.into(),
            id: id.into(),
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            search_type: None,
        };
        let ok = BedrockKnowledgeSettings {
            bases: vec![base("handbook", "KB12345678", &["*"])],
            ..Default::default()
        };
        ok.check().unwrap();
        for bad in [
            base("../x", "KB1", &["*"]),
            base("h", "KB-1", &["*"]),
            base("h", "KB1", &[]),
        ] {
            let settings = BedrockKnowledgeSettings {
                bases: vec![bad.clone()],
                ..Default::default()
            };
            assert!(settings.check().is_err(), "{bad:?}");
        }
        let twice = BedrockKnowledgeSettings {
            bases: vec![base("h", "KB1", &["*"]), base("h", "KB2", &["*"])],
            ..Default::default()
        };
        assert!(twice.check().unwrap_err().contains("twice"));
    }

    #[test]
    fn one_attribute_is_one_condition_and_more_are_all_of_them() {
        let filter: Filter = serde_json::from_str(r#"{"year":2026}"#).unwrap();
        assert!(matches!(
            retrieval_filter(&filter).unwrap(),
            RetrievalFilter::Equals(_)
        ));
        let filter: Filter = serde_json::from_str(r#"{"year":2026,"team":["a","b"]}"#).unwrap();
        match retrieval_filter(&filter).unwrap() {
            RetrievalFilter::AndAll(all) => {
                assert_eq!(all.len(), 2);
                assert!(all.iter().any(|f| matches!(f, RetrievalFilter::In(_))));
            }
            other => panic!("{other:?}"),
        }
    }
}
