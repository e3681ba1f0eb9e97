//! `GET /jobs/{id}`: a job's page, reached by a signed, expiring link issued to one person (in
//! their private reply, or by the "Log" button). Each view is checked and audited.

use axum::{
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use time::OffsetDateTime;

use super::AppState;
use crate::domain::job::{Job, JobStatus};

#[derive(Debug, Deserialize)]
pub struct Signed {
    /// The user the link was issued to.
    #[serde(default, rename = "for")]
    user: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    sig: Option<String>,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str, refresh: bool) -> Response {
    let refresh = if refresh {
        r#"<meta http-equiv="refresh" content="5">"#
    } else {
        ""
    };
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">{refresh}
<title>{t}</title><style>
body{{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1d1c1d}}
table{{border-collapse:collapse}}td,th{{text-align:left;padding:.2rem 1rem .2rem 0;vertical-align:top}}
pre{{background:#f6f6f6;padding:1rem;overflow:auto;font-size:13px}}.stderr{{color:#b00}}.system{{color:#666}}
.succeeded{{color:#007a5a}}.failed,.interrupted{{color:#b00}}
</style></head><body><h1>{t}</h1>{body}</body></html>"#,
        t = esc(title)
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

pub async fn job_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
) -> Response {
    let services = &state.services;
    let now = OffsetDateTime::now_utc();
    let (Ok(id), Some(user), Some(exp), Some(sig)) = (
        id.parse::<i64>(),
        q.user.as_deref(),
        q.exp,
        q.sig.as_deref(),
    ) else {
        return page(
            StatusCode::FORBIDDEN,
            "Link not valid",
            "<p>This link is incomplete. Run <code>job &lt;id&gt;</code> in chat for a link of your own.</p>",
            false,
        );
    };
    if !services.links.verify(id, user, exp, sig, now) {
        return page(
            StatusCode::FORBIDDEN,
            "Link not valid",
            "<p>This link is not valid or has expired. Ask for a fresh one with <code>job &lt;id&gt;</code> in chat.</p>",
            false,
        );
    }
    let job = match services.store.job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                "No such job",
                "<p>There is no such job.</p>",
                false,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "job page: store error");
            return unavailable();
        }
    };
    // The link's user must still be allowed to see this job (groups as read at start).
    if services.runbooks.may_see_job(user, &job).is_err() {
        return page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "<p>The person this link was issued to may not see this job.</p>",
            false,
        );
    }
    let view = crate::domain::audit::AuditEntry::new(
        &job.correlation_id,
        user,
        "job.page",
        crate::domain::audit::Outcome::Succeeded,
    )
    .channel(&job.channel)
    .command(&format!("{} #{}", job.runbook, job.id))
    .detail("viewed the job page by signed link");
    // Waited for: the log is not shown unless the view is on the trail.
    if let Err(e) = services.audit.record(vec![view]).await {
        tracing::error!(error = %e, "job page: could not audit the view");
        return unavailable();
    }
    // The page shows the last lines; a huge log would make it unusable anyway.
    const SHOWN: i64 = 5000;
    let logs = services
        .store
        .job_logs(id, Some(SHOWN + 1))
        .await
        .unwrap_or_default();
    let cut = logs.len() as i64 > SHOWN;
    let logs = if cut { logs[1..].to_vec() } else { logs };
    let approval = match job.approval_id {
        Some(a) => services.store.approval_request(a).await.ok().flatten(),
        None => None,
    };
    let mut body = String::new();
    body.push_str(&format!(
        r#"<p class="{s}"><strong>{s}</strong></p><table>"#,
        s = job.status.as_str()
    ));
    let row = |k: &str, v: String| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
    body.push_str(&row("runbook", esc(&job.runbook)));
    body.push_str(&row("target", esc(&job.target)));
    for (k, v) in &job.params {
        body.push_str(&row(
            &format!("param {k}"),
            format!("<code>{}</code>", esc(v)),
        ));
    }
    body.push_str(&row("requested by", esc(&job.requested_by)));
    body.push_str(&row("queued", esc(&crate::chat::when(job.created_at))));
    if let Some(s) = job.started_at {
        body.push_str(&row("started", esc(&crate::chat::when(s))));
    }
    if let Some(f) = job.finished_at {
        body.push_str(&row("finished", esc(&crate::chat::when(f))));
    }
    body.push_str(&row("attempts", job.attempts.to_string()));
    if let Some(code) = job.exit_code {
        body.push_str(&row("exit code", code.to_string()));
    }
    if let Some(e) = &job.error {
        body.push_str(&row("error", esc(e)));
    }
    if let Some(o) = &job.overrides {
        body.push_str(&row(
            "break-glass",
            format!("<strong>overrode</strong> {}", esc(o)),
        ));
    }
    // The locks on its target or environment now: what would stop the next run like it.
    let env = services
        .catalogue
        .runbook(&job.runbook)
        .and_then(|r| r.deployed(&job.params))
        .map(|d| d.env);
    let locks = services
        .store
        .locks(time::OffsetDateTime::now_utc())
        .await
        .unwrap_or_default();
    for lock in locks
        .iter()
        .filter(|l| l.covers(&job.target, env.as_deref()))
    {
        body.push_str(&row(
            "locked now",
            format!(
                "{} by {}{} since {}",
                esc(lock.what()),
                esc(&lock.holder),
                lock.reason_as(|r| esc(r).to_string()),
                esc(&crate::chat::when(lock.created_at))
            ),
        ));
    }
    if let Some(r) = &approval {
        let voters = r
            .votes
            .iter()
            .map(|v| {
                format!(
                    "{} ({}{}, {}){}",
                    esc(&v.voter),
                    v.decision.as_str(),
                    if v.overrider { ", override" } else { "" },
                    esc(&crate::chat::when(v.at)),
                    v.comment
                        .as_deref()
                        .map(|c| format!(": “{}”", esc(c)))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        body.push_str(&row(
            "approval",
            format!(
                "request #{} · {} · needs {} from {} · {}",
                r.id,
                r.status.as_str(),
                r.required,
                esc(&r.approver_group),
                voters
            ),
        ));
    }
    body.push_str("</table><h2>Log</h2>");
    if cut {
        body.push_str(&format!("<p>Showing the last {SHOWN} lines.</p>"));
    }
    body.push_str("<pre>");
    if logs.is_empty() {
        body.push_str("(no output yet)");
    }
    for l in &logs {
        body.push_str(&format!(
            r#"<span class="{}">{}</span>"#,
            l.stream.as_str(),
            esc(&l.line)
        ));
        body.push('\n');
    }
    body.push_str("</pre>");
    let live = matches!(job.status, JobStatus::Queued | JobStatus::Running);
    page(StatusCode::OK, &title(&job), &body, live)
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "<p>Try again in a moment.</p>",
        false,
    )
}

fn title(job: &Job) -> String {
    format!("{} #{}", job.runbook, job.id)
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default, rename = "for")]
    user: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    sig: Option<String>,
    /// Show entries older than this id (the next page).
    #[serde(default)]
    before: Option<i64>,
    /// Show every step of one request.
    #[serde(default)]
    correlation_id: Option<String>,
}

/// Entries per page of the audit trail.
const AUDIT_PAGE: i64 = 200;

/// `GET /audit`: the audit trail, reached by the signed link in an `audit` reply. The link is
/// bound to the user it was issued to and works only while that user may still run `audit` (as
/// the groups read at start say). Each view is itself audited before anything is shown.
pub async fn audit_page(State(state): State<AppState>, Query(q): Query<AuditQuery>) -> Response {
    let services = &state.services;
    let now = OffsetDateTime::now_utc();
    let (Some(user), Some(exp), Some(sig)) = (q.user.as_deref(), q.exp, q.sig.as_deref()) else {
        return page(
            StatusCode::FORBIDDEN,
            "Link not valid",
            "<p>This link is incomplete. Run <code>audit</code> in chat for a link.</p>",
            false,
        );
    };
    let still_allowed = services
        .commands
        .allowed(&services.catalogue.access, "audit", user)
        .is_ok();
    if !services.links.verify_audit(user, exp, sig, now) || !still_allowed {
        return page(
            StatusCode::FORBIDDEN,
            "Link not valid",
            "<p>This link is not valid or has expired. Run <code>audit</code> in chat for a fresh one.</p>",
            false,
        );
    }
    let filter = match q.correlation_id.as_deref() {
        None => None,
        Some(c) if !c.is_empty() && c.len() <= 64 => Some(c),
        Some(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Not a request id",
                "<p><code>correlation_id</code> must be a request id (1 to 64 characters).</p>",
                false,
            );
        }
    };
    let (records, shown) = match (filter, q.before) {
        (Some(c), _) => (services.store.audit_for(c).await, format!("request {c}")),
        (None, Some(b)) => (
            services.store.audit_before(b, AUDIT_PAGE).await,
            format!("before entry {b}"),
        ),
        (None, None) => (
            services.store.recent_audit(AUDIT_PAGE).await,
            "latest".to_owned(),
        ),
    };
    let records = match records {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "audit page: store error");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "<p>Try again in a moment.</p>",
                false,
            );
        }
    };
    let view = crate::domain::audit::AuditEntry::new(
        &crate::dispatch::new_correlation_id(),
        user,
        "audit.page",
        crate::domain::audit::Outcome::Succeeded,
    )
    .detail(format!("viewed the audit trail ({shown}) by signed link"));
    // Waited for, like any other step: the trail is not shown unless the view is on it.
    if let Err(e) = services.audit.record(vec![view]).await {
        tracing::error!(error = %e, "audit page: could not audit the view");
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "<p>Try again in a moment.</p>",
            false,
        );
    }

    // Links inside the page carry the same signed parameters.
    let href = |extra: &[(&str, &str)]| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("for", user)
            .append_pair("exp", &exp.to_string())
            .append_pair("sig", sig)
            .extend_pairs(extra);
        esc(&format!("?{}", query.finish()))
    };
    let expires = OffsetDateTime::from_unix_timestamp(exp)
        .map(crate::chat::when)
        .unwrap_or_default();
    let mut body = String::new();
    if let Some(c) = filter {
        body.push_str(&format!(
            r#"<p>Every step of request <code>{}</code>, oldest first. <a href="{}">The whole trail</a></p>"#,
            esc(c),
            href(&[])
        ));
    } else {
        body.push_str("<p>Newest first. Times are UTC.</p>");
    }
    body.push_str(&format!(
        "<p class=\"system\">Link for {} · expires {}</p>",
        esc(user),
        esc(&expires)
    ));
    if records.is_empty() {
        body.push_str("<p>No entries.</p>");
    } else {
        body.push_str(
            "<table><tr><th>#</th><th>when</th><th>actor</th><th>channel</th><th>action</th>\
             <th>command</th><th>outcome</th><th>ms</th><th>detail</th><th>request</th></tr>",
        );
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        for r in &records {
            let e = &r.entry;
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
                 <td class=\"{o}\">{o}</td><td>{}</td><td>{}</td><td><a href=\"{}\"><code>{}</code></a></td></tr>",
                r.id,
                esc(&e.at.format(&format).unwrap_or_default()),
                esc(&e.actor),
                esc(e.channel.as_deref().unwrap_or("")),
                esc(&e.action),
                esc(e.command.as_deref().unwrap_or("")),
                e.duration_ms.map(|ms| ms.to_string()).unwrap_or_default(),
                esc(e.detail.as_deref().unwrap_or("")),
                href(&[("correlation_id", &e.correlation_id)]),
                esc(&e.correlation_id),
                o = e.outcome.as_str(),
            ));
        }
        body.push_str("</table>");
    }
    if filter.is_none()
        && records.len() as i64 == AUDIT_PAGE
        && let Some(last) = records.last()
    {
        body.push_str(&format!(
            r#"<p><a href="{}">Older entries</a></p>"#,
            href(&[("before", &last.id.to_string())])
        ));
    }
    page(StatusCode::OK, "Audit trail", &body, false)
}
