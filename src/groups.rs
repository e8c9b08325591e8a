//! Groups carry policy (`[[groups]]`): which machine types a member may use, how many
//! GPUs they may hold, their default monthly GPU-hour budget, and shared folders. A
//! member's groups are the ones the directory put them in plus those listing them as a
//! local member; in several groups they get the most generous of each setting.

use serde::Serialize;

use crate::config::{Config, FolderOthers, GroupConfig};
use crate::db::users::User;

/// A member's effective policy and where each part comes from.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// Their groups' ids.
    pub groups: Vec<String>,
    /// The machine types they may use; None = all.
    pub machines: Option<Vec<String>>,
    pub max_gpus: i64,
    /// The default budget their groups give (their own, set by an admin, comes first).
    pub gpu_hours_budget: Option<f64>,
    /// Their storage soft quota in bytes (`[storage] soft_quota`, group `storage_quota`);
    /// None = none.
    pub storage_quota: Option<u64>,
    /// For each setting, where it comes from: "group phd", "account", "lab default".
    pub from: std::collections::BTreeMap<&'static str, String>,
}

/// The groups `user` is in: the directory's and those listing them in `members`.
pub fn groups_of<'a>(config: &'a Config, user: &User) -> Vec<&'a GroupConfig> {
    config
        .groups
        .iter()
        .filter(|g| user.directory_groups.contains(&g.id) || g.members.contains(&user.username))
        .collect()
}

/// The most generous default budget of the groups of `username` (with these directory
/// groups), kept on the account for the GPU queue: none when no group sets one, or when
/// one of them sets none (no budget is the most generous).
pub fn group_budget(config: &Config, username: &str, directory_groups: &[String]) -> Option<f64> {
    let groups: Vec<&GroupConfig> = config
        .groups
        .iter()
        .filter(|g| directory_groups.contains(&g.id) || g.members.iter().any(|m| m == username))
        .collect();
    most_generous_budget(&groups).map(|(b, _)| b)
}

fn most_generous_budget<'a>(groups: &[&'a GroupConfig]) -> Option<(f64, &'a GroupConfig)> {
    if groups.iter().any(|g| g.gpu_hours_budget.is_none()) {
        return None;
    }
    groups
        .iter()
        .filter_map(|g| g.gpu_hours_budget.map(|b| (b, *g)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn from_groups(groups: &[&GroupConfig]) -> String {
    let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
    match ids.len() {
        1 => format!("group {}", ids[0]),
        _ => format!("groups {}", ids.join(", ")),
    }
}

/// `user`'s effective policy.
pub fn policy(config: &Config, user: &User) -> Policy {
    let groups = groups_of(config, user);
    let mut from = std::collections::BTreeMap::new();
    let machines = if groups.is_empty() || groups.iter().any(|g| g.machines.is_empty()) {
        None
    } else {
        let mut all: Vec<String> = Vec::new();
        for id in groups.iter().flat_map(|g| &g.machines) {
            if !all.contains(id) {
                all.push(id.clone());
            }
        }
        from.insert("machines", from_groups(&groups));
        Some(all)
    };
    // A group that sets no limit gives the lab default: in several groups, the largest.
    let lab_default = i64::from(config.gpu.max_gpus_per_user);
    let by_group = groups
        .iter()
        .map(|g| (g.max_gpus.map_or(lab_default, i64::from), *g))
        .max_by_key(|(n, g)| (*n, g.max_gpus.is_some()))
        .filter(|(_, g)| g.max_gpus.is_some());
    let max_gpus = match (user.max_gpus, by_group) {
        (Some(own), _) => {
            from.insert("max_gpus", "account".to_string());
            own
        }
        (None, Some((n, g))) => {
            from.insert("max_gpus", format!("group {}", g.id));
            n
        }
        (None, None) => {
            from.insert("max_gpus", "lab default".to_string());
            i64::from(config.gpu.max_gpus_per_user)
        }
    };
    let budget = most_generous_budget(&groups);
    if let Some((_, g)) = budget {
        from.insert("gpu_hours_budget", format!("group {}", g.id));
    }
    let (storage_quota, storage_from) = most_generous_storage_quota(config, &groups);
    if storage_quota.is_some() {
        from.insert("storage_quota", storage_from);
    }
    Policy {
        groups: groups.iter().map(|g| g.id.clone()).collect(),
        machines,
        max_gpus,
        gpu_hours_budget: budget.map(|(b, _)| b),
        storage_quota,
        from,
    }
}

/// A member's storage quota and where it comes from: each of their groups gives its
/// `storage_quota`, or the lab default (`[storage] soft_quota`) when it sets none; the
/// most generous wins, and no quota at all is the most generous.
fn most_generous_storage_quota(config: &Config, groups: &[&GroupConfig]) -> (Option<u64>, String) {
    let lab = config.storage.soft_quota;
    let mut best: Option<(u64, String)> = None;
    for g in groups {
        let (quota, from) = match g.storage_quota {
            Some(q) => (Some(q), format!("group {}", g.id)),
            None => (lab, "lab default".to_string()),
        };
        let Some(quota) = quota else {
            return (None, String::new());
        };
        if best.as_ref().is_none_or(|(b, _)| quota > *b) {
            best = Some((quota, from));
        }
    }
    match best {
        Some((q, from)) => (Some(q), from),
        None => (lab, "lab default".to_string()),
    }
}

impl Policy {
    /// Whether they may use machine type `id`; Err says why not, in words.
    pub fn check_machine(&self, id: &str, name: &str) -> Result<(), String> {
        match &self.machines {
            Some(allowed) if !allowed.iter().any(|m| m == id) => Err(format!(
                "your {} may not use the machine type {name} ({id}); you may use {}",
                self.from.get("machines").map_or("groups", String::as_str),
                allowed.join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// One line per setting, for the account page: "GPU limit 2, from group phd".
    pub fn explain(&self, config: &Config) -> Vec<String> {
        let from = |k: &str| self.from.get(k).cloned().unwrap_or_default();
        let mut lines = Vec::new();
        match &self.machines {
            None => lines.push("Machine types: all".to_string()),
            Some(ids) => {
                let names: Vec<&str> = ids
                    .iter()
                    .map(|id| config.machine(id).map_or(id.as_str(), |m| m.name.as_str()))
                    .collect();
                lines.push(format!(
                    "Machine types: {}, from {}",
                    names.join(", "),
                    from("machines")
                ));
            }
        }
        lines.push(format!(
            "GPU limit {}, from {}",
            self.max_gpus,
            from("max_gpus")
        ));
        if let Some(b) = self.gpu_hours_budget {
            lines.push(format!(
                "Default monthly GPU-hour budget {b}, from {}",
                from("gpu_hours_budget")
            ));
        }
        if let Some(q) = self.storage_quota {
            lines.push(format!(
                "Storage quota {}, from {}",
                crate::config::byte_size_text(q),
                from("storage_quota")
            ));
        }
        lines
    }
}

/// A group folder as mounted in one member's notebooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderMount {
    pub group: String,
    pub read_only: bool,
}

/// The group folders a notebook of `user` mounts: read-write for their groups', read-only
/// for others' that allow it.
pub fn folder_mounts(config: &Config, user: &User) -> Vec<FolderMount> {
    let mine = groups_of(config, user);
    config
        .groups
        .iter()
        .filter(|g| g.folder)
        .filter_map(|g| {
            if mine.iter().any(|m| m.id == g.id) {
                Some(FolderMount {
                    group: g.id.clone(),
                    read_only: false,
                })
            } else if g.folder_others == FolderOthers::Read {
                Some(FolderMount {
                    group: g.id.clone(),
                    read_only: true,
                })
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineType;

    fn machine(id: &str, gpus: u32) -> MachineType {
        MachineType {
            id: id.into(),
            name: id.to_uppercase(),
            cpus: 1.0,
            memory_mib: 1024,
            gpus,
            idle_timeout: None,
            reclaim: None,
        }
    }

    fn group(
        id: &str,
        machines: &[&str],
        max_gpus: Option<u32>,
        budget: Option<f64>,
    ) -> GroupConfig {
        GroupConfig {
            id: id.into(),
            directory: vec![id.into()],
            members: Vec::new(),
            machines: machines.iter().map(|m| m.to_string()).collect(),
            max_gpus,
            shares: None,
            gpu_hours_budget: budget,
            storage_quota: None,
            folder: true,
            folder_others: FolderOthers::None,
        }
    }

    fn user(groups: &[&str]) -> User {
        User {
            id: 1,
            username: "erin".into(),
            is_admin: false,
            disabled: false,
            max_gpus: None,
            created_at: 0,
            source: "ldap".into(),
            display_name: String::new(),
            directory_groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn config() -> Config {
        let mut c = Config {
            machines: vec![machine("cpu", 0), machine("gpu1", 1), machine("gpu2", 2)],
            groups: vec![
                group("students", &["cpu"], Some(0), Some(5.0)),
                group("phd", &["cpu", "gpu1"], Some(2), Some(100.0)),
                group("staff", &[], None, None),
            ],
            ..Config::default()
        };
        c.gpu.max_gpus_per_user = 8;
        c
    }

    #[test]
    fn the_most_generous_setting_wins_and_says_where_it_comes_from() {
        let c = config();
        let p = policy(&c, &user(&["students"]));
        assert_eq!(p.machines, Some(vec!["cpu".to_string()]));
        assert_eq!(p.max_gpus, 0);
        assert!(p.check_machine("gpu1", "GPU1").is_err());
        assert_eq!(p.explain(&c)[1], "GPU limit 0, from group students");

        let p = policy(&c, &user(&["students", "phd"]));
        assert_eq!(
            p.machines,
            Some(vec!["cpu".to_string(), "gpu1".to_string()])
        );
        assert_eq!((p.max_gpus, p.gpu_hours_budget), (2, Some(100.0)));
        assert_eq!(p.from["max_gpus"], "group phd");

        // A group without a machine list allows all, without a limit the lab default,
        // without a budget none: the most generous.
        let staff = policy(&c, &user(&["phd", "staff"]));
        assert_eq!(
            (staff.machines, staff.max_gpus, staff.gpu_hours_budget),
            (None, 8, None)
        );
        assert_eq!(staff.from["max_gpus"], "lab default");
        let mut c9 = config();
        c9.groups[1].max_gpus = Some(9);
        assert_eq!(policy(&c9, &user(&["phd", "staff"])).max_gpus, 9);
        let none = policy(&c, &user(&[]));
        assert_eq!(
            (none.machines, none.max_gpus, none.gpu_hours_budget),
            (None, 8, None)
        );
        // A limit an admin set on the account comes first.
        let mut own = user(&["phd"]);
        own.max_gpus = Some(1);
        assert_eq!(policy(&c, &own).max_gpus, 1);
        assert_eq!(
            group_budget(&c, "erin", &["students".into(), "phd".into()]),
            Some(100.0)
        );
    }

    #[test]
    fn the_most_generous_storage_quota_wins_and_no_quota_is_the_most_generous() {
        let mut c = config();
        c.storage.soft_quota = Some(10 << 30);
        c.groups[1].storage_quota = Some(200 << 30);
        let p = policy(&c, &user(&["students"]));
        assert_eq!(p.storage_quota, Some(10 << 30));
        assert_eq!(p.from["storage_quota"], "lab default");
        let p = policy(&c, &user(&["students", "phd"]));
        assert_eq!(p.storage_quota, Some(200 << 30));
        assert_eq!(p.from["storage_quota"], "group phd");
        assert!(p
            .explain(&c)
            .contains(&"Storage quota 200 GiB, from group phd".to_string()));
        // A group may give less than the lab default; in several groups the most generous wins.
        c.groups[0].storage_quota = Some(1 << 30);
        assert_eq!(
            policy(&c, &user(&["students"])).storage_quota,
            Some(1 << 30)
        );
        assert_eq!(
            policy(&c, &user(&["students", "staff"])).storage_quota,
            Some(10 << 30)
        );
        assert_eq!(policy(&c, &user(&[])).storage_quota, Some(10 << 30));
        c.storage.soft_quota = None;
        let p = policy(&c, &user(&["phd", "staff"]));
        assert_eq!(p.storage_quota, None, "staff gives no quota");
        assert!(!p.from.contains_key("storage_quota"));
    }

    #[test]
    fn local_members_and_folders() {
        let mut c = config();
        c.groups[0].members = vec!["erin".into()];
        c.groups[1].folder_others = FolderOthers::Read;
        let local = User {
            source: "local".into(),
            ..user(&[])
        };
        assert_eq!(policy(&c, &local).groups, ["students"]);
        let mounts = folder_mounts(&c, &local);
        assert_eq!(
            mounts,
            [
                FolderMount {
                    group: "students".into(),
                    read_only: false
                },
                FolderMount {
                    group: "phd".into(),
                    read_only: true
                },
            ]
        );
    }
}
