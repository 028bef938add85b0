//! `nagare-combine-results`: the parallel analysis's last step. The `Parallel` state hands over
//! one output per branch, `{"sentiment": "<model text>"}` and `{"keywords": "<model text>"}`;
//! this turns the models' prose into fields a program can use: a sentiment label and a clean,
//! de-duplicated keyword list.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{StepError, WorkflowSettings};

/// The combined analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Combined {
    pub sentiment: Sentiment,
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentiment {
    /// `positive`, `negative`, `neutral`, `mixed`, or `unknown` when the model named none.
    pub label: String,
    /// What the model said, for a person to read.
    pub text: String,
}

/// Labels and the words (English and Japanese) that name them.
const LABELS: [(&str, &[&str]); 4] = [
    ("mixed", &["mixed", "混在", "複合"]),
    ("positive", &["positive", "ポジティブ", "肯定"]),
    ("negative", &["negative", "ネガティブ", "否定"]),
    ("neutral", &["neutral", "ニュートラル", "中立"]),
];

/// Combines the branch outputs of the `Parallel` state.
pub fn combine(event: Value, settings: &WorkflowSettings) -> Result<Combined, StepError> {
    let branches = event.as_array().ok_or_else(|| {
        StepError::InvalidInput("expected the Parallel state's array of branch outputs".into())
    })?;
    let field = |name: &str| {
        branches
            .iter()
            .find_map(|b| b.get(name)?.as_str())
            .ok_or_else(|| StepError::InvalidInput(format!("no branch gave '{name}' as text")))
    };
    let sentiment = field("sentiment")?;
    let keywords = field("keywords")?;
    Ok(Combined {
        sentiment: Sentiment {
            label: label(sentiment).to_owned(),
            text: sentiment.trim().to_owned(),
        },
        keywords: keyword_list(keywords, settings.max_keywords),
    })
}

/// The label named earliest in the text.
fn label(text: &str) -> &'static str {
    let lower = text.to_lowercase();
    LABELS
        .iter()
        .filter_map(|(label, words)| {
            let at = words.iter().filter_map(|w| lower.find(w)).min()?;
            Some((at, *label))
        })
        .min_by_key(|(at, _)| *at)
        .map_or("unknown", |(_, label)| label)
}

/// Keywords from a model's list: one per line or separated by commas, with bullets, numbers,
/// quotes and a leading "Keywords:" dropped, duplicates (ignoring case) removed, at most `max`.
fn keyword_list(text: &str, max: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.split(['\n', ',', '、', ';', '，'])
        .map(clean)
        .filter(|k| !k.is_empty() && k.chars().count() <= 100)
        .filter(|k| seen.insert(k.to_lowercase()))
        .take(max)
        .collect()
}

fn clean(item: &str) -> String {
    let mut s = item.trim();
    for prefix in ["keywords:", "keyword:", "キーワード:", "キーワード："] {
        if s.to_lowercase().starts_with(prefix) {
            s = s[prefix.len()..].trim_start();
        }
    }
    let s = s.trim_start_matches(['-', '*', '•', '・', ' ']);
    // "1." or "2)" numbering.
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    let s = if digits > 0 && s[digits..].starts_with(['.', ')']) {
        &s[digits + 1..]
    } else {
        s
    };
    s.trim()
        .trim_matches(['"', '\'', '`', '「', '」', '.'])
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(sentiment: &str, keywords: &str) -> Combined {
        let event = json!([{"sentiment": sentiment}, {"keywords": keywords}]);
        combine(event, &WorkflowSettings::default()).unwrap()
    }

    #[test]
    fn the_label_named_first_wins_and_unknown_when_none() {
        assert_eq!(
            run("Positive. The tone is upbeat, not negative.", "a")
                .sentiment
                .label,
            "positive"
        );
        assert_eq!(
            run("This is mostly negative.", "a").sentiment.label,
            "negative"
        );
        assert_eq!(run("感情: ネガティブ", "a").sentiment.label, "negative");
        assert_eq!(
            run("Mixed: praise and complaints", "a").sentiment.label,
            "mixed"
        );
        assert_eq!(run("I cannot tell.", "a").sentiment.label, "unknown");
    }

    #[test]
    fn keyword_lists_in_any_common_shape_come_out_clean() {
        let numbered = "Keywords:\n1. Rust\n2) \"Lambda\"\n- Bedrock\n* rust\n\n• Step Functions.";
        assert_eq!(
            run("neutral", numbered).keywords,
            ["Rust", "Lambda", "Bedrock", "Step Functions"]
        );
        assert_eq!(
            run("neutral", "キーワード：生成AI、ストリーミング、生成AI").keywords,
            ["生成AI", "ストリーミング"]
        );
        let many: String = (0..50).map(|i| format!("k{i},")).collect();
        assert_eq!(run("neutral", &many).keywords.len(), 20);
    }

    #[test]
    fn input_that_is_not_the_parallel_output_is_refused() {
        let settings = WorkflowSettings::default();
        for bad in [
            json!({"sentiment": "x"}),
            json!([{"sentiment": "x"}]),
            json!([{"sentiment": 1, "keywords": "k"}]),
        ] {
            let e = combine(bad, &settings).unwrap_err();
            assert_eq!(e.name(), "InvalidInput");
        }
    }
}
