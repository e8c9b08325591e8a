//! SQLite: open with the right pragmas, migrate, and run blocking work off the executor.

pub mod accounts;
pub mod directory;
pub mod environments;
pub mod gpus;
pub mod grants;
pub mod jobs;
pub mod lifecycle;
pub mod meta;
pub mod migrations;
pub mod notebooks;
pub mod origin_ports;
pub mod placement;
pub mod reservations;
pub mod secrets;
pub mod sessions;
pub mod shares;
pub mod storage;
pub mod tokens;
pub mod usage;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database {path} is at schema version {found}, but this notebox knows only up to \
         version {known}: it was written by a newer notebox. Install that version (or newer) \
         again, or restore a backup made with this one"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("migration {version} failed: {source}")]
    Migration {
        version: i64,
        source: rusqlite::Error,
    },
    #[error("the database worker stopped: {0}")]
    Worker(String),
    /// A write failed because the data dir's filesystem is full; nothing was committed.
    #[error(transparent)]
    DiskFull(crate::disk::DiskFull),
}

impl DbError {
    pub fn is_disk_full(&self) -> bool {
        matches!(self, DbError::DiskFull(_))
    }

    /// SQLITE_FULL becomes `DiskFull`; so does an SQLITE_IOERR while the data dir's
    /// filesystem has (almost) nothing free, which is how ENOSPC reaches SQLite's writes
    /// of its log and checkpoints. `data_dir` is named in the message.
    fn classify(self, data_dir: &Path) -> DbError {
        let source = match &self {
            DbError::Sqlite(e)
            | DbError::Open { source: e, .. }
            | DbError::Migration { source: e, .. } => e,
            _ => return self,
        };
        let full = crate::disk::is_full_sqlite(source)
            || (crate::disk::is_sqlite_io_error(source)
                && crate::disk::FreeSpace::of(data_dir)
                    .is_ok_and(|f| f.available < crate::disk::HARD_FLOOR));
        if full {
            DbError::DiskFull(crate::disk::DiskFull::noticed_on(data_dir))
        } else {
            self
        }
    }
}

/// A handle to the database. Cheap to clone. Each call borrows a pooled connection on a
/// blocking thread, so SQLite never blocks the async executor.
#[derive(Clone)]
pub struct Db {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

const MAX_IDLE: usize = 8;

impl Db {
    /// Opens (creating if needed) and migrates the database. Blocking: call it from
    /// `spawn_blocking` or before the runtime starts.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut conn = open_connection(path)?;
        migrations::migrate(&mut conn, path)?;
        Ok(Db {
            path: Arc::new(path.to_path_buf()),
            idle: Arc::new(Mutex::new(vec![conn])),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder holding the database (the data dir): what a full disk message names.
    fn data_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Runs `f` with a connection, on the current thread. For CLI commands and code that
    /// already runs on a blocking thread.
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path).map_err(|e| e.classify(self.data_dir()))?,
        };
        let result = f(&mut conn).map_err(|e| e.classify(self.data_dir()));
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }

    /// Runs `f` with a connection on tokio's blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.with_conn(f))
            .await
            .map_err(|e| DbError::Worker(e.to_string()))?
    }
}

fn open_connection(path: &Path) -> Result<Connection, DbError> {
    let open_err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(open_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA foreign_keys = ON;
         PRAGMA synchronous = NORMAL;",
    )
    .map_err(open_err)?;
    // Every query of ours is prepared once per connection and kept (prepare_cached):
    // parsing SQL was most of the database's time on the API's hot paths.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A trivial query: the database answers.
pub fn ping(conn: &Connection) -> Result<(), DbError> {
    conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}

#[cfg(test)]
pub(crate) fn test_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&dir.path().join("test.db")).expect("open db");
    (dir, db)
}
