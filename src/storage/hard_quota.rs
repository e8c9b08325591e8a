//! Whether the data dir's filesystem could enforce hard per-member limits (project quotas),
//! for `notebox doctor`. Notebox's own quotas are soft (measured, then new work refused);
//! hard limits are an admin's setup by hand (docs/INSTALL.md, "Storage quotas").

use std::path::Path;

/// The filesystem a path lives on, as `/proc/self/mountinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// Mounted with project quotas (`prjquota`, XFS's `pquota` / `pqnoenforce`).
    pub project_quota: bool,
}

impl Mount {
    /// Project quotas exist only for XFS and ext4 among the filesystems a lab uses.
    pub fn could_have_project_quota(&self) -> bool {
        matches!(self.fs_type.as_str(), "xfs" | "ext4")
    }
}

/// `mountinfo`'s escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The mount holding `path` (already absolute and resolved), from `mountinfo`'s text: the
/// longest mount point that is `path` or one of its parents (the last one wins on ties:
/// a later mount over the same point hides the earlier).
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(point), Some(mount_opts)) = (left.get(4), left.get(5)) else {
            continue;
        };
        let (Some(fs_type), Some(source)) = (right.first(), right.get(1)) else {
            continue;
        };
        let point = unescape(point);
        if !path.starts_with(&point) {
            continue;
        }
        if best
            .as_ref()
            .is_some_and(|b| b.mount_point.len() > point.len())
        {
            continue;
        }
        let super_opts = right.get(2).copied().unwrap_or_default();
        let project_quota = mount_opts
            .split(',')
            .chain(super_opts.split(','))
            .any(|o| matches!(o, "prjquota" | "pquota" | "pqnoenforce"));
        best = Some(Mount {
            mount_point: point,
            fs_type: fs_type.to_string(),
            source: unescape(source),
            project_quota,
        });
    }
    best
}

/// The mount holding `dir` on this machine (None when `mountinfo` cannot be read).
pub fn probe(dir: &Path) -> Option<Mount> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The data dir may not exist yet: its nearest existing parent is where it would live.
    let resolved = dir
        .ancestors()
        .find_map(|d| std::fs::canonicalize(d).ok())?;
    mount_of(&mountinfo, &resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 259:1 / /var/lib/notebox rw,relatime - xfs /dev/nvme0n1p1 rw,attr2,inode64,prjquota
41 27 259:2 / /srv/lab\\040data rw - ext4 /dev/sdb1 rw,prjquota
";

    #[test]
    fn the_longest_mount_point_holding_the_path_is_its_filesystem() {
        let m = mount_of(MOUNTINFO, Path::new("/var/lib/notebox/storage")).expect("found");
        assert_eq!(
            (m.fs_type.as_str(), m.source.as_str(), m.project_quota),
            ("xfs", "/dev/nvme0n1p1", true)
        );
        let root = mount_of(MOUNTINFO, Path::new("/var/lib/noteboxes")).expect("found");
        assert_eq!(
            (root.mount_point.as_str(), root.project_quota),
            ("/", false)
        );
        assert!(root.could_have_project_quota());
        let spaced = mount_of(MOUNTINFO, Path::new("/srv/lab data/x")).expect("found");
        assert_eq!(
            (spaced.mount_point.as_str(), spaced.project_quota),
            ("/srv/lab data", true)
        );
    }

    #[test]
    fn this_machine_answers() {
        // Whatever it says, it says it without failing.
        let m = probe(Path::new("/tmp/surely/not/there")).expect("a mount for /tmp");
        assert!(!m.fs_type.is_empty());
    }
}
