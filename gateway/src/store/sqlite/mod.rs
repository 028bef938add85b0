//! The embedded store: one SQLite file (`{data_dir}/nagare.db`) holding every table, so `nagare`
//! runs with no AWS account. One thread owns the connection and runs every call, which
//! serializes writers (keeping appends simple) and allows group commit: the calls waiting when
//! the thread comes round run in one transaction, each in its own savepoint, and all answer once
//! it commits. A commit costs the same for one write as for fifty, and every chat writes.

mod connections;
mod conversations;
mod knowledge;
mod uploads;

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::Connection;

pub use connections::SqliteConnectionStore;
pub use conversations::SqliteConversationStore;
pub use knowledge::SqliteKnowledge;
pub use uploads::SqliteUploadStore;

use super::store_error;
use crate::error::Error;

/// Schema versions, applied in order; `PRAGMA user_version` records how many have run. Never
/// edit a released step: add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: WebSocket connections of the API Gateway path.
    "CREATE TABLE connections (
        connection_id TEXT PRIMARY KEY,
        sub TEXT NOT NULL,
        tenant TEXT NOT NULL,
        scopes TEXT NOT NULL,
        domain TEXT NOT NULL,
        stage TEXT NOT NULL,
        connected_at INTEGER NOT NULL,
        ttl INTEGER NOT NULL
    );
    CREATE TABLE connection_chats (
        connection_id TEXT NOT NULL REFERENCES connections(connection_id) ON DELETE CASCADE,
        request_id TEXT NOT NULL,
        cancelled INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (connection_id, request_id)
    );",
    // 2: conversation memory.
    "CREATE TABLE conversations (
        conversation_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        exchanges INTEGER NOT NULL
    );
    CREATE INDEX conversations_by_owner ON conversations (owner, updated_at DESC, conversation_id DESC);
    CREATE TABLE turns (
        conversation_id TEXT NOT NULL REFERENCES conversations(conversation_id) ON DELETE CASCADE,
        exchange INTEGER NOT NULL,
        role INTEGER NOT NULL,
        content TEXT NOT NULL,
        request_id TEXT NOT NULL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        stop_reason TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, exchange, role)
    );
    CREATE UNIQUE INDEX turns_by_request ON turns (conversation_id, request_id, role);",
    // 3: asynchronous tasks, and the embedded queue that feeds them to workers.
    "CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        sub TEXT NOT NULL,
        tenant TEXT NOT NULL,
        scopes TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        callback_url TEXT,
        delivery TEXT,
        delivery_attempts INTEGER NOT NULL,
        connection_id TEXT,
        connection_delivery TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE task_queue (
        message_id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        visible_at INTEGER NOT NULL,
        receipt TEXT,
        dead INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX task_queue_ready ON task_queue (dead, visible_at, message_id);
    CREATE UNIQUE INDEX task_queue_receipt ON task_queue (receipt);",
    // 4: fairness groups (the submitting principal) in the embedded queue; messages queued
    // before share the empty group.
    "ALTER TABLE task_queue ADD COLUMN grp TEXT NOT NULL DEFAULT '';
    CREATE INDEX task_queue_groups ON task_queue (dead, grp, message_id);",
    // 5: a message's content blocks (JSON) when it is more than text; turns stored before are
    // text-only, which `content` holds whole.
    "ALTER TABLE turns ADD COLUMN blocks TEXT;",
    // 6: uploads (their bytes are in the blob store, under the data dir).
    "CREATE TABLE uploads (
        upload_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        sub TEXT NOT NULL,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        stored INTEGER NOT NULL
    );
    CREATE INDEX uploads_by_expiry ON uploads (expires_at);",
    // 7: the blobs each user turn names, which the blob sweep keeps (gone with the turn).
    "CREATE TABLE blob_refs (
        sha256 TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        exchange INTEGER NOT NULL,
        role INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (sha256, conversation_id, exchange),
        FOREIGN KEY (conversation_id, exchange, role)
            REFERENCES turns (conversation_id, exchange, role) ON DELETE CASCADE
    );
    CREATE INDEX blob_refs_by_turn ON blob_refs (conversation_id, exchange, role);",
    // 8: knowledge bases: documents, their passages, and an FTS5 index over the passages kept in
    // step by triggers (deletes cascade from knowledge base to document to passage).
    "CREATE TABLE knowledge_bases (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE kb_documents (
        tenant TEXT NOT NULL,
        kb TEXT NOT NULL,
        document_id TEXT NOT NULL,
        title TEXT NOT NULL,
        uri TEXT,
        sha256 TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        passages INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, kb, document_id),
        FOREIGN KEY (tenant, kb) REFERENCES knowledge_bases (tenant, name) ON DELETE CASCADE
    );
    CREATE TABLE kb_chunks (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        kb TEXT NOT NULL,
        document_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        heading TEXT NOT NULL,
        text TEXT NOT NULL,
        FOREIGN KEY (tenant, kb, document_id)
            REFERENCES kb_documents (tenant, kb, document_id) ON DELETE CASCADE
    );
    CREATE INDEX kb_chunks_by_document ON kb_chunks (tenant, kb, document_id);
    CREATE VIRTUAL TABLE kb_fts USING fts5 (heading, text, content = 'kb_chunks', content_rowid = 'id');
    CREATE TRIGGER kb_chunks_indexed AFTER INSERT ON kb_chunks BEGIN
        INSERT INTO kb_fts (rowid, heading, text) VALUES (new.id, new.heading, new.text);
    END;
    CREATE TRIGGER kb_chunks_unindexed AFTER DELETE ON kb_chunks BEGIN
        INSERT INTO kb_fts (kb_fts, rowid, heading, text) VALUES ('delete', old.id, old.heading, old.text);
    END;",
    // 9: a knowledge-base answer's sources (JSON), with the answer.
    "ALTER TABLE turns ADD COLUMN sources TEXT;",
];

/// Runs on the database thread inside the batch's transaction; the reply it returns is called
/// once the transaction has committed (or failed to).
type Job = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The most calls one transaction takes, so a flood cannot hold every reply back for long.
const MAX_BATCH: usize = 128;

/// The SQLite database every embedded store shares.
#[derive(Clone)]
pub struct Database {
    jobs: mpsc::Sender<Job>,
    /// Why writes fail, since the last write that did not (a full disk, say).
    failing: Arc<Mutex<Option<String>>>,
    /// Connections for long reads beside the writer; `None` in memory, where the writer's
    /// connection is the only one that sees the data.
    readers: Option<Arc<Readers>>,
}

/// Read-only connections to the database file, for reads long enough to hold every write back
/// on the database thread (a knowledge-base search over a large index): WAL lets them run
/// beside the writer and each other, on the blocking pool.
struct Readers {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// As many reads at once as there are cores: more would only queue for CPU.
    permits: tokio::sync::Semaphore,
}

impl Readers {
    fn new(path: &Path) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            path: path.to_owned(),
            idle: Mutex::default(),
            permits: tokio::sync::Semaphore::new(cores.clamp(2, 8)),
        }
    }

    fn connection(&self) -> rusqlite::Result<Connection> {
        if let Some(idle) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(idle);
        }
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = Connection::open_with_flags(&self.path, flags)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        // A search touches pages all over a large index (BM25 reads each match's length):
        // mapped, they are read without a copy or a system call each.
        db.execute_batch("PRAGMA mmap_size = 1073741824; PRAGMA cache_size = -16384;")?;
        Ok(db)
    }
}

impl Database {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// `max_bytes` caps the file's size (0: no cap).
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, Error> {
        make_private(path).map_err(|e| Error::Internal(e.to_string()))?;
        let mut db = Self::init(Connection::open(path), max_bytes)?;
        db.readers = Some(Arc::new(Readers::new(path)));
        Ok(db)
    }

    /// A private in-memory database, for tests and one-off runs.
    pub fn in_memory() -> Result<Self, Error> {
        Self::init(Connection::open_in_memory(), 0)
    }

    fn init(db: rusqlite::Result<Connection>, max_bytes: u64) -> Result<Self, Error> {
        let mut db = db.map_err(fail)?;
        // WAL with synchronous=NORMAL: a commit survives a crash of the process; a power loss
        // can take the commits since the last checkpoint.
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(fail)?;
        // Another process on the same file (`nagare kb ingest` beside `nagare serve`) may hold
        // the write lock for a moment: wait for it rather than fail.
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        migrate(&mut db).map_err(fail)?;
        if max_bytes > 0 {
            let page: u64 = db
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .map_err(fail)?;
            db.pragma_update(None, "max_page_count", (max_bytes / page.max(1)).max(1))
                .map_err(fail)?;
        }
        let (jobs, queue) = mpsc::channel();
        let failing = Arc::new(Mutex::new(None));
        let health = failing.clone();
        std::thread::Builder::new()
            .name("nagare-sqlite".into())
            .spawn(move || run(db, &queue, &health))
            .map_err(fail)?;
        Ok(Self {
            jobs,
            failing,
            readers: None,
        })
    }

    /// Runs the read-only `f` on a connection of its own, beside the database thread, so a
    /// long read holds no write back; it sees every write committed before it began. In memory,
    /// it runs on the database thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let Some(readers) = &self.readers else {
            return self.with(move |db| f(db)).await;
        };
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|_| fail("the database is closed"))?;
        let readers = readers.clone();
        tokio::task::spawn_blocking(move || {
            let db = readers.connection().map_err(fail)?;
            let result = f(&db).map_err(fail);
            readers
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(db);
            result
        })
        .await
        .map_err(|e| fail(format!("a database read: {e}")))?
    }

    /// Why writes are failing, when the last write failed and none has succeeded since: what
    /// `/readyz` reports.
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `f` on the database thread, inside a transaction shared with other calls: `f` must
    /// use a savepoint (`db.savepoint()`) where it needs its writes to stand or fall together.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let failing = self.failing.clone();
        let job: Job = Box::new(move |db| {
            let result = f(db);
            if let Err(e) = &result {
                note_failure(&failing, e);
            }
            Box::new(move |committed| {
                let _ = tx.send(committed.map_err(fail).and(result.map_err(fail)));
            })
        });
        let stopped = || fail("the database thread has stopped");
        self.jobs.send(job).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Creates the database file readable by its owner only (mode 0600), or makes an existing one and
/// its WAL files so: they hold every prompt. SQLite gives the WAL files it creates the mode of
/// the database file.
fn make_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = || std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(path, private())?;
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::set_permissions(&name, private()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The database thread: runs calls in batches, one transaction each, until every handle is gone.
/// A batch that writes clears `failing`; a commit that fails sets it.
fn run(mut db: Connection, queue: &mpsc::Receiver<Job>, failing: &Mutex<Option<String>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = db.execute_batch("BEGIN IMMEDIATE");
        let changes = db.total_changes();
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(&mut db)).collect();
        let committed = began
            .and_then(|()| db.execute_batch("COMMIT"))
            .map_err(|e| {
                note_failure(failing, &e);
                e.to_string()
            });
        if committed.is_err() {
            let _ = db.execute_batch("ROLLBACK");
        } else if db.total_changes() > changes {
            // A write went through: whatever failed before has passed.
            *failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

fn migrate(db: &mut Connection) -> rusqlite::Result<()> {
    let done: usize = db.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (n, step) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = db.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", n + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Remembers why the database fails, when it is the database's state (full, read-only, out of
/// I/O) rather than the request.
fn note_failure(failing: &Mutex<Option<String>>, e: &rusqlite::Error) {
    use rusqlite::ErrorCode as Code;
    if let rusqlite::Error::SqliteFailure(f, _) = e
        && matches!(
            f.code,
            Code::DiskFull | Code::SystemIoFailure | Code::ReadOnly | Code::CannotOpen
        )
    {
        *failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("sqlite: {e}"));
    }
}

pub(super) fn fail(e: impl std::fmt::Display) -> Error {
    store_error("sqlite", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_record_the_version() {
        let dir = std::env::temp_dir().join(format!("nagare-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nagare.db");
        drop(Database::open(&path, 0).unwrap());
        // A second open finds the schema current and changes nothing.
        drop(Database::open(&path, 0).unwrap());
        let db = Connection::open(&path).unwrap();
        let version: usize = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_database_and_its_wal_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("nagare-modes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nagare.db");
        let mode = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(&name).unwrap().permissions().mode() & 0o777
        };
        // A database left world-readable by an older version is made private on open.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = Database::open(&path, 0).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "nagare.db{suffix}");
        }
        drop(db);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
