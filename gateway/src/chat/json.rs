//! Typed JSON parsing with errors that name the offending field, shared by every transport that
//! reads JSON (REST bodies, WebSocket frames, task bodies).

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde_json::error::Category;

use crate::error::Error;

/// Deserializes one JSON document (nothing but whitespace may follow it) with
/// serde_path_to_error, so the message says which field is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    parse_json_hiding(body, &[])
}

/// [`parse_json`] of an object whose top-level keys named in `hidden` belong to someone else
/// (a frame's `action`, a task's `callback_url`): `T` never sees them, so a `T` that denies
/// unknown fields still names any other stray field. Unlike `#[serde(flatten)]` or an internally
/// tagged enum, nothing is buffered, so errors keep their field paths.
pub fn parse_json_hiding<T: DeserializeOwned>(
    body: &[u8],
    hidden: &'static [&'static str],
) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(Hiding {
        inner: &mut de,
        hidden,
    })
    .map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let syntax = matches!(
            inner.classify(),
            Category::Syntax | Category::Eof | Category::Io
        );
        if syntax || matches!(path.as_str(), "." | "?" | "") {
            Error::InvalidRequest(format!("invalid JSON body: {inner}"))
        } else {
            Error::InvalidRequest(format!("{path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| Error::InvalidRequest(format!("invalid JSON body: {e}")))?;
    Ok(parsed)
}

/// A deserializer whose top-level object skips the `hidden` keys.
struct Hiding<D> {
    inner: D,
    hidden: &'static [&'static str],
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Hiding<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let hidden = self.hidden;
        self.inner
            .deserialize_any(HidingVisitor { visitor, hidden })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let hidden = self.hidden;
        self.inner
            .deserialize_struct(name, fields, HidingVisitor { visitor, hidden })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let hidden = self.hidden;
        self.inner
            .deserialize_map(HidingVisitor { visitor, hidden })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
        ignored_any
    }
}

struct HidingVisitor<V> {
    visitor: V,
    hidden: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for HidingVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(HidingMap {
            map,
            hidden: self.hidden,
        })
    }

    // Anything but an object is handed on as it is, for the visitor to refuse by name.
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.visitor.visit_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.visitor.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.visitor.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.visitor.visit_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.visitor.visit_str(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(seq)
    }
}

struct HidingMap<A> {
    map: A,
    hidden: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for HidingMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key::<std::borrow::Cow<'de, str>>()? else {
                return Ok(None);
            };
            if self.hidden.contains(&key.as_ref()) {
                self.map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let key: de::value::CowStrDeserializer<'de, A::Error> = key.into_deserializer();
            return seed.deserialize(key).map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        message: String,
        #[serde(default)]
        inner: Option<Inner>,
    }

    fn message_of<T: DeserializeOwned + std::fmt::Debug>(
        body: &str,
        hidden: &'static [&'static str],
    ) -> String {
        match parse_json_hiding::<T>(body.as_bytes(), hidden) {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn hidden_keys_are_skipped_at_the_top_level_only() {
        let body: Body = parse_json_hiding(
            br#"{"action":"chat","message":"hi","inner":{"n":1}}"#,
            &["action"],
        )
        .unwrap();
        assert_eq!(body.message, "hi");
        assert_eq!(body.inner, Some(Inner { n: 1 }));
        let m = message_of::<Body>(
            r#"{"message":"hi","inner":{"n":1,"action":1}}"#,
            &["action"],
        );
        assert!(m.contains("inner") && m.contains("action"), "{m}");
    }

    #[test]
    fn errors_keep_their_field_paths() {
        let m = message_of::<Body>(
            r#"{"action":"x","message":"hi","inner":{"n":-1}}"#,
            &["action"],
        );
        assert!(m.starts_with("inner.n:"), "{m}");
        let m = message_of::<Body>(r#"{"message":"hi","stray":1}"#, &["action"]);
        assert!(m.contains("stray"), "{m}");
        let m = message_of::<Body>(r#"{"action":"x"}"#, &["action"]);
        assert!(m.contains("message"), "{m}");
    }

    #[test]
    fn trailing_data_and_non_objects_are_refused() {
        let m = message_of::<Body>(r#"{"message":"hi"} {"message":"again"}"#, &[]);
        assert!(m.contains("invalid JSON"), "{m}");
        assert!(parse_json::<Body>(b"{\"message\":\"hi\"}\n ").is_ok());
        for body in ["[1]", "7", "null", "\"x\""] {
            let m = message_of::<Body>(body, &["action"]);
            assert!(m.contains("invalid"), "{body}: {m}");
        }
    }
}
