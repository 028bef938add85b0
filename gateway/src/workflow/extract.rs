//! `nagare-extract-text`: the document pipeline's first step. It reads a document from S3 and
//! returns the text a model should read: plain text and Markdown as they are, HTML without its
//! markup. Anything else (PDF, images, text that is not UTF-8) is refused with
//! `UnsupportedDocument` rather than fed to a model as noise.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use super::{StepError, WorkflowSettings, html};

/// The state machine's input: where the document is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentRef {
    pub bucket: String,
    pub key: String,
}

/// The step's output; `extractedText` is what the next state's prompt reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extracted {
    pub extracted_text: String,
    pub content_type: String,
    /// Characters in `extracted_text`.
    pub chars: usize,
    /// True when the text was cut to `workflow.max_text_chars`.
    pub truncated: bool,
}

/// Reads documents from S3.
pub struct Extractor {
    s3: Client,
    settings: WorkflowSettings,
}

impl Extractor {
    pub fn new(s3: Client, settings: WorkflowSettings) -> Self {
        Self { s3, settings }
    }

    pub async fn handle(&self, event: serde_json::Value) -> Result<Extracted, StepError> {
        let doc: DocumentRef = serde_json::from_value(event).map_err(|e| {
            StepError::InvalidInput(format!("expected {{\"bucket\", \"key\"}}: {e}"))
        })?;
        if doc.bucket.is_empty() || doc.key.is_empty() {
            return Err(StepError::InvalidInput(
                "bucket and key must be non-empty".into(),
            ));
        }
        let object = self
            .s3
            .get_object()
            .bucket(&doc.bucket)
            .key(&doc.key)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("NoSuchKey" | "NoSuchBucket" | "NotFound") => StepError::DocumentNotFound {
                    bucket: doc.bucket.clone(),
                    key: doc.key.clone(),
                },
                _ => StepError::StorageUnavailable(
                    aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                ),
            })?;
        let limit = self.settings.max_document_bytes;
        let size = object.content_length().map_or(0, |n| n.max(0) as u64);
        if size > limit {
            return Err(StepError::DocumentTooLarge { size, limit });
        }
        let content_type = object.content_type().unwrap_or_default().to_owned();
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| StepError::StorageUnavailable(e.to_string()))?
            .into_bytes();
        let text = text_of(&bytes, &content_type, &doc.key)?;
        let (extracted_text, truncated) = cut(text, self.settings.max_text_chars);
        Ok(Extracted {
            chars: extracted_text.chars().count(),
            extracted_text,
            content_type,
            truncated,
        })
    }
}

/// The text of a document, by its content type, or its name's extension when S3 only knows
/// `application/octet-stream`.
pub(crate) fn text_of(bytes: &[u8], content_type: &str, key: &str) -> Result<String, StepError> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let extension = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let is_pdf = media == "application/pdf" || extension.as_deref() == Some("pdf");
    if is_pdf {
        return super::pdf::text(bytes).map_err(StepError::UnsupportedDocument);
    }
    let is_html = media == "text/html"
        || media == "application/xhtml+xml"
        || matches!(extension.as_deref(), Some("html" | "htm"));
    let is_text = media.starts_with("text/")
        || matches!(media.as_str(), "application/json" | "application/xml")
        || matches!(
            extension.as_deref(),
            Some("txt" | "md" | "markdown" | "csv" | "json" | "xml" | "log")
        );
    if !is_html && !is_text {
        return Err(StepError::UnsupportedDocument(format!(
            "'{content_type}' is not a text document; text, Markdown, HTML and PDF are read"
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        StepError::UnsupportedDocument(format!("the document is not UTF-8 text: {e}"))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok(if is_html {
        html::to_text(text)
    } else {
        html::tidy(text)
    })
}

/// At most `max` characters, cut at a character boundary.
fn cut(text: String, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (text[..at].to_owned(), true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_type_or_the_extension_picks_the_reader() {
        let html = b"<p>Hi &amp; bye</p>";
        assert_eq!(
            text_of(html, "text/html; charset=utf-8", "a").unwrap(),
            "Hi & bye"
        );
        assert_eq!(
            text_of(html, "application/octet-stream", "page.HTML").unwrap(),
            "Hi & bye"
        );
        assert_eq!(
            text_of(b"# Title\n\n\n\nbody  text", "", "notes.md").unwrap(),
            "# Title\n\nbody text"
        );
        let refused = text_of(b"%PDF-1.7", "application/pdf", "report.pdf").unwrap_err();
        assert_eq!(refused.name(), "UnsupportedDocument");
        let not_utf8 = text_of(&[0xff, 0xfe, 0x00], "text/plain", "a.txt").unwrap_err();
        assert_eq!(not_utf8.name(), "UnsupportedDocument");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(cut("日本語です".into(), 3), ("日本語".into(), true));
        assert_eq!(cut("short".into(), 10), ("short".into(), false));
    }
}
