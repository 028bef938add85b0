//! The chat side of attachments: the pipeline hands every image and document block to [`Attach`]
//! before the model call. A client's block names an upload of its own or carries bytes; either
//! becomes content in the blob store, by SHA-256, with its bytes loaded. A recalled block is
//! already content: its bytes are loaded again, and the oldest attachments past Bedrock's counts
//! (or whose bytes are gone) become a short text note, so a long conversation keeps working.

use std::sync::Arc;

use bytes::Bytes;
use nagare_authorizer::Principal;
use sha2::{Digest, Sha256};

use crate::chat::{
    Block, DocumentFormat, Format, ImageFormat, MAX_DOCUMENTS, MAX_IMAGES, Message, Source,
    document_name,
};
use crate::error::Error;
use crate::uploads::{BlobStore, Uploads, checked, hex, max_bytes};

/// Resolves the attachments of the messages a chat sends.
#[derive(Clone)]
pub struct Attach {
    uploads: Arc<Uploads>,
    blobs: Arc<dyn BlobStore>,
}

/// What a client's attachment turned out to be.
struct Resolved {
    format: Format,
    /// The upload's file name, for a document's default name.
    filename: Option<String>,
    sha256: String,
    bytes: Bytes,
}

impl Attach {
    pub fn new(uploads: Arc<Uploads>) -> Self {
        let blobs = uploads.blobs();
        Self { uploads, blobs }
    }

    /// Resolves the attachments of `blocks`, sent by `principal` (`field` names them in errors):
    /// an upload id must be the caller's and hold its bytes; inline bytes are checked like an
    /// upload's and stored. Content named by SHA-256 is refused from a client: that is how
    /// history names bytes, and naming them is no proof of having them.
    pub async fn from_client(
        &self,
        principal: &Principal,
        field: &str,
        blocks: &mut [Block],
    ) -> Result<(), Error> {
        for (i, block) in blocks.iter_mut().enumerate() {
            let at = format!("{field}[{i}]");
            match block {
                Block::Image { format, source } => {
                    let declared = format.map(Format::Image);
                    let r = self.resolve(principal, &at, declared, source).await?;
                    let Format::Image(f) = r.format else {
                        return Err(wrong_kind(&at, "an image", r.format));
                    };
                    *format = Some(f);
                    *source = r.into_source();
                }
                Block::Document {
                    format,
                    name,
                    source,
                } => {
                    let declared = format.map(Format::Document);
                    let r = self.resolve(principal, &at, declared, source).await?;
                    let Format::Document(f) = r.format else {
                        return Err(wrong_kind(&at, "a document", r.format));
                    };
                    *format = Some(f);
                    if name.is_none() {
                        *name = Some(document_name(r.filename.as_deref().unwrap_or("document")));
                    }
                    *source = r.into_source();
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn resolve(
        &self,
        principal: &Principal,
        at: &str,
        declared: Option<Format>,
        source: &Source,
    ) -> Result<Resolved, Error> {
        let invalid = |rule: String| Error::InvalidRequest(format!("{at}: {rule}"));
        match source {
            Source::Upload(upload_id) => {
                let record = self.uploads.owned(principal, upload_id).await?;
                if !record.stored {
                    return Err(invalid(format!(
                        "upload {upload_id} has no bytes yet: PUT them to its put_url first"
                    )));
                }
                let format = Format::of_content_type(&record.content_type).ok_or_else(|| {
                    Error::Internal("a stored declaration names no format".into())
                })?;
                if let Some(d) = declared.filter(|d| *d != format) {
                    return Err(invalid(format!(
                        "format {} does not match upload {upload_id}, a {} {}",
                        d.as_str(),
                        format.as_str(),
                        format.kind()
                    )));
                }
                let bytes = self.blobs.get(&record.sha256).await?.ok_or_else(|| {
                    Error::NotFound(format!("the bytes of upload {upload_id} are gone"))
                })?;
                Ok(Resolved {
                    format,
                    filename: Some(record.filename),
                    sha256: record.sha256,
                    bytes,
                })
            }
            Source::Inline(bytes) => {
                let found = match declared {
                    Some(d) => checked(bytes, d),
                    None => crate::uploads::sniff::sniff(bytes)
                        .map_err(Error::InvalidRequest)
                        .and_then(|s| checked(bytes, s.format)),
                }
                .map_err(|e| invalid(e.to_string()))?;
                let max = max_bytes(found.format);
                if bytes.len() as u64 > max {
                    return Err(invalid(format!(
                        "{} is at most {max} bytes (Bedrock's limit); this one is {}",
                        found.format.a_kind(),
                        bytes.len()
                    )));
                }
                let sha256 = hex(&Sha256::digest(bytes));
                // Kept like an upload's, so that history can name it by its hash.
                self.blobs.put(&sha256, bytes.clone()).await?;
                Ok(Resolved {
                    format: found.format,
                    filename: None,
                    sha256,
                    bytes: bytes.clone(),
                })
            }
            Source::Stored { .. } => Err(invalid(
                "source: name an upload_id, or send the bytes".into(),
            )),
        }
    }

    /// Loads the bytes of recalled history's attachments. `new_turn` is the message being sent,
    /// whose attachments count first; the history's newest attachments fill what Bedrock's
    /// counts leave, and the older ones (or any whose bytes are gone) become a text note.
    pub async fn load_history(
        &self,
        history: &mut [Message],
        new_turn: &[Block],
    ) -> Result<(), Error> {
        let count = |f: fn(&Block) -> bool| new_turn.iter().filter(|b| f(b)).count();
        let mut images_left = MAX_IMAGES.saturating_sub(count(is_image));
        let mut documents_left = MAX_DOCUMENTS.saturating_sub(count(is_document));
        for message in history.iter_mut().rev() {
            for block in message.content.iter_mut().rev() {
                let left = match block {
                    Block::Image { .. } => &mut images_left,
                    Block::Document { .. } => &mut documents_left,
                    _ => continue,
                };
                let loaded = match (*left > 0, source_of(block)) {
                    (true, Some(Source::Stored { sha256, .. })) => self.blobs.get(sha256).await?,
                    _ => None,
                };
                match loaded {
                    Some(bytes) => {
                        *left -= 1;
                        set_bytes(block, bytes);
                    }
                    None => *block = Block::text(note(block)),
                }
            }
        }
        Ok(())
    }
}

/// Replaces every attachment of `history` with its note: what the model reads of them when
/// attachments are off.
pub fn detach(history: &mut [Message]) {
    for block in history.iter_mut().flat_map(|m| m.content.iter_mut()) {
        if block.is_attachment() {
            *block = Block::text(note(block));
        }
    }
}

impl Resolved {
    fn into_source(self) -> Source {
        Source::Stored {
            size: self.bytes.len() as u64,
            sha256: self.sha256,
            bytes: Some(self.bytes),
        }
    }
}

/// `wanted` is `an image` or `a document`.
fn wrong_kind(at: &str, wanted: &str, found: Format) -> Error {
    Error::InvalidRequest(format!(
        "{at}: {wanted} block needs {wanted}; upload holds a {} {}",
        found.as_str(),
        found.kind()
    ))
}

fn is_image(b: &Block) -> bool {
    matches!(b, Block::Image { .. })
}

fn is_document(b: &Block) -> bool {
    matches!(b, Block::Document { .. })
}

fn source_of(block: &Block) -> Option<&Source> {
    match block {
        Block::Image { source, .. } | Block::Document { source, .. } => Some(source),
        _ => None,
    }
}

fn set_bytes(block: &mut Block, loaded: Bytes) {
    if let Block::Image { source, .. } | Block::Document { source, .. } = block
        && let Source::Stored { bytes, .. } = source
    {
        *bytes = Some(loaded);
    }
}

/// What the model reads in place of an attachment it is no longer sent.
fn note(block: &Block) -> String {
    match block {
        Block::Image { format, .. } => format!(
            "[an earlier {} image, no longer attached]",
            format.map_or("", ImageFormat::as_str)
        ),
        Block::Document { format, name, .. } => format!(
            "[an earlier {} document '{}', no longer attached]",
            format.map_or("", DocumentFormat::as_str),
            name.as_deref().unwrap_or("document")
        ),
        _ => String::new(),
    }
}
