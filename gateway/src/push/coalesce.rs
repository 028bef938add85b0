//! Coalescing one chat's deltas into fewer pushes. The first delta goes out at once (time to
//! first token is what users feel); after that, deltas wait at most `interval` and are merged
//! into one `delta` frame. Every frame stays under [`MAX_POST_BYTES`].

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

/// Turns one chat's events into the frames to post, in order.
#[derive(Debug)]
pub struct Coalescer {
    interval: Duration,
    /// Escaped-text budget of one delta frame: the post limit less the frame's JSON overhead.
    text_budget: usize,
    request_id: Option<Arc<str>>,
    pending: String,
    pending_escaped: usize,
    /// When the first pending delta arrived.
    pending_since: Option<Instant>,
    first_delta_sent: bool,
}

impl Coalescer {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            text_budget: 0,
            request_id: None,
            pending: String::new(),
            pending_escaped: 0,
            pending_since: None,
            first_delta_sent: false,
        }
    }

    /// The frames to post now for `event`, in order (possibly none).
    pub fn push(&mut self, event: &ChatEvent, now: Instant) -> Vec<String> {
        let ChatEvent::Delta { request_id, text } = event else {
            // start, done, error: flush what is pending first, so order is kept.
            let mut frames = self.flush();
            frames.push(serde_json::to_string(event).unwrap_or_default());
            return frames;
        };
        if self.request_id.is_none() {
            let empty = ChatEvent::Delta {
                request_id: request_id.clone(),
                text: String::new(),
            };
            let overhead = serde_json::to_string(&empty).map_or(0, |s| s.len());
            self.text_budget = MAX_POST_BYTES.saturating_sub(overhead).max(64);
            self.request_id = Some(request_id.clone());
        }
        let mut frames = Vec::new();
        for c in text.chars() {
            let len = escaped_len(c);
            if self.pending_escaped + len > self.text_budget {
                frames.extend(self.flush());
            }
            self.pending.push(c);
            self.pending_escaped += len;
        }
        self.pending_since.get_or_insert(now);
        if !self.first_delta_sent {
            self.first_delta_sent = true;
            frames.extend(self.flush());
        }
        frames
    }

    /// When the pending text must be posted, if any is pending.
    pub fn due(&self) -> Option<Instant> {
        self.pending_since.map(|since| since + self.interval)
    }

    /// Posts what is pending as one `delta` frame.
    pub fn flush(&mut self) -> Vec<String> {
        self.pending_since = None;
        if self.pending.is_empty() {
            return Vec::new();
        }
        let Some(request_id) = self.request_id.clone() else {
            return Vec::new();
        };
        self.pending_escaped = 0;
        let frame = ChatEvent::Delta {
            request_id,
            text: std::mem::take(&mut self.pending),
        };
        vec![serde_json::to_string(&frame).unwrap_or_default()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Usage;

    fn delta(text: &str) -> ChatEvent {
        ChatEvent::Delta {
            request_id: "r1".into(),
            text: text.into(),
        }
    }

    fn texts(frames: &[String]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f).unwrap();
                v["text"]
                    .as_str()
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
}
