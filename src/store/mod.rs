//! The store: one boundary over two databases. Postgres is the production store (several
//! replicas may share it); SQLite is the zero-setup default. Each transaction is written once,
//! in `tx.rs`, over the connection type of `db.rs`; `postgres.rs` and `sqlite.rs` hold only
//! what differs (locking, lists, timestamps, batch inserts). Both pass the same test suite.
//!
//! One method is one business fact and one transaction; no transaction leaves this module.

mod db;
mod postgres;
mod sqlite;
mod tx;

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use time::OffsetDateTime;

use crate::{
    domain::audit::{AuditEntry, AuditRecord},
    domain::outbox::{Delivery, OutboxCounts, OutboxRow, Recorded},
    domain::{
        approval::{ApprovalRequest, Ballot, NewApprovalRequest, VoteResult},
        job::{Heartbeat, Job, JobStatus, LogLine, NewJob},
    },
};

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_that_may_pass_are_unavailable_not_rejected() {
        // SQLite: busy, locked, full disk, a write I/O error (778 = SQLITE_IOERR_WRITE).
        for code in ["5", "6", "13", "778", "10"] {
            assert!(transient_sqlite(code), "{code}");
        }
        // A constraint (2067 = SQLITE_CONSTRAINT_UNIQUE) is the statement's own fault.
        assert!(!transient_sqlite("2067"));
        assert!(!transient_sqlite("19"));
        // Postgres: connection failure, too many connections, admin shutdown.
        for code in ["08006", "53300", "57P01"] {
            assert!(transient_postgres(code), "{code}");
        }
        assert!(!transient_postgres("23505"), "a unique violation");
    }

    #[test]
    fn database_urls_lose_every_password_before_they_are_shown() {
        let shown =
            without_password("postgres://u@db.internal/app?password=hunter2&sslmode=require");
        assert_eq!(
            shown,
            "postgres://u@db.internal/app?password=REDACTED&sslmode=require"
        );
        let shown = without_password("postgres://u:s3cr%40t@db/app?SSLPassword=keypass");
        assert!(
            !shown.contains("s3cr") && !shown.contains("keypass"),
            "{shown}"
        );
        assert_eq!(
            without_password("sqlite://pantheon.db"),
            "sqlite://pantheon.db"
        );
        let shown = without_password("postgres://u:p@[bad/db?password=x");
        assert_eq!(shown, "postgres://(a URL that does not parse; not shown)");
        assert!(!without_password("no scheme at all with secret").contains("secret"));
        let secrets = url_secrets("postgres://u:s3cr%40t@db/app?password=hunter2&x=1");
        assert!(secrets.contains(&"s3cr@t".to_owned()), "{secrets:?}");
        assert!(secrets.contains(&"hunter2".to_owned()), "{secrets:?}");
    }
}

/// Why the store could not do something, by what the caller can do about it. No database
/// driver's type leaves the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Holds the URL with any password removed.
    #[error("`{0}` is not a database URL; use postgres://... or sqlite://...")]
    UnsupportedUrl(String),
    /// The database refused the statement: a constraint, or a value it cannot take. The same
    /// statement will be refused again. `duplicate` when a unique key was already taken.
    #[error("the database refused it: {detail}")]
    Rejected { detail: String, duplicate: bool },
    /// The database could not be reached, or did not answer in time; later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) if transient(db.as_ref()) => {
                StoreError::Unavailable(db.to_string())
            }
            sqlx::Error::Database(db) => StoreError::Rejected {
                duplicate: db.is_unique_violation(),
                detail: db.to_string(),
            },
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Database errors that say nothing about the statement and may pass: SQLite's busy, locked,
/// I/O error and full disk (by primary result code, the low byte of the extended one);
/// Postgres's connection exceptions (08), insufficient resources (53) and operator
/// intervention such as a shutdown (57).
fn transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    let code = db.code();
    let code = code.as_deref().unwrap_or_default();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        transient_sqlite(code)
    } else {
        transient_postgres(code)
    }
}

fn transient_sqlite(extended_code: &str) -> bool {
    extended_code
        .parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13))
}

fn transient_postgres(sqlstate: &str) -> bool {
    ["08", "53", "57"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One request's share of a batch given to [`Store::insert_audit_claiming`].
#[derive(Clone, Copy, Debug)]
pub struct Claiming<'a> {
    /// Its claim (a request signature); without one its `rows` are stored as they are.
    pub key: Option<&'a str>,
    /// Stored if the claim is its.
    pub rows: &'a [AuditEntry],
    /// Stored instead if the key was claimed before.
    pub replayed: &'a [AuditEntry],
}

impl<'a> Claiming<'a> {
    /// The rows `batch` stores, given for each request with a key (in order) whether the claim
    /// was its: its `rows` if so or if it has no key, its `replayed` if not.
    pub fn stored<'b>(
        batch: &'b [Claiming<'a>],
        fresh: &'b [bool],
    ) -> impl Iterator<Item = &'a AuditEntry> + 'b {
        let mut flags = fresh.iter();
        batch.iter().flat_map(move |c| match c.key {
            Some(_) if !flags.next().copied().unwrap_or(true) => c.replayed.iter(),
            _ => c.rows.iter(),
        })
    }
}

#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePools),
}

/// SQLite's connections: a pool for reads and single statements, and one connection that every
/// writing transaction takes in turn.
///
/// SQLite lets one connection write at a time anyway (`BEGIN IMMEDIATE` waits for the lock), so
/// one writer costs no concurrency; what it saves is the page cache. Each connection has its own,
/// and a connection that finds the file changed by another since its last transaction drops its
/// cache and reads every page again. Pooled connections are handed out in turn, so with writes
/// spread over eight of them nearly every transaction began cold: reading back pages of the
/// audit table and its indexes through the kernel cost more than writing the new rows. The
/// writer's cache stays warm because nobody else writes to speak of. Nor does it checkpoint
/// the write-ahead log after its commits (see [`WRITER_AUTOCHECKPOINT`]): a checkpointer task
/// copies the log from a read connection, so the writer does not stop for the copy and `fsync`,
/// and only starts the log over, now and then, on the writer's connection (see [`checkpointer`]).
#[derive(Clone, Debug)]
pub struct SqlitePools {
    /// Reads and single statements.
    pub reads: SqlitePool,
    writes: SqlitePool,
    /// Stops the checkpointer once the last handle to the store is gone.
    _checkpointer: std::sync::Arc<Checkpointer>,
}

#[derive(Debug)]
struct Checkpointer(tokio::task::AbortHandle);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pages in the write-ahead log past which the writer checkpoints it itself, after a commit
/// (SQLite's default is 1,000, a few times a second under load, each a copy and two `fsync`s
/// that every request waits behind). The checkpointer task does it instead, so this is only a
/// bound for when that task is not running (a one-off command): about 200 MiB.
const WRITER_AUTOCHECKPOINT: &str = "50000";

/// How often the checkpointer copies committed pages from the write-ahead log into the database:
/// a passive checkpoint, which waits for nobody and which nobody waits for.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Pages in the write-ahead log past which the checkpointer also starts the log over (32 MiB).
/// Only a checkpoint that has copied everything lets the next writer begin the log
/// again from the start, and a passive one beside a busy writer never quite has, so under
/// sustained load the log would only grow. A restarting checkpoint holds the writer back while
/// it copies what the last passive one left (a fraction of a second's worth) and syncs.
const RESTART_PAST: i64 = 8192;

/// Checkpoint the write-ahead log every [`CHECKPOINT_EVERY`] until the pool closes: passively
/// from a read connection, and, past [`RESTART_PAST`], restarting from the writer's own
/// connection.
///
/// The restart takes the write lock. Taken from another connection, it made the writer's next
/// `BEGIN IMMEDIATE` find the lock held and wait in SQLite's busy handler, which sleeps 1, 2,
/// then 5 ms between tries, so every acknowledgement behind it waited about 11 ms where the
/// checkpoint itself took a few. On the writer's connection the restart queues behind the
/// batch in flight, and the next batch begins as soon as it ends (open loop at 10,000 fresh
/// requests a second on one core: p99 7.9 → 5.2 ms, medians of 8 interleaved runs).
async fn checkpointer(reads: SqlitePool, writes: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !reads.is_closed() {
        every.tick().await;
        // (busy, pages in the log, pages copied)
        let passive = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&reads)
            .await;
        let result = match passive {
            Ok((_, log, _)) if log > RESTART_PAST => sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                .execute(&writes)
                .await
                .map(drop),
            other => other.map(drop),
        };
        if let Err(e) = result
            && !reads.is_closed()
        {
            tracing::debug!(error = %e, "checkpoint of the write-ahead log failed");
        }
    }
}

impl Store {
    /// Connect to `url` (`postgres://` or `sqlite://`). A SQLite file is created if missing.
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?.application_name("pantheon");
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            Ok(Store::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            if url.contains(":memory:") || url.contains("mode=memory") {
                // An in-memory database is private to each pooled connection: several
                // connections would each see a different, empty database.
                return Err(StoreError::UnsupportedUrl(format!(
                    "{} (in-memory SQLite cannot be shared by a pool; use a file)",
                    without_password(url)
                )));
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // A statement that writes many rows inside a transaction keeps a journal of its
                // own (to undo just itself on error); past 64 KiB SQLite spills it to a new
                // temporary file, which every larger audit batch paid for in open and write
                // calls. Kept in memory, it is a copy of the pages the statement changes.
                .pragma("temp_store", "memory");
            // A connection to a local file cannot go stale, so skip the ping sqlx sends before
            // handing one out: it is a round trip to the connection's thread on every query.
            let pool = |max| {
                SqlitePoolOptions::new()
                    .max_connections(max)
                    .test_before_acquire(false)
                    // A COMMIT that fails for want of disk space is rolled back by SQLite itself; sqlx
                    // then still counts the connection as inside a transaction, and every later
                    // BEGIN on it fails ("non-zero transaction depth") even after space returns.
                    // Such a connection is closed instead of going back to the pool. (A transaction
                    // dropped unfinished has its ROLLBACK queued, not yet run: a ping lets it run
                    // before the count is read again.)
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Connection as _;
                            if conn.is_in_transaction() {
                                conn.ping().await?;
                            }
                            Ok(!conn.is_in_transaction())
                        })
                    })
                    .acquire_timeout(Duration::from_secs(10))
            };
            let reads = pool(8).connect_with(options.clone()).await?;
            let writes = pool(1)
                .connect_with(options.pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT))
                .await?;
            let checkpointer =
                tokio::spawn(checkpointer(reads.clone(), writes.clone())).abort_handle();
            Ok(Store::Sqlite(SqlitePools {
                reads,
                writes,
                _checkpointer: std::sync::Arc::new(Checkpointer(checkpointer)),
            }))
        } else {
            Err(StoreError::UnsupportedUrl(without_password(url)))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Bring the schema up to date. Safe to run from several replicas at once on Postgres
    /// (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Postgres(pool) => PG_MIGRATOR.run(pool).await?,
            Store::Sqlite(pools) => SQLITE_MIGRATOR.run(&pools.reads).await?,
        }
        Ok(())
    }

    /// The migrations this build knows, as (version, description).
    pub fn known_migrations(&self) -> Vec<(i64, String)> {
        let migrator = match self {
            Store::Postgres(_) => &PG_MIGRATOR,
            Store::Sqlite(_) => &SQLITE_MIGRATOR,
        };
        migrator
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }

    /// A round trip to the database, for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
            Store::Sqlite(pools) => sqlx::query("SELECT 1")
                .execute(&pools.reads)
                .await
                .map(drop)?,
        }
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Store::Postgres(pool) => pool.close().await,
            Store::Sqlite(pools) => {
                pools.writes.close().await;
                pools.reads.close().await;
            }
        }
    }

    // -- audit ---------------------------------------------------------------------------------

    /// Append audit entries in one transaction.
    pub async fn insert_audit(&self, entries: &[&AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        tx::insert_audit(self, entries).await
    }

    /// Take the claims of a batch of requests (their signatures) and append each request's
    /// audit rows: its `rows` if the claim is its, its `replayed` if the key was claimed before
    /// (or earlier in the batch), all in one transaction. Returns, for each request with a key
    /// in order, whether the claim was its.
    pub async fn insert_audit_claiming(
        &self,
        batch: &[Claiming<'_>],
        now: OffsetDateTime,
    ) -> Result<Vec<bool>> {
        tx::insert_audit_claiming(self, batch, now).await
    }

    /// Delete rows of `what` from before `before`, in batches so no lock is held for long.
    /// Returns how many. Stops after a bounded number of batches (the next round goes on).
    pub async fn prune(&self, what: Prunable, before: OffsetDateTime) -> Result<u64> {
        const BATCH: i64 = 5000;
        let mut total = 0;
        for _ in 0..20 {
            let n = tx::prune_batch(self, what, before, BATCH).await?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
        Ok(total)
    }

    /// After a commit of claims at `now` failed as far as we could tell: whether it went through
    /// after all (its reply was lost). If any of `keys` was claimed at exactly `now`, that
    /// transaction committed, and these are its claims' flags as
    /// [`Store::insert_audit_claiming`] returned them; None if none was.
    pub async fn claims_committed_at(
        &self,
        keys: &[&str],
        now: OffsetDateTime,
    ) -> Result<Option<Vec<bool>>> {
        let ours = tx::claims_committed_at(self, keys, now).await?;
        Ok((!ours.is_empty()).then(|| first_claims(keys, &ours)))
    }

    /// Forget claims of Socket Mode deliveries first seen before `before` (see
    /// [`socket_claim_key`]). Returns how many.
    pub async fn prune_socket_claims(&self, before: OffsetDateTime) -> Result<u64> {
        tx::prune_socket_claims(self, before).await
    }

    /// Forget claims of requests signed before `before` (see [`claim_key`]). Returns how many.
    pub async fn prune_claims(&self, before: OffsetDateTime) -> Result<u64> {
        tx::prune_claims(self, before).await
    }

    /// The newest `limit` entries, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        self.audit_before(i64::MAX, limit).await
    }

    /// The newest `limit` entries older than entry `before` (by id), newest first: the next
    /// page after one that ended at `before`.
    pub async fn audit_before(&self, before: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        tx::audit_before(self, before, limit).await
    }

    /// Every entry of one request, oldest first.
    pub async fn audit_for(&self, correlation_id: &str) -> Result<Vec<AuditRecord>> {
        tx::audit_for(self, correlation_id).await
    }
}

/// What retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prunable {
    /// Notifications already sent, merged or given up on.
    Outbox,
    /// Payloads of webhook deliveries (each delivery's identity is kept, so a redelivery stays
    /// a duplicate however old).
    Deliveries,
    /// Log lines of jobs that ended.
    JobLogs,
    Audit,
}

/// The claim key of a Slack request signed at `timestamp` (unix seconds) with `signature`
/// (`v0=<hex>`): ordered by the signing time, so claims past the window go as one range, and
/// new ones are written side by side. 128 bits of the signature tell requests apart.
pub fn claim_key(timestamp: i64, signature: &str) -> String {
    let sig = signature.trim().to_ascii_lowercase();
    let hex = sig.strip_prefix("v0=").unwrap_or(&sig);
    let short: String = hex.chars().take(32).collect();
    format!("slack:{:010}:{short}", timestamp.max(0))
}

/// The claim key of a delivery that came unsigned over a trusted socket (Slack's Socket Mode),
/// from the id the platform gave it (a slash command's or click's `trigger_id`): the same on
/// every delivery of it, whenever and wherever it arrives. These keys sort apart from the
/// signed ones and are forgotten by when they were first seen.
pub fn socket_claim_key(id: &str) -> String {
    let id: String = id.trim().chars().take(120).collect();
    format!("socket:{id}")
}

/// The first key a claim signed at `before` would have: every claim below it was signed earlier.
fn claim_bound(before: OffsetDateTime) -> String {
    format!("slack:{:010}:", before.unix_timestamp().max(0))
}

/// For each key in order: whether this one took its claim (it was inserted, and no key before
/// it in the batch was the same).
fn first_claims(keys: &[&str], inserted: &[String]) -> Vec<bool> {
    let inserted: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
    let mut taken = std::collections::HashSet::new();
    keys.iter()
        .map(|k| inserted.contains(k) && taken.insert(*k))
        .collect()
}

/// Query parameters of a database URL that carry a secret.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// A database URL fit for messages and logs: the password in the user info and any `password`
/// or `sslpassword` query value replaced; of a URL that does not parse, only its scheme.
pub fn without_password(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s)
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+'))
            .unwrap_or("(unknown scheme)");
        return format!("{scheme}://(a URL that does not parse; not shown)");
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    if u.query_pairs()
        .any(|(k, _)| SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
    {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) {
                    (k.into_owned(), "REDACTED".to_owned())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The secrets a database URL holds (its password, `password` and `sslpassword` values), for
/// [`crate::domain::redact::register_secrets`].
pub fn url_secrets(url: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(encoded) = u.password() {
        // As written in the URL, and as the database receives it (percent-decoded).
        out.push(encoded.to_owned());
        let decoded =
            url::form_urlencoded::parse(format!("p={}", encoded.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned());
        out.extend(decoded);
    }
    out.extend(
        u.query_pairs()
            .filter(|(k, _)| SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
            .map(|(_, v)| v.into_owned()),
    );
    out
}

/// What we remember about a Slack user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPrefs {
    pub pagerduty_email: Option<String>,
    pub pagerduty_user_id: Option<String>,
}

impl Store {
    // -- people --------------------------------------------------------------------------------

    pub async fn user_prefs(&self, slack_user_id: &str) -> Result<Option<UserPrefs>> {
        tx::user_prefs(self, slack_user_id).await
    }

    /// Remember a person's PagerDuty email (and user id, when known).
    pub async fn set_pagerduty_identity(
        &self,
        slack_user_id: &str,
        email: &str,
        pagerduty_user_id: Option<&str>,
    ) -> Result<()> {
        let now = time::OffsetDateTime::now_utc();
        tx::set_pagerduty_identity(self, slack_user_id, email, pagerduty_user_id, now).await
    }
}

impl Store {
    // -- approvals -----------------------------------------------------------------------------

    /// Create a pending request and its audit rows in one transaction; returns its id.
    pub async fn create_approval_request(
        &self,
        new: &NewApprovalRequest,
        audit: impl FnOnce(i64) -> Vec<AuditEntry>,
    ) -> Result<i64> {
        tx::create_approval_request(self, new, audit).await
    }

    pub async fn approval_request(&self, id: i64) -> Result<Option<ApprovalRequest>> {
        tx::approval_request(self, id).await
    }

    pub async fn pending_approvals(&self) -> Result<Vec<ApprovalRequest>> {
        tx::pending_approvals(self).await
    }

    pub async fn set_approval_message(&self, id: i64, ts: &str) -> Result<()> {
        tx::set_approval_message(self, id, ts).await
    }

    /// One vote, as one transaction: lock the request, apply the rules, record the vote, and on
    /// enough approvals mark it approved and enqueue its job; the audit rows `audit` makes are
    /// written in the same transaction. Returns the request as it is afterwards.
    pub async fn vote(
        &self,
        id: i64,
        ballot: Ballot<'_>,
        now: OffsetDateTime,
        audit: impl FnOnce(Option<&ApprovalRequest>, &VoteResult) -> Vec<AuditEntry>,
    ) -> Result<(Option<ApprovalRequest>, VoteResult)> {
        tx::vote(self, id, ballot, now, audit).await
    }

    /// Mark pending requests past their expiry as expired; returns them.
    pub async fn expire_due(
        &self,
        now: OffsetDateTime,
        audit: impl Fn(&ApprovalRequest) -> AuditEntry,
    ) -> Result<Vec<ApprovalRequest>> {
        tx::expire_due(self, now, audit).await
    }

    // -- jobs ----------------------------------------------------------------------------------

    pub async fn enqueue_job(
        &self,
        job: &NewJob,
        audit: impl FnOnce(i64) -> Vec<AuditEntry>,
    ) -> Result<i64> {
        tx::enqueue_job(self, job, audit).await
    }

    /// Take the oldest queued job whose target has nothing running, leased to `worker`.
    /// The job is not started until [`Store::start_job`] says so.
    pub async fn claim_job(
        &self,
        worker: &str,
        lease_until: OffsetDateTime,
    ) -> Result<Option<Job>> {
        tx::claim_job(self, worker, lease_until).await
    }

    /// Mark a claimed job started, if `worker` still holds it; false if it does not.
    pub async fn start_job(&self, job_id: i64, worker: &str, now: OffsetDateTime) -> Result<bool> {
        tx::start_job(self, job_id, worker, now).await
    }

    /// Give back a claimed job `worker` did not run: queued again at once (its target freed),
    /// or failed after too many tries. `None` if it was no longer `worker`'s.
    pub async fn give_back_unstarted(
        &self,
        job_id: i64,
        worker: &str,
        now: OffsetDateTime,
        audit: impl Fn(&Job) -> AuditEntry,
    ) -> Result<Option<Job>> {
        tx::give_back_unstarted(self, job_id, worker, now, audit).await
    }

    pub async fn heartbeat(
        &self,
        job_id: i64,
        worker: &str,
        lease_until: OffsetDateTime,
    ) -> Result<Heartbeat> {
        tx::heartbeat(self, job_id, worker, lease_until).await
    }

    /// Record a job's end, if `worker` still holds it. False means it was taken away.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_job(
        &self,
        job_id: i64,
        worker: &str,
        status: JobStatus,
        exit_code: Option<i32>,
        error: Option<&str>,
        now: OffsetDateTime,
        audit: Vec<AuditEntry>,
    ) -> Result<bool> {
        let end = tx::Finish {
            job_id,
            worker,
            status,
            exit_code,
            error,
            now,
        };
        tx::finish_job(self, end, audit).await
    }

    /// Cancel a queued job, or ask its worker to stop a running one. Returns the status it had.
    pub async fn request_cancel(
        &self,
        job_id: i64,
        now: OffsetDateTime,
        audit: Vec<AuditEntry>,
    ) -> Result<Option<JobStatus>> {
        tx::request_cancel(self, job_id, now, audit).await
    }

    /// Running jobs whose lease ran out before `cutoff`, released as [`Released::of`] says:
    /// queued again if they had not started or are safe to retry, otherwise interrupted (or
    /// cancelled, or failed after too many tries without starting).
    ///
    /// [`Released::of`]: crate::domain::job::Released::of
    pub async fn reap_expired_leases(
        &self,
        now: OffsetDateTime,
        cutoff: OffsetDateTime,
        audit: impl Fn(&Job) -> AuditEntry,
    ) -> Result<Vec<Job>> {
        tx::reap_expired_leases(self, now, cutoff, audit).await
    }

    pub async fn set_job_thread(&self, job_id: i64, ts: &str) -> Result<()> {
        tx::set_job_thread(self, job_id, ts).await
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>> {
        tx::job(self, id).await
    }

    /// The newest `limit` jobs, of one runbook or all.
    pub async fn jobs(&self, runbook: Option<&str>, limit: i64) -> Result<Vec<Job>> {
        tx::jobs(self, runbook, limit).await
    }

    pub async fn append_job_logs(&self, job_id: i64, lines: &[LogLine]) -> Result<()> {
        tx::append_job_logs(self, job_id, lines).await
    }

    /// A job's log, or its last `last` lines, oldest first.
    pub async fn job_logs(&self, job_id: i64, last: Option<i64>) -> Result<Vec<LogLine>> {
        tx::job_logs(self, job_id, last).await
    }
}

impl Store {
    // -- webhooks and the outbox ---------------------------------------------------------------

    /// Store deliveries and queue their messages in one transaction; each one is new, or a
    /// duplicate of a delivery id seen before from its source.
    pub async fn record_deliveries(&self, batch: &[Delivery]) -> Result<Vec<Recorded>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        tx::record_deliveries(self, batch).await
    }

    /// Take up to `limit` due messages, oldest first, hidden from other senders until
    /// `lease_until` (if we die, they are tried again then).
    pub async fn claim_outbox(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        tx::claim_outbox(self, now, lease_until, limit).await
    }

    /// `first` was posted (as Slack message `ts`), carrying `merged` with it.
    pub async fn outbox_sent(
        &self,
        first: i64,
        merged: &[i64],
        ts: &str,
        now: OffsetDateTime,
        audit: Vec<AuditEntry>,
    ) -> Result<()> {
        tx::outbox_sent(self, first, merged, ts, now, audit).await
    }

    /// The pending rows marked as posted in post `post` (see [`Store::outbox_posting`]).
    pub async fn pending_posted_as(&self, post: i64) -> Result<Vec<i64>> {
        tx::pending_posted_as(self, post).await
    }

    /// A sender is about to post these as the message carrying post token `posting_as`: until it
    /// is known how that went, a later claim knows they may be in the channel already. `None`
    /// clears the mark (the post is known not to have happened).
    pub async fn outbox_posting(
        &self,
        ids: &[i64],
        posting_as: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<()> {
        tx::outbox_posting(self, ids, posting_as, now).await
    }

    /// Try these again at `at` (counting an attempt when the try failed).
    pub async fn outbox_retry(
        &self,
        ids: &[i64],
        at: OffsetDateTime,
        error: Option<&str>,
        count_attempt: bool,
    ) -> Result<()> {
        tx::outbox_retry(self, ids, at, error, count_attempt).await
    }

    pub async fn outbox_failed(
        &self,
        ids: &[i64],
        error: &str,
        now: OffsetDateTime,
        audit: Vec<AuditEntry>,
    ) -> Result<()> {
        tx::outbox_failed(self, ids, error, now, audit).await
    }

    pub async fn outbox_counts(&self) -> Result<OutboxCounts> {
        tx::outbox_counts(self).await
    }

    /// When the next pending message is due, if any.
    pub async fn next_outbox_due(&self) -> Result<Option<OffsetDateTime>> {
        tx::next_outbox_due(self).await
    }

    /// Take a lock unless its name is held; see [`Locked`](crate::domain::deploy::Locked).
    pub async fn take_lock(
        &self,
        lock: &crate::domain::deploy::Lock,
        now: OffsetDateTime,
        audit: Vec<AuditEntry>,
    ) -> Result<crate::domain::deploy::Locked> {
        tx::take_lock(self, lock, now, audit).await
    }

    /// Release a lock: its holder's, or anyone's when `may_break`.
    pub async fn release_lock(
        &self,
        name: &str,
        by: &str,
        may_break: bool,
        now: OffsetDateTime,
        audit: impl FnOnce(&crate::domain::deploy::Lock) -> Vec<AuditEntry>,
    ) -> Result<crate::domain::deploy::Unlocked> {
        tx::release_lock(self, name, by, may_break, now, audit).await
    }

    /// The locks held now.
    pub async fn locks(&self, now: OffsetDateTime) -> Result<Vec<crate::domain::deploy::Lock>> {
        tx::locks(self, now).await
    }
}
