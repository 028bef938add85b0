//! Coalescing one chat's fragments into fewer pushes. The first fragment goes out at once (time
//! to first token is what users feel); after that, fragments wait at most `interval` and are
//! merged into one frame. Only fragments of the same kind and block index merge: text deltas,
//! tool-input fragments, reasoning text and redacted reasoning, each split so that every frame
//! stays under [`MAX_POST_BYTES`]. A complete `tool_call` too large for one frame goes without
//! its `input`, which the client has from the fragments.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::chat::ChatEvent;

/// API Gateway WebSocket frames are at most 32 KB; every post stays below.
pub const MAX_POST_BYTES: usize = 32_000;

/// The bytes a character takes inside a JSON string, as serde_json escapes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The fragments that concatenate, by what they are part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    ToolInput,
    ReasoningText,
    Redacted,
}

impl Kind {
    /// The kind, block index and text of a fragment event; `None` for every other event.
    fn of(event: &ChatEvent) -> Option<(Self, u32, &str)> {
        match event {
            ChatEvent::Delta { index, text, .. } => Some((Self::Text, *index, text)),
            ChatEvent::ToolCallDelta { index, input, .. } => Some((Self::ToolInput, *index, input)),
            ChatEvent::Reasoning {
                index,
                text: Some(text),
                signature: None,
                redacted: None,
                ..
            } => Some((Self::ReasoningText, *index, text)),
            ChatEvent::Reasoning {
                index,
                text: None,
                signature: None,
                redacted: Some(data),
                ..
            } => Some((Self::Redacted, *index, data)),
            _ => None,
        }
    }

    fn event(self, request_id: Arc<str>, index: u32, text: String) -> ChatEvent {
        match self {
            Self::Text => ChatEvent::Delta {
                request_id,
                index,
                text,
            },
            Self::ToolInput => ChatEvent::ToolCallDelta {
                request_id,
                index,
                input: text,
            },
            Self::ReasoningText => ChatEvent::Reasoning {
                request_id,
                index,
                text: Some(text),
                signature: None,
                redacted: None,
            },
            Self::Redacted => ChatEvent::Reasoning {
                request_id,
                index,
                text: None,
                signature: None,
                redacted: Some(text),
            },
        }
    }
}

/// Turns one chat's events into the frames to post, in order.
#[derive(Debug)]
pub struct Coalescer {
    interval: Duration,
    /// What is pending: its kind and block index, the request, and the escaped-text budget of
    /// one frame (the post limit less the frame's JSON overhead).
    pending_of: Option<(Kind, u32, Arc<str>, usize)>,
    pending: String,
    pending_escaped: usize,
    /// When the first pending fragment arrived.
    pending_since: Option<Instant>,
    first_sent: bool,
}

impl Coalescer {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            pending_of: None,
            pending: String::new(),
            pending_escaped: 0,
            pending_since: None,
            first_sent: false,
        }
    }

    /// The frames to post now for `event`, in order (possibly none).
    pub fn push(&mut self, event: &ChatEvent, now: Instant) -> Vec<String> {
        let Some((kind, index, text)) = Kind::of(event) else {
            // Anything else: flush what is pending first, so order is kept.
            let mut frames = self.flush();
            frames.push(whole(event));
            return frames;
        };
        let mut frames = Vec::new();
        if !matches!(&self.pending_of, Some((k, i, ..)) if *k == kind && *i == index) {
            frames.extend(self.flush());
            let request_id: Arc<str> = Arc::from(event.request_id());
            let empty = kind.event(request_id.clone(), index, String::new());
            let overhead = serde_json::to_string(&empty).map_or(0, |s| s.len());
            let budget = MAX_POST_BYTES.saturating_sub(overhead).max(64);
            self.pending_of = Some((kind, index, request_id, budget));
        }
        let budget = self.pending_of.as_ref().map_or(64, |p| p.3);
        for c in text.chars() {
            let len = escaped_len(c);
            if self.pending_escaped + len > budget {
                frames.extend(self.take());
            }
            self.pending.push(c);
            self.pending_escaped += len;
        }
        self.pending_since.get_or_insert(now);
        if !self.first_sent {
            self.first_sent = true;
            frames.extend(self.flush());
        }
        frames
    }

    /// When the pending text must be posted, if any is pending.
    pub fn due(&self) -> Option<Instant> {
        self.pending_since.map(|since| since + self.interval)
    }

    /// Posts what is pending as one frame.
    pub fn flush(&mut self) -> Vec<String> {
        self.pending_since = None;
        self.take()
    }

    fn take(&mut self) -> Vec<String> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let Some((kind, index, request_id, _)) = &self.pending_of else {
            return Vec::new();
        };
        self.pending_escaped = 0;
        let frame = kind.event(
            request_id.clone(),
            *index,
            std::mem::take(&mut self.pending),
        );
        vec![serde_json::to_string(&frame).unwrap_or_default()]
    }
}

/// An event that is not a fragment, as one frame; a tool call too large for a frame loses its
/// input, which its `tool_call_delta` fragments carried.
fn whole(event: &ChatEvent) -> String {
    let frame = serde_json::to_string(event).unwrap_or_default();
    if frame.len() <= MAX_POST_BYTES {
        return frame;
    }
    match event {
        ChatEvent::ToolCall {
            request_id,
            index,
            id,
            name,
            ..
        } => serde_json::json!({
            "type": "tool_call",
            "request_id": &**request_id,
            "index": index,
            "id": id,
            "name": name,
            "input_in_deltas": true,
        })
        .to_string(),
        _ => frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Usage;

    fn delta(text: &str) -> ChatEvent {
        ChatEvent::Delta {
            request_id: "r1".into(),
            index: 0,
            text: text.into(),
        }
    }

    fn tool_input(index: u32, input: &str) -> ChatEvent {
        ChatEvent::ToolCallDelta {
            request_id: "r1".into(),
            index,
            input: input.into(),
        }
    }

    fn texts(frames: &[String]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f).unwrap();
                v["text"]
                    .as_str()
                    .or(v["input"].as_str())
                    .unwrap_or(v["type"].as_str().unwrap())
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn first_delta_at_once_then_merged_until_due() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(50));
        assert_eq!(texts(&c.push(&delta("Hel"), t0)), ["Hel"]);
        assert_eq!(c.due(), None);
        assert!(
            c.push(&delta("lo"), t0 + Duration::from_millis(5))
                .is_empty()
        );
        assert!(
            c.push(&delta(", "), t0 + Duration::from_millis(9))
                .is_empty()
        );
        assert_eq!(c.due(), Some(t0 + Duration::from_millis(55)));
        assert_eq!(texts(&c.flush()), ["lo, "]);
        assert_eq!(c.due(), None);
        assert!(c.flush().is_empty());
    }

    #[test]
    fn terminal_events_flush_pending_text_first() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(50));
        c.push(&delta("a"), t0);
        c.push(&delta("b"), t0);
        let done = ChatEvent::Done {
            request_id: "r1".into(),
            stop_reason: "end_turn".into(),
            usage: Usage::default(),
            latency_ms: 1,
            cached: false,
            billed_usage: None,
            citations: None,
            upstream_time: None,
        };
        assert_eq!(texts(&c.push(&done, t0)), ["b", "done"]);
    }

    #[test]
    fn every_frame_fits_a_post_even_with_escapes() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(60));
        c.push(&delta("x"), t0);
        // Control characters take six bytes escaped; quotes two; 'é' two; '字' three.
        let ugly: String = "\u{1}\"é字".repeat(10_000);
        let mut frames = c.push(&delta(&ugly), t0);
        frames.extend(c.flush());
        assert!(frames.len() > 3, "{}", frames.len());
        for f in &frames {
            assert!(f.len() <= MAX_POST_BYTES, "{}", f.len());
        }
        assert_eq!(texts(&frames).concat(), ugly);
    }

    #[test]
    fn fragments_merge_only_within_one_kind_and_index() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(60));
        let mut frames = c.push(&delta("Let me check."), t0);
        for e in [
            tool_input(1, "{\"ci"),
            tool_input(2, "{\"zo"),
            tool_input(1, "ty\":1}"),
            tool_input(1, ""),
        ] {
            frames.extend(c.push(&e, t0));
        }
        frames.extend(c.flush());
        assert_eq!(
            texts(&frames),
            ["Let me check.", "{\"ci", "{\"zo", "ty\":1}"],
            "interleaved indices are never merged"
        );
        let indices: Vec<u64> = frames[1..]
            .iter()
            .map(|f| {
                serde_json::from_str::<serde_json::Value>(f).unwrap()["index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(indices, [1, 2, 1]);
    }

    #[test]
    fn huge_tool_input_is_split_and_its_call_fits_a_post() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(60));
        let input = format!("{{\"doc\":\"{}\"}}", "\\\"字".repeat(20_000));
        let mut frames = c.push(&tool_input(3, &input), t0);
        let call = ChatEvent::ToolCall {
            request_id: "r1".into(),
            index: 3,
            id: "t".into(),
            name: "n".into(),
            input: serde_json::from_str(&input).unwrap(),
        };
        frames.extend(c.push(&call, t0));
        assert!(frames.iter().all(|f| f.len() <= MAX_POST_BYTES));
        let last: serde_json::Value = serde_json::from_str(frames.last().unwrap()).unwrap();
        assert_eq!(last["type"], "tool_call");
        assert_eq!(last["input_in_deltas"], true);
        let fragments = &frames[..frames.len() - 1];
        assert!(fragments.len() > 2);
        assert_eq!(texts(fragments).concat(), input);
    }
}
