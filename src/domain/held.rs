//! PagerDuty writes held for a peer's approval (`[pagerduty] approval_required`), as values.
//!
//! The command that asked works out exactly what it would do (which incidents, which schedule,
//! as whom) and holds that as a [`HeldWrite`]. Its JSON is the approval request's `write`
//! parameter, so the approval is bound to it like any runbook parameter; once approved, the job
//! does that write and nothing else, without reading the command again.

use serde::{Deserialize, Serialize};

/// One PagerDuty write, as it will be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "write", rename_all = "snake_case")]
pub enum HeldWrite {
    /// Acknowledge or resolve incidents.
    Update {
        to: IncidentUpdate,
        /// The incidents, in the order shown.
        ids: Vec<String>,
        /// How they were chosen; for [`Scope::Mine`] and [`Scope::All`] the set is looked up
        /// again before the write, and the write refused if it changed.
        scope: Scope,
        /// The requester's PagerDuty email (PagerDuty's `From`).
        from: String,
        /// The requester's PagerDuty user id.
        user_id: String,
    },
    /// Take the pager: an override putting the requester on a schedule from when it runs.
    Override {
        schedule_id: String,
        schedule_name: String,
        user_id: String,
        from: String,
        minutes: i64,
    },
    /// A maintenance window on services, from when it runs.
    Maintenance {
        service_ids: Vec<String>,
        service_names: Vec<String>,
        from: String,
        minutes: i64,
        description: String,
    },
    /// Open an incident assigned to someone.
    Trigger {
        service_id: String,
        title: String,
        assignee_id: String,
        assignee_name: String,
        from: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentUpdate {
    Acknowledged,
    Resolved,
}

impl IncidentUpdate {
    /// The statuses an incident may have for this update to apply.
    pub fn from_statuses(self) -> &'static [&'static str] {
        match self {
            // Acknowledging only makes sense for triggered incidents; resolving for any open one.
            IncidentUpdate::Acknowledged => &["triggered"],
            IncidentUpdate::Resolved => &["triggered", "acknowledged"],
        }
    }

    /// PagerDuty's name of the status, which is also the past tense shown to people.
    pub fn status(self) -> &'static str {
        match self {
            IncidentUpdate::Acknowledged => "acknowledged",
            IncidentUpdate::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The ids the requester gave.
    Given,
    /// The requester's own open incidents.
    Mine,
    /// Every open incident (the `!` commands).
    All,
}

impl HeldWrite {
    /// The PagerDuty action this is, as `[pagerduty] approval_required` names it.
    pub fn action(&self) -> &'static str {
        match self {
            HeldWrite::Update {
                to: IncidentUpdate::Acknowledged,
                ..
            } => "ack",
            HeldWrite::Update {
                to: IncidentUpdate::Resolved,
                ..
            } => "resolve",
            HeldWrite::Override { .. } => "override",
            HeldWrite::Maintenance { .. } => "maintenance",
            HeldWrite::Trigger { .. } => "trigger",
        }
    }

    /// The chat command that asks for this write, whose permission the requester still needs
    /// when it runs (`pager ack!` needs more than `pager ack`).
    pub fn command(&self) -> &'static str {
        match self {
            HeldWrite::Update { to, scope, .. } => match (to, scope) {
                (IncidentUpdate::Acknowledged, Scope::All) => "pager ack!",
                (IncidentUpdate::Acknowledged, _) => "pager ack",
                (IncidentUpdate::Resolved, Scope::All) => "pager resolve!",
                (IncidentUpdate::Resolved, _) => "pager resolve",
            },
            HeldWrite::Override { .. } => "pager me",
            HeldWrite::Maintenance { .. } => "pager maintenance",
            HeldWrite::Trigger { .. } => "pager trigger",
        }
    }

    /// The canonical form: the `write` parameter an approval is bound to. It is JSON in ASCII
    /// (anything else escaped as `\uXXXX`), so names PagerDuty gave (a schedule called with an
    /// emoji) pass the checks every parameter gets, which refuse invisible characters in what
    /// people typed.
    pub fn canonical(&self) -> String {
        // Serializing plain strings, numbers and lists cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut ascii = String::with_capacity(json.len());
        for c in json.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                // Outside ASCII only inside strings, where JSON reads the escape back.
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    ascii.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        ascii
    }

    /// The write a `write` parameter holds.
    pub fn parse(canonical: &str) -> Result<Self, String> {
        serde_json::from_str(canonical).map_err(|e| format!("the held write does not read: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_form_is_stable_and_reads_back() {
        let write = HeldWrite::Update {
            to: IncidentUpdate::Acknowledged,
            ids: vec!["PT9".into(), "PT10".into()],
            scope: Scope::Mine,
            from: "jane@acme.test".into(),
            user_id: "PJANE".into(),
        };
        assert_eq!(
            write.canonical(),
            r#"{"write":"update","to":"acknowledged","ids":["PT9","PT10"],"scope":"mine","from":"jane@acme.test","user_id":"PJANE"}"#
        );
        assert_eq!(HeldWrite::parse(&write.canonical()), Ok(write.clone()));
        assert_eq!(write.action(), "ack");
        assert_eq!(write.command(), "pager ack");
        let all = HeldWrite::Update {
            to: IncidentUpdate::Resolved,
            ids: vec!["PT9".into()],
            scope: Scope::All,
            from: "jane@acme.test".into(),
            user_id: "PJANE".into(),
        };
        assert_eq!((all.action(), all.command()), ("resolve", "pager resolve!"));
    }

    #[test]
    fn names_outside_ascii_are_escaped_and_read_back() {
        let write = HeldWrite::Override {
            schedule_id: "PS1".into(),
            schedule_name: "Primär 👩\u{200d}🚒".into(),
            user_id: "PJANE".into(),
            from: "jane@acme.test".into(),
            minutes: 30,
        };
        let canonical = write.canonical();
        assert!(canonical.is_ascii(), "{canonical}");
        assert!(
            canonical.contains(r"Prim\u00e4r \ud83d\udc69\u200d\ud83d\ude92"),
            "{canonical}"
        );
        assert_eq!(HeldWrite::parse(&canonical), Ok(write));
    }

    #[test]
    fn a_changed_or_unknown_write_does_not_read() {
        assert!(HeldWrite::parse(r#"{"write":"delete_everything"}"#).is_err());
        assert!(HeldWrite::parse(r#"{"write":"trigger","title":"x"}"#).is_err());
        assert!(HeldWrite::parse("pager ack").is_err());
    }
}
