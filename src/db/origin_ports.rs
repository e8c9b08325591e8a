//! The `origin_ports` table: which member each notebook port belongs to. A port that served
//! a member's notebook never serves another member's (a page left open in a browser keeps
//! the port's origin, and with it whatever the next notebook there would hold).

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;
use crate::clock::now;

/// The ports `notebook_id` (of `owner_id`) may be served on, best first: the port it had
/// last, when it is still its member's; then its member's other ports, least recently used
/// first; then the ports in `first..=last` that nobody owns yet, lowest first. Never a port
/// of another member.
pub fn candidates(
    conn: &Connection,
    notebook_id: &str,
    owner_id: i64,
    first: u16,
    last: u16,
) -> Result<Vec<u16>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT port, user_id, notebook_id = ?1 FROM origin_ports
         WHERE port BETWEEN ?2 AND ?3 ORDER BY last_used_at, port",
    )?;
    let rows = stmt.query_map(params![notebook_id, first, last], |r| {
        Ok((
            r.get::<_, u16>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    let mut own_last = None;
    let mut theirs = Vec::new();
    let mut owned = std::collections::HashSet::new();
    for row in rows {
        let (port, user, this_notebook) = row?;
        owned.insert(port);
        if user != owner_id {
            continue;
        }
        if this_notebook && own_last.is_none() {
            own_last = Some(port);
        } else {
            theirs.push(port);
        }
    }
    let mut out: Vec<u16> = own_last.into_iter().chain(theirs).collect();
    out.extend((first..=last).filter(|p| !owned.contains(p)));
    Ok(out)
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The port is the member's, now serving `notebook_id`; it served `previous` before
    /// (`None`: never served anything, or served this notebook).
    Taken { previous: Option<String> },
    /// Another member's port.
    Theirs,
}

/// Takes `port` for `notebook_id` of `owner_id`, in one transaction: a port nobody owns
/// becomes the member's; the member's own port moves to this notebook; another member's
/// port is refused. The port remembers the notebook (it is offered to it first next time).
pub fn claim(
    conn: &mut Connection,
    port: u16,
    owner_id: i64,
    notebook_id: &str,
) -> Result<Claim, DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let held: Option<(i64, Option<String>)> = tx
        .query_row(
            "SELECT user_id, notebook_id FROM origin_ports WHERE port = ?1",
            [port],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let previous = match held {
        Some((user, _)) if user != owner_id => return Ok(Claim::Theirs),
        Some((_, previous)) => previous.filter(|p| p != notebook_id),
        None => None,
    };
    tx.execute(
        "INSERT INTO origin_ports (port, user_id, notebook_id, last_used_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(port) DO UPDATE SET notebook_id = excluded.notebook_id,
                                         last_used_at = excluded.last_used_at",
        params![port, owner_id, notebook_id, now()],
    )?;
    tx.commit()?;
    Ok(Claim::Taken { previous })
}

/// How many ports of `first..=last` belong to some member, and how many members have
/// accounts that may log in (the admin pages and doctor compare these with the range).
pub fn usage(conn: &Connection, first: u16, last: u16) -> Result<PortUsage, DbError> {
    let owned = conn.query_row(
        "SELECT count(*) FROM origin_ports WHERE port BETWEEN ?1 AND ?2",
        params![first, last],
        |r| r.get(0),
    )?;
    let members = conn.query_row("SELECT count(*) FROM users WHERE disabled = 0", [], |r| {
        r.get(0)
    })?;
    Ok(PortUsage { owned, members })
}

/// [`usage`] from the database file at `path`, opened read-only (for `notebox doctor`,
/// which may run beside the server and must change nothing); `None` when there is none yet.
pub fn usage_of_file(
    path: &std::path::Path,
    first: u16,
    last: u16,
) -> Result<Option<PortUsage>, DbError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'origin_ports'",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    usage(&conn, first, last).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortUsage {
    pub owned: i64,
    pub members: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{test_db, users};

    #[test]
    fn a_port_stays_with_its_member_and_prefers_the_notebook_it_served() {
        let (_dir, db) = test_db();
        db.with_conn(|c| {
            let alice = users::insert(c, "alice", "x", false)?.expect("user").id;
            let bob = users::insert(c, "bob", "x", false)?.expect("user").id;
            assert_eq!(
                candidates(c, "a1", alice, 9000, 9003)?,
                vec![9000, 9001, 9002, 9003]
            );
            assert_eq!(
                claim(c, 9000, alice, "a1")?,
                Claim::Taken { previous: None }
            );
            // Bob never gets alice's port, even when it is the only one left.
            assert_eq!(candidates(c, "b1", bob, 9000, 9000)?, Vec::<u16>::new());
            assert_eq!(claim(c, 9000, bob, "b1")?, Claim::Theirs);
            assert_eq!(claim(c, 9001, bob, "b1")?, Claim::Taken { previous: None });
            // Alice's next notebook may have her port; a1 is offered it first.
            assert_eq!(
                claim(c, 9000, alice, "a2")?,
                Claim::Taken {
                    previous: Some("a1".into())
                }
            );
            assert_eq!(
                candidates(c, "a1", alice, 9000, 9003)?,
                vec![9000, 9002, 9003]
            );
            assert_eq!(
                candidates(c, "a2", alice, 9000, 9003)?,
                vec![9000, 9002, 9003]
            );
            assert_eq!(
                usage(c, 9000, 9003)?,
                PortUsage {
                    owned: 2,
                    members: 2
                }
            );
            Ok(())
        })
        .expect("db");
    }
}
