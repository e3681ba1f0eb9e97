//! What is SQLite's own in the store: timestamps as fixed-width RFC 3339 text in UTC (so text
//! order is time order), lists as JSON taken apart by `json_each`, and the batch inserts that
//! bind one JSON document. SQLite has no row locks: writing transactions begin with
//! `BEGIN IMMEDIATE` (see `db.rs`). Every transaction is in `tx.rs`.

use serde::Serialize;
use sqlx::{
    Decode, Encode, Sqlite, SqliteConnection, Type,
    encode::IsNull,
    error::BoxDynError,
    sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::db::{List, Sql, Ts};
use super::{Result, StoreError};
use crate::domain::{audit::AuditEntry, job::LogLine};

pub(super) const SQL: Sql = Sql {
    for_update: "",
    skip_locked: "",
    list_1: "SELECT value FROM json_each($1)",
};

/// Fixed-width RFC 3339 in UTC (`2026-11-24T04:05:06.123456Z`), so text order is time order.
fn text(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(text(self.0), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let raw = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Ts(
            OffsetDateTime::parse(raw, &Rfc3339).map_err(|e| format!("timestamp `{raw}`: {e}"))?
        ))
    }
}

impl<T> Type<Sqlite> for List<'_, T> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<T: Serialize> Encode<'_, Sqlite> for List<'_, T> {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(serde_json::to_string(self.0)?, buf)
    }
}

fn json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Rejected {
        detail: e.to_string(),
        duplicate: false,
    })
}

pub(super) async fn insert_audit(
    conn: &mut SqliteConnection,
    entries: &[&AuditEntry],
) -> Result<()> {
    // The whole batch as one JSON array, unpacked by jsonb_each: one statement, one commit, and
    // one round trip to sqlx's connection thread however many rows there are. jsonb_each (not
    // json_each) hands each row over in SQLite's binary form, so the nine lookups per row do
    // not turn it back into text and parse it nine times.
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                text(e.at),
                &e.correlation_id,
                &e.actor,
                &e.channel,
                &e.action,
                &e.command,
                e.outcome.as_str(),
                &e.detail,
                e.duration_ms,
            )
        })
        .collect();
    sqlx::query(
        "INSERT INTO audit_log
             (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                value ->> 5, value ->> 6, value ->> 7, value ->> 8
           FROM jsonb_each(?) ORDER BY key",
    )
    .bind(json(&rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn append_job_logs(
    conn: &mut SqliteConnection,
    job_id: i64,
    lines: &[LogLine],
) -> Result<()> {
    let rows: Vec<_> = lines
        .iter()
        .map(|l| (l.attempt, l.seq, text(l.at), l.stream.as_str(), &l.line))
        .collect();
    sqlx::query(
        "INSERT INTO job_logs (job_id, attempt, seq, at, stream, line)
         SELECT ?, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?) WHERE true ORDER BY key
         ON CONFLICT (job_id, attempt, seq) DO NOTHING",
    )
    .bind(job_id)
    .bind(json(&rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
