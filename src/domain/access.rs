//! Who may do what: groups of Slack user ids and per-command-family permissions.

use std::collections::{BTreeMap, BTreeSet};

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
    /// From group name -> members (user ids, or `"*"` for everyone) and command family (or
    /// `family.action`) -> groups allowed.
    pub fn new(
        groups: BTreeMap<String, Vec<String>>,
        permissions: BTreeMap<String, Vec<String>>,
    ) -> Self {
        let groups = groups
            .into_iter()
            .map(|(name, members)| {
                let members = if members.iter().any(|m| m == "*") {
                    Members::Everyone
                } else {
                    Members::Users(members.into_iter().collect())
                };
                (name, members)
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

    /// Whether `user` may use a command of `family`, with an optional more specific key
    /// (`pager.all`) and the groups the command allows when configuration says nothing.
    ///
    /// The specific key decides when `[permissions]` lists it. A command that declares its own
    /// stricter default (like `pager ack!`, admins only) keeps it when only its family is
    /// listed: opening `pager` to a group does not open `pager ack!` to it. Otherwise the
    /// family's entry decides; with none, the default applies, and an empty default means
    /// everyone.
    pub fn check(
        &self,
        user: &str,
        specific: Option<&str>,
        family: &str,
        default_groups: &[&str],
    ) -> Result<(), Refusal> {
        let listed = |key: &str| {
            self.permissions
                .get(key)
                .map(|g| g.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let needed: Vec<&str> = match (
            specific.and_then(listed),
            specific.is_some() && !default_groups.is_empty(),
        ) {
            (Some(groups), _) => groups,
            (None, true) => default_groups.to_vec(),
            (None, false) => match listed(family) {
                Some(groups) => groups,
                None if default_groups.is_empty() => return Ok(()),
                None => default_groups.to_vec(),
            },
        };
        if needed.iter().any(|g| self.in_group(user, g)) {
            Ok(())
        } else {
            Err(Refusal {
                needed: needed.iter().map(|g| (*g).to_owned()).collect(),
            })
        }
    }
}

/// Who may run one command, as the registry declares it: its family, its own permission key and
/// the groups it allows when configuration says nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRule {
    pub family: String,
    pub permission: Option<String>,
    pub default_groups: Vec<String>,
}

/// Every command's [`CommandRule`] by name: what a job or a page checks again at every look
/// (may Jane still run `pager ack!`?) without the registry and its handlers.
#[derive(Debug, Clone, Default)]
pub struct CommandRules(std::collections::BTreeMap<String, CommandRule>);

impl CommandRules {
    pub fn new(rules: impl IntoIterator<Item = (String, CommandRule)>) -> Self {
        Self(rules.into_iter().collect())
    }

    /// Whether `user` may run `command`; a command that does not exist is refused to everyone.
    pub fn allowed(&self, access: &Access, command: &str, user: &str) -> Result<(), Refusal> {
        let rule = self.0.get(command).ok_or(Refusal { needed: Vec::new() })?;
        let defaults: Vec<&str> = rule.default_groups.iter().map(String::as_str).collect();
        access.check(user, rule.permission.as_deref(), &rule.family, &defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(toml: &str) -> Access {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            groups: BTreeMap<String, Vec<String>>,
            #[serde(default)]
            permissions: BTreeMap<String, Vec<String>>,
        }
        let file: File = toml::from_str(toml).unwrap();
        Access::new(file.groups, file.permissions)
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
        assert_eq!(a.check("U02JANE", None, "deploy", &[]), Ok(()));
        assert_eq!(
            a.check("U02JANE", None, "audit", &[]),
            Err(Refusal {
                needed: vec!["admins".into()]
            })
        );
        assert_eq!(a.check("U03JOE", None, "audit", &[]), Ok(()));
        // `pager.all` is listed, so `pager`'s openness does not apply to it.
        assert!(a.check("U02JANE", Some("pager.all"), "pager", &[]).is_err());
        assert_eq!(a.check("U02JANE", Some("pager.ack"), "pager", &[]), Ok(()));
    }

    #[test]
    fn a_family_entry_does_not_loosen_a_stricter_default() {
        let a = access(
            "[groups]\noncall = [\"U02JANE\"]\nadmins = [\"U03JOE\"]\n\n[permissions]\npager = [\"oncall\"]\n",
        );
        // `pager ack!` defaults to admins; listing `pager` for oncall does not change that.
        assert!(
            a.check("U02JANE", Some("pager.all"), "pager", &["admins"])
                .is_err()
        );
        assert_eq!(
            a.check("U03JOE", Some("pager.all"), "pager", &["admins"]),
            Ok(())
        );
        // ...while the family's ordinary commands follow the family entry.
        assert_eq!(a.check("U02JANE", None, "pager", &[]), Ok(()));
        assert!(a.check("U03JOE", None, "pager", &[]).is_err());
    }

    #[test]
    fn defaults_apply_only_when_nothing_is_listed() {
        let a = access(CONFIG);
        assert_eq!(a.check("U02JANE", None, "whoami", &[]), Ok(()));
        assert!(
            a.check("U02JANE", None, "secret-stuff", &["admins"])
                .is_err()
        );
        assert_eq!(a.check("U03JOE", None, "secret-stuff", &["admins"]), Ok(()));
        let none = access("");
        assert_eq!(
            none.check("U1", None, "audit", &["admins"]),
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
