//! The mock's embeddings: deterministic vectors that behave like real ones where tests look. A
//! text's words and their character trigrams are hashed into the vector's slots (with a sign,
//! so unrelated features cancel out rather than pile up), then the vector is scaled to length 1.
//! The same text always gives the same vector, and texts that share words are closer (by
//! cosine) than texts that share none.

use crate::provider::mock_text::estimate_tokens;
use crate::provider::{EmbedRequest, Embedding};

/// The vector of `request.text`, `dimensions` long (1,024 by default).
pub fn embed(request: &EmbedRequest) -> Embedding {
    let dimensions = request.dimensions.unwrap_or(1024).max(1) as usize;
    let mut vector = vec![0f32; dimensions];
    let lower = request.text.to_lowercase();
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        add(&mut vector, word.as_bytes(), 2.0);
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for gram in padded.windows(3) {
            add(&mut vector, gram.iter().collect::<String>().as_bytes(), 1.0);
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    Embedding {
        vector,
        input_tokens: estimate_tokens(&request.text),
    }
}

/// Adds `weight` to the slot `feature` hashes to, with the sign of the hash's top bit.
fn add(vector: &mut [f32], feature: &[u8], weight: f32) {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let hash = feature.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let slot = (hash % vector.len() as u64) as usize;
    let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
    vector[slot] += sign * weight;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(text: &str) -> Vec<f32> {
        embed(&EmbedRequest {
            model_id: "mock".into(),
            text: text.into(),
            dimensions: Some(256),
        })
        .vector
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn same_text_same_vector_and_similar_texts_closer() {
        let a = vector("How do I reset my password?");
        assert_eq!(a, vector("How do I reset my password?"));
        assert_eq!(a.len(), 256);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5, "unit length");
        let similar = vector("How can I reset a forgotten password?");
        let unrelated = vector("Volcanoes erupt molten basalt lava");
        assert!(cosine(&a, &similar) > cosine(&a, &unrelated) + 0.2);
    }
}
