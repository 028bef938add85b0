//! The mock model's text: a deterministic reply derived from the prompt, cut into tokens.

use std::borrow::Cow;

use crate::chat::{Block, Message, Role};
use crate::provider::ProviderRequest;

const WORDS: &[&str] = &[
    "stream", "river", "token", "gateway", "model", "answer", "quickly", "gently", "current",
    "flows", "through", "the", "a", "bright", "quiet", "signal", "carries", "every", "small",
    "piece", "of", "meaning", "toward", "its", "reader", "while", "latency", "stays", "low", "and",
    "costs", "remain", "honest", "clear", "water", "moves", "stone", "light", "path", "nagare",
    "listens", "replies", "with", "care", "steady", "rhythm", "each", "word", "arrives", "in",
    "order", "so", "nothing", "is", "lost", "along", "way", "from", "source", "sea", "patient",
    "bridge", "lantern", "morning",
];

/// Rough input token count: about four characters a token, the usual estimate for English text.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// Input tokens of a whole request: the system prompt and every message.
pub fn input_tokens(request: &ProviderRequest) -> u64 {
    request.system.as_deref().map(estimate_tokens).unwrap_or(0)
        + request
            .grounding
            .as_ref()
            .map_or(0, |g| estimate_tokens(&g.prompt()))
        + request
            .messages
            .iter()
            .map(|m| estimate_tokens(&message_text(m)))
            .sum::<u64>()
}

/// The reply as tokens (each piece one token), `words` long after the echo prefix, and at most
/// `limit` tokens: the start of the same reply, so a caller that will cut it short (`max_tokens`)
/// does not pay for making the rest.
pub fn reply_tokens(request: &ProviderRequest, words: usize, limit: usize) -> Vec<String> {
    let mut seed = fnv1a(request);
    let last = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(Message::joined_text)
        .unwrap_or_default();
    let mut tokens = Vec::with_capacity(words.saturating_add(16).min(limit));
    tokens.extend(["You".to_owned(), " said".to_owned(), ":".to_owned()]);
    let echoed = tokens.len();
    tokens.extend(last.split_whitespace().take(8).map(|w| spaced(w, false)));
    if tokens.len() == echoed {
        // An empty prompt echoes as one empty word.
        tokens.push(" ".to_owned());
    }
    tokens.push(".".to_owned());
    let mut sentence_start = true;
    for i in 0..words {
        if tokens.len() >= limit {
            break;
        }
        seed = xorshift(seed);
        let word = WORDS[(seed % WORDS.len() as u64) as usize];
        tokens.push(spaced(word, sentence_start));
        sentence_start = (seed >> 32).is_multiple_of(9) || i + 1 == words;
        if sentence_start {
            tokens.push(".".to_owned());
        }
    }
    tokens.truncate(limit);
    tokens
}

/// A word count between 16 and 47 chosen by the prompt, so replies differ but repeat exactly.
pub fn default_word_count(request: &ProviderRequest) -> usize {
    16 + (fnv1a(request) % 32) as usize
}

/// `word` after a space, its first letter capitalized if asked: one allocation a token, the
/// mock's largest cost per chat otherwise.
fn spaced(word: &str, capitalized: bool) -> String {
    let mut token = String::with_capacity(word.len() + 1);
    token.push(' ');
    let mut chars = word.chars();
    if capitalized && let Some(first) = chars.next() {
        token.extend(first.to_uppercase());
    }
    token.push_str(chars.as_str());
    token
}

fn fnv1a(request: &ProviderRequest) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
    };
    feed(request.system.as_deref().unwrap_or_default().as_bytes());
    for message in &request.messages {
        feed(message_text(message).as_bytes());
    }
    hash
}

/// A message as the mock reads it: the text of a text-only message (so its replies are what
/// they were before blocks existed), or its blocks as JSON.
pub fn message_text(message: &Message) -> Cow<'_, str> {
    match &message.content[..] {
        [Block::Text { text }] => Cow::Borrowed(text),
        blocks => Cow::Owned(serde_json::to_string(blocks).unwrap_or_default()),
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> ProviderRequest {
        ProviderRequest {
            model_id: "mock".into(),
            messages: vec![Message::text(Role::User, text)],
            ..Default::default()
        }
    }

    #[test]
    fn same_prompt_same_reply_other_prompt_other_reply() {
        let a = reply_tokens(&req("hello"), default_word_count(&req("hello")), usize::MAX);
        let b = reply_tokens(&req("hello"), default_word_count(&req("hello")), usize::MAX);
        let c = reply_tokens(
            &req("goodbye"),
            default_word_count(&req("goodbye")),
            usize::MAX,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.concat().starts_with("You said: hello."));
    }

    #[test]
    fn a_limited_reply_is_the_start_of_the_whole_one() {
        let whole = reply_tokens(&req("hello"), 1500, usize::MAX);
        for limit in [0, 2, 10, 11, 100] {
            assert_eq!(reply_tokens(&req("hello"), 1500, limit), whole[..limit]);
        }
    }

    #[test]
    fn the_reply_echoes_the_prompt_then_capitalizes_each_sentence() {
        let tokens = reply_tokens(&req("  ask   me\tanything "), 20, usize::MAX);
        assert_eq!(
            tokens[..7],
            ["You", " said", ":", " ask", " me", " anything", "."]
        );
        let first_word = &tokens[7];
        assert!(first_word.starts_with(' ') && first_word[1..2].chars().all(char::is_uppercase));
        assert_eq!(
            reply_tokens(&req(""), 0, usize::MAX),
            ["You", " said", ":", " ", "."]
        );
    }

    #[test]
    fn token_estimate_rounds_up() {
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("日本語の文"), 2);
    }
}
