//! The fake Bedrock's `InvokeModel` for Amazon Titan Text Embeddings v2, in its request and
//! response shapes: `{"inputText","dimensions","normalize"}` in, `{"embedding",
//! "inputTextTokenCount","embeddingsByType"}` out. Vectors are deterministic (each word hashed to
//! a slot), so the same text always gets the same vector; Titan's rules give a
//! `ValidationException` (an empty text, a length other than 256, 512 or 1,024, another model).

use serde_json::{Value, json};

/// The answer to an `InvokeModel` of `model` with `request`, or the error type Bedrock returns.
pub fn answer(model: &str, request: &Value) -> Result<Value, &'static str> {
    if !model.contains("titan-embed-text-v2") {
        return Err("ValidationException");
    }
    let text = request["inputText"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        return Err("ValidationException");
    }
    let dimensions = match request.get("dimensions").map(Value::as_u64) {
        None => 1024,
        Some(Some(n @ (256 | 512 | 1024))) => n as usize,
        Some(_) => return Err("ValidationException"),
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut vector = vec![0f64; dimensions];
    for word in &words {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        vector[(hash % dimensions as u64) as usize] += 1.0;
    }
    if request["normalize"].as_bool().unwrap_or(true) {
        let norm = vector
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(json!({
        "embedding": vector,
        "inputTextTokenCount": words.len(),
        "embeddingsByType": {"float": vector},
    }))
}
