//! `POST /v1/embeddings`: strings (one or a list) to vectors, as OpenAI's `list` of `embedding`
//! objects, `float` arrays or `base64` of little-endian `f32`s (what the OpenAI SDK asks for by
//! default). Token arrays are refused: the gateway cannot know which tokenizer made them.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use nagare_authorizer::Principal;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::chat::Route;
use crate::error::Error;
use crate::http::chat::{cache_control, read_body};
use crate::http::dialect::{Dialect, bad};
use crate::http::with_request_id;
use crate::pipeline::{EmbedAsk, vector_base64};

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    model: Option<String>,
    dimensions: Option<u32>,
    encoding_format: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// The texts of `input`: a string or a list of strings.
fn texts(input: Value) -> Result<Vec<String>, Error> {
    let refuse = || {
        bad(
            "input",
            "must be a string or a list of strings (token arrays are not accepted)",
        )
    };
    match input {
        Value::String(text) => Ok(vec![text]),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                _ => Err(refuse()),
            })
            .collect(),
        _ => Err(refuse()),
    }
}

/// Whether vectors go as base64 (else as float arrays).
fn base64_wanted(format: Option<&str>) -> Result<bool, Error> {
    match format {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(_) => Err(bad("encoding_format", "must be float or base64")),
    }
}

impl EmbeddingsRequest {
    fn read(self, headers: &HeaderMap) -> Result<(EmbedAsk, bool), Error> {
        if let Some((name, _)) = self
            .other
            .iter()
            .find(|(k, v)| k.as_str() != "user" && !v.is_null())
        {
            return Err(bad(name, "unknown parameter"));
        }
        let base64 = base64_wanted(self.encoding_format.as_deref())?;
        let ask = EmbedAsk {
            model: self.model,
            inputs: texts(self.input)?,
            dimensions: self.dimensions,
            cache: cache_control(headers),
        };
        Ok((ask, base64))
    }
}

fn encode(vector: &[f32], base64: bool) -> Value {
    if base64 {
        Value::String(vector_base64(vector))
    } else {
        json!(vector)
    }
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let read = read_body(&app, &headers, body).and_then(|bytes| {
        serde_json::from_slice::<EmbeddingsRequest>(&bytes)
            .map_err(|e| {
                Error::InvalidRequest(format!("the body is not an embeddings request: {e}"))
            })
            .and_then(|r| r.read(&headers))
    });
    let result = match read {
        Ok((ask, base64)) => app
            .pipeline
            .embed(&principal, Route::Embeddings, ask)
            .await
            .map(|embedded| (embedded, base64)),
        Err(e) => Err(e),
    };
    match result {
        Ok((embedded, base64)) => {
            let data: Vec<Value> = embedded
                .vectors
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": encode(v, base64)}))
                .collect();
            let body = json!({
                "object": "list",
                "data": data,
                "model": embedded.model,
                "usage": {"prompt_tokens": embedded.input_tokens, "total_tokens": embedded.input_tokens},
            });
            let mut response = Json(body).into_response();
            if let Ok(v) = embedded.cached.to_string().parse() {
                response.headers_mut().insert("nagare-cached-inputs", v);
            }
            with_request_id(response, &request_id)
        }
        Err(e) => {
            tracing::debug!(code = e.code().as_str(), error = %e, "embeddings refused");
            Dialect::OpenAi.error_response(&e.body(), &request_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;

    #[test]
    fn inputs_are_strings_and_vectors_encode_as_asked() {
        assert_eq!(texts(json!("a")).unwrap(), ["a"]);
        assert_eq!(texts(json!(["a", "b"])).unwrap(), ["a", "b"]);
        assert!(texts(json!([1, 2])).is_err());
        assert!(texts(json!([[1, 2]])).is_err());
        assert!(base64_wanted(Some("int8")).is_err());
        let encoded = encode(&[1.0, -2.5], true);
        let bytes = BASE64.decode(encoded.as_str().unwrap()).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
        assert_eq!(encode(&[0.5], false), json!([0.5]));
    }
}
