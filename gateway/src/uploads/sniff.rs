//! What a file is, from its bytes: the magic numbers of each format Bedrock takes, an image's
//! dimensions from its header, a PDF's page count, and whether the file ends where its format
//! says it does (a truncated upload is refused here, not by the model). Nothing is decoded
//! beyond the headers and the structure that locates them.

use crate::chat::{DocumentFormat, Format, ImageFormat};

/// What the bytes turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub format: Format,
    /// An image's width and height in pixels.
    pub dimensions: Option<(u32, u32)>,
    /// A PDF's pages, when its page objects are not compressed out of sight.
    pub pages: Option<u32>,
}

impl Sniffed {
    fn image(format: ImageFormat, width: u32, height: u32) -> Result<Self, String> {
        if width == 0 || height == 0 {
            return Err(format!("the {} image has no pixels", format.as_str()));
        }
        Ok(Self {
            format: Format::Image(format),
            dimensions: Some((width, height)),
            pages: None,
        })
    }

    fn document(format: DocumentFormat) -> Self {
        Self {
            format: Format::Document(format),
            dimensions: None,
            pages: None,
        }
    }
}

/// The bytes, checked against the format they were declared as: an error says what they are
/// instead, or what is wrong with them. Any UTF-8 text may be any of the text formats.
pub fn check(bytes: &[u8], declared: Format) -> Result<Sniffed, String> {
    let found = sniff(bytes)?;
    match (declared, found.format) {
        (d, f) if d == f => Ok(found),
        (Format::Document(d), Format::Document(DocumentFormat::Txt)) if d.is_text() => {
            Ok(Sniffed {
                format: declared,
                ..found
            })
        }
        (d, f) => Err(format!(
            "the bytes are a {} {}, not the declared {} {}",
            f.as_str(),
            f.kind(),
            d.as_str(),
            d.kind()
        )),
    }
}

/// What the bytes are, by their magic numbers; UTF-8 text with no NUL is `txt`.
pub fn sniff(bytes: &[u8]) -> Result<Sniffed, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return png(bytes);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return jpeg(bytes);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return gif(bytes);
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return webp(bytes);
    }
    if find(&bytes[..bytes.len().min(1024)], b"%PDF-").is_some() {
        return pdf(bytes);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return ooxml(bytes);
    }
    if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return compound(bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(Sniffed::document(DocumentFormat::Txt)),
        _ => Err("the bytes are not an image, a document or text Bedrock reads".into()),
    }
}

fn truncated(format: &str) -> String {
    format!("the {format} is truncated or malformed")
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// PNG: `IHDR` first, then chunks, each wholly present, up to `IEND`.
fn png(b: &[u8]) -> Result<Sniffed, String> {
    let bad = || truncated("png");
    if b.get(12..16) != Some(b"IHDR") || be32(b, 8) != Some(13) {
        return Err(bad());
    }
    let (width, height) = (be32(b, 16).ok_or_else(bad)?, be32(b, 20).ok_or_else(bad)?);
    let mut at = 8usize;
    loop {
        let len = be32(b, at).ok_or_else(bad)? as usize;
        let kind = b.get(at + 4..at + 8).ok_or_else(bad)?;
        let end = at
            .checked_add(12)
            .and_then(|n| n.checked_add(len))
            .ok_or_else(bad)?;
        if end > b.len() {
            return Err(bad());
        }
        if kind == b"IEND" {
            return Sniffed::image(ImageFormat::Png, width, height);
        }
        at = end;
    }
}

/// JPEG: segments from the start to a frame header (`SOFn`) for the size, and the end-of-image
/// marker last.
fn jpeg(b: &[u8]) -> Result<Sniffed, String> {
    let bad = || truncated("jpeg");
    let body = match b.iter().rposition(|&x| x != 0) {
        Some(last) => &b[..=last],
        None => return Err(bad()),
    };
    if !body.ends_with(&[0xFF, 0xD9]) {
        return Err(bad());
    }
    let mut at = 2usize;
    loop {
        if *b.get(at).ok_or_else(bad)? != 0xFF {
            return Err(bad());
        }
        while b.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let marker = *b.get(at + 1).ok_or_else(bad)?;
        if matches!(marker, 0xD0..=0xD7 | 0x01) {
            at += 2;
            continue;
        }
        let len = be16(b, at + 2).ok_or_else(bad)? as usize;
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame {
            let height = be16(b, at + 5).ok_or_else(bad)?;
            let width = be16(b, at + 7).ok_or_else(bad)?;
            return Sniffed::image(ImageFormat::Jpeg, width, height);
        }
        if marker == 0xDA || len < 2 {
            // Image data before any frame header.
            return Err(bad());
        }
        at += 2 + len;
    }
}

/// GIF: the logical screen's size, and the trailer last.
fn gif(b: &[u8]) -> Result<Sniffed, String> {
    let bad = || truncated("gif");
    if b.last() != Some(&0x3B) {
        return Err(bad());
    }
    Sniffed::image(
        ImageFormat::Gif,
        le16(b, 6).ok_or_else(bad)?,
        le16(b, 8).ok_or_else(bad)?,
    )
}

/// WebP: a RIFF file exactly as long as its header says; the size from the lossy (`VP8 `),
/// lossless (`VP8L`) or extended (`VP8X`) header.
fn webp(b: &[u8]) -> Result<Sniffed, String> {
    let bad = || truncated("webp");
    let riff = le32(b, 4).ok_or_else(bad)? as usize;
    if riff.checked_add(8) != Some(b.len()) {
        return Err(bad());
    }
    let (width, height) = match b.get(12..16).ok_or_else(bad)? {
        b"VP8 " => {
            if b.get(23..26) != Some(&[0x9D, 0x01, 0x2A]) {
                return Err(bad());
            }
            (
                le16(b, 26).ok_or_else(bad)? & 0x3FFF,
                le16(b, 28).ok_or_else(bad)? & 0x3FFF,
            )
        }
        b"VP8L" => {
            if b.get(20) != Some(&0x2F) {
                return Err(bad());
            }
            let bits = le32(b, 21).ok_or_else(bad)?;
            ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        }
        b"VP8X" => (
            le24(b, 24).ok_or_else(bad)? + 1,
            le24(b, 27).ok_or_else(bad)? + 1,
        ),
        _ => return Err(bad()),
    };
    Sniffed::image(ImageFormat::Webp, width, height)
}

/// PDF: `%%EOF` near the end; the pages are its `/Type /Page` objects, where they can be seen.
fn pdf(b: &[u8]) -> Result<Sniffed, String> {
    if find(&b[b.len().saturating_sub(1024)..], b"%%EOF").is_none() {
        return Err(truncated("pdf"));
    }
    let mut pages = 0u32;
    for needle in [&b"/Type /Page"[..], b"/Type/Page"] {
        let mut rest = b;
        while let Some(at) = find(rest, needle) {
            rest = &rest[at + needle.len()..];
            if rest.first() != Some(&b's') {
                pages += 1;
            }
        }
    }
    Ok(Sniffed {
        pages: (pages > 0).then_some(pages),
        ..Sniffed::document(DocumentFormat::Pdf)
    })
}

/// docx and xlsx are zip archives: the end-of-central-directory record near the end, and the
/// part names say which.
fn ooxml(b: &[u8]) -> Result<Sniffed, String> {
    // The record is 22 bytes plus a comment of at most 65,535.
    if find(&b[b.len().saturating_sub(22 + 65_535)..], b"PK\x05\x06").is_none() {
        return Err(truncated("zip archive"));
    }
    if find(b, b"word/").is_some() {
        Ok(Sniffed::document(DocumentFormat::Docx))
    } else if find(b, b"xl/").is_some() {
        Ok(Sniffed::document(DocumentFormat::Xlsx))
    } else {
        Err("the bytes are a zip archive, not a docx or xlsx document".into())
    }
}

/// doc and xls are compound files: whole sectors of 512 bytes, and the stream names (UTF-16)
/// say which.
fn compound(b: &[u8]) -> Result<Sniffed, String> {
    if b.len() < 1024 || !b.len().is_multiple_of(512) {
        return Err(truncated("compound file"));
    }
    let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    if find(b, &utf16("WordDocument")).is_some() {
        Ok(Sniffed::document(DocumentFormat::Doc))
    } else if find(b, &utf16("Workbook")).is_some() || find(b, &utf16("Book")).is_some() {
        Ok(Sniffed::document(DocumentFormat::Xls))
    } else {
        Err("the bytes are a compound file, not a doc or xls document".into())
    }
}

#[cfg(test)]
pub(crate) mod samples {
    //! Small files of each format, structurally whole: headers, chunks and trailers where the
    //! sniffer looks. Their pixel data is not real, which the sniffer never reads.

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0; 4]); // the CRC, which nothing here checks
        c
    }

    pub fn png(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        b.extend(chunk(b"IHDR", &ihdr));
        b.extend(chunk(b"IDAT", &[0x78, 0x9C, 1, 2, 3]));
        b.extend(chunk(b"IEND", &[]));
        b
    }

    pub fn jpeg(width: u16, height: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
        b.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        b.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8]);
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&width.to_be_bytes());
        b.extend_from_slice(&[1, 1, 0x11, 0]);
        b.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0x3F, 0, 0x12, 0x34]);
        b.extend_from_slice(&[0xFF, 0xD9]);
        b
    }

    pub fn gif(width: u16, height: u16) -> Vec<u8> {
        let mut b = b"GIF89a".to_vec();
        b.extend_from_slice(&width.to_le_bytes());
        b.extend_from_slice(&height.to_le_bytes());
        b.extend_from_slice(&[0, 0, 0, 0x3B]);
        b
    }

    pub fn webp_lossless(width: u32, height: u32) -> Vec<u8> {
        let bits = (width - 1) | (height - 1) << 14;
        let mut data = vec![0x2F];
        data.extend_from_slice(&bits.to_le_bytes());
        data.push(0);
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&((4 + 8 + data.len()) as u32).to_le_bytes());
        b.extend_from_slice(b"WEBPVP8L");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend(data);
        b
    }

    pub fn pdf(pages: usize) -> Vec<u8> {
        let mut b = b"%PDF-1.7\n1 0 obj << /Type /Pages /Count 1 >> endobj\n".to_vec();
        for n in 0..pages {
            b.extend_from_slice(format!("{} 0 obj << /Type /Page >> endobj\n", n + 2).as_bytes());
        }
        b.extend_from_slice(b"trailer << >>\n%%EOF\n");
        b
    }
}

#[cfg(test)]
mod tests {
    use super::samples;
    use super::*;

    const PNG: Format = Format::Image(ImageFormat::Png);

    #[test]
    fn images_are_known_by_their_magic_and_measured_from_their_headers() {
        let cases = [
            (samples::png(640, 480), ImageFormat::Png, (640, 480)),
            (samples::jpeg(1024, 768), ImageFormat::Jpeg, (1024, 768)),
            (samples::gif(10, 20), ImageFormat::Gif, (10, 20)),
            (
                samples::webp_lossless(300, 9000),
                ImageFormat::Webp,
                (300, 9000),
            ),
        ];
        for (bytes, format, dims) in cases {
            let s = check(&bytes, Format::Image(format)).unwrap();
            assert_eq!(s.dimensions, Some(dims), "{format:?}");
        }
    }

    #[test]
    fn a_cut_short_file_is_refused_whatever_its_format() {
        for whole in [
            samples::png(4, 4),
            samples::jpeg(4, 4),
            samples::gif(4, 4),
            samples::webp_lossless(4, 4),
            samples::pdf(1),
        ] {
            let cut = &whole[..whole.len() - 3];
            let err = sniff(cut).unwrap_err();
            assert!(err.contains("truncated"), "{err}");
        }
        assert_eq!(sniff(b"").unwrap_err(), "the file is empty");
    }

    #[test]
    fn bytes_must_be_what_they_were_declared() {
        let err = check(&samples::jpeg(4, 4), PNG).unwrap_err();
        assert_eq!(
            err,
            "the bytes are a jpeg image, not the declared png image"
        );
        let err = check(b"hello", PNG).unwrap_err();
        assert!(err.contains("txt document"), "{err}");
        let md = Format::Document(DocumentFormat::Md);
        assert_eq!(check(b"# hi", md).unwrap().format, md);
        assert!(check(&[0xC3, 0x28], md).is_err(), "not UTF-8");
        assert!(check(b"a\0b", md).is_err(), "NUL is not text");
    }

    #[test]
    fn a_pdf_counts_its_pages_and_office_files_say_which_they_are() {
        let s = check(&samples::pdf(3), Format::Document(DocumentFormat::Pdf)).unwrap();
        assert_eq!(s.pages, Some(3));
        let mut docx = b"PK\x03\x04....word/document.xml....".to_vec();
        docx.extend_from_slice(b"PK\x05\x06");
        docx.extend_from_slice(&[0; 18]);
        assert_eq!(
            sniff(&docx).unwrap().format,
            Format::Document(DocumentFormat::Docx)
        );
        let mut doc = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        doc.extend("WordDocument".encode_utf16().flat_map(u16::to_le_bytes));
        doc.resize(1536, 0);
        assert_eq!(
            sniff(&doc).unwrap().format,
            Format::Document(DocumentFormat::Doc)
        );
    }
}
