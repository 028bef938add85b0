//! The cache key: SHA-256 over a canonical encoding of everything that shapes the answer: the
//! scope (tenant, or `global`), the model id after routing, the system prompt, every message
//! (history included) with its role, and every inference parameter. The encoding is binary and
//! length-prefixed, so JSON field order and formatting cannot change it, and no two different
//! requests can encode alike. Stop sequences are a set: their order does not matter.
//!
//! A message of one text block, and a request with no tools or other options, encode exactly as
//! they did before those existed, so text-only entries keep their keys. Anything else is the
//! gateway's canonical JSON (object keys sorted), under tags of its own.

use std::fmt;

use sha2::{Digest, Sha256};

/// Bumped whenever the encoding changes, so old entries can never be read as new ones.
const VERSION: &[u8] = b"nagare-cache-key-v1";

/// A cache key: 32 bytes, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// What the key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// The tenant (or `sub`), or `global` for answers shared by everyone.
    pub scope: &'a str,
    pub model_id: &'a str,
    pub system: Option<&'a str>,
    /// `(role, content)` in order, the new message last.
    pub messages: &'a [(&'a str, KeyContent<'a>)],
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: &'a [String],
    /// Everything else that shapes the answer (tools and their order, tool choice, reasoning,
    /// response format, guardrail), as canonical JSON; `None` when there is none of it.
    pub options: Option<&'a str>,
}

/// A message's content in the key.
#[derive(Debug, Clone, Copy)]
pub enum KeyContent<'a> {
    /// One text block.
    Text(&'a str),
    /// Any other blocks, as canonical JSON.
    Blocks(&'a str),
}

struct Encoder(Sha256);

impl Encoder {
    fn bytes(&mut self, tag: u8, b: &[u8]) {
        self.0.update([tag]);
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }

    fn opt_str(&mut self, tag: u8, s: Option<&str>) {
        match s {
            Some(s) => self.bytes(tag, s.as_bytes()),
            None => self.0.update([tag | 0x80]),
        }
    }

    fn opt_num(&mut self, tag: u8, n: Option<u64>) {
        match n {
            Some(n) => self.bytes(tag, &n.to_le_bytes()),
            None => self.0.update([tag | 0x80]),
        }
    }
}

/// `-0.0` and `0.0` sample alike.
fn float_bits(f: f32) -> u64 {
    u64::from(if f == 0.0 { 0.0f32 } else { f }.to_bits())
}

/// The key of `input`.
pub fn key(input: &KeyInput<'_>) -> CacheKey {
    let mut e = Encoder(Sha256::new());
    e.bytes(0, VERSION);
    e.bytes(1, input.scope.as_bytes());
    e.bytes(2, input.model_id.as_bytes());
    e.opt_str(3, input.system);
    e.bytes(4, &(input.messages.len() as u64).to_le_bytes());
    for (role, content) in input.messages {
        e.bytes(5, role.as_bytes());
        match content {
            KeyContent::Text(text) => e.bytes(6, text.as_bytes()),
            KeyContent::Blocks(json) => e.bytes(12, json.as_bytes()),
        }
    }
    e.opt_num(7, input.max_tokens.map(u64::from));
    e.opt_num(8, input.temperature.map(float_bits));
    e.opt_num(9, input.top_p.map(float_bits));
    let mut stop: Vec<&str> = input.stop.iter().map(String::as_str).collect();
    stop.sort_unstable();
    stop.dedup();
    e.bytes(10, &(stop.len() as u64).to_le_bytes());
    for s in stop {
        e.bytes(11, s.as_bytes());
    }
    if let Some(options) = input.options {
        e.bytes(13, options.as_bytes());
    }
    CacheKey(e.0.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    use KeyContent::{Blocks, Text};

    fn base<'a>(messages: &'a [(&'a str, KeyContent<'a>)], stop: &'a [String]) -> KeyInput<'a> {
        KeyInput {
            scope: "acme",
            model_id: "m1",
            system: Some("be brief"),
            messages,
            max_tokens: Some(100),
            temperature: Some(0.5),
            top_p: None,
            stop,
            options: None,
        }
    }

    #[test]
    fn every_field_changes_the_key() {
        let msgs = [("user", Text("hello"))];
        let stop = vec!["END".to_owned()];
        let k = key(&base(&msgs, &stop));
        assert_eq!(k, key(&base(&msgs, &stop)), "deterministic");
        let changed = [
            KeyInput {
                scope: "other",
                ..base(&msgs, &stop)
            },
            KeyInput {
                model_id: "m2",
                ..base(&msgs, &stop)
            },
            KeyInput {
                system: None,
                ..base(&msgs, &stop)
            },
            KeyInput {
                system: Some(""),
                ..base(&msgs, &stop)
            },
            KeyInput {
                messages: &[("user", Text("hello!"))],
                ..base(&msgs, &stop)
            },
            KeyInput {
                messages: &[("assistant", Text("hello"))],
                ..base(&msgs, &stop)
            },
            KeyInput {
                max_tokens: Some(101),
                ..base(&msgs, &stop)
            },
            KeyInput {
                max_tokens: None,
                ..base(&msgs, &stop)
            },
            KeyInput {
                temperature: Some(0.6),
                ..base(&msgs, &stop)
            },
            KeyInput {
                top_p: Some(0.9),
                ..base(&msgs, &stop)
            },
            KeyInput {
                stop: &[],
                ..base(&msgs, &stop)
            },
            KeyInput {
                messages: &[("user", Blocks("hello"))],
                ..base(&msgs, &stop)
            },
            KeyInput {
                options: Some("{}"),
                ..base(&msgs, &stop)
            },
        ];
        for (i, c) in changed.iter().enumerate() {
            assert_ne!(key(c), k, "change {i} kept the key");
        }
    }

    #[test]
    fn boundaries_cannot_be_shifted_between_fields() {
        let a = [("user", Text("ab")), ("user", Text("c"))];
        let b = [("user", Text("a")), ("user", Text("bc"))];
        assert_ne!(key(&base(&a, &[])), key(&base(&b, &[])));
        // History plus a new message is not the same as one message holding both.
        let c = [
            ("user", Text("hi")),
            ("assistant", Text("yo")),
            ("user", Text("again")),
        ];
        let d = [("user", Text("hiyoagain"))];
        assert_ne!(key(&base(&c, &[])), key(&base(&d, &[])));
    }

    #[test]
    fn stop_order_and_negative_zero_do_not_matter() {
        let msgs = [("user", Text("x"))];
        let ab = vec!["a".to_owned(), "b".to_owned()];
        let ba = vec!["b".to_owned(), "a".to_owned(), "a".to_owned()];
        assert_eq!(key(&base(&msgs, &ab)), key(&base(&msgs, &ba)));
        let zero = KeyInput {
            temperature: Some(0.0),
            ..base(&msgs, &ab)
        };
        let neg = KeyInput {
            temperature: Some(-0.0),
            ..base(&msgs, &ab)
        };
        assert_eq!(key(&zero), key(&neg));
        assert_eq!(key(&zero).to_string().len(), 64);
    }

    #[test]
    fn text_only_keys_are_what_they_were() {
        // The key of this request before blocks and options existed: entries already in a
        // shared tier stay reachable.
        let msgs = [("user", Text("hello"))];
        let k = key(&base(&msgs, &[]));
        assert_eq!(
            k.to_string(),
            "038661a3a9bd19ab2e035a89150a5f170ffc62b4eeaba64799e16c4345726037"
        );
    }
}
