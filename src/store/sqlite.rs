//! The SQLite side of the store. Writes that read first begin with `BEGIN IMMEDIATE` so two
//! writers never both read and then collide on the upgrade to a write lock. Timestamps are
//! stored as RFC 3339 text in UTC.

use sqlx::{Row, SqlitePool, sqlite::SqliteRow};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Result, outcome};
use crate::audit::{AuditEntry, AuditRecord};

pub(super) async fn insert_audit(pool: &SqlitePool, entries: &[&AuditEntry]) -> Result<()> {
    // The whole batch as one JSON array, unpacked by json_each: one statement, one commit, and
    // one round trip to sqlx's connection thread however many rows there are.
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!([
                e.at.format(&Rfc3339).unwrap_or_default(),
                e.correlation_id,
                e.actor,
                e.channel,
                e.action,
                e.command,
                e.outcome.as_str(),
                e.detail,
                e.duration_ms,
            ])
        })
        .collect();
    sqlx::query(
        "INSERT INTO audit_log
             (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                value ->> 5, value ->> 6, value ->> 7, value ->> 8
           FROM json_each(?) ORDER BY key",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(pool)
    .await?;
    Ok(())
}

fn audit_row(row: SqliteRow) -> Result<AuditRecord> {
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

pub(super) async fn recent_audit(pool: &SqlitePool, limit: i64) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log ORDER BY id DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn audit_for(pool: &SqlitePool, correlation_id: &str) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log WHERE correlation_id = ? ORDER BY id",
    )
    .bind(correlation_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn user_prefs(
    pool: &SqlitePool,
    slack_user_id: &str,
) -> Result<Option<super::UserPrefs>> {
    let row = sqlx::query(
        "SELECT pagerduty_email, pagerduty_user_id FROM user_prefs WHERE slack_user_id = ?1",
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
    pool: &SqlitePool,
    slack_user_id: &str,
    email: &str,
    pagerduty_user_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_prefs (slack_user_id, pagerduty_email, pagerduty_user_id, updated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (slack_user_id) DO UPDATE
            SET pagerduty_email = excluded.pagerduty_email,
                pagerduty_user_id = excluded.pagerduty_user_id,
                updated_at = excluded.updated_at",
    )
    .bind(slack_user_id)
    .bind(email)
    .bind(pagerduty_user_id)
    .bind(now.format(&Rfc3339).unwrap_or_default())
    .execute(pool)
    .await?;
    Ok(())
}
