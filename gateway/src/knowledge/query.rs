//! A question as an SQLite FTS5 query. The question is split into words and each word becomes a
//! quoted string, joined by `OR` and ranked by BM25, so nothing a user types (`"`, `NEAR(`, `*`,
//! `-`, `AND`, `col:`) is ever read as FTS5 syntax.

/// The most words of a question that are searched for.
const MAX_TERMS: usize = 32;

/// Words too common to help rank a passage.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "i", "in",
    "is", "it", "of", "on", "or", "the", "this", "to", "was", "what", "when", "where", "which",
    "who", "why", "with", "you",
];

/// The FTS5 query for `question`, or `None` when it has no word worth searching for.
pub fn fts_query(question: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        if STOPWORDS.contains(&word.as_str()) || terms.contains(&word) {
            continue;
        }
        terms.push(word);
        if terms.len() == MAX_TERMS {
            break;
        }
    }
    if terms.is_empty() {
        return None;
    }
    // Words hold no `"` (they are alphanumeric), so quoting cannot be escaped.
    let quoted: Vec<String> = terms.iter().map(|t| format!("\"{t}\"")).collect();
    Some(quoted.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_a_quoted_string_and_syntax_stays_text() {
        assert_eq!(
            fts_query("How do I deploy Nagare on AWS?").unwrap(),
            r#""deploy" OR "nagare" OR "aws""#
        );
        for hostile in [
            r#"foo" OR "bar"#,
            "NEAR(a b)",
            "pre*",
            "-excluded",
            "title:x AND y",
            "a\u{0}b",
        ] {
            let q = fts_query(hostile).unwrap();
            for term in q.split(" OR ") {
                let inner = term
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap();
                assert!(
                    inner.chars().all(char::is_alphanumeric),
                    "{hostile:?} -> {q}"
                );
            }
        }
        assert_eq!(fts_query("the of and"), None);
        assert_eq!(fts_query("?!"), None);
        assert_eq!(
            fts_query("日本語 テスト").unwrap(),
            r#""日本語" OR "テスト""#
        );
        let long = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            fts_query(&long).unwrap().matches(" OR ").count(),
            MAX_TERMS - 1
        );
    }
}
