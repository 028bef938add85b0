//! How an answer is kept in the response cache. A text-only answer stays in the compact form
//! the cache always had (its text and where the deltas broke), so text-only entries written
//! before tools existed still replay; an answer with any other block keeps every part, in order,
//! so a hit replays tool calls and reasoning exactly as the model streamed them.

use nagare_cache::CachedResponse;

use crate::chat::{Part, Usage};

/// An answer being collected for the cache.
pub struct Kept {
    response: CachedResponse,
    /// Every part, once the answer is more than text in block 0.
    parts: Option<Vec<Part>>,
}

impl Kept {
    pub fn new(model: &str, now_ms: u64) -> Self {
        Self {
            response: CachedResponse {
                model: model.to_owned(),
                text: String::new(),
                breaks: Vec::new(),
                parts: String::new(),
                stop_reason: String::new(),
                input_tokens: 0,
                output_tokens: 0,
                created_at_ms: now_ms,
            },
            parts: None,
        }
    }

    pub fn push(&mut self, part: &Part) {
        if let Some(parts) = &mut self.parts {
            parts.push(part.clone());
            return;
        }
        if let Part::Text { index: 0, text } = part {
            self.response.push_delta(text);
            return;
        }
        // The first part that is not plain text: what came before becomes parts too.
        let mut parts: Vec<Part> = text_parts(&self.response).collect();
        parts.push(part.clone());
        self.response.text.clear();
        self.response.breaks.clear();
        self.parts = Some(parts);
    }

    /// The entry to store.
    pub fn finish(mut self, stop_reason: String, usage: Usage) -> CachedResponse {
        if let Some(parts) = &self.parts {
            // Serializing plain data cannot fail; an empty string would replay as no answer,
            // so an entry is only written when it did not.
            self.response.parts = serde_json::to_string(parts).unwrap_or_default();
        }
        self.response.stop_reason = stop_reason;
        self.response.input_tokens = usage.input_tokens;
        self.response.output_tokens = usage.output_tokens;
        self.response
    }
}

fn text_parts(response: &CachedResponse) -> impl Iterator<Item = Part> + '_ {
    response.deltas().map(|text| Part::Text {
        index: 0,
        text: text.to_owned(),
    })
}

/// The parts of a stored answer; `None` when a shared tier returned parts that do not decode,
/// which is then treated as a miss.
pub fn parts_of(response: &CachedResponse) -> Option<Vec<Part>> {
    if response.parts.is_empty() {
        return Some(text_parts(response).collect());
    }
    match serde_json::from_str(&response.parts) {
        Ok(parts) => Some(parts),
        Err(e) => {
            tracing::warn!(error = %e, "a cached answer's parts do not decode; treated as a miss");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(index: u32, t: &str) -> Part {
        Part::Text {
            index,
            text: t.into(),
        }
    }

    #[test]
    fn text_only_answers_keep_the_compact_form() {
        let mut kept = Kept::new("m", 1);
        for t in ["Hel", "lo"] {
            kept.push(&text(0, t));
        }
        let stored = kept.finish("end_turn".into(), Usage::new(1, 2));
        assert!(stored.parts.is_empty());
        assert_eq!(stored.text, "Hello");
        assert_eq!(parts_of(&stored).unwrap(), [text(0, "Hel"), text(0, "lo")]);
    }

    #[test]
    fn other_answers_keep_every_part_in_order() {
        let call = Part::ToolCall {
            index: 1,
            id: "t".into(),
            name: "n".into(),
            input: json!({"a":1}),
        };
        let parts = vec![
            text(0, "Let "),
            text(0, "me"),
            Part::ToolStart {
                index: 1,
                id: "t".into(),
                name: "n".into(),
            },
            Part::ToolInput {
                index: 1,
                json: "{\"a\":1}".into(),
            },
            call,
        ];
        let mut kept = Kept::new("m", 1);
        parts.iter().for_each(|p| kept.push(p));
        let stored = kept.finish("tool_use".into(), Usage::new(1, 2));
        assert!(stored.text.is_empty());
        assert_eq!(parts_of(&stored).unwrap(), parts);
        let corrupt = CachedResponse {
            parts: "{".into(),
            ..stored
        };
        assert_eq!(parts_of(&corrupt), None);
    }
}
