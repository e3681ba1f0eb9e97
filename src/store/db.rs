//! One connection type over both databases, so that each transaction in [`super::tx`] is
//! written once. A statement is built from SQL both databases accept (`$1` placeholders work in
//! SQLite too), or from the [`Sql`] of the connection's own database where they differ. What is
//! bound, and what is read back, must be a type both drivers carry: a value one of them cannot
//! store does not compile.

use sqlx::{
    Decode, Encode, FromRow, PgConnection, PgPool, Postgres, Row, Sqlite, SqliteConnection,
    SqlitePool, Transaction, Type,
    pool::PoolConnection,
    postgres::{PgArguments, PgRow},
    query::Query,
    sqlite::{SqliteArguments, SqliteRow},
};
use time::OffsetDateTime;

use super::{Result, postgres, sqlite};
use crate::domain::audit::AuditEntry;
use crate::domain::job::LogLine;

/// A value that can be bound in either database.
pub(super) trait Param<'t>:
    Encode<'t, Postgres> + Type<Postgres> + Encode<'t, Sqlite> + Type<Sqlite>
{
}
impl<'t, T> Param<'t> for T where
    T: Encode<'t, Postgres> + Type<Postgres> + Encode<'t, Sqlite> + Type<Sqlite>
{
}

/// A column value that can be read from either database.
pub(super) trait Scalar:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}
impl<T> Scalar for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// A row that can be read from either database (`#[derive(sqlx::FromRow)]` makes one).
pub(super) trait Record:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>
{
}
impl<T> Record for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> {}

/// A point in time as either database stores it: `timestamptz` in Postgres, fixed-width
/// RFC 3339 text in SQLite (see `sqlite.rs`), so that text order is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ts(pub OffsetDateTime);

/// A list bound as one parameter: an array in Postgres, a JSON array in SQLite. The SQL that
/// takes it apart differs (`UNNEST` vs `json_each`), so it lives in [`Sql`].
#[derive(Debug, Clone, Copy)]
pub(super) struct List<'a, T>(pub &'a [T]);

/// The pieces of SQL that differ between the databases: how a statement locks the rows it
/// goes on to change (`FOR UPDATE [SKIP LOCKED]` in Postgres; nothing in SQLite, whose writing
/// transactions begin with `BEGIN IMMEDIATE`, so nobody else writes in between), and how a
/// [`List`] bound as `$1` becomes rows.
pub(super) struct Sql {
    /// Appended to a `SELECT` of rows this transaction will change.
    pub for_update: &'static str,
    /// The same, passing over rows another transaction holds (a second worker takes others).
    pub skip_locked: &'static str,
    /// A `SELECT` of one column, `value`: the elements of the list bound as `$1`.
    pub list_1: &'static str,
}

/// A connection (pooled, or inside a transaction) to one of the two databases.
pub(super) enum Conn<'c> {
    Postgres(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

/// A statement being bound, on the connection it will run on.
pub(super) enum Statement<'c> {
    Postgres(&'c mut PgConnection, Query<'static, Postgres, PgArguments>),
    Sqlite(
        &'c mut SqliteConnection,
        Query<'static, Sqlite, SqliteArguments>,
    ),
}

impl Conn<'_> {
    pub fn sql(&self) -> &'static Sql {
        match self {
            Conn::Postgres(_) => &postgres::SQL,
            Conn::Sqlite(_) => &sqlite::SQL,
        }
    }

    pub fn query(&mut self, sql: &'static str) -> Statement<'_> {
        match self {
            Conn::Postgres(c) => Statement::Postgres(c, sqlx::query(sql)),
            Conn::Sqlite(c) => Statement::Sqlite(c, sqlx::query(sql)),
        }
    }

    /// A statement put together from constants of this module (never from a caller's text).
    pub fn query_built(&mut self, sql: String) -> Statement<'_> {
        match self {
            Conn::Postgres(c) => Statement::Postgres(c, sqlx::query(sqlx::AssertSqlSafe(sql))),
            Conn::Sqlite(c) => Statement::Sqlite(c, sqlx::query(sqlx::AssertSqlSafe(sql))),
        }
    }

    /// Append audit entries in one statement, in order.
    pub async fn insert_audit(&mut self, entries: &[&AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        match self {
            Conn::Postgres(c) => postgres::insert_audit(c, entries).await,
            Conn::Sqlite(c) => sqlite::insert_audit(c, entries).await,
        }
    }

    pub async fn insert_audit_owned(&mut self, entries: &[AuditEntry]) -> Result<()> {
        let refs: Vec<&AuditEntry> = entries.iter().collect();
        self.insert_audit(&refs).await
    }

    /// Append a job's log lines in one statement; a line already stored (same seq) is kept.
    pub async fn append_job_logs(&mut self, job_id: i64, lines: &[LogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        match self {
            Conn::Postgres(c) => postgres::append_job_logs(c, job_id, lines).await,
            Conn::Sqlite(c) => sqlite::append_job_logs(c, job_id, lines).await,
        }
    }
}

impl Statement<'_> {
    pub fn bind<'t, T: Param<'t>>(self, value: T) -> Self {
        match self {
            Statement::Postgres(c, q) => Statement::Postgres(c, q.bind(value)),
            Statement::Sqlite(c, q) => Statement::Sqlite(c, q.bind(value)),
        }
    }

    /// Run it; returns how many rows it changed.
    pub async fn execute(self) -> Result<u64> {
        Ok(match self {
            Statement::Postgres(c, q) => q.execute(c).await?.rows_affected(),
            Statement::Sqlite(c, q) => q.execute(c).await?.rows_affected(),
        })
    }

    pub async fn fetch_all<R: Record>(self) -> Result<Vec<R>> {
        Ok(match self {
            Statement::Postgres(c, q) => rows(q.fetch_all(c).await?)?,
            Statement::Sqlite(c, q) => rows(q.fetch_all(c).await?)?,
        })
    }

    pub async fn fetch_optional<R: Record>(self) -> Result<Option<R>> {
        Ok(match self {
            Statement::Postgres(c, q) => q.fetch_optional(c).await?.map(|r| R::from_row(&r)),
            Statement::Sqlite(c, q) => q.fetch_optional(c).await?.map(|r| R::from_row(&r)),
        }
        .transpose()?)
    }

    /// The first column of every row.
    pub async fn scalars<T: Scalar>(self) -> Result<Vec<T>> {
        Ok(match self {
            Statement::Postgres(c, q) => first_columns(q.fetch_all(c).await?)?,
            Statement::Sqlite(c, q) => first_columns(q.fetch_all(c).await?)?,
        })
    }

    /// The first column of the first row, if there is a row.
    pub async fn scalar_optional<T: Scalar>(self) -> Result<Option<T>> {
        Ok(match self {
            Statement::Postgres(c, q) => q.fetch_optional(c).await?.map(|r| r.try_get(0)),
            Statement::Sqlite(c, q) => q.fetch_optional(c).await?.map(|r| r.try_get(0)),
        }
        .transpose()?)
    }

    /// The first column of the one row the statement returns.
    pub async fn scalar<T: Scalar>(self) -> Result<T> {
        Ok(match self {
            Statement::Postgres(c, q) => q.fetch_one(c).await?.try_get(0)?,
            Statement::Sqlite(c, q) => q.fetch_one(c).await?.try_get(0)?,
        })
    }
}

fn rows<R, T>(raw: Vec<R>) -> std::result::Result<Vec<T>, sqlx::Error>
where
    R: Row,
    T: for<'r> FromRow<'r, R>,
{
    raw.iter().map(T::from_row).collect()
}

fn first_columns<R, T>(raw: Vec<R>) -> std::result::Result<Vec<T>, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    T: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    raw.iter().map(|r| r.try_get(0)).collect()
}

/// A pooled connection, for reads and single statements.
pub(super) enum Pooled {
    Postgres(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

impl Pooled {
    pub async fn acquire(store: &super::Store) -> Result<Self> {
        Ok(match store {
            super::Store::Postgres(pool) => Pooled::Postgres(pool.acquire().await?),
            super::Store::Sqlite(pools) => Pooled::Sqlite(pools.reads.acquire().await?),
        })
    }

    /// A connection for a single statement that writes, on a path taken often: in SQLite the
    /// writer's (see [`super::SqlitePools`]), whose page cache another writer would spoil.
    pub async fn writer(store: &super::Store) -> Result<Self> {
        Ok(match store {
            super::Store::Postgres(pool) => Pooled::Postgres(pool.acquire().await?),
            super::Store::Sqlite(pools) => Pooled::Sqlite(pools.writes.acquire().await?),
        })
    }

    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Postgres(c) => Conn::Postgres(c),
            Pooled::Sqlite(c) => Conn::Sqlite(c),
        }
    }
}

/// A transaction that writes. In SQLite it begins with `BEGIN IMMEDIATE`: the write lock is
/// taken first, so a transaction that reads and then writes never collides on the upgrade.
pub(super) enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub async fn begin(store: &super::Store) -> Result<Self> {
        Ok(match store {
            super::Store::Postgres(pool) => Tx::Postgres(begin_pg(pool).await?),
            super::Store::Sqlite(pools) => Tx::Sqlite(begin_sqlite(&pools.writes).await?),
        })
    }

    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Postgres(tx) => Conn::Postgres(tx),
            Tx::Sqlite(tx) => Conn::Sqlite(tx),
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

async fn begin_pg(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    Ok(pool.begin().await?)
}

async fn begin_sqlite(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}
