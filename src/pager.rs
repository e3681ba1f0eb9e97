//! PagerDuty writes, done one way whether a command does them at once or a job does them after a
//! peer's approval: an audit step with what is asked, the call, an audit step with what
//! PagerDuty answered, and the answer people see.

use time::{Duration, OffsetDateTime};

use crate::{
    audit::AuditLog,
    chat::{self, Message, escape, link, mention},
    clients::{
        pagerduty::{Incident, PagerDuty},
        vendor::VendorError,
    },
    domain::{
        audit::{AuditEntry, Outcome},
        held::{HeldWrite, IncidentUpdate, Scope},
    },
};

/// Who a write is done for, and where its audit steps go.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user: String,
    pub channel: String,
    pub correlation_id: String,
    /// The command as typed.
    pub command: String,
}

/// Why a write was not done, or not recorded: said to the person as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WriteError(pub String);

impl From<VendorError> for WriteError {
    fn from(e: VendorError) -> Self {
        WriteError(e.to_string())
    }
}

/// What the write would do, in words, for the approvers and the audit trail. Writes that start
/// "now" say when that is.
pub fn asked(write: &HeldWrite, now: OffsetDateTime) -> String {
    match write {
        HeldWrite::Update {
            ids, scope, from, ..
        } => {
            let action = write.action();
            let whose = match scope {
                Scope::Given => "the given",
                Scope::Mine => "your",
                Scope::All => "all",
            };
            format!("{action} {} ({whose} incidents) as {from}", ids.join(", "))
        }
        HeldWrite::Override {
            schedule_id,
            schedule_name,
            from,
            minutes,
            ..
        } => format!(
            "override {schedule_name} ({schedule_id}) for {from} from {} to {}",
            chat::when(now),
            chat::when(now + Duration::minutes(*minutes))
        ),
        HeldWrite::Maintenance {
            service_names,
            from,
            minutes,
            ..
        } => format!(
            "maintenance on {} for {minutes} minutes as {from}",
            service_names.join(", ")
        ),
        HeldWrite::Trigger {
            service_id,
            title,
            assignee_name,
            from,
            ..
        } => format!("trigger \"{title}\" for {assignee_name} on service {service_id} as {from}"),
    }
}

/// What an approved write finds when it looks again.
#[derive(Debug, Clone, PartialEq)]
pub enum Recheck {
    /// It acts on what was shown: go ahead.
    Same,
    /// Nothing is left to act on (the incidents were all acknowledged or resolved meanwhile):
    /// the answer says so, and nothing is sent.
    Nothing(Message),
}

/// The answer when no incident is left for an update to act on.
pub fn nothing_to_update(to: IncidentUpdate, scope: Scope) -> Message {
    let what = if scope == Scope::Mine {
        "assigned to you"
    } else {
        "open"
    };
    let verb = match to {
        IncidentUpdate::Acknowledged => "acknowledge",
        IncidentUpdate::Resolved => "resolve",
    };
    Message::text(format!(
        "No {} incidents {what} to {verb}.",
        to.from_statuses().join(" or ")
    ))
}

/// Before an approved write: the incidents it was to act on, when they were looked up rather
/// than given, must be the ones PagerDuty lists now (in any order).
pub async fn recheck(pd: &PagerDuty, write: &HeldWrite) -> Result<Recheck, WriteError> {
    let HeldWrite::Update {
        to,
        ids,
        scope,
        user_id,
        ..
    } = write
    else {
        return Ok(Recheck::Same);
    };
    let users: Vec<&str> = match scope {
        Scope::Given => return Ok(Recheck::Same),
        Scope::Mine => vec![user_id],
        Scope::All => Vec::new(),
    };
    let now: Vec<String> = pd
        .incidents(to.from_statuses(), &users)
        .await?
        .items
        .into_iter()
        .map(|i| i.id)
        .collect();
    if now.is_empty() {
        return Ok(Recheck::Nothing(nothing_to_update(*to, *scope)));
    }
    let sorted = |ids: &[String]| {
        let mut ids = ids.to_vec();
        ids.sort();
        ids
    };
    if sorted(&now) == sorted(ids) {
        return Ok(Recheck::Same);
    }
    let mut changed = write.clone();
    if let HeldWrite::Update { ids, .. } = &mut changed {
        *ids = now;
    }
    Err(WriteError(format!(
        "What this would do changed since it was approved: it would now {}. Nothing was done; ask again.",
        escape(&asked(&changed, OffsetDateTime::now_utc()))
    )))
}

/// Do `write` for `who`: audited before and after, answered with what PagerDuty did.
pub async fn perform(
    audit: &AuditLog,
    pd: &PagerDuty,
    who: &Requester,
    write: &HeldWrite,
) -> Result<Message, WriteError> {
    let now = OffsetDateTime::now_utc();
    let step = Step {
        audit,
        who,
        action: format!("pagerduty.{}", write.action()),
    };
    step.record(Outcome::Started, format!("asked: {}", asked(write, now)))
        .await?;
    let user = &who.user;
    match write {
        HeldWrite::Update { to, ids, from, .. } => {
            let verb = to.status();
            let updated = step
                .call(pd.update_incidents(from, ids, verb), |done| {
                    format!(
                        "{} {verb}: {}",
                        done.len(),
                        done.iter()
                            .map(|i| i.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .await?;
            let lines: Vec<String> = updated.iter().map(|i| incident_line(i, now)).collect();
            let n = updated.len();
            let title = format!("{} {verb} {n} incident{}", mention(user), plural(n));
            let mut message = chat::list_message(
                &format!("{verb} {n} incident{}", plural(n)),
                &lines,
                false,
                "",
            );
            message.blocks.insert(1, chat::section(&title));
            message.text = format!("{title}\n{}", message.text);
            Ok(message)
        }
        HeldWrite::Override {
            schedule_id,
            schedule_name,
            user_id,
            minutes,
            ..
        } => {
            let end = now + Duration::minutes(*minutes);
            let created = step
                .call(pd.create_override(schedule_id, user_id, now, end), |o| {
                    format!("override {} created", o.id.as_deref().unwrap_or("(no id)"))
                })
                .await?;
            Ok(Message::text(format!(
                "{} has the pager on *{}* until {} ({minutes} minutes).",
                mention(user),
                escape(schedule_name),
                chat::when(created.end)
            )))
        }
        HeldWrite::Maintenance {
            service_ids,
            service_names,
            from,
            minutes,
            description,
        } => {
            let end = now + Duration::minutes(*minutes);
            let window = step
                .call(
                    pd.create_maintenance_window(from, service_ids, now, end, description),
                    |w| format!("maintenance window {} created", w.id),
                )
                .await?;
            let until = chat::when(window.end_time.unwrap_or(end));
            let what = service_names
                .iter()
                .map(|n| format!("*{}*", escape(n)))
                .collect::<Vec<_>>()
                .join(", ");
            let mut text = format!("{} put {what} in maintenance until {until}.", mention(user));
            if let Some(url) = &window.html_url {
                text.push(' ');
                text.push_str(&link(url, "Maintenance window"));
            }
            Ok(Message::text(text))
        }
        HeldWrite::Trigger {
            service_id,
            title,
            assignee_id,
            assignee_name,
            from,
        } => {
            let incident = step
                .call(
                    pd.create_incident(from, service_id, title, assignee_id),
                    |i| format!("incident {} created", i.id),
                )
                .await?;
            Ok(Message::text(format!(
                "{} paged {}: {}",
                mention(user),
                escape(assignee_name),
                incident_line(&incident, now)
            )))
        }
    }
}

/// One audited PagerDuty step of a write.
struct Step<'a> {
    audit: &'a AuditLog,
    who: &'a Requester,
    action: String,
}

impl Step<'_> {
    /// A step that acts is recorded before it acts, so a failure to record stops it.
    async fn record(&self, outcome: Outcome, detail: String) -> Result<(), WriteError> {
        let who = self.who;
        let entry = AuditEntry::new(&who.correlation_id, &who.user, &self.action, outcome)
            .channel(&who.channel)
            .command(&who.command)
            .detail(detail);
        self.audit
            .record(vec![entry])
            .await
            .map_err(|e| WriteError(format!("Nothing was done: {e}.")))
    }

    /// The call, and a step with what PagerDuty answered (`answered`) or how it failed.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, VendorError>>,
        answered: impl Fn(&T) -> String,
    ) -> Result<T, WriteError> {
        match call.await {
            Ok(done) => {
                self.record(
                    Outcome::Succeeded,
                    format!("PagerDuty: {}", answered(&done)),
                )
                .await?;
                Ok(done)
            }
            Err(e) => {
                self.record(Outcome::Failed, e.to_string()).await?;
                Err(e.into())
            }
        }
    }
}

/// One incident on one line: number (linked), title, status, urgency, service, age, assignees
/// and id.
pub fn incident_line(i: &Incident, now: OffsetDateTime) -> String {
    let number = i
        .incident_number
        .map_or_else(|| i.id.clone(), |n| format!("#{n}"));
    let title = i
        .title
        .as_deref()
        .or(i.summary.as_deref())
        .unwrap_or("(no title)");
    let head = match &i.html_url {
        Some(url) => link(url, &number),
        None => escape(&number),
    };
    let mut parts = vec![format!(
        "{head} *{}*",
        chat::escape_inline(&chat::truncate(title, 120))
    )];
    if let Some(status) = &i.status {
        parts.push(status.clone());
    }
    if let Some(urgency) = &i.urgency {
        parts.push(format!("{urgency} urgency"));
    }
    if let Some(service) = &i.service {
        parts.push(escape(service.name()));
    }
    if let Some(created) = i.created_at {
        parts.push(format!("{} old", chat::age(created, now)));
    }
    let assignees: Vec<String> = i
        .assignments
        .iter()
        .map(|a| escape(a.assignee.name()))
        .collect();
    if !assignees.is_empty() {
        parts.push(format!("assigned to {}", assignees.join(", ")));
    }
    parts.push(format!("`{}`", escape(&i.id)));
    parts.join(" · ")
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Writes keep their words: what approvers read is what the old sentences said.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_write_would_do_reads_as_before() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let update = HeldWrite::Update {
            to: IncidentUpdate::Resolved,
            ids: vec!["PT1".into()],
            scope: Scope::Given,
            from: "jane@acme.test".into(),
            user_id: "PJANE".into(),
        };
        assert_eq!(
            asked(&update, now),
            "resolve PT1 (the given incidents) as jane@acme.test"
        );
        let take = HeldWrite::Override {
            schedule_id: "PSCHED".into(),
            schedule_name: "Primary".into(),
            user_id: "PJANE".into(),
            from: "jane@acme.test".into(),
            minutes: 30,
        };
        assert_eq!(
            asked(&take, now),
            "override Primary (PSCHED) for jane@acme.test from 2023-11-14 22:13 UTC to 2023-11-14 22:43 UTC"
        );
    }
}
