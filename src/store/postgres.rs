//! The Postgres side of the store.

use sqlx::{PgPool, Row, postgres::PgRow};
use time::OffsetDateTime;

use super::{Result, outcome};
use crate::audit::{AuditEntry, AuditRecord};

pub(super) async fn insert_audit(pool: &PgPool, entries: &[&AuditEntry]) -> Result<()> {
    // One statement for the whole batch: arrays in, UNNEST turns them into rows.
    let mut at = Vec::with_capacity(entries.len());
    let mut correlation = Vec::with_capacity(entries.len());
    let mut actor = Vec::with_capacity(entries.len());
    let mut channel = Vec::with_capacity(entries.len());
    let mut action = Vec::with_capacity(entries.len());
    let mut command = Vec::with_capacity(entries.len());
    let mut outcome = Vec::with_capacity(entries.len());
    let mut detail = Vec::with_capacity(entries.len());
    let mut duration = Vec::with_capacity(entries.len());
    for e in entries {
        at.push(e.at);
        correlation.push(e.correlation_id.as_str());
        actor.push(e.actor.as_str());
        channel.push(e.channel.as_deref());
        action.push(e.action.as_str());
        command.push(e.command.as_deref());
        outcome.push(e.outcome.as_str());
        detail.push(e.detail.as_deref());
        duration.push(e.duration_ms);
    }
    sqlx::query(
        "INSERT INTO audit_log
             (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[], $9::bigint[])",
    )
    .bind(at)
    .bind(correlation)
    .bind(actor)
    .bind(channel)
    .bind(action)
    .bind(command)
    .bind(outcome)
    .bind(detail)
    .bind(duration)
    .execute(pool)
    .await?;
    Ok(())
}

fn audit_row(row: PgRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: row.try_get::<OffsetDateTime, _>("at")?,
            correlation_id: row.try_get("correlation_id")?,
            actor: row.try_get("actor")?,
            channel: row.try_get("channel")?,
            action: row.try_get("action")?,
            command: row.try_get("command")?,
            outcome: outcome(row.try_get("outcome")?)?,
            detail: row.try_get("detail")?,
            duration_ms: row.try_get("duration_ms")?,
        },
    })
}

pub(super) async fn recent_audit(pool: &PgPool, limit: i64) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn audit_for(pool: &PgPool, correlation_id: &str) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log WHERE correlation_id = $1 ORDER BY id",
    )
    .bind(correlation_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn user_prefs(
    pool: &PgPool,
    slack_user_id: &str,
) -> Result<Option<super::UserPrefs>> {
    let row = sqlx::query(
        "SELECT pagerduty_email, pagerduty_user_id FROM user_prefs WHERE slack_user_id = $1",
    )
    .bind(slack_user_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(super::UserPrefs {
            pagerduty_email: r.try_get("pagerduty_email")?,
            pagerduty_user_id: r.try_get("pagerduty_user_id")?,
        })
    })
    .transpose()
}

pub(super) async fn set_pagerduty_identity(
    pool: &PgPool,
    slack_user_id: &str,
    email: &str,
    pagerduty_user_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_prefs (slack_user_id, pagerduty_email, pagerduty_user_id, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (slack_user_id) DO UPDATE
            SET pagerduty_email = excluded.pagerduty_email,
                pagerduty_user_id = excluded.pagerduty_user_id,
                updated_at = excluded.updated_at",
    )
    .bind(slack_user_id)
    .bind(email)
    .bind(pagerduty_user_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}
