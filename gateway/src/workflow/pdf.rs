//! The text of a PDF, page by page, for documents that are searched or summarized. Only the
//! text a page draws is read: a scanned page (an image) has none, and is reported as such.

use lopdf::Document;

/// The most pages read from one PDF: a knowledge-base document or a workflow's input, not a
/// library.
const MAX_PAGES: usize = 2_000;

/// The PDF's text, its pages separated by blank lines; why not, in words for the client.
pub fn text(bytes: &[u8]) -> Result<String, String> {
    let document = Document::load_mem(bytes).map_err(|e| format!("the PDF does not open: {e}"))?;
    if document.is_encrypted() {
        return Err("the PDF is encrypted".into());
    }
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    if pages.len() > MAX_PAGES {
        return Err(format!(
            "the PDF has {} pages; at most {MAX_PAGES} are read",
            pages.len()
        ));
    }
    let mut out = String::new();
    for page in pages {
        // A page whose text cannot be decoded is left out rather than failing the document.
        if let Ok(text) = document.extract_text(&[page]) {
            let text = text.trim();
            if !text.is_empty() {
                if !out.is_empty() {
                    out.push_str("\n\n");
                }
                out.push_str(text);
            }
        }
    }
    Ok(out)
}
