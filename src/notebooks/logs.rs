//! How much reading containers' logs may cost: lines and bytes per read, reads at once.
//! A read streams the engine's answer through a buffer of `MAX_BYTES`, so what bounds
//! Notebox's memory is that buffer times the reads running at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most lines one read may ask for.
pub const MAX_LINES: usize = 10_000;
/// The most bytes one read answers with: the end of the log, from a whole line.
pub const MAX_BYTES: usize = 1 << 20;
/// Reads running at once, Notebox-wide.
const AT_ONCE: usize = 4;
/// Reads running at once for one member; more are refused at once.
const AT_ONCE_PER_MEMBER: usize = 2;
/// How long a read waits for one of the Notebox-wide slots before it is refused.
const WAIT: Duration = Duration::from_secs(2);

/// Why a read may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogReadRefusal {
    /// The member already has `AT_ONCE_PER_MEMBER` reads running.
    Member,
    /// Every Notebox-wide slot stayed taken for `WAIT`.
    Everyone,
}

impl LogReadRefusal {
    pub fn message(self) -> String {
        match self {
            LogReadRefusal::Member => format!(
                "You are already reading {AT_ONCE_PER_MEMBER} logs at once; \
                 wait for them to finish and try again."
            ),
            LogReadRefusal::Everyone => {
                "Notebox is busy reading other logs; try again in a moment.".to_string()
            }
        }
    }
}

/// The slots for log reads: a few at once for everyone, fewer for one member.
#[derive(Clone)]
pub struct LogReads {
    everyone: Arc<Semaphore>,
    /// Reads running per member (by user id); members with none are not kept.
    members: Arc<Mutex<HashMap<i64, usize>>>,
    per_member: usize,
    wait: Duration,
}

/// A running read; its slots come free when it is dropped.
pub struct LogReadSlot {
    _everyone: OwnedSemaphorePermit,
    _member: MemberSlot,
}

struct MemberSlot {
    members: Arc<Mutex<HashMap<i64, usize>>>,
    member: i64,
}

impl Drop for MemberSlot {
    fn drop(&mut self) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = members.get_mut(&self.member) {
            *n -= 1;
            if *n == 0 {
                members.remove(&self.member);
            }
        }
    }
}

impl Default for LogReads {
    fn default() -> LogReads {
        LogReads::new(AT_ONCE, AT_ONCE_PER_MEMBER, WAIT)
    }
}

impl LogReads {
    fn new(at_once: usize, per_member: usize, wait: Duration) -> LogReads {
        LogReads {
            everyone: Arc::new(Semaphore::new(at_once)),
            members: Arc::new(Mutex::new(HashMap::new())),
            per_member,
            wait,
        }
    }

    /// A slot for `member`'s read: refused at once past the member's share, after a short
    /// wait when every slot is taken.
    pub async fn acquire(&self, member: i64) -> Result<LogReadSlot, LogReadRefusal> {
        let member_slot = {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            let running = members.entry(member).or_insert(0);
            if *running >= self.per_member {
                return Err(LogReadRefusal::Member);
            }
            *running += 1;
            MemberSlot {
                members: self.members.clone(),
                member,
            }
        };
        match tokio::time::timeout(self.wait, self.everyone.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(LogReadSlot {
                _everyone: permit,
                _member: member_slot,
            }),
            // Timed out (or closed, which this type never does).
            _ => Err(LogReadRefusal::Everyone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_are_bounded_per_member_and_for_everyone() {
        let reads = LogReads::new(3, 2, Duration::from_millis(50));
        let a1 = reads.acquire(1).await.expect("first");
        let a2 = reads.acquire(1).await.expect("second");
        assert_eq!(reads.acquire(1).await.err(), Some(LogReadRefusal::Member));
        let b1 = reads.acquire(2).await.expect("another member");
        // Three slots for everyone, all taken: the next member waits, then is refused.
        assert_eq!(reads.acquire(3).await.err(), Some(LogReadRefusal::Everyone));
        // A refusal for everyone gives its member slot back.
        assert!(!reads.members.lock().expect("lock").contains_key(&3));
        drop(a1);
        let a3 = reads.acquire(1).await.expect("a slot came free");
        drop((a2, a3, b1));
        assert!(reads.members.lock().expect("lock").is_empty());
        assert_eq!(reads.everyone.available_permits(), 3);
    }
}
