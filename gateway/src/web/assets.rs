//! The browser app's files, embedded in the binary at build time (`web/` at the workspace root),
//! each kept as it is and gzipped once.
//!
//! The files are served under `assets/{version}/`, where the version is the SHA-256 of all of
//! them: a browser may keep them for a year, and a new build changes every name at once. Only
//! `index.html`, which names the version, is fetched fresh each time. One version for the whole
//! app, rather than one hash per file, keeps the modules' relative imports as they are written.

use std::io::Write;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The placeholder in `index.html` that becomes `assets/{version}`.
const ASSETS_PLACEHOLDER: &str = "{{assets}}";

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $path)))),*]
    };
}

/// Every file of the app but `index.html`, by its path under `web/`.
const FILES: &[(&str, &[u8])] = embed!(
    "app.css",
    "icon.svg",
    "js/api.js",
    "js/attachments.js",
    "js/auth.js",
    "js/chat.js",
    "js/answer.js",
    "js/main.js",
    "js/markdown.js",
    "js/sidebar.js",
    "js/socket.js",
    "js/words.js",
);

const INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/index.html"));

/// One file, ready to send.
#[derive(Debug, Clone)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: Bytes,
    /// The body gzipped, when that is smaller.
    pub gzip: Option<Bytes>,
}

impl Asset {
    fn new(path: &'static str, body: Bytes) -> Self {
        let gzip = gzip(&body).filter(|z| z.len() < body.len());
        Self {
            path,
            content_type: content_type(path),
            body,
            gzip,
        }
    }

    /// What a browser that takes gzip transfers.
    pub fn transferred(&self) -> usize {
        self.gzip.as_ref().map_or(self.body.len(), Bytes::len)
    }
}

/// The whole app: `index.html` and the versioned files.
#[derive(Debug, Clone)]
pub struct Assets {
    pub version: String,
    pub index: Asset,
    pub files: Vec<Asset>,
}

impl Assets {
    /// The embedded app.
    pub fn embedded() -> Self {
        let mut digest = Sha256::new();
        for (path, body) in FILES {
            // Lengths keep two different splits of the same bytes apart.
            digest.update((path.len() as u64).to_le_bytes());
            digest.update(path.as_bytes());
            digest.update((body.len() as u64).to_le_bytes());
            digest.update(body);
        }
        let version: String = digest
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let index = INDEX.replace(ASSETS_PLACEHOLDER, &format!("assets/{version}"));
        Self {
            index: Asset::new("index.html", Bytes::from(index)),
            files: FILES
                .iter()
                .map(|(path, body)| Asset::new(path, Bytes::from_static(body)))
                .collect(),
            version,
        }
    }

    /// The file at `path` under `assets/{version}/`.
    pub fn file(&self, path: &str) -> Option<&Asset> {
        self.files.iter().find(|a| a.path == path)
    }

    /// Bytes a first visit transfers with gzip: the page and every file.
    pub fn transferred(&self) -> usize {
        self.index.transferred() + self.files.iter().map(Asset::transferred).sum::<usize>()
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_the_versioned_files_and_every_import_is_embedded() {
        let assets = Assets::embedded();
        let index = std::str::from_utf8(&assets.index.body).unwrap_or_default();
        assert!(!index.contains(ASSETS_PLACEHOLDER));
        assert!(index.contains(&format!("assets/{}/js/main.js", assets.version)));
        assert!(index.contains(&format!("assets/{}/app.css", assets.version)));
        // A module importing a file that is not embedded would fail only in a browser.
        for asset in assets.files.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(&asset.body).unwrap_or_default();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(name) = line.split('"').nth(1) else {
                    panic!("{}: an import without a quoted path: {line}", asset.path);
                };
                let target = format!("js/{}", name.trim_start_matches("./"));
                assert!(
                    assets.file(&target).is_some(),
                    "{} imports {name}, which is not embedded",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn files_are_typed_and_compressed() {
        let assets = Assets::embedded();
        let css = assets.file("app.css").unwrap_or_else(|| panic!("app.css"));
        assert_eq!(css.content_type, "text/css; charset=utf-8");
        assert!(css.gzip.as_ref().is_some_and(|z| z.len() < css.body.len()));
        assert!(assets.transferred() < assets.files.iter().map(|a| a.body.len()).sum::<usize>());
        assert!(assets.file("../Cargo.toml").is_none());
    }
}
