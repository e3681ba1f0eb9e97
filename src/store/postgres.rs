//! What is Postgres's own in the store: row locks, arrays, native timestamps, and the batch
//! inserts that bind one array per column. Every transaction is in `tx.rs`.

use sqlx::{
    Decode, Encode, PgConnection, Postgres, Row as _, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgArguments, PgHasArrayType, PgTypeInfo, PgValueRef},
    query::Query,
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

/// A batch of audit entries as one array per column, for UNNEST.
struct Columns<'a> {
    at: Vec<OffsetDateTime>,
    correlation: Vec<&'a str>,
    actor: Vec<&'a str>,
    channel: Vec<Option<&'a str>>,
    action: Vec<&'a str>,
    command: Vec<Option<&'a str>>,
    outcome: Vec<&'static str>,
    detail: Vec<Option<&'a str>>,
    duration: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            at: Vec::with_capacity(n),
            correlation: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            channel: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            command: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            detail: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: &'a AuditEntry) {
        self.at.push(e.at);
        self.correlation.push(e.correlation_id.as_str());
        self.actor.push(e.actor.as_str());
        self.channel.push(e.channel.as_deref());
        self.action.push(e.action.as_str());
        self.command.push(e.command.as_deref());
        self.outcome.push(e.outcome.as_str());
        self.detail.push(e.detail.as_deref());
        self.duration.push(e.duration_ms);
    }

    /// Bound as the next nine parameters, in the order of `audit_log`'s columns.
    fn bind<'q>(self, q: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments>
    where
        'a: 'q,
    {
        q.bind(self.at)
            .bind(self.correlation)
            .bind(self.actor)
            .bind(self.channel)
            .bind(self.action)
            .bind(self.command)
            .bind(self.outcome)
            .bind(self.detail)
            .bind(self.duration)
    }
}

pub(super) async fn insert_audit(conn: &mut PgConnection, entries: &[&AuditEntry]) -> Result<()> {
    // One statement for the whole batch: arrays in, UNNEST turns them into rows, in batch order
    // (WITH ORDINALITY + ORDER BY, so ids follow the order the steps happened in).
    let mut cols = Columns::with_capacity(entries.len());
    for e in entries {
        cols.push(e);
    }
    let q = sqlx::query(
        "INSERT INTO audit_log
             (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
         SELECT at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                       $6::text[], $7::text[], $8::text[], $9::bigint[])
                WITH ORDINALITY
                AS batch (at, correlation_id, actor, channel, action, command, outcome, detail,
                          duration_ms, n)
          ORDER BY n",
    );
    cols.bind(q).execute(&mut *conn).await?;
    Ok(())
}

/// Claims and audit rows of a batch in one statement (see [`super::Store::insert_audit_claiming`]):
/// the claims are inserted in one CTE, and each request's rows or its replay rows in another,
/// picked by whether its key came back from the first. Returns the keys that were claimed.
///
/// Data-modifying CTEs all run, in one snapshot, as one statement; on its own a statement is
/// a transaction. So this is as atomic as the four statements of a transaction it replaces
/// (BEGIN, the claims, the rows, COMMIT), at one round trip: the writer's batches were paced by
/// round trips. A concurrent transaction inserting the same key makes this one wait for it and
/// then find the key taken, as before.
pub(super) async fn insert_audit_claiming(
    conn: &mut PgConnection,
    batch: &[super::Claiming<'_>],
    now: OffsetDateTime,
) -> Result<Vec<String>> {
    let keys: Vec<&str> = batch.iter().filter_map(|c| c.key).collect();
    let rows: usize = batch.iter().map(|c| c.rows.len() + c.replayed.len()).sum();
    let mut cols = Columns::with_capacity(rows);
    let mut claim = Vec::with_capacity(rows);
    let mut again = Vec::with_capacity(rows);
    let mut replay = Vec::with_capacity(rows);
    let mut seen = std::collections::HashSet::new();
    for c in batch {
        // A key seen earlier in the batch is never this request's: the first one's, if anyone's.
        let repeated = c.key.is_some_and(|k| !seen.insert(k));
        for (entries, is_replay) in [(c.rows, false), (c.replayed, true)] {
            for e in entries {
                cols.push(e);
                claim.push(c.key);
                again.push(repeated);
                replay.push(is_replay);
            }
        }
    }
    let q = sqlx::query(
        "WITH claimed AS (
             INSERT INTO request_claims (key, seen_at)
             SELECT DISTINCT key, $1 FROM UNNEST($2::text[]) AS keys (key)
             ON CONFLICT (key) DO NOTHING
             RETURNING key
         ), stored AS (
             INSERT INTO audit_log
                 (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
             SELECT at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
               FROM UNNEST($3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[],
                           $8::text[], $9::text[], $10::text[], $11::bigint[],
                           $12::text[], $13::bool[], $14::bool[])
                    WITH ORDINALITY
                    AS batch (at, correlation_id, actor, channel, action, command, outcome, detail,
                              duration_ms, claim, again, replay, n)
              WHERE replay = NOT (claim IS NULL
                                  OR (NOT again AND claim IN (SELECT key FROM claimed)))
              ORDER BY n
         )
         SELECT key FROM claimed",
    )
    .bind(now)
    .bind(&keys);
    let rows = cols
        .bind(q)
        .bind(claim)
        .bind(again)
        .bind(replay)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?)
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
