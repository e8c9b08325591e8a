//! Changes to accounts that reach beyond the `users` table: a new password ends sessions
//! and notebook cookies; admin and disabled changes must leave an enabled admin. Each is
//! one transaction, and bumps the credentials epoch so other processes look again.

use rusqlite::Connection;

use super::{grants, sessions, users, DbError};

/// How a change to an account that must leave an enabled admin went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    Done,
    NoSuchUser,
    /// Refused (rolled back): no enabled admin would be left.
    LastAdmin,
}

/// Applies `change` in one transaction, rolled back if no enabled admin is left; a change
/// made bumps the credentials epoch (other processes' open connections look again).
fn change_guarded(
    conn: &mut Connection,
    change: impl FnOnce(&Connection) -> Result<bool, DbError>,
) -> Result<AccountChange, DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !change(&tx)? {
        return Ok(AccountChange::NoSuchUser);
    }
    if users::active_admin_count(&tx)? == 0 {
        return Ok(AccountChange::LastAdmin); // dropped: rolled back
    }
    sessions::bump_credentials_epoch(&tx)?;
    tx.commit()?;
    Ok(AccountChange::Done)
}

/// Grants or removes admin (see `change_guarded`).
pub fn change_admin(
    conn: &mut Connection,
    user_id: i64,
    is_admin: bool,
) -> Result<AccountChange, DbError> {
    change_guarded(conn, |c| users::set_admin(c, user_id, is_admin))
}

/// Disables an account, ending its sessions, or enables it again (see `change_guarded`).
pub fn change_disabled(
    conn: &mut Connection,
    user_id: i64,
    disabled: bool,
) -> Result<AccountChange, DbError> {
    change_guarded(conn, |c| {
        let found = users::set_disabled(c, user_id, disabled)?;
        if disabled {
            sessions::delete_for_user(c, user_id)?;
        }
        Ok(found)
    })
}

/// Sets a new password hash in one transaction and ends every session of the user but
/// `keep_session_hash` (the one changing its own password), every notebook cookie (grant)
/// of theirs, and bumps the credentials epoch. False when there is no such user.
pub fn replace_password(
    conn: &mut Connection,
    user_id: i64,
    hash: &str,
    keep_session_hash: Option<&str>,
) -> Result<bool, DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found = users::set_password_hash(&tx, user_id, hash)?;
    match keep_session_hash {
        Some(keep) => {
            sessions::delete_for_user_except(&tx, user_id, keep)?;
        }
        None => sessions::delete_for_user(&tx, user_id)?,
    }
    grants::delete_for_user(&tx, user_id)?;
    sessions::bump_credentials_epoch(&tx)?;
    tx.commit()?;
    Ok(found)
}
