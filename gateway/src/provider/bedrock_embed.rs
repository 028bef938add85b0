//! Embeddings through Bedrock's `InvokeModel`, in the Amazon Titan Text Embeddings request and
//! response shapes (`{"inputText","dimensions","normalize"}` → `{"embedding",
//! "inputTextTokenCount"}`), and the vector lengths each Titan model takes.

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::primitives::Blob;
use serde::Deserialize;
use serde_json::json;

use crate::error::Error;
use crate::provider::bedrock_errors::{BedrockErrorCode, map_sdk_error};
use crate::provider::{EmbedRequest, Embedding};

impl BedrockErrorCode for InvokeModelError {
    fn bedrock_code(&self) -> Option<&str> {
        self.code()
    }
}

/// The vector length of an embedding of `model_id`: the one `asked`, which must be one the
/// model makes, or its default. Titan Text Embeddings v2 makes 256, 512 or 1,024 (the default);
/// v1 and G1 only 1,536. Other models (the mock's) make any length up to 4,096.
pub fn embedding_dimensions(model_id: &str, asked: Option<u32>) -> Result<u32, Error> {
    let (allowed, default): (&[u32], u32) = if model_id.contains("titan-embed-text-v2") {
        (&[256, 512, 1024], 1024)
    } else if model_id.contains("titan-embed-text-v1") || model_id.contains("titan-embed-g1") {
        (&[1536], 1536)
    } else {
        return match asked {
            Some(n @ 1..=4096) => Ok(n),
            Some(_) => Err(Error::InvalidRequest(
                "dimensions: must be between 1 and 4096".into(),
            )),
            None => Ok(1024),
        };
    };
    match asked {
        None => Ok(default),
        Some(n) if allowed.contains(&n) => Ok(n),
        Some(_) => Err(Error::InvalidRequest(format!(
            "dimensions: {model_id} makes vectors of {}",
            allowed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanOutput {
    embedding: Vec<f32>,
    input_text_token_count: u64,
}

/// Embeds one text with a Titan model.
pub async fn embed(client: &Client, request: EmbedRequest) -> Result<Embedding, Error> {
    if !request.model_id.contains("titan-embed") {
        return Err(Error::InvalidRequest(format!(
            "model: {} is not an Amazon Titan text embedding model, the only kind this gateway \
             calls on Bedrock",
            request.model_id
        )));
    }
    let mut body = json!({"inputText": request.text});
    // v1 and G1 take no settings; v2 takes a length and normalizes by default.
    if request.model_id.contains("titan-embed-text-v2") {
        let dimensions = embedding_dimensions(&request.model_id, request.dimensions)?;
        body["dimensions"] = json!(dimensions);
        body["normalize"] = json!(true);
    }
    let output = client
        .invoke_model()
        .model_id(&request.model_id)
        .content_type("application/json")
        .accept("application/json")
        .body(Blob::new(body.to_string()))
        .send()
        .await
        .map_err(map_sdk_error)?;
    let parsed: TitanOutput =
        serde_json::from_slice(output.body.as_ref()).map_err(|e| Error::UpstreamError {
            message: format!("unreadable Titan embedding: {e}"),
            retryable: false,
        })?;
    Ok(Embedding {
        vector: parsed.embedding,
        input_tokens: parsed.input_text_token_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_model_takes_its_own_lengths() {
        let v2 = "amazon.titan-embed-text-v2:0";
        assert_eq!(embedding_dimensions(v2, None).unwrap(), 1024);
        assert_eq!(embedding_dimensions(v2, Some(256)).unwrap(), 256);
        let e = embedding_dimensions(v2, Some(300)).unwrap_err().to_string();
        assert!(e.contains("256, 512, 1024"), "{e}");
        assert!(embedding_dimensions("amazon.titan-embed-text-v1", Some(256)).is_err());
        assert_eq!(embedding_dimensions("mock", Some(8)).unwrap(), 8);
        assert!(embedding_dimensions("mock", Some(0)).is_err());
        assert!(embedding_dimensions("mock", Some(5000)).is_err());
    }
}
