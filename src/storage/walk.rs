//! Measuring what a member's folders take: a bounded, throttled walk of trees their
//! containers write (`/storage`, their notebooks' folders).
//!
//! The trees are hostile: a container can create, swap and symlink anything in them at
//! any moment. So nothing is followed and nothing is checked-then-opened: the roots are
//! opened with `O_NOFOLLOW | O_DIRECTORY`, every folder below is opened relative to its
//! parent's descriptor with the same flags (a folder swapped for a symlink meanwhile fails
//! to open and is counted as what `lstat` saw), every entry is measured with `lstat`
//! (`statat` with `AT_SYMLINK_NOFOLLOW`: a symlink counts its own size), and a folder on
//! another filesystem (a mount) is counted but not entered. Hard links count once, by
//! (device, inode), across all of a member's roots.
//!
//! The figure is what `du -sb` reports for the same folders (apparent sizes of files,
//! folders and symlinks; hard links once). A walk is capped in entries and depth — a
//! capped walk's figure is "at least" — and throttled to a number of entries per second,
//! sleeping in between, so it never takes a core. Blocking: run it on a blocking thread.

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};

/// How far one walk may go, and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// The most entries (files, folders, symlinks, …) looked at in one pass for one member.
    pub max_entries: u64,
    /// The deepest folder entered (a root is depth 0); deeper folders count their own size.
    pub max_depth: usize,
    /// Entries per second at most; None: as fast as the disk answers.
    pub files_per_second: Option<u32>,
}

/// One folder to measure and how to name what is in it for people ("/storage").
#[derive(Debug, Clone)]
pub struct WalkRoot {
    pub path: std::path::PathBuf,
    /// Prefix of the names of its top-level entries, e.g. "/storage" → "/storage/data".
    pub label: String,
}

/// A top-level entry of a root and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Largest {
    pub path: String,
    pub bytes: u64,
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    /// Apparent bytes, `du -sb`'s figure (at least this much when `capped`).
    pub bytes: u64,
    /// Entries counted (hard links once), folders included.
    pub entries: u64,
    /// Why the walk stopped short; None: it saw everything.
    pub capped: Option<String>,
    /// The largest top-level entries of the roots, largest first.
    pub largest: Vec<Largest>,
}

/// How many of the largest top-level entries a measurement keeps.
pub const LARGEST_KEPT: usize = 5;
/// Entries between two looks at the clock for the throttle.
const THROTTLE_BATCH: u64 = 256;

/// Throttling: sleeps whenever the walk is ahead of `rate` entries per second.
struct Throttle {
    rate: Option<u32>,
    started: Instant,
    counted: u64,
}

impl Throttle {
    fn tick(&mut self) {
        self.counted += 1;
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return;
        };
        if !self.counted.is_multiple_of(THROTTLE_BATCH) {
            return;
        }
        let due = Duration::from_secs_f64(self.counted as f64 / f64::from(rate));
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// A folder being read: depth first, one open folder per level, so memory and open
/// descriptors grow with the depth (capped), never with how many folders a member makes.
struct Frame {
    dir: Dir,
    depth: usize,
    /// The top-level entry it belongs to (an index into `tops`, or [`UNTRACKED`]); None for
    /// a root, whose entries are top-level entries themselves.
    top: Option<usize>,
}

/// The most top-level entries whose sizes are kept for "the largest" (a member's million
/// files at the top of /storage must not cost a million names in memory).
const MAX_TOPS: usize = 10_000;
/// A top-level entry past [`MAX_TOPS`]: counted, not named.
const UNTRACKED: usize = usize::MAX;

/// One member's walk over all their roots.
struct Walk {
    limits: WalkLimits,
    seen_inodes: HashSet<(u64, u64)>,
    looked_at: u64,
    out: Measured,
    /// (name, bytes) of the top-level entries of every root, the first [`MAX_TOPS`] of them.
    tops: Vec<(String, u64)>,
    throttle: Throttle,
}

/// Measures `roots` together (a hard link between two of them counts once). A root that
/// does not exist (or is not a plain folder) counts nothing.
pub fn measure(roots: &[WalkRoot], limits: WalkLimits) -> Measured {
    let mut walk = Walk {
        limits,
        seen_inodes: HashSet::new(),
        looked_at: 0,
        out: Measured::default(),
        tops: Vec::new(),
        throttle: Throttle {
            rate: limits.files_per_second,
            started: Instant::now(),
            counted: 0,
        },
    };
    for root in roots {
        if walk.looked_at >= limits.max_entries {
            walk.cap_entries();
            break;
        }
        walk.root(root);
    }
    let mut tops = std::mem::take(&mut walk.tops);
    tops.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    walk.out.largest = tops
        .into_iter()
        .take(LARGEST_KEPT)
        .map(|(path, bytes)| Largest { path, bytes })
        .collect();
    walk.out
}

fn open_dir(parent: impl AsFd, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn size_of(stat: &Stat) -> u64 {
    stat.st_size.max(0) as u64
}

impl Walk {
    fn cap_entries(&mut self) {
        self.out.capped = Some(format!(
            "only the first {} entries were counted (the walk's cap)",
            self.limits.max_entries
        ));
    }

    /// Counts an inode once; false when it was counted already (another hard link). Only
    /// what has several links is remembered: a folder cannot be hard-linked.
    fn first_sight(&mut self, stat: &Stat) -> bool {
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        if stat.st_nlink <= 1 || is_dir {
            return true;
        }
        self.seen_inodes.insert((stat.st_dev, stat.st_ino))
    }

    fn root(&mut self, root: &WalkRoot) {
        let Ok(fd) = rustix::fs::open(
            &root.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        let Ok(stat) = rustix::fs::fstat(&fd) else {
            return;
        };
        if !self.seen_inodes.insert((stat.st_dev, stat.st_ino)) {
            return; // the same folder twice
        }
        self.out.bytes += size_of(&stat);
        self.out.entries += 1;
        let Ok(dir) = Dir::new(fd) else { return };
        let mut stack = vec![Frame {
            dir,
            depth: 0,
            top: None,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(Ok(entry)) = frame.dir.next() else {
                stack.pop(); // read to the end (or unreadable: swapped meanwhile)
                continue;
            };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            if self.looked_at >= self.limits.max_entries {
                self.cap_entries();
                return;
            }
            self.looked_at += 1;
            self.throttle.tick();
            let (depth, top) = (frame.depth, frame.top);
            if let Some(sub) = self.count_entry(&frame.dir, name, depth, top, root, stat.st_dev) {
                stack.push(sub);
            }
        }
    }

    /// Counts one entry of a folder at `depth`; a folder to enter comes back as its frame.
    fn count_entry(
        &mut self,
        parent: &Dir,
        name: &CStr,
        depth: usize,
        top: Option<usize>,
        root: &WalkRoot,
        device: u64,
    ) -> Option<Frame> {
        let parent = parent.fd().ok()?;
        // Gone meanwhile: nothing to count.
        let stat = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let top = top.unwrap_or_else(|| {
            if self.tops.len() >= MAX_TOPS {
                return UNTRACKED;
            }
            let label = format!("{}/{}", root.label, name.to_string_lossy());
            self.tops.push((label, 0));
            self.tops.len() - 1
        });
        if !self.first_sight(&stat) {
            return None; // a hard link counted already
        }
        self.out.bytes += size_of(&stat);
        self.out.entries += 1;
        if let Some(t) = self.tops.get_mut(top) {
            t.1 += size_of(&stat);
        }
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory || stat.st_dev != device {
            return None; // not a folder, or another filesystem's: its mount point counts
        }
        if depth + 1 > self.limits.max_depth {
            self.out.capped = Some(format!(
                "folders deeper than {} levels were not entered (the walk's cap)",
                self.limits.max_depth
            ));
            return None;
        }
        // Swapped for something else since the stat: it was counted as it was then.
        let fd = open_dir(parent, name).ok()?;
        // A mount point planted meanwhile is not entered either.
        if rustix::fs::fstat(&fd).map_or(true, |s| s.st_dev != device) {
            return None;
        }
        Some(Frame {
            dir: Dir::new(fd).ok()?,
            depth: depth + 1,
            top: Some(top),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const UNLIMITED: WalkLimits = WalkLimits {
        max_entries: u64::MAX,
        max_depth: 64,
        files_per_second: None,
    };

    fn root(path: &std::path::Path, label: &str) -> WalkRoot {
        WalkRoot {
            path: path.to_path_buf(),
            label: label.into(),
        }
    }

    /// `du -sb`'s total for these folders (hard links once across them).
    fn du_total(paths: &[&std::path::Path]) -> u64 {
        let out = std::process::Command::new("du")
            .arg("-sbc")
            .args(paths)
            .output()
            .expect("du runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().expect("a total line");
        last.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    }

    /// A tree with what a hostile member plants: loops, links out, a hard link, hidden
    /// names, a name that is not UTF-8, a FIFO.
    fn hostile_tree(base: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (storage, nb) = (base.join("storage"), base.join("nb"));
        let other = base.join("other");
        for d in [&storage, &nb, &other] {
            std::fs::create_dir_all(d.join("a/b/c")).expect("dirs");
        }
        std::fs::write(other.join("secret"), vec![1u8; 100_000]).expect("other");
        std::fs::write(storage.join("a/b/c/big"), vec![0u8; 70_000]).expect("big");
        std::fs::write(storage.join(".hidden"), b"hidden").expect("hidden");
        std::fs::write(nb.join("a/data.bin"), vec![0u8; 12_345]).expect("data");
        std::fs::hard_link(storage.join("a/b/c/big"), nb.join("a/b/link")).expect("hard link");
        symlink("..", storage.join("a/up")).expect("loop");
        symlink("/", storage.join("root")).expect("slash");
        symlink(&other, nb.join("theirs")).expect("other's");
        symlink("nowhere", nb.join("dangling")).expect("dangling");
        let odd: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"caf\xe9");
        std::fs::write(storage.join(odd), b"x").expect("odd name");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            nb.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .expect("fifo");
        (storage, nb)
    }

    #[test]
    fn the_figure_is_du_sb_and_nothing_is_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let (storage, nb) = hostile_tree(dir.path());
        let m = measure(
            &[root(&storage, "/storage"), root(&nb, "notebook “x”")],
            UNLIMITED,
        );
        assert_eq!(m.bytes, du_total(&[&storage, &nb]));
        assert_eq!(m.capped, None);
        assert_eq!(m.largest[0].path, "/storage/a");
        assert!(m.largest[0].bytes >= 70_000);
        // The other member's 100 000 bytes are not in it (du does not follow either).
        assert!(m.bytes < 100_000 + 70_000, "{}", m.bytes);
    }

    #[test]
    fn a_root_that_is_a_symlink_or_missing_counts_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("dir");
        std::fs::write(real.join("f"), vec![0u8; 5000]).expect("file");
        symlink(&real, dir.path().join("link")).expect("link");
        let m = measure(
            &[
                root(&dir.path().join("link"), "/storage"),
                root(&dir.path().join("missing"), "x"),
            ],
            UNLIMITED,
        );
        assert_eq!(m, Measured::default());
    }

    #[test]
    fn caps_make_the_figure_a_lower_bound_and_say_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let (storage, nb) = hostile_tree(dir.path());
        let roots = [root(&storage, "/storage"), root(&nb, "n")];
        let full = measure(&roots, UNLIMITED);
        let few = measure(
            &roots,
            WalkLimits {
                max_entries: 3,
                ..UNLIMITED
            },
        );
        assert!(few.bytes < full.bytes);
        assert!(few
            .capped
            .as_deref()
            .is_some_and(|c| c.contains("first 3 entries")));
        let shallow = measure(
            &roots,
            WalkLimits {
                max_depth: 1,
                ..UNLIMITED
            },
        );
        assert!(shallow.bytes < full.bytes);
        assert!(shallow
            .capped
            .as_deref()
            .is_some_and(|c| c.contains("deeper than 1")));
    }

    #[test]
    fn the_throttle_holds_the_rate() {
        let dir = tempfile::tempdir().expect("tmp");
        for i in 0..1024 {
            std::fs::write(dir.path().join(i.to_string()), b"").expect("file");
        }
        let started = Instant::now();
        let m = measure(
            &[root(dir.path(), "/storage")],
            WalkLimits {
                files_per_second: Some(4096),
                ..UNLIMITED
            },
        );
        assert_eq!(m.entries, 1025);
        // 1024 entries at 4096 a second: a quarter of a second at least.
        assert!(
            started.elapsed() >= Duration::from_millis(240),
            "{:?}",
            started.elapsed()
        );
    }
}
