//! Inbound events as chat messages. Nothing from a payload is trusted as markup: every value
//! is escaped, and a field the message needs but the payload lacks gives a plainer message,
//! never an error.

use serde_json::Value;

use std::ops::Deref as _;

use super::payload::{GitHubBody, GitHubEvent, Named, PagerDutyEvent, ZendeskEvent, read};
use crate::{
    chat::{self, escape, escape_inline, link, truncate},
    domain::routing::Facts,
};

/// An event ready to route and post.
#[derive(Debug, Clone, PartialEq)]
pub struct Formatted {
    pub facts: Facts,
    pub text: String,
    pub blocks: Vec<chat::Block>,
    /// Events with the same key waiting together are posted as one message, labelled.
    pub coalesce: Option<(String, String)>,
}

/// A linked label when there is a URL, plain escaped text otherwise.
fn maybe_link(url: Option<&str>, label: &str) -> String {
    match url.filter(|u| u.starts_with("https://") || u.starts_with("http://")) {
        Some(u) => link(u, label),
        None => escape(label),
    }
}

fn message(facts: Facts, headline: String, details: Vec<String>, footer: String) -> Formatted {
    let mut blocks = vec![chat::section(&headline)];
    let details: Vec<String> = details.into_iter().filter(|d| !d.is_empty()).collect();
    if !details.is_empty() {
        blocks.push(chat::section(&details.join("\n")));
    }
    blocks.push(chat::context(&footer));
    let mut text = headline;
    for d in &details {
        text.push('\n');
        text.push_str(d);
    }
    Formatted {
        facts,
        text: truncate(&text, chat::MAX_FALLBACK_TEXT),
        blocks,
        coalesce: None,
    }
}

/// GitHub events we have a message for.
pub const GITHUB_KNOWN: &[&str] = &[
    "push",
    "pull_request",
    "pull_request_review",
    "issues",
    "issue_comment",
    "release",
    "deployment",
    "deployment_status",
    "workflow_run",
    "check_suite",
];

pub fn github(event: &str, payload: &Value) -> Formatted {
    github_event(&GitHubEvent::read(event, payload))
}

pub fn github_event(e: &GitHubEvent) -> Formatted {
    let event = e.event.as_str();
    let action = e.common.action.get();
    let kind = match action {
        Some(a) => format!("{event}.{a}"),
        None => event.to_owned(),
    };
    let repo = e
        .common
        .repository
        .full_name
        .get()
        .unwrap_or("(unknown repository)")
        .to_owned();
    let repo_url = e.common.repository.html_url.get();
    let sender = e.common.sender.login.get().unwrap_or("someone");
    let mut facts = Facts {
        source: "github".into(),
        kind: kind.clone(),
        known: GITHUB_KNOWN.contains(&event),
        repository: e.common.repository.full_name.get().map(str::to_owned),
        ..Facts::default()
    };
    let repo_link = maybe_link(repo_url, &repo);
    let footer = format!("GitHub · {repo_link}");
    match &e.body {
        GitHubBody::Push(push) => {
            let git_ref = push.git_ref.get().unwrap_or("");
            let (branch, what) = match (
                git_ref.strip_prefix("refs/heads/"),
                git_ref.strip_prefix("refs/tags/"),
            ) {
                (Some(b), _) => (Some(b.to_owned()), format!("`{}`", escape_inline(b))),
                (None, Some(t)) => (None, format!("tag `{}`", escape_inline(t))),
                _ => (None, "a ref".to_owned()),
            };
            facts.branch = branch.clone();
            let commits = &push.commits;
            let count = commits.len();
            let verb = if push.deleted.get() {
                "deleted".to_owned()
            } else if push.forced.get() {
                format!("force-pushed {count} commit{}", plural(count))
            } else {
                format!("pushed {count} commit{}", plural(count))
            };
            let headline = format!(
                "{} {} to {repo_link} {what}",
                escape(sender),
                maybe_link(push.compare.get(), &verb)
            );
            let mut lines: Vec<String> = commits
                .iter()
                .take(5)
                .map(|c| {
                    let sha: String = c.id.get().unwrap_or("").chars().take(7).collect();
                    let msg = c.message.get().unwrap_or("").lines().next().unwrap_or("");
                    let author = c
                        .author
                        .name
                        .get()
                        .or_else(|| c.author.username.get())
                        .unwrap_or("");
                    format!(
                        "{} {} — {}",
                        maybe_link(c.url.get(), &format!("`{sha}`")),
                        escape(&truncate(msg, 100)),
                        escape(author)
                    )
                })
                .collect();
            if count > 5 {
                lines.push(format!("… and {} more", count - 5));
            }
            let mut out = message(facts, headline, lines, footer);
            let branch_label = branch.unwrap_or_default();
            out.coalesce = Some((
                format!("github:push:{repo}:{branch_label}"),
                format!("pushes to {repo} {branch_label}")
                    .trim_end()
                    .to_owned(),
            ));
            out
        }
        GitHubBody::PullRequest(event) => {
            let pr = &event.pull_request;
            facts.branch = pr.base.git_ref.get().map(str::to_owned);
            let number = pr.number.get().or(event.number.get());
            let title = pr.title.get().unwrap_or("(untitled)");
            let merged = pr.merged.get();
            let verb = match action.unwrap_or("") {
                "closed" if merged => "merged".to_owned(),
                "closed" => "closed".to_owned(),
                "opened" => "opened".to_owned(),
                "reopened" => "reopened".to_owned(),
                "ready_for_review" => "marked ready for review".to_owned(),
                other if !other.is_empty() => escape(other),
                _ => "updated".to_owned(),
            };
            let label = number.map_or_else(|| "a pull request".to_owned(), |n| format!("#{n}"));
            let headline = format!(
                "{} {verb} pull request {} *{}* in {repo_link}",
                escape(sender),
                maybe_link(pr.html_url.get(), &label),
                escape_inline(&truncate(title, 150))
            );
            let branches = match (pr.head.git_ref.get(), pr.base.git_ref.get()) {
                (Some(h), Some(b)) => format!("`{}` → `{}`", escape_inline(h), escape_inline(b)),
                _ => String::new(),
            };
            message(facts, headline, vec![branches], footer)
        }
        GitHubBody::PullRequestReview(event) => {
            let pr = &event.pull_request;
            let review = &event.review;
            let state = review.state.get().unwrap_or("reviewed");
            let reviewer = review.user.login.get().unwrap_or(sender);
            let verb = match state.to_ascii_lowercase().as_str() {
                "approved" => "approved",
                "changes_requested" => "requested changes on",
                "commented" => "commented on",
                "dismissed" => "dismissed a review of",
                _ => "reviewed",
            };
            let label = pr
                .number
                .get()
                .map_or_else(|| "a pull request".to_owned(), |n| format!("#{n}"));
            let headline = format!(
                "{} {verb} {} *{}* in {repo_link}",
                escape(reviewer),
                maybe_link(review.html_url.get().or(pr.html_url.get()), &label),
                escape_inline(&truncate(pr.title.get().unwrap_or("(untitled)"), 150))
            );
            let body = review
                .body
                .get()
                .map(|b| format!("> {}", escape(&truncate(b, 300))))
                .unwrap_or_default();
            message(facts, headline, vec![body], footer)
        }
        GitHubBody::Issues(event) => {
            let issue = &event.issue;
            let label = issue
                .number
                .get()
                .map_or_else(|| "an issue".to_owned(), |n| format!("#{n}"));
            let headline = format!(
                "{} {} issue {} *{}* in {repo_link}",
                escape(sender),
                escape(action.unwrap_or("updated")),
                maybe_link(issue.html_url.get(), &label),
                escape_inline(&truncate(issue.title.get().unwrap_or("(untitled)"), 150))
            );
            message(facts, headline, vec![], footer)
        }
        GitHubBody::IssueComment(event) => {
            let issue = &event.issue;
            let label = issue
                .number
                .get()
                .map_or_else(|| "an issue".to_owned(), |n| format!("#{n}"));
            let headline = format!(
                "{} commented on {} *{}* in {repo_link}",
                escape(sender),
                maybe_link(
                    event.comment.html_url.get().or(issue.html_url.get()),
                    &label
                ),
                escape_inline(&truncate(issue.title.get().unwrap_or("(untitled)"), 150))
            );
            let body = event
                .comment
                .body
                .get()
                .map(|b| format!("> {}", escape(&truncate(&b.replace('\n', " "), 300))))
                .unwrap_or_default();
            message(facts, headline, vec![body], footer)
        }
        GitHubBody::Release(event) => {
            let release = &event.release;
            let tag = release.tag_name.get().unwrap_or("(no tag)");
            let name = release.name.get().unwrap_or(tag);
            let headline = format!(
                "{} {} release {} in {repo_link}",
                escape(sender),
                escape(action.unwrap_or("updated")),
                maybe_link(release.html_url.get(), name)
            );
            message(
                facts,
                headline,
                vec![format!("tag `{}`", escape_inline(tag))],
                footer,
            )
        }
        GitHubBody::Deployment(event) => {
            let deployment = &event.deployment;
            let env = deployment
                .environment
                .get()
                .unwrap_or("(unknown environment)");
            let git_ref = deployment.git_ref.get().unwrap_or("(unknown ref)");
            facts.branch = Some(git_ref.to_owned());
            let headline = format!(
                "{} is deploying `{}` of {repo_link} to *{}*",
                escape(deployment.creator.login.get().unwrap_or(sender)),
                escape_inline(git_ref),
                escape_inline(env)
            );
            message(facts, headline, vec![], footer)
        }
        GitHubBody::DeploymentStatus(event) => {
            let status = &event.deployment_status;
            let state = status.state.get().unwrap_or("unknown");
            let env = status
                .environment
                .get()
                .or(event.deployment.environment.get())
                .unwrap_or("(unknown environment)");
            let git_ref = event.deployment.git_ref.get().unwrap_or("");
            facts.branch = (!git_ref.is_empty()).then(|| git_ref.to_owned());
            let headline = format!(
                "Deployment of {repo_link} `{}` to *{}*: {}",
                escape_inline(git_ref),
                escape_inline(env),
                maybe_link(status.log_url.get().or(status.target_url.get()), state)
            );
            message(facts, headline, vec![], footer)
        }
        GitHubBody::WorkflowRun(event) => {
            let run = &event.workflow_run;
            let branch = run.head_branch.get();
            facts.branch = branch.map(str::to_owned);
            let outcome = run
                .conclusion
                .get()
                .or(run.status.get())
                .unwrap_or("unknown");
            let headline = format!(
                "Workflow *{}* on {repo_link} `{}`: {}",
                escape_inline(run.name.get().unwrap_or("(unnamed)")),
                escape_inline(branch.unwrap_or("?")),
                maybe_link(run.html_url.get(), outcome)
            );
            message(facts, headline, vec![], footer)
        }
        GitHubBody::CheckSuite(event) => {
            let suite = &event.check_suite;
            let branch = suite.head_branch.get();
            facts.branch = branch.map(str::to_owned);
            let outcome = suite
                .conclusion
                .get()
                .or(suite.status.get())
                .unwrap_or("unknown");
            let headline = format!(
                "Checks ({}) on {repo_link} `{}`: {}",
                escape(suite.app.name.get().unwrap_or("CI")),
                escape_inline(branch.unwrap_or("?")),
                escape(outcome)
            );
            message(facts, headline, vec![], footer)
        }
        GitHubBody::Other => generic(
            facts,
            format!(
                "GitHub event `{}` on {repo_link} by {}",
                escape_inline(&kind),
                escape(sender)
            ),
            footer,
        ),
    }
}

fn generic(facts: Facts, headline: String, footer: String) -> Formatted {
    message(facts, headline, vec![], footer)
}

const PAGERDUTY_KNOWN: &[&str] = &[
    "incident.triggered",
    "incident.acknowledged",
    "incident.unacknowledged",
    "incident.resolved",
    "incident.reopened",
    "incident.escalated",
    "incident.reassigned",
    "incident.annotated",
    "incident.delegated",
    "incident.priority_updated",
    "incident.responder.added",
    "incident.status_update_published",
];

pub fn pagerduty(payload: &Value) -> Formatted {
    pagerduty_event(&read(payload))
}

pub fn pagerduty_event(e: &PagerDutyEvent) -> Formatted {
    let event = &e.event;
    let kind = event.event_type.get().unwrap_or("unknown").to_owned();
    let data = &event.data;
    // Most events carry the incident as `data`; notes and responders point at it.
    let incident = data.incident();
    let service = if data.own.service.deref() == &Named::default() {
        &incident.service
    } else {
        &data.own.service
    };
    let facts = Facts {
        source: "pagerduty".into(),
        kind: kind.clone(),
        known: PAGERDUTY_KNOWN.contains(&kind.as_str()),
        service: service
            .summary
            .get()
            .or(service.id.get())
            .map(str::to_owned),
        urgency: data.urgency.get().map(str::to_owned),
        priority: data.priority.summary.get().map(str::to_owned),
        ..Facts::default()
    };
    let title = incident
        .title
        .get()
        .or(incident.summary.get())
        .unwrap_or("(untitled incident)");
    let label = incident
        .number
        .get()
        .map_or_else(|| "an incident".to_owned(), |n| format!("#{n}"));
    let verb = match kind.as_str() {
        "incident.triggered" => "🔴 Triggered",
        "incident.acknowledged" => "🟡 Acknowledged",
        "incident.unacknowledged" => "🔴 Unacknowledged",
        "incident.resolved" => "✅ Resolved",
        "incident.reopened" => "🔴 Reopened",
        "incident.escalated" => "⏫ Escalated",
        "incident.reassigned" => "↪ Reassigned",
        "incident.annotated" => "📝 Note on",
        "incident.delegated" => "↪ Delegated",
        "incident.priority_updated" => "Priority changed on",
        _ => "PagerDuty event on",
    };
    let headline = format!(
        "{verb} {} *{}*",
        maybe_link(incident.html_url.get(), &label),
        escape_inline(&truncate(title, 150))
    );
    let mut details = Vec::new();
    let mut bits = Vec::new();
    if let Some(svc) = service.summary.get() {
        bits.push(maybe_link(service.html_url.get(), svc));
    }
    if let Some(u) = data.urgency.get() {
        bits.push(format!("{} urgency", escape(u)));
    }
    if let Some(p) = data.priority.summary.get() {
        bits.push(escape(p));
    }
    let assignees: Vec<String> = data
        .assignees
        .iter()
        .filter_map(|x| x.summary.get())
        .map(escape)
        .collect();
    if !assignees.is_empty() {
        bits.push(format!("assigned to {}", assignees.join(", ")));
    }
    if !bits.is_empty() {
        details.push(bits.join(" · "));
    }
    if let Some(note) = data.content.get() {
        details.push(format!("> {}", escape(&truncate(note, 300))));
    }
    let by = event
        .agent
        .summary
        .get()
        .map(|a| format!(" · by {}", escape(a)))
        .unwrap_or_default();
    let footer = format!("PagerDuty · `{}`{by}", escape_inline(&kind));
    if !facts.known {
        let headline = format!(
            "PagerDuty event `{}` on {} *{}*",
            escape_inline(&kind),
            maybe_link(incident.html_url.get(), &label),
            escape_inline(title)
        );
        return message(facts, headline, details, footer);
    }
    message(facts, headline, details, footer)
}

const ZENDESK_KNOWN: &[&str] = &["ticket.created", "ticket.status_changed"];

/// `ticket_link` builds the agent link for a ticket id when Zendesk is configured.
pub fn zendesk(payload: &Value, ticket_link: impl Fn(&str) -> Option<String>) -> Formatted {
    zendesk_event(&read(payload), ticket_link)
}

pub fn zendesk_event(e: &ZendeskEvent, ticket_link: impl Fn(&str) -> Option<String>) -> Formatted {
    let raw_type = e.kind.get().unwrap_or("unknown");
    let kind = raw_type
        .strip_prefix("zen:event-type:")
        .unwrap_or(raw_type)
        .to_owned();
    let detail = &e.detail;
    let id = detail.id.get();
    let facts = Facts {
        source: "zendesk".into(),
        kind: kind.clone(),
        known: ZENDESK_KNOWN.contains(&kind.as_str()),
        priority: detail.priority.get().map(str::to_ascii_lowercase),
        group: detail.group_id.get().map(str::to_owned),
        ..Facts::default()
    };
    let label = id.map_or_else(|| "a ticket".to_owned(), |i| format!("#{i}"));
    let url = id.and_then(&ticket_link);
    let subject = detail.subject.get().unwrap_or("(no subject)");
    let ticket = format!(
        "{} *{}*",
        maybe_link(url.as_deref(), &label),
        escape_inline(&truncate(subject, 150))
    );
    let headline = match kind.as_str() {
        "ticket.created" => format!("🎫 New ticket {ticket}"),
        "ticket.status_changed" => {
            let from = e.event.previous.get().unwrap_or("?").to_ascii_lowercase();
            let to = e
                .event
                .current
                .get()
                .or(detail.status.get())
                .unwrap_or("?")
                .to_ascii_lowercase();
            format!(
                "Ticket {ticket} is now *{}* (was {})",
                escape(&to),
                escape(&from)
            )
        }
        other => format!("Zendesk event `{}` on {ticket}", escape_inline(other)),
    };
    let mut bits = Vec::new();
    if let Some(st) = detail.status.get() {
        bits.push(escape(&st.to_ascii_lowercase()));
    }
    if let Some(p) = detail.priority.get() {
        bits.push(format!("{} priority", escape(&p.to_ascii_lowercase())));
    }
    if let Some(via) = detail.via.channel.get() {
        bits.push(format!("via {}", escape(via)));
    }
    message(
        facts,
        headline,
        vec![bits.join(" · ")],
        "Zendesk".to_owned(),
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn push_is_escaped_and_coalescable() {
        let p = json!({
            "ref": "refs/heads/main", "compare": "https://github.com/acme/api/compare/a...b",
            "repository": {"full_name": "acme/api", "html_url": "https://github.com/acme/api"},
            "sender": {"login": "<!channel>"},
            "commits": [{"id": "0123456789abcdef", "message": "fix *all* the <things>\n\nbody", "author": {"name": "Ann"}, "url": "https://github.com/acme/api/commit/0123456"}]
        });
        let f = github("push", &p);
        assert_eq!(f.facts.kind, "push");
        assert_eq!(f.facts.branch.as_deref(), Some("main"));
        assert!(f.text.starts_with("&lt;!channel&gt; <https://github.com/acme/api/compare/a...b|pushed 1 commit> to <https://github.com/acme/api|acme/api> `main`"), "{}", f.text);
        assert!(
            f.text.contains("fix *all* the &lt;things&gt; — Ann"),
            "{}",
            f.text
        );
        assert_eq!(
            f.coalesce,
            Some((
                "github:push:acme/api:main".into(),
                "pushes to acme/api main".into()
            ))
        );
    }

    #[test]
    fn merged_pull_requests_say_merged() {
        let p = json!({"action": "closed", "repository": {"full_name": "acme/api"}, "sender": {"login": "bob"},
            "pull_request": {"number": 7, "title": "Add `x`", "merged": true, "html_url": "https://github.com/acme/api/pull/7", "head": {"ref": "x"}, "base": {"ref": "main"}}});
        let f = github("pull_request", &p);
        assert_eq!(f.facts.kind, "pull_request.closed");
        assert!(f.text.starts_with("bob merged pull request <https://github.com/acme/api/pull/7|#7> *Add ‘x‘* in acme/api"), "{}", f.text);
    }

    #[test]
    fn missing_fields_degrade() {
        let f = github("pull_request", &json!({"action": "opened"}));
        assert!(
            f.text.starts_with(
                "someone opened pull request a pull request *(untitled)* in (unknown repository)"
            ),
            "{}",
            f.text
        );
        let f = pagerduty(&json!({}));
        assert_eq!(f.facts.kind, "unknown");
        assert!(!f.facts.known);
        let f = zendesk(&json!({"type": "zen:event-type:ticket.created"}), |_| None);
        assert!(
            f.text.starts_with("🎫 New ticket a ticket *(no subject)*"),
            "{}",
            f.text
        );
    }

    #[test]
    fn unknown_github_events_are_generic() {
        let f = github(
            "discussion",
            &json!({"action": "created", "repository": {"full_name": "a/b"}}),
        );
        assert!(!f.facts.known);
        assert!(
            f.text
                .starts_with("GitHub event `discussion.created` on a/b by someone"),
            "{}",
            f.text
        );
    }
}
