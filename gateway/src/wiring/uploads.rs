//! Attachments and knowledge bases: uploads with their records, blob store and signed URLs, and
//! the embedded knowledge bases, as `[uploads]`, `[knowledge]` and the store say.

use std::sync::Arc;
use std::time::Duration;

use super::{Stores, Wiring};
use crate::config::Config;
use crate::error::StartupError;
use crate::knowledge::{KnowledgeBases, Retriever};
use crate::pipeline::{Grounder, RetrievalPolicy};
use crate::store::SqliteKnowledge;
use crate::uploads::{BlobKind, BlobStore, FsBlobStore, PutUrls, S3BlobStore, Uploads};

impl Wiring {
    /// Uploads, when on: records in the store's backend, bytes where `[uploads]` says, and
    /// self-hosted URLs signed with a key kept in the data dir.
    pub(super) async fn uploads(
        &mut self,
        stores: &Stores,
    ) -> Result<Option<Arc<Uploads>>, StartupError> {
        let config = self.config.clone();
        let records = match (&stores.uploads, config.uploads.enabled) {
            (Some(records), true) => records.clone(),
            _ => {
                tracing::info!("uploads: off (uploads.enabled = false)");
                return Ok(None);
            }
        };
        let key_path = config.data_dir.join(UPLOAD_URL_KEY_FILE);
        let key =
            nagare_authorizer::dev::load_or_create_text_secret(&key_path).map_err(|source| {
                StartupError::Io {
                    context: format!("reading {}", key_path.display()),
                    source,
                }
            })?;
        Ok(Some(Arc::new(Uploads::new(
            records,
            blob_store(self, &config).await?,
            PutUrls::new(key.into_bytes(), config.uploads.public_url.clone()),
            &config.uploads,
        ))))
    }
}

/// The embedded knowledge bases, in the SQLite database, when on.
pub(super) fn knowledge(config: &Config, stores: &Stores) -> Option<KnowledgeBases> {
    let db = stores.database().filter(|_| config.knowledge.enabled)?;
    let store = Arc::new(SqliteKnowledge::new(db.clone()));
    Some(KnowledgeBases {
        store: store.clone(),
        retriever: store,
        max_document_bytes: config.knowledge.max_document_bytes,
    })
}

/// Retrieval for chats, from `retriever`, as `[knowledge]` says.
pub(super) fn grounder(config: &Config, retriever: Arc<dyn Retriever>) -> Grounder {
    let policy = RetrievalPolicy {
        timeout: Duration::from_millis(config.knowledge.retrieve_timeout_ms),
        retries: config.knowledge.retrieve_retries,
        ..RetrievalPolicy::default()
    };
    Grounder::new(retriever, policy).with_defaults(config.knowledge.defaults.clone())
}

/// The blob store `[uploads]` names.
async fn blob_store(
    wiring: &mut Wiring,
    config: &Config,
) -> Result<Arc<dyn BlobStore>, StartupError> {
    let settings = &config.uploads;
    Ok(match settings.store {
        BlobKind::Filesystem => {
            let root = config.data_dir.join("blobs");
            tracing::info!(path = %root.display(), "uploads: files under the data dir");
            Arc::new(FsBlobStore::new(root))
        }
        BlobKind::S3 => {
            let sdk = wiring.sdk().await;
            let s3 = aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(settings.s3_force_path_style)
                .build();
            tracing::info!(
                bucket = settings.bucket,
                prefix = settings.prefix,
                "uploads: s3"
            );
            Arc::new(S3BlobStore::new(
                aws_sdk_s3::Client::from_conf(s3),
                &settings.bucket,
                &settings.prefix,
            ))
        }
    })
}

/// The key that signs self-hosted upload URLs, in the data dir.
const UPLOAD_URL_KEY_FILE: &str = "upload-url-key";
