//! `GET /jobs/{id}`: a job's page, reached by the signed, expiring link chat messages carry.

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
    let (Ok(id), Some(exp), Some(sig)) = (id.parse::<i64>(), q.exp, q.sig.as_deref()) else {
        return page(
            StatusCode::FORBIDDEN,
            "Link not valid",
            "<p>This link is incomplete. Use the link from the chat message.</p>",
            false,
        );
    };
    if !services.links.verify(id, exp, sig, now) {
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
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "<p>Try again in a moment.</p>",
                false,
            );
        }
    };
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
    if let Some(r) = &approval {
        let voters = r
            .votes
            .iter()
            .map(|v| {
                format!(
                    "{} ({}, {})",
                    esc(&v.voter),
                    v.decision.as_str(),
                    esc(&crate::chat::when(v.at))
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

fn title(job: &Job) -> String {
    format!("{} #{}", job.runbook, job.id)
}
