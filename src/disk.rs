//! The data dir's filesystem: how much is free, when that is too little, which errors mean
//! "the disk is full", and whether the filesystem could enforce project quotas.
//!
//! One place decides "this is a full disk" (`is_full_io`, `is_full_sqlite`); every layer
//! turns it into its own `DiskFull` variant and the web layer answers 507 with the message
//! below. Knows nothing of HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{byte_size_text as format_bytes, MinFree};

/// No space left on device.
const ENOSPC: i32 = 28;
/// Disk quota exceeded.
const EDQUOT: i32 = 122;

/// Below this much free space Notebox refuses writes of its own (new notebooks, settings,
/// logins) before SQLite or a folder copy finds out halfway: the database's write-ahead
/// log alone may need a few MiB to commit and checkpoint.
pub const HARD_FLOOR: u64 = 16 << 20;

/// How long one `statvfs` reading is reused (pages and writes ask on every request).
const READING_TTL: Duration = Duration::from_secs(2);

/// An I/O error that says the filesystem (or the user's quota on it) is full.
pub fn is_full_io(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// SQLite's SQLITE_FULL. (An SQLITE_IOERR from a write that hit ENOSPC carries no errno
/// through rusqlite: `Db` classifies it by looking at the free space when it happens.)
pub fn is_full_sqlite(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// An SQLite I/O error (SQLITE_IOERR_*), which a full disk causes for some writes.
pub fn is_sqlite_io_error(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure)
}

/// Free and total space of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// What an unprivileged writer may still use (`f_bavail`).
    pub available: u64,
    pub total: u64,
}

impl FreeSpace {
    pub fn of(path: &Path) -> std::io::Result<FreeSpace> {
        let stat = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
        Ok(FreeSpace {
            available: stat.f_bavail.saturating_mul(stat.f_frsize),
            total: stat.f_blocks.saturating_mul(stat.f_frsize),
        })
    }

    /// Whole percent free, rounded.
    pub fn percent_free(&self) -> u64 {
        (self.available.saturating_mul(100))
            .saturating_add(self.total / 2)
            .checked_div(self.total)
            .unwrap_or(0)
    }
}

/// A write refused (or failed) because the data dir's filesystem is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFull {
    pub data_dir: PathBuf,
    /// Free bytes when it was noticed; None when statvfs could not tell.
    pub available: Option<u64>,
}

impl DiskFull {
    /// Reads the free space of `data_dir` now.
    pub fn noticed_on(data_dir: &Path) -> DiskFull {
        DiskFull {
            data_dir: data_dir.to_path_buf(),
            available: FreeSpace::of(data_dir).ok().map(|f| f.available),
        }
    }
}

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let free = match self.available {
            Some(b) => format!("{} free", format_bytes(b)),
            None => "no free space".into(),
        };
        write!(
            f,
            "The disk holding Notebox's data is full ({free} on {}): nothing was changed. \
             Free space (e.g. delete files in /storage) and try again.",
            self.data_dir.display()
        )
    }
}

impl std::error::Error for DiskFull {}

/// Watches the free space of the data dir's filesystem: cheap enough for every request
/// (one `statvfs` every 2 s at most). Cheap to clone.
#[derive(Clone)]
pub struct DiskWatch {
    data_dir: Arc<PathBuf>,
    min_free: MinFree,
    last: Arc<Mutex<Option<(Instant, FreeSpace)>>>,
}

impl DiskWatch {
    pub fn new(data_dir: &Path, min_free: MinFree) -> DiskWatch {
        DiskWatch {
            data_dir: Arc::new(data_dir.to_path_buf()),
            min_free,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The current reading (at most 2 s old); None when statvfs fails.
    pub fn reading(&self) -> Option<FreeSpace> {
        let now = Instant::now();
        if let Ok(last) = self.last.lock() {
            if let Some((at, reading)) = *last {
                if now.duration_since(at) < READING_TTL {
                    return Some(reading);
                }
            }
        }
        let reading = FreeSpace::of(&self.data_dir).ok()?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((now, reading));
        }
        Some(reading)
    }

    /// The admin pages' banner when free space is below `min_free`.
    pub fn low_space_warning(&self) -> Option<String> {
        low_space_warning(&self.data_dir, self.reading()?, self.min_free)
    }

    /// Some when free space is below the hard floor: writes are refused with this.
    pub fn refusal(&self) -> Option<DiskFull> {
        let reading = self.reading()?;
        (reading.available < HARD_FLOOR).then(|| DiskFull {
            data_dir: self.data_dir.to_path_buf(),
            available: Some(reading.available),
        })
    }
}

/// "Only 1.2 GiB (3 %) free on …" when `free` is below `min_free`.
pub fn low_space_warning(data_dir: &Path, free: FreeSpace, min_free: MinFree) -> Option<String> {
    if free.available >= min_free.bytes_of(free.total) {
        return None;
    }
    Some(format!(
        "Only {} ({} %) free on the filesystem of {}; below {min_free} Notebox warns; when it \
         is full, new notebooks and writes are refused.",
        format_bytes(free.available),
        free.percent_free(),
        data_dir.display()
    ))
}

/// Logs a failed write that was only a side effect (a sample, a timestamp): once a minute
/// at most while the disk is full, so a full disk does not also flood the log.
pub fn log_skipped_write(what: &'static str, error: &dyn std::fmt::Display, full: bool) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_FULL_LOG: AtomicU64 = AtomicU64::new(0);
    if !full {
        tracing::warn!(error = %error, "not recorded: {what}");
        return;
    }
    let now = crate::clock::now().max(0) as u64;
    let last = LAST_FULL_LOG.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST_FULL_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            error = %error,
            "the disk is full: {what} (and other background records) are skipped until \
             space returns; pages keep working"
        );
    }
}

/// The filesystem a path lives on, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// "ext4", "xfs", "overlay", …
    pub fs_type: String,
    /// Mount and superblock options together ("rw", "prjquota", …).
    pub options: Vec<String>,
}

impl Mount {
    /// Mounted with project quotas enforced (ext4 and XFS `prjquota`, XFS `pquota`; XFS
    /// `pqnoenforce` only accounts).
    pub fn project_quotas(&self) -> bool {
        self.options
            .iter()
            .any(|o| o == "prjquota" || o == "pquota")
    }

    /// Whether this filesystem type can enforce project quotas at all (ext4 and XFS).
    pub fn supports_project_quotas(&self) -> bool {
        self.fs_type == "ext4" || self.fs_type == "xfs"
    }
}

/// The mount holding `path` (the longest mount point above it; a later mount on the same
/// point hides an earlier one). `path` should be canonical.
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some(mount) = parse_mountinfo_line(line) else {
            continue;
        };
        if !path.starts_with(&mount.mount_point) {
            continue;
        }
        let deeper = best.as_ref().is_none_or(|b| {
            mount.mount_point.components().count() >= b.mount_point.components().count()
        });
        if deeper {
            best = Some(mount);
        }
    }
    best
}

/// The mount of `path` on this machine (its nearest existing ancestor, canonicalized).
pub fn mount_of_path(path: &Path) -> Option<Mount> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let canonical = existing.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_of(&mountinfo, &canonical)
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let mount_point = unescape_octal(fields.get(4)?);
    let mount_options = fields.get(5)?;
    let mut after = after.split(' ');
    let fs_type = after.next()?.to_string();
    let _source = after.next()?;
    let super_options = after.next().unwrap_or("");
    let options = mount_options
        .split(',')
        .chain(super_options.split(','))
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    Some(Mount {
        mount_point: PathBuf::from(mount_point),
        fs_type,
        options,
    })
}

/// Mount points write a space as `\040` (and tab, newline, backslash likewise).
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `notebox doctor` says of project quotas on the data dir's filesystem, and whether
/// that is only worth knowing (true) or fine.
pub fn quota_support(data_dir: &Path, mount: &Mount) -> (bool, String) {
    let on = format!(
        "data dir {} on {} (mounted at {})",
        data_dir.display(),
        mount.fs_type,
        mount.mount_point.display()
    );
    if mount.project_quotas() {
        return (
            true,
            format!(
                "{on} with project quotas: per-member hard limits can be enforced by the \
                 filesystem (set up by hand, see INSTALL.md; Notebox does not assign them)"
            ),
        );
    }
    let why = if mount.supports_project_quotas() {
        "without prjquota"
    } else {
        "which has no project quotas"
    };
    (
        false,
        format!(
            "{on} {why}: per-member hard limits are not enforced by the filesystem (soft \
             quotas in Notebox still apply); see INSTALL.md"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_a_full_disk_other_errors_are_not() {
        assert!(is_full_io(&std::io::Error::from_raw_os_error(28)));
        assert!(is_full_io(&std::io::Error::from_raw_os_error(122)));
        assert!(!is_full_io(&std::io::Error::from_raw_os_error(13)));
        assert!(!is_full_io(&std::io::Error::other("no space left")));
    }

    #[test]
    fn sqlite_full_is_a_full_disk() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let io = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_WRITE),
            None,
        );
        assert!(is_full_sqlite(&full));
        assert!(!is_full_sqlite(&busy) && !is_full_sqlite(&io));
        assert!(is_sqlite_io_error(&io) && !is_sqlite_io_error(&full));
    }

    #[test]
    fn the_message_says_where_and_what_to_do() {
        let e = DiskFull {
            data_dir: "/var/lib/notebox".into(),
            available: Some(0),
        };
        assert_eq!(
            e.to_string(),
            "The disk holding Notebox's data is full (0 bytes free on /var/lib/notebox): \
             nothing was changed. Free space (e.g. delete files in /storage) and try again."
        );
    }

    #[test]
    fn the_warning_starts_below_min_free() {
        let total = 40 << 30;
        let low = FreeSpace {
            available: 1288490188,
            total,
        };
        let w = low_space_warning(Path::new("/var/lib/notebox"), low, MinFree::Percent(5.0));
        assert_eq!(
            w.as_deref(),
            Some(
                "Only 1.2 GiB (3 %) free on the filesystem of /var/lib/notebox; below 5 % \
                 Notebox warns; when it is full, new notebooks and writes are refused."
            )
        );
        let plenty = FreeSpace {
            available: 3 << 30,
            total,
        };
        assert_eq!(
            low_space_warning(Path::new("/x"), plenty, MinFree::Percent(5.0)),
            None
        );
        assert!(low_space_warning(Path::new("/x"), plenty, MinFree::Bytes(4 << 30)).is_some());
    }

    #[test]
    fn the_data_dirs_mount_and_its_quota_options_are_found() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
40 22 7:0 / /var/lib/notebox rw,relatime shared:2 - xfs /dev/loop0 rw,attr2,inode64,prjquota
41 22 7:1 / /mnt/my\\040disk rw - ext4 /dev/loop1 rw
";
        let m = mount_of(info, Path::new("/var/lib/notebox/storage")).expect("a mount");
        assert_eq!(m.fs_type, "xfs");
        assert!(m.project_quotas());
        let root = mount_of(info, Path::new("/var/lib/notebox2")).expect("root");
        assert_eq!(
            (root.fs_type.as_str(), root.project_quotas()),
            ("ext4", false)
        );
        let (_, said) = quota_support(Path::new("/var/lib/notebox2"), &root);
        assert!(
            said.contains(
                "on ext4 (mounted at /) without prjquota: per-member hard limits are not enforced"
            ),
            "{said}"
        );
        let spaced = mount_of(info, Path::new("/mnt/my disk/x")).expect("spaced");
        assert_eq!(spaced.mount_point, PathBuf::from("/mnt/my disk"));
    }
}
