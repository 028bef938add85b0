//! The text of an HTML document, for a model to read: markup, scripts, styles and comments
//! dropped, block elements as line breaks, character references decoded. Not a browser: enough
//! for articles and reports, never a panic on malformed input.

/// Elements whose content is not text.
const SKIPPED: [&str; 5] = ["script", "style", "head", "noscript", "template"];

/// Elements that break a line.
const BLOCKS: [&str; 18] = [
    "p",
    "div",
    "br",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "table",
];

pub fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            // A lone '<' is text (pushed after the loop).
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        if !tag.starts_with('/') && SKIPPED.contains(&name.as_str()) {
            // Skip to the matching close tag (case-insensitively), or to the end.
            let close = format!("</{name}");
            rest = find_ascii_case_insensitive(rest, &close).map_or("", |at| {
                rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..])
            });
            continue;
        }
        if BLOCKS.contains(&name.as_str()) && !out.ends_with('\n') {
            out.push('\n');
        }
    }
    push_text(&mut out, rest);
    tidy(&out)
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Appends text, decoding character references.
fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest
            .find(';')
            .filter(|&semi| semi <= 10)
            .and_then(|semi| Some((decode(&rest[1..semi])?, semi)));
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

fn decode(entity: &str) -> Option<char> {
    let numeric = |digits: &str, radix| {
        u32::from_str_radix(digits, radix)
            .ok()
            .and_then(char::from_u32)
    };
    match entity {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => match entity.strip_prefix('#') {
            Some(hex) if hex.starts_with(['x', 'X']) => numeric(&hex[1..], 16),
            Some(dec) => numeric(dec, 10),
            None => None,
        },
    }
}

/// Collapses runs of spaces within lines and of blank lines, and trims.
pub fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_scripts_and_comments_go_text_and_blocks_stay() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head>\
                    <body><h1>Report</h1><!-- hidden --><p>Sales &amp; costs &lt;rose&gt;&#33;</p>\
                    <SCRIPT>alert('x')</SCRIPT><ul><li>one</li><li>two&nbsp;&#x41;</li></ul></body></html>";
        assert_eq!(to_text(html), "Report\nSales & costs <rose>!\none\ntwo A");
    }

    #[test]
    fn malformed_input_is_text_not_a_panic() {
        assert_eq!(to_text("a < b and c"), "a < b and c");
        assert_eq!(to_text("<p>open <script>never closed"), "open");
        assert_eq!(to_text("x <!-- never closed"), "x");
        assert_eq!(
            to_text("&bogus; &#xZZ; & &#1114112;"),
            "&bogus; &#xZZ; & &#1114112;"
        );
        assert_eq!(to_text("日本語<br>テキスト"), "日本語\nテキスト");
    }
}
