//! The messages of a conversation, as history keeps them and models receive them.

use serde::{Deserialize, Deserializer, Serialize};

use crate::chat::content::{Block, joined_text};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation sent to the model: `{"role","content"}`, where `content` is a
/// list of blocks or, as a shorthand, a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: Role,
    #[serde(deserialize_with = "blocks_or_text")]
    pub content: Vec<Block>,
}

impl Message {
    /// A message of one text block.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![Block::text(text)],
        }
    }

    /// Its text blocks, joined.
    pub fn joined_text(&self) -> String {
        joined_text(&self.content)
    }
}

/// A string, or a list of blocks.
pub fn blocks_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Block>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Vec<Block>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a list of content blocks")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![Block::text(v)])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(block) = seq.next_element()? {
                out.push(block);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visit)
}
