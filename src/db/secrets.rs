//! The `registry_credentials`, `variables` and `variable_changes` tables: what members and
//! admins keep sealed (the vault seals and opens; this module only stores bytes).
//!
//! An owner is `Some(user id)` for a member's own, `None` for the lab's.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::DbError;
use crate::clock::now;

/// The key of an owner in `variable_changes` and the unique indexes: 0 is the lab.
fn owner_key(owner: Option<i64>) -> i64 {
    owner.unwrap_or(0)
}

// ---- registries ----

/// A stored registry credential, without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRow {
    pub host: String,
    pub username: String,
    /// None: the lab's.
    pub user_id: Option<i64>,
    pub updated_at: i64,
}

/// What saving a credential did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryWrite {
    /// Added, or replaced the owner's credential for that host.
    Saved,
    /// The owner already has `max` registries.
    TooMany { max: i64 },
}

/// Adds or replaces the owner's credential for `host` (one transaction: the limit is
/// checked against what is stored at that moment).
pub fn put_registry(
    conn: &mut Connection,
    owner: Option<i64>,
    host: &str,
    username: &str,
    password_sealed: &[u8],
    max: i64,
) -> Result<RegistryWrite, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = owner_key(owner);
    let updated = tx.execute(
        "UPDATE registry_credentials SET username = ?3, password_sealed = ?4, updated_at = ?5
         WHERE ifnull(user_id, 0) = ?1 AND host = ?2",
        params![key, host, username, password_sealed, now()],
    )?;
    if updated == 0 {
        let count: i64 = tx.query_row(
            "SELECT count(*) FROM registry_credentials WHERE ifnull(user_id, 0) = ?1",
            [key],
            |r| r.get(0),
        )?;
        if count >= max {
            return Ok(RegistryWrite::TooMany { max });
        }
        tx.execute(
            "INSERT INTO registry_credentials
                 (user_id, host, username, password_sealed, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![owner, host, username, password_sealed, now()],
        )?;
    }
    tx.commit()?;
    Ok(RegistryWrite::Saved)
}

/// The owner's credentials (never their passwords), by host.
pub fn registries_of(conn: &Connection, owner: Option<i64>) -> Result<Vec<RegistryRow>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT host, username, user_id, updated_at FROM registry_credentials
         WHERE ifnull(user_id, 0) = ?1 ORDER BY host",
    )?;
    let rows = stmt.query_map([owner_key(owner)], |r| {
        Ok(RegistryRow {
            host: r.get(0)?,
            username: r.get(1)?,
            user_id: r.get(2)?,
            updated_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes the owner's credential for `host`; false when there was none.
pub fn delete_registry(conn: &Connection, owner: Option<i64>, host: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "DELETE FROM registry_credentials WHERE ifnull(user_id, 0) = ?1 AND host = ?2",
        params![owner_key(owner), host],
    )? == 1)
}

/// The owner's username and sealed password for `host`, if they have one.
pub fn registry_credential(
    conn: &Connection,
    owner: Option<i64>,
    host: &str,
) -> Result<Option<(String, Vec<u8>)>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT username, password_sealed FROM registry_credentials
             WHERE ifnull(user_id, 0) = ?1 AND host = ?2",
        )?
        .query_row(params![owner_key(owner), host], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// Whether any member (not the lab) keeps a credential for `host`: images from there are
/// private to whoever may pull them.
pub fn members_have_credential_for(conn: &Connection, host: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM registry_credentials WHERE user_id IS NOT NULL AND host = ?1 LIMIT 1",
        )?
        .query_row([host], |_| Ok(()))
        .optional()?
        .is_some())
}

// ---- variables ----

/// A stored variable, sealed.
#[derive(Debug, Clone)]
pub struct VariableRow {
    pub name: String,
    pub secret: bool,
    pub value_sealed: Vec<u8>,
    /// None: the lab's.
    pub user_id: Option<i64>,
    pub updated_at: i64,
}

/// The limits on one owner's variables.
#[derive(Debug, Clone, Copy)]
pub struct VariableLimits {
    pub max_count: i64,
    pub max_total_bytes: i64,
}

/// What saving a variable did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariableWrite {
    Saved,
    /// The owner already has `max` variables.
    TooMany {
        max: i64,
    },
    /// The owner's values would add up to `total` bytes, over `max`.
    TooLarge {
        total: i64,
        max: i64,
    },
}

/// Adds or replaces the owner's variable `name`, and records the change (so running
/// notebooks with older values can be named). One transaction: the limits are checked
/// against what is stored at that moment.
pub fn put_variable(
    conn: &mut Connection,
    owner: Option<i64>,
    name: &str,
    secret: bool,
    value_sealed: &[u8],
    value_bytes: i64,
    limits: VariableLimits,
) -> Result<VariableWrite, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = owner_key(owner);
    let (count, others_bytes, exists): (i64, i64, bool) = tx.query_row(
        "SELECT count(*), ifnull(sum(CASE WHEN name = ?2 THEN 0 ELSE value_bytes END), 0),
                ifnull(max(name = ?2), 0)
         FROM variables WHERE ifnull(user_id, 0) = ?1",
        params![key, name],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if !exists && count >= limits.max_count {
        return Ok(VariableWrite::TooMany {
            max: limits.max_count,
        });
    }
    let total = others_bytes + value_bytes;
    if total > limits.max_total_bytes {
        return Ok(VariableWrite::TooLarge {
            total,
            max: limits.max_total_bytes,
        });
    }
    let at = now();
    if exists {
        tx.execute(
            "UPDATE variables SET secret = ?3, value_sealed = ?4, value_bytes = ?5,
                 updated_at = ?6
             WHERE ifnull(user_id, 0) = ?1 AND name = ?2",
            params![key, name, secret, value_sealed, value_bytes, at],
        )?;
    } else {
        tx.execute(
            "INSERT INTO variables
                 (user_id, name, secret, value_sealed, value_bytes, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![owner, name, secret, value_sealed, value_bytes, at],
        )?;
    }
    record_change(&tx, key)?;
    tx.commit()?;
    Ok(VariableWrite::Saved)
}

/// Removes the owner's variable `name` (recording the change); false when there was none.
pub fn delete_variable(
    conn: &mut Connection,
    owner: Option<i64>,
    name: &str,
) -> Result<bool, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = owner_key(owner);
    let gone = tx.execute(
        "DELETE FROM variables WHERE ifnull(user_id, 0) = ?1 AND name = ?2",
        params![key, name],
    )? == 1;
    if gone {
        record_change(&tx, key)?;
    }
    tx.commit()?;
    Ok(gone)
}

/// The next number of `variable_changes`, given to the owner.
fn record_change(conn: &Connection, key: i64) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO variable_changes (owner_key, generation)
             VALUES (?1, (SELECT ifnull(max(generation), 0) + 1 FROM variable_changes))
         ON CONFLICT(owner_key) DO UPDATE SET generation = excluded.generation",
        [key],
    )?;
    Ok(())
}

/// The owner's variables, by name.
pub fn variables_of(conn: &Connection, owner: Option<i64>) -> Result<Vec<VariableRow>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, secret, value_sealed, user_id, updated_at FROM variables
         WHERE ifnull(user_id, 0) = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([owner_key(owner)], |r| {
        Ok(VariableRow {
            name: r.get(0)?,
            secret: r.get(1)?,
            value_sealed: r.get(2)?,
            user_id: r.get(3)?,
            updated_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a notebook of `owner` is given at its start: the lab's variables, then the
/// member's, and the change number they stand at. One read, so the number matches them.
pub fn variables_for_start(
    conn: &mut Connection,
    owner: i64,
) -> Result<(Vec<VariableRow>, Vec<VariableRow>, i64), DbError> {
    let tx = conn.transaction()?;
    let lab = variables_of(&tx, None)?;
    let member = variables_of(&tx, Some(owner))?;
    let generation = tx.query_row(
        "SELECT ifnull(max(generation), 0) FROM variable_changes",
        [],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok((lab, member, generation))
}

/// Records the change number a notebook's new container got its variables at.
pub fn record_variables_given(
    conn: &Connection,
    notebook_id: &str,
    generation: i64,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE notebooks SET variables_generation = ?2 WHERE id = ?1",
        params![notebook_id, generation],
    )?;
    Ok(())
}

/// The member's running (or starting) notebooks whose container got its variables before
/// the last change to the member's or the lab's: (id, name).
pub fn notebooks_with_older_variables(
    conn: &Connection,
    owner: i64,
) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name FROM notebooks
         WHERE owner_id = ?1 AND state IN ('running', 'starting') AND kind = 'notebook'
           AND ifnull(variables_generation, 0) < (SELECT ifnull(max(generation), 0)
               FROM variable_changes WHERE owner_key IN (0, ?1))
         ORDER BY name, id",
    )?;
    let rows = stmt.query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db;

    const LIMITS: VariableLimits = VariableLimits {
        max_count: 2,
        max_total_bytes: 10,
    };

    #[tokio::test]
    async fn variables_keep_to_their_owner_and_limits() {
        let (_dir, db) = test_db();
        db.call(|c| {
            let alice = crate::db::users::insert(c, "alice", "x", false)?
                .map(|u| u.id)
                .unwrap_or_else(|| panic!("alice exists"));
            assert_eq!(
                put_variable(c, Some(alice), "A", true, b"s1", 4, LIMITS)?,
                VariableWrite::Saved
            );
            // The lab's namesake is another variable.
            assert_eq!(
                put_variable(c, None, "A", false, b"s2", 4, LIMITS)?,
                VariableWrite::Saved
            );
            // Replacing counts the new size, not both.
            assert_eq!(
                put_variable(c, Some(alice), "A", true, b"s3", 9, LIMITS)?,
                VariableWrite::Saved
            );
            assert_eq!(
                put_variable(c, Some(alice), "B", true, b"s4", 2, LIMITS)?,
                VariableWrite::TooLarge { total: 11, max: 10 }
            );
            assert_eq!(
                put_variable(c, Some(alice), "B", true, b"s4", 1, LIMITS)?,
                VariableWrite::Saved
            );
            assert_eq!(
                put_variable(c, Some(alice), "C", true, b"s5", 0, LIMITS)?,
                VariableWrite::TooMany { max: 2 }
            );
            let (lab, member, generation) = variables_for_start(c, alice)?;
            assert_eq!(lab.len(), 1);
            assert_eq!(
                member.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
                ["A", "B"]
            );
            assert_eq!(member[0].value_sealed, b"s3");
            assert_eq!(generation, 4);
            assert!(delete_variable(c, Some(alice), "A")?);
            assert!(!delete_variable(c, Some(alice), "A")?);
            assert_eq!(variables_of(c, None)?.len(), 1);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn registries_are_one_per_owner_and_host() {
        let (_dir, db) = test_db();
        db.call(|c| {
            let alice = crate::db::users::insert(c, "alice", "x", false)?
                .map(|u| u.id)
                .unwrap_or_else(|| panic!("alice exists"));
            let host = "127.0.0.1:5000";
            assert!(!members_have_credential_for(c, host)?);
            put_registry(c, None, host, "lab", b"p0", 1)?;
            assert!(!members_have_credential_for(c, host)?);
            put_registry(c, Some(alice), host, "a", b"p1", 1)?;
            put_registry(c, Some(alice), host, "a2", b"p2", 1)?;
            assert_eq!(
                put_registry(c, Some(alice), "other.example", "a", b"p3", 1)?,
                RegistryWrite::TooMany { max: 1 }
            );
            assert!(members_have_credential_for(c, host)?);
            assert_eq!(
                registry_credential(c, Some(alice), host)?,
                Some(("a2".to_string(), b"p2".to_vec()))
            );
            assert_eq!(
                registry_credential(c, None, host)?,
                Some(("lab".to_string(), b"p0".to_vec()))
            );
            assert_eq!(registries_of(c, Some(alice))?.len(), 1);
            assert!(delete_registry(c, Some(alice), host)?);
            assert!(!delete_registry(c, Some(alice), host)?);
            assert_eq!(registries_of(c, None)?.len(), 1);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
