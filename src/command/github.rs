//! `pulls …` and `org-pulls …`: open pull requests from GitHub.

use time::OffsetDateTime;

use super::{ArgType, CommandContext, CommandError, Declaration, HandlerResult, command, handler};
use crate::{
    chat::{self, escape, link},
    clients::{
        github::{self, GitHub, Pull},
        vendor::VendorError,
    },
};

pub fn declarations() -> Vec<Declaration> {
    vec![
        command(
            "pulls <repo> [with <filter...>]",
            "open pull requests of owner/repo (or a repo of the default owner), titles matching a regular expression",
            handler(pulls),
        )
        .arg("filter", ArgType::Regex)
        .family("github"),
        command("org-pulls [org]", "open pull requests across an organisation", handler(org_pulls)).family("github"),
    ]
}

fn client(ctx: &CommandContext) -> Result<&GitHub, CommandError> {
    ctx.services
        .vendors
        .github()
        .ok_or_else(|| VendorError::not_configured(github::NAME, "GITHUB_TOKEN").into())
}

/// GitHub names: letters, digits, `-`, `_`, `.`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn pull_line(p: &Pull, repo: Option<&str>, now: OffsetDateTime) -> String {
    let label = match repo {
        Some(r) => format!("{r}#{}", p.number),
        None => format!("#{}", p.number),
    };
    let mut parts = vec![format!(
        "{} *{}*",
        link(&p.html_url, &label),
        chat::escape_inline(&chat::truncate(&p.title, 120))
    )];
    if let Some(user) = &p.user {
        parts.push(format!("by {}", escape(&user.login)));
    }
    if let Some(created) = p.created_at {
        parts.push(format!("{} old", chat::age(created, now)));
    }
    if p.draft == Some(true) {
        parts.push("draft".to_owned());
    }
    parts.join(" · ")
}

async fn pulls(ctx: CommandContext) -> HandlerResult {
    let gh = client(&ctx)?;
    let raw = ctx.args.text("repo").unwrap_or_default();
    let (owner, repo) = match raw.split_once('/') {
        Some((o, r)) => (o.to_owned(), r.to_owned()),
        None => match &ctx.services.config.github.default_owner {
            Some(o) => (o.clone(), raw.to_owned()),
            None => {
                return Err(CommandError::User(format!(
                    "Name the owner too: `{} pulls owner/{}` (or set `[github] default_owner`).",
                    ctx.invocation.slash,
                    escape(raw)
                )));
            }
        },
    };
    if !valid_name(&owner) || !valid_name(&repo) {
        return Err(CommandError::User(format!(
            "`{}` is not a GitHub repository name.",
            escape(raw)
        )));
    }
    let list = gh.pulls(&owner, &repo).await?;
    let filter = ctx.args.regex("filter");
    let now = OffsetDateTime::now_utc();
    let matching: Vec<&Pull> = list
        .items
        .iter()
        .filter(|p| filter.is_none_or(|re| re.is_match(&p.title)))
        .collect();
    let lines: Vec<String> = matching.iter().map(|p| pull_line(p, None, now)).collect();
    let full = format!("{owner}/{repo}");
    let (title, empty) = match filter {
        Some(re) => (
            format!(
                "{} open pull request{} in {full} matching /{}/",
                lines.len(),
                plural(lines.len()),
                re.as_str()
            ),
            // (A plain-text title: list_message escapes it.)
            format!(
                "No open pull requests in {} match `{}`.",
                escape(&full),
                escape(re.as_str())
            ),
        ),
        None => (
            format!(
                "{} open pull request{} in {full}",
                lines.len(),
                plural(lines.len())
            ),
            format!("No open pull requests in {}.", escape(&full)),
        ),
    };
    Ok(chat::list_message(&title, &lines, list.truncated, &empty))
}

async fn org_pulls(ctx: CommandContext) -> HandlerResult {
    let gh = client(&ctx)?;
    let org = match ctx
        .args
        .text("org")
        .map(str::to_owned)
        .or_else(|| ctx.services.config.github.default_org.clone())
    {
        Some(org) => org,
        None => {
            return Err(CommandError::User(format!(
                "Name the organisation: `{} org-pulls <org>` (or set `[github] default_org`).",
                ctx.invocation.slash
            )));
        }
    };
    if !valid_name(&org) {
        return Err(CommandError::User(format!(
            "`{}` is not a GitHub organisation name.",
            escape(&org)
        )));
    }
    let list = gh.org_pulls(&org).await?;
    let now = OffsetDateTime::now_utc();
    let lines: Vec<String> = list
        .items
        .iter()
        .map(|p| pull_line(p, p.repository().as_deref(), now))
        .collect();
    Ok(chat::list_message(
        &format!(
            "{} open pull request{} in {org}",
            lines.len(),
            plural(lines.len())
        ),
        &lines,
        list.truncated,
        &format!("No open pull requests in {}.", escape(&org)),
    ))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
