//! Deploy safety: which runs are deploys (and of what), locks on targets and environments, and
//! what stands in the way of a run (a lock or a freeze). Pure rules, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{freeze::Freeze, runbook::render};

/// Which parameters of a runbook say the app, the environment and the version it deploys
/// (templates over its parameters: `app = "{app}"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeployFields {
    pub app: String,
    pub env: String,
    pub version: String,
    /// The GitHub repository (`owner/name`, a template) to record each deploy in as a GitHub
    /// Deployment with its statuses. Left out of the JSON when absent, so bindings of
    /// runbooks without it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<String>,
}

/// A run of a deploy runbook: what it deploys where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployed {
    pub app: String,
    pub env: String,
    pub version: String,
    /// Where to record it on GitHub (`owner/name`), when the runbook says.
    pub github: Option<String>,
}

impl DeployFields {
    pub fn of(&self, params: &BTreeMap<String, String>) -> Deployed {
        Deployed {
            app: render(&self.app, params),
            env: render(&self.env, params),
            version: render(&self.version, params),
            github: self.github.as_ref().map(|g| render(g, params)),
        }
    }
}

/// The name a global lock is stored under (`lock --global`).
pub const GLOBAL: &str = "*";

/// A lock held on a target (`api/production`), an environment (`production`) or everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    pub name: String,
    pub holder: String,
    pub reason: String,
    pub channel: String,
    pub correlation_id: String,
    pub created_at: OffsetDateTime,
    /// Sticky when `None`: held until someone unlocks it.
    pub expires_at: Option<OffsetDateTime>,
}

impl Lock {
    /// Whether this lock covers a run on `target`, in `env` when its runbook declares one.
    /// Case is ignored: a parameter's expression may accept `PRODUCTION` as well as
    /// `production`, and a lock on one is a lock on the other.
    pub fn covers(&self, target: &str, env: Option<&str>) -> bool {
        self.name == GLOBAL || same(&self.name, target) || env.is_some_and(|e| same(&self.name, e))
    }

    /// What the lock is called in messages: `api/production`, or `everything`.
    pub fn what(&self) -> &str {
        shown(&self.name)
    }

    /// `: its reason` (escaped with `escape`), or nothing when it was given none.
    pub fn reason_as(&self, escape: impl Fn(&str) -> String) -> String {
        if self.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", escape(&self.reason))
        }
    }
}

/// A lock's name as people read it: [`GLOBAL`] is `everything`.
pub fn shown(name: &str) -> &str {
    if name == GLOBAL { "everything" } else { name }
}

/// Whether two names are the same, ignoring case.
pub fn same(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// What asking for a lock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// Taken: this is the lock now.
    Taken(Lock),
    /// Someone (perhaps the asker) holds it already.
    Held(Lock),
}

/// What asking to unlock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlocked {
    Released(Lock),
    /// Nothing holds that name (or its lock had run out).
    NotLocked,
    /// Held by someone else, and the asker may not break others' locks.
    NotYours(Lock),
}

/// What stands in the way of a run.
#[derive(Debug, Clone)]
pub enum Blocker {
    Lock(Lock),
    Freeze {
        freeze: Freeze,
        until: OffsetDateTime,
    },
}

impl Blocker {
    /// The plain sentence: `api/production is locked by <@U1>: migrating, since …` or `deploy
    /// is frozen: weekend, until Mon 2026-12-07 08:00 Europe/Berlin`. `mention` and `escape`
    /// are the chat platform's.
    pub fn say(
        &self,
        target: &str,
        mention: impl Fn(&str) -> String,
        escape: impl Fn(&str) -> String,
        when: impl Fn(OffsetDateTime) -> String,
    ) -> String {
        match self {
            Blocker::Lock(lock) => {
                let what = if lock.name == GLOBAL {
                    format!("{} (everything is locked)", escape(target))
                } else if same(&lock.name, target) {
                    escape(target)
                } else {
                    format!("{} ({} is locked)", escape(target), escape(&lock.name))
                };
                let reason = lock.reason_as(&escape);
                let until = match lock.expires_at {
                    Some(t) => format!(", until {}", when(t)),
                    None => String::new(),
                };
                format!(
                    "`{what}` is locked by {}{reason}, since {}{until}",
                    mention(&lock.holder),
                    when(lock.created_at)
                )
            }
            Blocker::Freeze { freeze, until } => format!(
                "`{}` is frozen: *{}* ({}), until {}",
                escape(target),
                escape(&freeze.name),
                escape(&freeze.scope.describe()),
                freeze.local(*until)
            ),
        }
    }
}

/// Is a run on `target` (in `env`) of `runbook` blocked at `now`? Locks first, then freezes.
pub fn blockers(
    locks: &[Lock],
    freezes: &[Freeze],
    runbook: &str,
    target: &str,
    env: Option<&str>,
    now: OffsetDateTime,
) -> Vec<Blocker> {
    let mut out: Vec<Blocker> = locks
        .iter()
        .filter(|l| l.expires_at.is_none_or(|t| t > now) && l.covers(target, env))
        .cloned()
        .map(Blocker::Lock)
        .collect();
    for freeze in freezes {
        if freeze.scope.covers(runbook, env, target)
            && let Some(until) = freeze.active_at(now)
        {
            out.push(Blocker::Freeze {
                freeze: freeze.clone(),
                until,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn lock(name: &str) -> Lock {
        Lock {
            name: name.into(),
            holder: "U1JANE".into(),
            reason: "migrating the database".into(),
            channel: "C1".into(),
            correlation_id: "c".into(),
            created_at: datetime!(2026-12-03 14:05 UTC),
            expires_at: None,
        }
    }

    #[test]
    fn a_lock_covers_its_target_its_environment_or_everything() {
        assert!(lock("api/production").covers("api/production", Some("production")));
        assert!(!lock("api/production").covers("api/staging", Some("staging")));
        assert!(lock("production").covers("web/production", Some("production")));
        assert!(!lock("production").covers("web/staging", Some("staging")));
        assert!(lock(GLOBAL).covers("anything", None));
        assert!(lock("production").covers("web/PRODUCTION", Some("PRODUCTION")));
        assert!(lock("api/production").covers("API/Production", None));
    }

    #[test]
    fn a_lock_says_who_why_and_since_when() {
        let b = Blocker::Lock(lock("api/production"));
        let said = b.say(
            "api/production",
            |u| format!("<@{u}>"),
            str::to_owned,
            |t| {
                let f =
                    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
                t.format(&f).unwrap()
            },
        );
        assert_eq!(
            said,
            "`api/production` is locked by <@U1JANE>: migrating the database, since 2026-12-03 14:05 UTC"
        );
        let mut l = lock("production");
        l.expires_at = Some(datetime!(2026-12-03 16:05 UTC));
        let expired_by = datetime!(2026-12-03 16:05 UTC);
        assert!(
            blockers(
                &[l.clone()],
                &[],
                "deploy",
                "api/production",
                Some("production"),
                expired_by
            )
            .is_empty()
        );
        assert_eq!(
            blockers(
                &[l],
                &[],
                "deploy",
                "api/production",
                Some("production"),
                datetime!(2026-12-03 16:00 UTC)
            )
            .len(),
            1
        );
    }
}
