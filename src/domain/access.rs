//! Who may do what: groups of Slack user ids and per-command-family permissions.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::FileConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Members {
    Everyone,
    Users(BTreeSet<String>),
}

impl Members {
    fn contains(&self, user: &str) -> bool {
        match self {
            Members::Everyone => true,
            Members::Users(users) => users.contains(user),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Access {
    groups: BTreeMap<String, Members>,
    permissions: BTreeMap<String, Vec<String>>,
}

/// A refusal, naming the groups that would have been enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub needed: Vec<String>,
}

impl Refusal {
    pub fn message(&self, what: &str) -> String {
        match self.needed.as_slice() {
            [] => format!("You are not allowed to run `{what}`: no group may run it."),
            [one] => format!("You are not allowed to run `{what}`: it needs the `{one}` group."),
            many => format!(
                "You are not allowed to run `{what}`: it needs one of the groups {}.",
                many.iter()
                    .map(|g| format!("`{g}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Access {
    pub fn from_config(config: &FileConfig) -> Self {
        let groups = config
            .groups
            .iter()
            .map(|(name, members)| {
                let members = if members.iter().any(|m| m.get_ref() == "*") {
                    Members::Everyone
                } else {
                    Members::Users(members.iter().map(|m| m.get_ref().clone()).collect())
                };
                (name.clone(), members)
            })
            .collect();
        let permissions = config
            .permissions
            .iter()
            .map(|(family, groups)| {
                (
                    family.get_ref().clone(),
                    groups.iter().map(|g| g.get_ref().clone()).collect(),
                )
            })
            .collect();
        Self {
            groups,
            permissions,
        }
    }

    /// The groups `user` belongs to, in name order.
    pub fn groups_of(&self, user: &str) -> Vec<&str> {
        self.groups
            .iter()
            .filter(|(_, m)| m.contains(user))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    pub fn in_group(&self, user: &str, group: &str) -> bool {
        self.groups.get(group).is_some_and(|m| m.contains(user))
    }

    /// Whether `user` may use a command whose permission keys are `keys` (most specific first,
    /// e.g. `["pager.all", "pager"]`). The first key that `[permissions]` lists decides; when
    /// none is listed, `default_groups` decides, and an empty default means everyone.
    pub fn check(&self, user: &str, keys: &[&str], default_groups: &[&str]) -> Result<(), Refusal> {
        let needed: Vec<&str> = match keys.iter().find_map(|k| self.permissions.get(*k)) {
            Some(groups) => groups.iter().map(String::as_str).collect(),
            None if default_groups.is_empty() => return Ok(()),
            None => default_groups.to_vec(),
        };
        if needed.iter().any(|g| self.in_group(user, g)) {
            Ok(())
        } else {
            Err(Refusal {
                needed: needed.iter().map(|g| (*g).to_owned()).collect(),
            })
        }
    }

    /// The permission keys named in the configuration, for checking them against the registry.
    pub fn configured_keys(&self) -> impl Iterator<Item = &str> {
        self.permissions.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Source};

    fn access(toml: &str) -> Access {
        let config = FileConfig::parse(&Source {
            path: "t.toml".into(),
            text: toml.into(),
        })
        .unwrap();
        Access::from_config(&config)
    }

    const CONFIG: &str = r#"
[groups]
approvers = ["U02JANE", "U03JOE"]
admins    = ["U03JOE"]
deployers = ["*"]

[permissions]
deploy = ["deployers"]
audit  = ["admins"]
"pager.all" = ["admins"]
"#;

    #[test]
    fn groups_and_everyone() {
        let a = access(CONFIG);
        assert_eq!(a.groups_of("U03JOE"), ["admins", "approvers", "deployers"]);
        assert_eq!(a.groups_of("U09NEW"), ["deployers"]);
        assert!(a.in_group("U09NEW", "deployers"));
        assert!(!a.in_group("U09NEW", "admins"));
        assert!(!a.in_group("U03JOE", "nonexistent"));
    }

    #[test]
    fn the_most_specific_listed_key_decides() {
        let a = access(CONFIG);
        assert_eq!(a.check("U02JANE", &["deploy"], &[]), Ok(()));
        assert_eq!(
            a.check("U02JANE", &["audit"], &[]),
            Err(Refusal {
                needed: vec!["admins".into()]
            })
        );
        assert_eq!(a.check("U03JOE", &["audit"], &[]), Ok(()));
        // `pager.all` is listed, so `pager`'s openness does not apply to it.
        assert!(a.check("U02JANE", &["pager.all", "pager"], &[]).is_err());
        assert_eq!(a.check("U02JANE", &["pager.ack", "pager"], &[]), Ok(()));
    }

    #[test]
    fn defaults_apply_only_when_nothing_is_listed() {
        let a = access(CONFIG);
        assert_eq!(a.check("U02JANE", &["whoami"], &[]), Ok(()));
        assert!(a.check("U02JANE", &["secret-stuff"], &["admins"]).is_err());
        assert_eq!(a.check("U03JOE", &["secret-stuff"], &["admins"]), Ok(()));
        let none = access("");
        assert_eq!(
            none.check("U1", &["audit"], &["admins"]),
            Err(Refusal {
                needed: vec!["admins".into()]
            })
        );
    }

    #[test]
    fn refusals_read_well() {
        let r = Refusal {
            needed: vec!["admins".into()],
        };
        assert_eq!(
            r.message("audit"),
            "You are not allowed to run `audit`: it needs the `admins` group."
        );
    }
}
