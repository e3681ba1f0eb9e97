//! The SQLite side of the store. Writes that read first begin with `BEGIN IMMEDIATE` so two
//! writers never both read and then collide on the upgrade to a write lock.

use sqlx::{Row, SqlitePool, sqlite::SqliteRow};
use time::OffsetDateTime;

use super::{Result, outcome};
use crate::audit::{AuditEntry, AuditRecord};

pub(super) async fn insert_audit(pool: &SqlitePool, entries: &[&AuditEntry]) -> Result<()> {
    // In-process inserts are cheap; one transaction makes the batch one commit.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for e in entries {
        sqlx::query(
            "INSERT INTO audit_log
                 (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(&e.correlation_id)
        .bind(&e.actor)
        .bind(&e.channel)
        .bind(&e.action)
        .bind(&e.command)
        .bind(e.outcome.as_str())
        .bind(&e.detail)
        .bind(e.duration_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
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
