//! `nagare kb ingest`: files into a knowledge base of the embedded store, from the command line,
//! into the same data dir as a running `nagare serve` (SQLite lets the two take turns writing).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::knowledge::{DocumentInfo, KnowledgeBases, Scope, SentDocument, check_name};
use crate::store::{Database, SqliteKnowledge, unix_now_ms};

/// What one file became.
pub enum Ingested {
    Stored(DocumentInfo),
    /// Not a text, Markdown, HTML or PDF file, by its extension.
    Skipped,
    Refused(Error),
}

/// Puts every text, Markdown, HTML and PDF file under `paths` (folders recursively) into `kb` of
/// `tenant` in the database `database`, creating the knowledge base if needed. A document's id
/// is its path below the folder given, without its extension, with `/` as `.`.
pub async fn ingest(
    database: &Path,
    tenant: &str,
    kb: &str,
    paths: &[PathBuf],
    max_document_bytes: usize,
) -> Result<Vec<(PathBuf, Ingested)>, Error> {
    check_name("--kb", kb)?;
    if let Some(dir) = database.parent() {
        nagare_authorizer::dev::create_private_dir(dir)
            .map_err(|e| Error::InvalidRequest(format!("{}: {e}", dir.display())))?;
    }
    let db = Database::open(database, 0)?;
    let store = Arc::new(SqliteKnowledge::new(db));
    let bases = KnowledgeBases {
        store: store.clone(),
        retriever: store,
        max_document_bytes,
    };
    bases.store.create(tenant, kb, unix_now_ms()).await?;
    let scope = Scope { tenant, name: kb };
    let mut report = Vec::new();
    for root in paths {
        for file in
            files(root).map_err(|e| Error::InvalidRequest(format!("{}: {e}", root.display())))?
        {
            let outcome = put(&bases, scope, root, &file).await;
            report.push((file, outcome));
        }
    }
    Ok(report)
}

async fn put(bases: &KnowledgeBases, scope: Scope<'_>, root: &Path, file: &Path) -> Ingested {
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("md" | "markdown") => "text/markdown",
        Some("txt") => "text/plain",
        Some("html" | "htm") => "text/html",
        Some("pdf") => "application/pdf",
        _ => return Ingested::Skipped,
    };
    let body = match std::fs::read(file) {
        Ok(body) => body,
        Err(e) => return Ingested::Refused(Error::InvalidRequest(e.to_string())),
    };
    let id = document_id(root, file);
    let sent = SentDocument {
        document_id: &id,
        title: None,
        uri: Some(file.display().to_string()),
        content_type,
        body: &body,
    };
    match bases.put(scope, sent, unix_now_ms()).await {
        Ok(info) => Ingested::Stored(info),
        Err(e) => Ingested::Refused(e),
    }
}

/// `docs/guides/install.md` under `docs` → `guides.install`; a file given itself → its stem.
fn document_id(root: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty());
    let relative = relative.unwrap_or_else(|| Path::new(file.file_name().unwrap_or_default()));
    let without = relative.with_extension("");
    without
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(".")
}

/// The files under `path`, in a stable order; `path` itself when it is a file.
fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(files(&entry)?);
        } else {
            out.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_are_paths_below_the_folder_given() {
        let root = Path::new("docs");
        assert_eq!(
            document_id(root, Path::new("docs/guides/install.md")),
            "guides.install"
        );
        assert_eq!(document_id(Path::new("a.md"), Path::new("a.md")), "a");
    }
}
