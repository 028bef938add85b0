//! What the cache keeps of an answer: its text with the original delta boundaries (so a replay
//! streams like the original), and what the model reported.

use serde::{Deserialize, Serialize};

/// One complete answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResponse {
    pub model: String,
    pub text: String,
    /// Byte offsets in `text` where the model's deltas ended (the last delta ends at `text.len()`).
    pub breaks: Vec<u32>,
    /// An answer that is more than text: every streamed part, as the gateway encodes them (JSON),
    /// in place of `text` and `breaks`. Empty for text-only answers, and in entries written
    /// before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parts: String,
    pub stop_reason: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// When the model produced it, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl CachedResponse {
    /// Roughly the bytes it holds, for the L1 size bound.
    pub fn weight(&self) -> usize {
        self.text.len()
            + self.parts.len()
            + self.model.len()
            + self.stop_reason.len()
            + self.breaks.len() * 4
            + 96
    }

    /// The original deltas, in order.
    pub fn deltas(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.breaks
            .iter()
            .map(|&b| b as usize)
            .chain(std::iter::once(self.text.len()))
            .filter_map(move |end| {
                let piece = self.text.get(start..end.max(start))?;
                start = end.max(start);
                (!piece.is_empty()).then_some(piece)
            })
    }

    /// Appends one delta while an answer is being collected.
    pub fn push_delta(&mut self, text: &str) {
        if !self.text.is_empty() {
            self.breaks.push(self.text.len() as u32);
        }
        self.text.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_come_back_as_they_went_in() {
        let mut r = CachedResponse {
            model: "m".into(),
            text: String::new(),
            breaks: Vec::new(),
            parts: String::new(),
            stop_reason: "end_turn".into(),
            input_tokens: 1,
            output_tokens: 3,
            created_at_ms: 0,
        };
        for piece in ["Hel", "lo, ", "世界"] {
            r.push_delta(piece);
        }
        assert_eq!(r.deltas().collect::<Vec<_>>(), ["Hel", "lo, ", "世界"]);
        let json = serde_json::to_string(&r).unwrap();
        let back: CachedResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // Corrupt breaks (from a shared tier) never panic.
        r.breaks = vec![100, 2, 5];
        let _ = r.deltas().count();
    }
}
