//! Accounts from a directory: made on first login, kept in step with the directory at
//! each login and check, disabled (and enabled again) by it; and the link requests of
//! directory members whose name a local account already has.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::users::{self, User};
use super::{grants, sessions, DbError};
use crate::clock::now;

/// What the directory says of an account at a login or a check.
pub struct DirectoryState<'a> {
    pub external_id: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    /// Notebox group ids.
    pub groups: &'a [String],
    /// The admin flag, when the directory decides it.
    pub admin: Option<bool>,
    pub group_budget: Option<f64>,
}

/// A password hash no password matches: directory accounts log in through the directory.
const NO_PASSWORD: &str = "!directory";

/// Makes a directory account; `Ok(None)` when the name is taken.
pub fn insert(
    conn: &Connection,
    username: &str,
    source: &str,
    state: &DirectoryState,
) -> Result<Option<User>, DbError> {
    let inserted = conn.execute(
        "INSERT INTO users (username, password_hash, is_admin, created_at, source, external_id,
                            display_name, email, directory_groups, group_gpu_hours_budget,
                            directory_checked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?4)
         ON CONFLICT(username) DO NOTHING",
        params![
            username,
            NO_PASSWORD,
            state.admin.unwrap_or(false),
            now(),
            source,
            state.external_id,
            state.display_name,
            state.email,
            state.groups.join(","),
            state.group_budget,
        ],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    users::by_id(conn, conn.last_insert_rowid())
}

/// The account's external id (LDAP DN, OIDC subject), if it has one.
pub fn external_id(conn: &Connection, user_id: i64) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row(
            "SELECT external_id FROM users WHERE id = ?1",
            [user_id],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// Who disabled the account ("admin", "directory" or "") and why.
pub fn disabled_by(conn: &Connection, user_id: i64) -> Result<(String, String), DbError> {
    Ok(conn
        .query_row(
            "SELECT disabled_by, disabled_reason FROM users WHERE id = ?1",
            [user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or_default())
}

/// Records what the directory says now. An account the directory had disabled is enabled
/// again (one an admin disabled stays so). One transaction; bumps the credentials epoch
/// when the admin flag or the enabled state changed.
pub fn sync(conn: &mut Connection, user_id: i64, state: &DirectoryState) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE users SET external_id = ?2, display_name = ?3, email = ?4, directory_groups = ?5,
                group_gpu_hours_budget = ?6, directory_checked_at = ?7
         WHERE id = ?1",
        params![
            user_id,
            state.external_id,
            state.display_name,
            state.email,
            state.groups.join(","),
            state.group_budget,
            now()
        ],
    )?;
    let mut changed = tx.execute(
        "UPDATE users SET disabled = 0, disabled_by = '', disabled_reason = ''
         WHERE id = ?1 AND disabled = 1 AND disabled_by = 'directory'",
        [user_id],
    )? > 0;
    if let Some(admin) = state.admin {
        changed |= tx.execute(
            "UPDATE users SET is_admin = ?2 WHERE id = ?1 AND is_admin != ?2",
            params![user_id, admin],
        )? > 0;
        // A directory never takes the last enabled admin away (the first admin is local).
        if users::active_admin_count(&tx)? == 0 {
            tx.execute("UPDATE users SET is_admin = 1 WHERE id = ?1", [user_id])?;
        }
    }
    if changed {
        sessions::bump_credentials_epoch(&tx)?;
    }
    tx.commit()?;
    Ok(())
}

/// The directory no longer lets them in: disabled, sessions and notebook cookies ended,
/// their notebooks asked to stop, credentials epoch bumped — one transaction. False when
/// already disabled (or no such account) — or when they are the last enabled admin, who
/// stays.
pub fn disable(conn: &mut Connection, user_id: i64, reason: &str) -> Result<bool, DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let changed = tx.execute(
        "UPDATE users SET disabled = 1, disabled_by = 'directory', disabled_reason = ?2,
                directory_checked_at = ?3
         WHERE id = ?1 AND disabled = 0",
        params![user_id, reason, now()],
    )? > 0;
    if !changed || users::active_admin_count(&tx)? == 0 {
        return Ok(false); // rolled back
    }
    sessions::delete_for_user(&tx, user_id)?;
    grants::delete_for_user(&tx, user_id)?;
    super::lifecycle::request_stop_of_owner_in(
        &tx,
        user_id,
        "Stopping: the directory no longer lets its member in",
        None,
    )?;
    sessions::bump_credentials_epoch(&tx)?;
    tx.commit()?;
    Ok(true)
}

/// Every account of `source` ("ldap"), enabled or disabled by the directory, with the
/// entry it is tied to, for the scheduled check.
pub fn accounts_of(
    conn: &Connection,
    source: &str,
) -> Result<Vec<(User, Option<String>)>, DbError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {}, u.external_id FROM users u
         WHERE u.source = ?1 AND (u.disabled = 0 OR u.disabled_by = 'directory')
         ORDER BY u.id",
        users::U_COLUMNS
    ))?;
    let rows = stmt.query_map([source], |r| {
        Ok((users::from_row(r)?, r.get(users::N_COLUMNS)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Keeps the group budgets of every account in step with the config's groups (at start:
/// `[[groups]]` may have changed).
pub fn set_group_budget(
    conn: &Connection,
    user_id: i64,
    budget: Option<f64>,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE users SET group_gpu_hours_budget = ?2 WHERE id = ?1",
        params![user_id, budget],
    )?;
    Ok(())
}

/// Someone the directory vouched for whose name another account has.
#[derive(Debug, Clone, Serialize)]
pub struct LinkRequest {
    pub username: String,
    pub source: String,
    pub external_id: String,
    pub entry: String,
    pub display_name: String,
    pub requested_at: i64,
}

/// Records (or replaces) the request of `request.username` from `request.source`.
pub fn request_link(conn: &Connection, request: &LinkRequest) -> Result<(), DbError> {
    let r = request;
    conn.execute(
        "INSERT INTO link_requests (username, source, external_id, entry, display_name, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(username, source) DO UPDATE SET external_id = ?3, entry = ?4,
                                                     display_name = ?5, requested_at = ?6",
        params![r.username, r.source, r.external_id, r.entry, r.display_name, now()],
    )?;
    // Bounded: the oldest requests go past 200.
    conn.execute(
        "DELETE FROM link_requests WHERE rowid NOT IN
           (SELECT rowid FROM link_requests ORDER BY requested_at DESC LIMIT 200)",
        [],
    )?;
    Ok(())
}

pub fn link_requests(conn: &Connection) -> Result<Vec<LinkRequest>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT username, source, external_id, entry, display_name, requested_at
         FROM link_requests ORDER BY requested_at DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(LinkRequest {
            username: r.get(0)?,
            source: r.get(1)?,
            external_id: r.get(2)?,
            entry: r.get(3)?,
            display_name: r.get(4)?,
            requested_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn dismiss_link(conn: &Connection, username: &str, source: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "DELETE FROM link_requests WHERE username = ?1 AND source = ?2",
        params![username, source],
    )? > 0)
}

/// The admin links the account named in a request to the directory: from now on its
/// password is the directory's; its sessions and notebook cookies end. False when there
/// is no such request or account.
pub fn link(
    conn: &mut Connection,
    username: &str,
    source: &str,
    external_id: &str,
) -> Result<bool, DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // The request the admin saw: one replaced since (another subject) is not linked.
    let seen: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM link_requests WHERE username = ?1 AND source = ?2 AND external_id = ?3",
            params![username, source, external_id],
            |r| r.get(0),
        )
        .optional()?;
    if seen.is_none() {
        return Ok(false);
    }
    let Some(user) = users::by_name(&tx, username)? else {
        return Ok(false);
    };
    tx.execute(
        "UPDATE users SET source = ?2, external_id = ?3, password_hash = ?4 WHERE id = ?1",
        params![user.id, source, external_id, NO_PASSWORD],
    )?;
    tx.execute("DELETE FROM link_requests WHERE username = ?1", [username])?;
    sessions::delete_for_user(&tx, user.id)?;
    grants::delete_for_user(&tx, user.id)?;
    // Whoever held the account before holds none of its tokens now.
    tx.execute("DELETE FROM api_tokens WHERE user_id = ?1", [user.id])?;
    sessions::bump_credentials_epoch(&tx)?;
    tx.commit()?;
    Ok(true)
}

/// Why the directory disabled each account it disabled, by account id.
pub fn disabled_reasons(
    conn: &Connection,
) -> Result<std::collections::HashMap<i64, String>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT id, disabled_reason FROM users WHERE disabled = 1 AND disabled_by = 'directory'",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::notebooks::{self as nq, NewNotebook};
    use crate::model::{DesiredState, Launcher, NotebookState};

    fn notebook(c: &Connection, id: &str, owner_id: i64, machine_id: &str) {
        nq::insert(
            c,
            &NewNotebook {
                id,
                owner_id,
                name: id,
                image_id: Some("test"),
                image: "test:1",
                launcher: Launcher::JupyterLab,
                command: &[],
                machine_id,
                cpus: 1.0,
                memory_mib: 1024,
                gpu_count: 0,
                jupyter_token: "t",
                auto_shutdown_secs: None,
                forked_from: None,
                desired_state: DesiredState::Running,
                state: NotebookState::Running,
                state_detail: "",
                environment: None,
                repo: None,
            },
        )
        .expect("notebook");
    }

    fn state<'a>(id: &'a str) -> DirectoryState<'a> {
        DirectoryState {
            external_id: id,
            display_name: "Erin",
            email: "",
            groups: &[],
            admin: None,
            group_budget: None,
        }
    }

    #[test]
    fn groups_shrinking_or_a_disable_stop_notebooks_in_the_same_write() {
        let (_d, db) = crate::db::test_db();
        db.with_conn(|c| {
            users::insert(c, "admin", "h", true)?;
            let erin = insert(c, "erin", "ldap", &state("uuid:1"))?.expect("made");
            notebook(c, "on-cpu", erin.id, "cpu");
            notebook(c, "on-gpu", erin.id, "gpu1");
            // Groups no longer allow gpu1: only that one stops, with the reason kept.
            let keep = ["cpu".to_string()];
            let n = crate::db::lifecycle::request_stop_of_owner(
                c,
                erin.id,
                "Stopping: x",
                Some(&keep),
            )?;
            assert_eq!(n, 1);
            let gpu = nq::by_id(c, "on-gpu")?.expect("row");
            assert_eq!(gpu.desired_state, DesiredState::Stopped);
            assert_eq!(gpu.state_detail, "Stopping: x");
            assert_eq!(
                nq::by_id(c, "on-cpu")?.expect("row").desired_state,
                DesiredState::Running
            );
            // The directory disables erin: the rest stops in the same transaction.
            assert!(disable(c, erin.id, "gone")?);
            assert_eq!(
                nq::by_id(c, "on-cpu")?.expect("row").desired_state,
                DesiredState::Stopped
            );
            assert!(!disable(c, erin.id, "gone")?, "once");
            // An allowed login later enables the account again.
            sync(c, erin.id, &state("uuid:1"))?;
            assert!(!users::by_id(c, erin.id)?.expect("erin").disabled);
            Ok(())
        })
        .expect("db");
    }

    #[test]
    fn a_link_gives_the_account_to_the_entry_the_admin_saw_and_ends_its_tokens() {
        let (_d, db) = crate::db::test_db();
        db.with_conn(|c| {
            let carol = users::insert(c, "carol", "hash", false)?.expect("carol");
            crate::db::tokens::insert(c, carol.id, "cli", "tokenhash", "nbx_abc")?;
            let request = |external_id: &str| LinkRequest {
                username: "carol".into(),
                source: "oidc:lab".into(),
                external_id: external_id.into(),
                entry: external_id.into(),
                display_name: "Carol".into(),
                requested_at: 0,
            };
            request_link(c, &request("sub-1"))?;
            // Replaced by another subject before the admin answered: the admin's answer
            // (about sub-1) links nothing.
            request_link(c, &request("sub-2"))?;
            assert!(!link(c, "carol", "oidc:lab", "sub-1")?);
            assert!(link(c, "carol", "oidc:lab", "sub-2")?);
            let carol = users::by_id(c, carol.id)?.expect("carol");
            assert_eq!(carol.source, "oidc:lab");
            assert_eq!(external_id(c, carol.id)?.as_deref(), Some("sub-2"));
            assert!(
                crate::db::tokens::lookup(c, "tokenhash")?.is_none(),
                "tokens ended"
            );
            assert!(link_requests(c)?.is_empty());
            Ok(())
        })
        .expect("db");
    }
}
