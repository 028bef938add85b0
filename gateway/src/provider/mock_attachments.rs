//! What the mock says of the images and documents it was sent, so tests can see the right bytes
//! arrived: each one's format, size, the start of its SHA-256, an image's dimensions, a PDF's
//! pages, a document's name and a text document's first words. The same bytes always get the
//! same words.

use sha2::{Digest, Sha256};

use crate::chat::{Block, joined_text};
use crate::uploads::{hex, sniff};

/// The description of `blocks`' attachments, or `None` when they have none.
pub fn describe(blocks: &[Block]) -> Option<String> {
    let seen: Vec<String> = blocks.iter().filter_map(one).collect();
    if seen.is_empty() {
        return None;
    }
    let prompt = joined_text(blocks);
    let asked = prompt
        .split_whitespace()
        .take(8)
        .collect::<Vec<_>>()
        .join(" ");
    let end = if asked.ends_with(char::is_alphanumeric) {
        "."
    } else {
        ""
    };
    Some(format!("{} You asked: {asked}{end}", seen.join(" ")))
}

fn one(block: &Block) -> Option<String> {
    let (kind, format, name, source, is_text) = match block {
        Block::Image { format, source } => {
            ("image", format.map(|f| f.as_str()), None, source, false)
        }
        Block::Document {
            format,
            name,
            source,
        } => (
            "document",
            format.map(|f| f.as_str()),
            name.as_deref(),
            source,
            format.is_some_and(|f| f.is_text()),
        ),
        _ => return None,
    };
    let format = format.unwrap_or("unknown");
    let Some(bytes) = source.bytes() else {
        return Some(format!("I was sent a {format} {kind} without its bytes."));
    };
    let mut said = format!("I see a {format} {kind}");
    if let Some(name) = name {
        said.push_str(&format!(" named '{name}'"));
    }
    let sha = hex(&Sha256::digest(bytes));
    said.push_str(&format!(", {} bytes, sha256 {}", bytes.len(), &sha[..12]));
    if let Ok(found) = sniff::sniff(bytes) {
        if let Some((w, h)) = found.dimensions {
            said.push_str(&format!(", {w}×{h} pixels"));
        }
        if let Some(pages) = found.pages {
            said.push_str(&format!(", {pages} pages"));
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes)
        && is_text
    {
        let first: Vec<&str> = text.split_whitespace().take(6).collect();
        said.push_str(&format!(", beginning '{}'", first.join(" ")));
    }
    said.push('.');
    Some(said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{DocumentFormat, ImageFormat, Source};
    use crate::uploads::sniff::samples;

    fn stored(bytes: Vec<u8>) -> Source {
        Source::Stored {
            sha256: String::new(),
            size: bytes.len() as u64,
            bytes: Some(bytes.into()),
        }
    }

    #[test]
    fn the_mock_says_what_it_was_sent() {
        let png = samples::png(640, 480);
        let sha = hex(&Sha256::digest(&png));
        let blocks = [
            Block::text("what is in these?"),
            Block::Image {
                format: Some(ImageFormat::Png),
                source: stored(png.clone()),
            },
            Block::Document {
                format: Some(DocumentFormat::Txt),
                name: Some("notes".into()),
                source: stored(b"Buy milk and eggs on the way home today".to_vec()),
            },
        ];
        let said = describe(&blocks).unwrap();
        assert_eq!(
            said,
            format!(
                "I see a png image, {} bytes, sha256 {}, 640×480 pixels. I see a txt document \
                 named 'notes', 39 bytes, sha256 {}, beginning 'Buy milk and eggs on the'. \
                 You asked: what is in these?",
                png.len(),
                &sha[..12],
                &hex(&Sha256::digest(b"Buy milk and eggs on the way home today"))[..12],
            )
        );
        assert_eq!(describe(&[Block::text("hi")]), None);
    }
}
