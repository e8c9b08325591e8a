//! Numbered migrations embedded in the binary. Each runs in its own transaction together
//! with the `user_version` bump, so a crash leaves the database at a whole version.

use std::path::Path;

use rusqlite::Connection;

use super::DbError;

/// (version, SQL). Append only; never edit a migration that has shipped.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_accounts.sql")),
    (2, include_str!("migrations/0002_notebooks.sql")),
    (3, include_str!("migrations/0003_proxy.sql")),
    (4, include_str!("migrations/0004_gpus.sql")),
    (5, include_str!("migrations/0005_shares.sql")),
    (6, include_str!("migrations/0006_share_previews.sql")),
    (7, include_str!("migrations/0007_activity.sql")),
    (8, include_str!("migrations/0008_usage.sql")),
    (9, include_str!("migrations/0009_origins.sql")),
    (10, include_str!("migrations/0010_origin_ports.sql")),
    (11, include_str!("migrations/0011_secrets.sql")),
    (12, include_str!("migrations/0012_environments.sql")),
    (13, include_str!("migrations/0013_directory.sql")),
    (14, include_str!("migrations/0014_jobs.sql")),
    (15, include_str!("migrations/0015_reservations.sql")),
    (16, include_str!("migrations/0016_storage.sql")),
];

pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}

pub fn current_version(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let found = current_version(conn)?;
    let known = latest_version();
    if found > known {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        let apply = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        apply(conn).map_err(|source| DbError::Migration {
            version: *version,
            source,
        })?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_reaches_latest() {
        let (_dir, db) = crate::db::test_db();
        let v = db.with_conn(|c| current_version(c)).expect("version");
        assert_eq!(v, latest_version());
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n.db");
        {
            let c = Connection::open(&path).expect("open");
            c.pragma_update(None, "user_version", latest_version() + 5)
                .expect("bump");
        }
        let err = crate::db::Db::open(&path)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("newer notebox"), "{err}");
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("n.db");
        drop(crate::db::Db::open(&path).expect("first"));
        let db = crate::db::Db::open(&path).expect("second");
        assert_eq!(
            db.with_conn(|c| current_version(c)).expect("v"),
            latest_version()
        );
    }
}
