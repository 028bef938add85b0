//! Documents into passages for retrieval: split at headings and paragraphs into pieces of about
//! [`TARGET_TOKENS`], each carrying the headings above it and the end of the piece before it
//! ([`OVERLAP_TOKENS`]), so a passage holds one idea with enough context to be found and read
//! alone. Text and Markdown come in as they are; HTML is turned into text first.

/// About how long a passage is, in tokens as the gateway estimates them (bytes / 3).
pub const TARGET_TOKENS: usize = 300;
/// About how much of the previous passage a passage repeats.
pub const OVERLAP_TOKENS: usize = 40;

const TARGET_BYTES: usize = TARGET_TOKENS * 3;
const OVERLAP_BYTES: usize = OVERLAP_TOKENS * 3;

/// One passage of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its place in the document, from 0.
    pub seq: u32,
    /// The headings above it, outermost first, joined with ` › `; empty before the first.
    pub heading: String,
    pub text: String,
}

/// The passages of `text` (Markdown or plain text).
pub fn chunks(text: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut current = String::new();
    let mut heading = String::new();
    let flush = |out: &mut Vec<Chunk>, current: &mut String, heading: &str| {
        let text = current.trim();
        if !text.is_empty() {
            out.push(Chunk {
                seq: out.len() as u32,
                heading: heading.to_owned(),
                text: text.to_owned(),
            });
        }
        current.clear();
    };
    for paragraph in paragraphs(text) {
        if let Some((level, title)) = markdown_heading(&paragraph) {
            flush(&mut out, &mut current, &heading);
            headings.retain(|(l, _)| *l < level);
            headings.push((level, title));
            heading = headings
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" › ");
            continue;
        }
        for piece in split_long(&paragraph) {
            if !current.is_empty() && current.len() + piece.len() + 2 > TARGET_BYTES {
                let overlap = tail(&current, OVERLAP_BYTES).to_owned();
                flush(&mut out, &mut current, &heading);
                current.push_str(&overlap);
            }
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(&piece);
        }
    }
    flush(&mut out, &mut current, &heading);
    out
}

/// Paragraphs: runs of non-blank lines; a heading line is a paragraph of its own.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed.trim().is_empty() || markdown_heading(trimmed).is_some() {
            if !current.is_empty() {
                out.push(current.join("\n"));
                current.clear();
            }
            if !trimmed.trim().is_empty() {
                out.push(trimmed.trim().to_owned());
            }
            continue;
        }
        current.push(trimmed);
    }
    if !current.is_empty() {
        out.push(current.join("\n"));
    }
    out
}

/// `## Title` → `(2, "Title")`.
fn markdown_heading(line: &str) -> Option<(usize, String)> {
    let level = line.bytes().take_while(|b| *b == b'#').count();
    let rest = line.get(level..)?;
    if !(1..=6).contains(&level) || !rest.starts_with(' ') || rest.trim().is_empty() {
        return None;
    }
    Some((level, rest.trim().trim_end_matches('#').trim().to_owned()))
}

/// A paragraph longer than a passage, cut at sentence ends (or, failing those, at spaces).
fn split_long(paragraph: &str) -> Vec<String> {
    if paragraph.len() <= TARGET_BYTES {
        return vec![paragraph.to_owned()];
    }
    let mut out = Vec::new();
    let mut rest = paragraph;
    while rest.len() > TARGET_BYTES {
        let window = floor_char(rest, TARGET_BYTES);
        let head = &rest[..window];
        let cut = head
            .rfind(". ")
            .map(|i| i + 1)
            .filter(|i| *i > TARGET_BYTES / 3)
            .or_else(|| head.rfind(char::is_whitespace).filter(|i| *i > 0))
            .unwrap_or(window);
        out.push(rest[..cut].trim().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// The end of `text`, at most `bytes` long, starting at a word.
fn tail(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    let mut start = text.len() - bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let rest = &text[start..];
    match rest.find(char::is_whitespace) {
        Some(i) => rest[i..].trim_start(),
        None => rest,
    }
}

/// The largest char boundary at or below `at`.
fn floor_char(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_follow_headings_and_carry_them() {
        let doc = "# Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n## Use\n\n### Chat\n\nSend a message.\n";
        let c = chunks(doc);
        let seen: Vec<(&str, &str)> = c
            .iter()
            .map(|c| (c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("Guide", "Intro text."),
                ("Guide › Install", "Run the installer."),
                ("Guide › Use › Chat", "Send a message."),
            ]
        );
        assert_eq!(c.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn long_text_is_cut_near_the_target_with_overlap_and_no_text_lost() {
        let sentence = "The gateway streams every answer as it is written. ";
        let paragraphs: Vec<String> = (0..12)
            .map(|i| format!("P{i}. {}", sentence.repeat(6)))
            .collect();
        let c = chunks(&paragraphs.join("\n\n"));
        assert!(c.len() > 3, "{} passages", c.len());
        for chunk in &c {
            assert!(
                chunk.text.len() <= TARGET_BYTES + OVERLAP_BYTES + 2,
                "{}",
                chunk.text.len()
            );
        }
        for p in 0..12 {
            assert!(
                c.iter().any(|chunk| chunk.text.contains(&format!("P{p}."))),
                "P{p} lost"
            );
        }
        // Each passage after the first begins with the end of the one before.
        let end_of_first = tail(&c[0].text, OVERLAP_BYTES);
        assert!(
            c[1].text.starts_with(end_of_first),
            "{:?}",
            &c[1].text[..80]
        );
    }

    #[test]
    fn one_huge_paragraph_and_multibyte_text_split_on_boundaries() {
        let text = "日本語の文章です。".repeat(200) + &"word ".repeat(400);
        let c = chunks(&text);
        assert!(c.len() > 2);
        assert!(c.iter().all(|c| !c.text.is_empty()));
        assert!(chunks("").is_empty());
        assert!(chunks("\n\n   \n").is_empty());
        assert_eq!(chunks("#not a heading").len(), 1);
    }
}
