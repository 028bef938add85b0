//! The task functions of the Step Functions workflows in `deploy/statemachines/`: the document
//! pipeline's `nagare-extract-text` (a document in S3 → its text) and the parallel analysis's
//! `nagare-combine-results` (the sentiment and keyword branches → one result). The models are
//! called by Step Functions' own Bedrock integration; these functions do what a model should not.

mod combine;
mod extract;
mod html;
mod pdf;

pub(crate) use extract::text_of;

pub use combine::{Combined, Sentiment, combine};
pub use extract::{DocumentRef, Extracted, Extractor};

use lambda_runtime::Diagnostic;

/// `[workflow]` settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowSettings {
    /// Larger documents are refused (`DocumentTooLarge`) before they are read.
    pub max_document_bytes: u64,
    /// Extracted text is cut to this many characters (`truncated: true`), so the prompt fits.
    pub max_text_chars: usize,
    /// Keywords kept from the keyword branch.
    pub max_keywords: usize,
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        Self {
            max_document_bytes: 10 * 1024 * 1024,
            max_text_chars: 100_000,
            max_keywords: 20,
        }
    }
}

impl WorkflowSettings {
    /// Checks the values the task functions cannot run with; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_text_chars == 0 || self.max_document_bytes == 0 {
            return Err(
                "workflow: max_text_chars and max_document_bytes must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// Why a workflow step failed. The variant's name is the error Step Functions sees, so the state
/// machines retry or catch by it.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("no document at s3://{bucket}/{key}")]
    DocumentNotFound { bucket: String, key: String },
    #[error("the document is {size} bytes; at most {limit} are read")]
    DocumentTooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    UnsupportedDocument(String),
    /// S3 failed in a way that may pass: retried by the state machine.
    #[error("S3 failed: {0}")]
    StorageUnavailable(String),
}

impl StepError {
    /// The error name Step Functions matches in `Retry` and `Catch`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "InvalidInput",
            Self::DocumentNotFound { .. } => "DocumentNotFound",
            Self::DocumentTooLarge { .. } => "DocumentTooLarge",
            Self::UnsupportedDocument(_) => "UnsupportedDocument",
            Self::StorageUnavailable(_) => "StorageUnavailable",
        }
    }
}

impl From<StepError> for Diagnostic {
    fn from(e: StepError) -> Self {
        Diagnostic {
            error_type: e.name().to_owned(),
            error_message: e.to_string(),
        }
    }
}
