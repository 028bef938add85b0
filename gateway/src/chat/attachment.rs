//! Images and documents in a message: their formats, and where their bytes come from. A client
//! names an upload of its own (`{"upload_id":"…"}`) or, on REST and gRPC, carries the bytes
//! (`{"bytes":"<base64>"}`); the pipeline resolves either to content in the blob store, by its
//! SHA-256 (`{"sha256":"…","size":N}`), which is what history keeps and the cache key hashes.
//! Bytes are never serialized into history: they are loaded again from the blob store.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An image's format, as Bedrock names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Png,
    Jpeg,
    Gif,
    Webp,
}

/// A document's format, as Bedrock names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    Pdf,
    Csv,
    Doc,
    Docx,
    Xls,
    Xlsx,
    Html,
    Txt,
    Md,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }
}

impl DocumentFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Csv => "csv",
            Self::Doc => "doc",
            Self::Docx => "docx",
            Self::Xls => "xls",
            Self::Xlsx => "xlsx",
            Self::Html => "html",
            Self::Txt => "txt",
            Self::Md => "md",
        }
    }

    /// Formats that are text: any UTF-8 is one of them.
    pub fn is_text(self) -> bool {
        matches!(self, Self::Csv | Self::Html | Self::Txt | Self::Md)
    }
}

/// A content format, image or document: what an upload declares and what sniffing finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Image(ImageFormat),
    Document(DocumentFormat),
}

impl Format {
    /// The format of a MIME type, as an upload declares it.
    pub fn of_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
        use DocumentFormat as D;
        use ImageFormat as I;
        Some(match essence.as_str() {
            "image/png" => Self::Image(I::Png),
            "image/jpeg" | "image/jpg" => Self::Image(I::Jpeg),
            "image/gif" => Self::Image(I::Gif),
            "image/webp" => Self::Image(I::Webp),
            "application/pdf" => Self::Document(D::Pdf),
            "text/csv" => Self::Document(D::Csv),
            "application/msword" => Self::Document(D::Doc),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                Self::Document(D::Docx)
            }
            "application/vnd.ms-excel" => Self::Document(D::Xls),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
                Self::Document(D::Xlsx)
            }
            "text/html" => Self::Document(D::Html),
            "text/plain" => Self::Document(D::Txt),
            "text/markdown" => Self::Document(D::Md),
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image(f) => f.as_str(),
            Self::Document(f) => f.as_str(),
        }
    }

    /// `an image` or `a document`, for messages.
    pub fn a_kind(self) -> &'static str {
        match self {
            Self::Image(_) => "an image",
            Self::Document(_) => "a document",
        }
    }

    /// `image` or `document`, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Image(_) => "image",
            Self::Document(_) => "document",
        }
    }
}

/// The MIME types an upload may declare, for the error that refuses another.
pub const CONTENT_TYPES: &str = "image/png, image/jpeg, image/gif, image/webp, application/pdf, \
    text/csv, text/plain, text/markdown, text/html, application/msword, application/vnd.ms-excel, \
    and the OOXML types of docx and xlsx";

/// Where an attachment's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An upload of the caller's, by id: from the client.
    Upload(String),
    /// The bytes themselves: from the client, on REST and gRPC.
    Inline(Bytes),
    /// Content in the blob store: what history keeps and the cache key hashes. `bytes` are
    /// loaded for the model call and never serialized.
    Stored {
        sha256: String,
        size: u64,
        bytes: Option<Bytes>,
    },
}

impl Source {
    /// The bytes, once loaded (or sent inline).
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Inline(bytes) => Some(bytes),
            Self::Stored { bytes, .. } => bytes.as_ref(),
            Self::Upload(_) => None,
        }
    }

    /// The content's size in bytes, where known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Self::Inline(bytes) => Some(bytes.len() as u64),
            Self::Stored { size, .. } => Some(*size),
            Self::Upload(_) => None,
        }
    }
}

/// The wire shape: exactly one of `upload_id`, `bytes`, or `sha256` with `size`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut wire = SourceWire {
            upload_id: None,
            bytes: None,
            sha256: None,
            size: None,
        };
        match self {
            Self::Upload(id) => wire.upload_id = Some(id.clone()),
            Self::Inline(bytes) => wire.bytes = Some(BASE64.encode(bytes)),
            Self::Stored { sha256, size, .. } => {
                wire.sha256 = Some(sha256.clone());
                wire.size = Some(*size);
            }
        }
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = SourceWire::deserialize(d)?;
        match wire {
            SourceWire {
                upload_id: Some(id),
                bytes: None,
                sha256: None,
                size: None,
            } => Ok(Self::Upload(id)),
            SourceWire {
                upload_id: None,
                bytes: Some(b64),
                sha256: None,
                size: None,
            } => BASE64
                .decode(b64.as_bytes())
                .map(|b| Self::Inline(b.into()))
                .map_err(|_| D::Error::custom("bytes: must be standard base64")),
            SourceWire {
                upload_id: None,
                bytes: None,
                sha256: Some(sha256),
                size: Some(size),
            } => Ok(Self::Stored {
                sha256,
                size,
                bytes: None,
            }),
            _ => Err(D::Error::custom(
                "must be {\"upload_id\":…} or {\"bytes\":\"<base64>\"}",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_and_write_their_three_shapes() {
        let up: Source = serde_json::from_str(r#"{"upload_id":"up_1"}"#).unwrap();
        assert_eq!(up, Source::Upload("up_1".into()));
        let inline: Source = serde_json::from_str(r#"{"bytes":"aGk="}"#).unwrap();
        assert_eq!(inline.bytes().unwrap().as_ref(), b"hi");
        assert_eq!(
            serde_json::to_string(&inline).unwrap(),
            r#"{"bytes":"aGk="}"#
        );
        let stored = Source::Stored {
            sha256: "ab".into(),
            size: 2,
            bytes: Some(Bytes::from_static(b"hi")),
        };
        // Loaded bytes never reach what is serialized (history, the cache key).
        assert_eq!(
            serde_json::to_string(&stored).unwrap(),
            r#"{"sha256":"ab","size":2}"#
        );
        for bad in [
            r#"{}"#,
            r#"{"upload_id":"a","bytes":"aGk="}"#,
            r#"{"sha256":"ab"}"#,
            r#"{"url":"http://x"}"#,
        ] {
            assert!(serde_json::from_str::<Source>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Source>(r#"{"bytes":"*"}"#).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
    }

    #[test]
    fn content_types_name_their_formats() {
        assert_eq!(
            Format::of_content_type("image/png"),
            Some(Format::Image(ImageFormat::Png))
        );
        assert_eq!(
            Format::of_content_type("text/plain; charset=utf-8"),
            Some(Format::Document(DocumentFormat::Txt))
        );
        assert_eq!(Format::of_content_type("application/zip"), None);
    }
}
