//! Inbound events as chat messages. Nothing from a payload is trusted as markup: every value
//! is escaped, and a field the message needs but the payload lacks gives a plainer message,
//! never an error.

use serde_json::Value;

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

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn n(v: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_i64()
        .or_else(|| cur.as_str().and_then(|s| s.parse().ok()))
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
const GITHUB_KNOWN: &[&str] = &[
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
    let action = s(payload, &["action"]);
    let kind = match action {
        Some(a) => format!("{event}.{a}"),
        None => event.to_owned(),
    };
    let repo = s(payload, &["repository", "full_name"])
        .unwrap_or("(unknown repository)")
        .to_owned();
    let repo_url = s(payload, &["repository", "html_url"]);
    let sender = s(payload, &["sender", "login"]).unwrap_or("someone");
    let mut facts = Facts {
        source: "github".into(),
        kind: kind.clone(),
        known: GITHUB_KNOWN.contains(&event),
        repository: s(payload, &["repository", "full_name"]).map(str::to_owned),
        ..Facts::default()
    };
    let repo_link = maybe_link(repo_url, &repo);
    let footer = format!("GitHub · {repo_link}");
    match event {
        "push" => {
            let git_ref = s(payload, &["ref"]).unwrap_or("");
            let (branch, what) = match (
                git_ref.strip_prefix("refs/heads/"),
                git_ref.strip_prefix("refs/tags/"),
            ) {
                (Some(b), _) => (Some(b.to_owned()), format!("`{}`", escape_inline(b))),
                (None, Some(t)) => (None, format!("tag `{}`", escape_inline(t))),
                _ => (None, "a ref".to_owned()),
            };
            facts.branch = branch.clone();
            let commits = payload
                .get("commits")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let count = commits.len();
            let verb = if payload.get("deleted").and_then(Value::as_bool) == Some(true) {
                "deleted".to_owned()
            } else if payload.get("forced").and_then(Value::as_bool) == Some(true) {
                format!("force-pushed {count} commit{}", plural(count))
            } else {
                format!("pushed {count} commit{}", plural(count))
            };
            let headline = format!(
                "{} {} to {repo_link} {what}",
                escape(sender),
                maybe_link(s(payload, &["compare"]), &verb)
            );
            let mut lines: Vec<String> = commits
                .iter()
                .take(5)
                .map(|c| {
                    let sha: String = s(c, &["id"]).unwrap_or("").chars().take(7).collect();
                    let msg = s(c, &["message"])
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("");
                    let author = s(c, &["author", "name"])
                        .or_else(|| s(c, &["author", "username"]))
                        .unwrap_or("");
                    format!(
                        "{} {} — {}",
                        maybe_link(s(c, &["url"]), &format!("`{sha}`")),
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
        "pull_request" => {
            let pr = payload.get("pull_request").cloned().unwrap_or_default();
            facts.branch = s(&pr, &["base", "ref"]).map(str::to_owned);
            let number = n(&pr, &["number"]).or_else(|| n(payload, &["number"]));
            let title = s(&pr, &["title"]).unwrap_or("(untitled)");
            let merged = pr.get("merged").and_then(Value::as_bool) == Some(true);
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
                maybe_link(s(&pr, &["html_url"]), &label),
                escape_inline(&truncate(title, 150))
            );
            let branches = match (s(&pr, &["head", "ref"]), s(&pr, &["base", "ref"])) {
                (Some(h), Some(b)) => format!("`{}` → `{}`", escape_inline(h), escape_inline(b)),
                _ => String::new(),
            };
            message(facts, headline, vec![branches], footer)
        }
        "pull_request_review" => {
            let pr = payload.get("pull_request").cloned().unwrap_or_default();
            let state = s(payload, &["review", "state"]).unwrap_or("reviewed");
            let reviewer = s(payload, &["review", "user", "login"]).unwrap_or(sender);
            let verb = match state.to_ascii_lowercase().as_str() {
                "approved" => "approved",
                "changes_requested" => "requested changes on",
                "commented" => "commented on",
                "dismissed" => "dismissed a review of",
                _ => "reviewed",
            };
            let label = n(&pr, &["number"])
                .map_or_else(|| "a pull request".to_owned(), |n| format!("#{n}"));
            let headline = format!(
                "{} {verb} {} *{}* in {repo_link}",
                escape(reviewer),
                maybe_link(
                    s(payload, &["review", "html_url"]).or(s(&pr, &["html_url"])),
                    &label
                ),
                escape_inline(&truncate(s(&pr, &["title"]).unwrap_or("(untitled)"), 150))
            );
            let body = s(payload, &["review", "body"])
                .map(|b| format!("> {}", escape(&truncate(b, 300))))
                .unwrap_or_default();
            message(facts, headline, vec![body], footer)
        }
        "issues" => {
            let issue = payload.get("issue").cloned().unwrap_or_default();
            let label =
                n(&issue, &["number"]).map_or_else(|| "an issue".to_owned(), |n| format!("#{n}"));
            let headline = format!(
                "{} {} issue {} *{}* in {repo_link}",
                escape(sender),
                escape(action.unwrap_or("updated")),
                maybe_link(s(&issue, &["html_url"]), &label),
                escape_inline(&truncate(
                    s(&issue, &["title"]).unwrap_or("(untitled)"),
                    150
                ))
            );
            message(facts, headline, vec![], footer)
        }
        "issue_comment" => {
            let issue = payload.get("issue").cloned().unwrap_or_default();
            let label =
                n(&issue, &["number"]).map_or_else(|| "an issue".to_owned(), |n| format!("#{n}"));
            let headline = format!(
                "{} commented on {} *{}* in {repo_link}",
                escape(sender),
                maybe_link(
                    s(payload, &["comment", "html_url"]).or(s(&issue, &["html_url"])),
                    &label
                ),
                escape_inline(&truncate(
                    s(&issue, &["title"]).unwrap_or("(untitled)"),
                    150
                ))
            );
            let body = s(payload, &["comment", "body"])
                .map(|b| format!("> {}", escape(&truncate(&b.replace('\n', " "), 300))))
                .unwrap_or_default();
            message(facts, headline, vec![body], footer)
        }
        "release" => {
            let tag = s(payload, &["release", "tag_name"]).unwrap_or("(no tag)");
            let name = s(payload, &["release", "name"]).unwrap_or(tag);
            let headline = format!(
                "{} {} release {} in {repo_link}",
                escape(sender),
                escape(action.unwrap_or("updated")),
                maybe_link(s(payload, &["release", "html_url"]), name)
            );
            message(
                facts,
                headline,
                vec![format!("tag `{}`", escape_inline(tag))],
                footer,
            )
        }
        "deployment" => {
            let env = s(payload, &["deployment", "environment"]).unwrap_or("(unknown environment)");
            let git_ref = s(payload, &["deployment", "ref"]).unwrap_or("(unknown ref)");
            facts.branch = Some(git_ref.to_owned());
            let headline = format!(
                "{} is deploying `{}` of {repo_link} to *{}*",
                escape(s(payload, &["deployment", "creator", "login"]).unwrap_or(sender)),
                escape_inline(git_ref),
                escape_inline(env)
            );
            message(facts, headline, vec![], footer)
        }
        "deployment_status" => {
            let state = s(payload, &["deployment_status", "state"]).unwrap_or("unknown");
            let env = s(payload, &["deployment_status", "environment"])
                .or(s(payload, &["deployment", "environment"]))
                .unwrap_or("(unknown environment)");
            let git_ref = s(payload, &["deployment", "ref"]).unwrap_or("");
            facts.branch = (!git_ref.is_empty()).then(|| git_ref.to_owned());
            let headline = format!(
                "Deployment of {repo_link} `{}` to *{}*: {}",
                escape_inline(git_ref),
                escape_inline(env),
                maybe_link(
                    s(payload, &["deployment_status", "log_url"])
                        .or(s(payload, &["deployment_status", "target_url"])),
                    state
                )
            );
            message(facts, headline, vec![], footer)
        }
        "workflow_run" => {
            let run = payload.get("workflow_run").cloned().unwrap_or_default();
            let branch = s(&run, &["head_branch"]);
            facts.branch = branch.map(str::to_owned);
            let outcome = s(&run, &["conclusion"])
                .or(s(&run, &["status"]))
                .unwrap_or("unknown");
            let headline = format!(
                "Workflow *{}* on {repo_link} `{}`: {}",
                escape_inline(s(&run, &["name"]).unwrap_or("(unnamed)")),
                escape_inline(branch.unwrap_or("?")),
                maybe_link(s(&run, &["html_url"]), outcome)
            );
            message(facts, headline, vec![], footer)
        }
        "check_suite" => {
            let suite = payload.get("check_suite").cloned().unwrap_or_default();
            let branch = s(&suite, &["head_branch"]);
            facts.branch = branch.map(str::to_owned);
            let outcome = s(&suite, &["conclusion"])
                .or(s(&suite, &["status"]))
                .unwrap_or("unknown");
            let headline = format!(
                "Checks ({}) on {repo_link} `{}`: {}",
                escape(s(&suite, &["app", "name"]).unwrap_or("CI")),
                escape_inline(branch.unwrap_or("?")),
                escape(outcome)
            );
            message(facts, headline, vec![], footer)
        }
        _ => generic(
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
    let event = payload.get("event").cloned().unwrap_or_default();
    let kind = s(&event, &["event_type"]).unwrap_or("unknown").to_owned();
    let data = event.get("data").cloned().unwrap_or_default();
    // Most events carry the incident as `data`; notes and responders point at it.
    let incident = if data.get("incident").is_some() {
        data["incident"].clone()
    } else {
        data.clone()
    };
    let service = data
        .get("service")
        .or_else(|| incident.get("service"))
        .cloned()
        .unwrap_or_default();
    let facts = Facts {
        source: "pagerduty".into(),
        kind: kind.clone(),
        known: PAGERDUTY_KNOWN.contains(&kind.as_str()),
        service: s(&service, &["summary"])
            .or(s(&service, &["id"]))
            .map(str::to_owned),
        urgency: s(&data, &["urgency"]).map(str::to_owned),
        priority: s(&data, &["priority", "summary"]).map(str::to_owned),
        ..Facts::default()
    };
    let title = s(&incident, &["title"])
        .or(s(&incident, &["summary"]))
        .unwrap_or("(untitled incident)");
    let label =
        n(&incident, &["number"]).map_or_else(|| "an incident".to_owned(), |n| format!("#{n}"));
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
        maybe_link(s(&incident, &["html_url"]), &label),
        escape_inline(&truncate(title, 150))
    );
    let mut details = Vec::new();
    let mut bits = Vec::new();
    if let Some(svc) = s(&service, &["summary"]) {
        bits.push(maybe_link(s(&service, &["html_url"]), svc));
    }
    if let Some(u) = s(&data, &["urgency"]) {
        bits.push(format!("{} urgency", escape(u)));
    }
    if let Some(p) = s(&data, &["priority", "summary"]) {
        bits.push(escape(p));
    }
    let assignees: Vec<String> = data
        .get("assignees")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| s(x, &["summary"]))
                .map(escape)
                .collect()
        })
        .unwrap_or_default();
    if !assignees.is_empty() {
        bits.push(format!("assigned to {}", assignees.join(", ")));
    }
    if !bits.is_empty() {
        details.push(bits.join(" · "));
    }
    if let Some(note) = s(&data, &["content"]) {
        details.push(format!("> {}", escape(&truncate(note, 300))));
    }
    let by = s(&event, &["agent", "summary"])
        .map(|a| format!(" · by {}", escape(a)))
        .unwrap_or_default();
    let footer = format!("PagerDuty · `{}`{by}", escape_inline(&kind));
    if !facts.known {
        let headline = format!(
            "PagerDuty event `{}` on {} *{}*",
            escape_inline(&kind),
            maybe_link(s(&incident, &["html_url"]), &label),
            escape_inline(title)
        );
        return message(facts, headline, details, footer);
    }
    message(facts, headline, details, footer)
}

const ZENDESK_KNOWN: &[&str] = &["ticket.created", "ticket.status_changed"];

/// `ticket_link` builds the agent link for a ticket id when Zendesk is configured.
pub fn zendesk(payload: &Value, ticket_link: impl Fn(&str) -> Option<String>) -> Formatted {
    let raw_type = s(payload, &["type"]).unwrap_or("unknown");
    let kind = raw_type
        .strip_prefix("zen:event-type:")
        .unwrap_or(raw_type)
        .to_owned();
    let detail = payload.get("detail").cloned().unwrap_or_default();
    let id = s(&detail, &["id"])
        .map(str::to_owned)
        .or_else(|| n(&detail, &["id"]).map(|n| n.to_string()));
    let facts = Facts {
        source: "zendesk".into(),
        kind: kind.clone(),
        known: ZENDESK_KNOWN.contains(&kind.as_str()),
        priority: s(&detail, &["priority"]).map(str::to_ascii_lowercase),
        group: s(&detail, &["group_id"])
            .map(str::to_owned)
            .or_else(|| n(&detail, &["group_id"]).map(|n| n.to_string())),
        ..Facts::default()
    };
    let label = id
        .as_deref()
        .map_or_else(|| "a ticket".to_owned(), |i| format!("#{i}"));
    let url = id.as_deref().and_then(&ticket_link);
    let subject = s(&detail, &["subject"]).unwrap_or("(no subject)");
    let ticket = format!(
        "{} *{}*",
        maybe_link(url.as_deref(), &label),
        escape_inline(&truncate(subject, 150))
    );
    let headline = match kind.as_str() {
        "ticket.created" => format!("🎫 New ticket {ticket}"),
        "ticket.status_changed" => {
            let from = s(payload, &["event", "previous"])
                .unwrap_or("?")
                .to_ascii_lowercase();
            let to = s(payload, &["event", "current"])
                .or(s(&detail, &["status"]))
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
    if let Some(st) = s(&detail, &["status"]) {
        bits.push(escape(&st.to_ascii_lowercase()));
    }
    if let Some(p) = s(&detail, &["priority"]) {
        bits.push(format!("{} priority", escape(&p.to_ascii_lowercase())));
    }
    if let Some(via) = s(&detail, &["via", "channel"]) {
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
