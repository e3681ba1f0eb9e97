//! What is Postgres's own in the store: row locks, arrays, native timestamps, and the batch
//! inserts that bind one array per column. Every transaction is in `tx.rs`.

use sqlx::{
    Decode, Encode, PgConnection, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef},
};
use time::OffsetDateTime;

use super::Result;
use super::db::{List, Sql, Ts};
use crate::domain::{audit::AuditEntry, job::LogLine};

pub(super) const SQL: Sql = Sql {
    for_update: " FOR UPDATE",
    skip_locked: " FOR UPDATE SKIP LOCKED",
    list_1: "SELECT value FROM UNNEST($1) AS list (value)",
};

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <OffsetDateTime as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Ts(<OffsetDateTime as Decode<Postgres>>::decode(value)?))
    }
}

impl<T: PgHasArrayType> Type<Postgres> for List<'_, T> {
    fn type_info() -> PgTypeInfo {
        T::array_type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        T::array_compatible(ty)
    }
}

impl<'q, 'a, T> Encode<'q, Postgres> for List<'a, T>
where
    &'a [T]: Encode<'q, Postgres>,
{
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

pub(super) async fn insert_audit(conn: &mut PgConnection, entries: &[&AuditEntry]) -> Result<()> {
    // One statement for the whole batch: arrays in, UNNEST turns them into rows, in batch order
    // (WITH ORDINALITY + ORDER BY, so ids follow the order the steps happened in).
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
         SELECT at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                       $6::text[], $7::text[], $8::text[], $9::bigint[])
                WITH ORDINALITY
                AS batch (at, correlation_id, actor, channel, action, command, outcome, detail,
                          duration_ms, n)
          ORDER BY n",
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn append_job_logs(
    conn: &mut PgConnection,
    job_id: i64,
    lines: &[LogLine],
) -> Result<()> {
    let attempt: Vec<i32> = lines.iter().map(|l| l.attempt).collect();
    let seq: Vec<i32> = lines.iter().map(|l| l.seq).collect();
    let at: Vec<OffsetDateTime> = lines.iter().map(|l| l.at).collect();
    let stream: Vec<&str> = lines.iter().map(|l| l.stream.as_str()).collect();
    let line: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    sqlx::query(
        "INSERT INTO job_logs (job_id, attempt, seq, at, stream, line)
         SELECT $1, * FROM UNNEST($2::int[], $3::int[], $4::timestamptz[], $5::text[], $6::text[])
         ON CONFLICT (job_id, attempt, seq) DO NOTHING",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(seq)
    .bind(at)
    .bind(stream)
    .bind(line)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
