//! The store's own suite, run against SQLite and Postgres alike.

use std::collections::BTreeSet;

use pantheon::{
    audit::AuditLog,
    domain::audit::{AuditEntry, Outcome},
    store::{Claiming, Store},
};

use crate::{
    both_stores,
    harness::{Db, TestDb},
};

async fn store(db: Db, test: &str) -> Option<(Store, TestDb)> {
    let test_db = TestDb::new(db, test).await?;
    let store = Store::connect(&test_db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some((store, test_db))
}

both_stores!(
    audit_entries_round_trip,
    a_large_batch_is_one_insert,
    concurrent_writers_lose_nothing,
    submitted_rows_are_all_committed_when_the_writer_stops,
    a_job_log_line_written_twice_is_stored_once,
    log_lines_of_two_attempts_with_the_same_numbers_are_all_kept,
    migrations_are_idempotent,
    a_claim_is_taken_once_until_it_is_pruned,
    many_writers_racing_for_one_claim_get_it_once,
    a_batch_that_fails_stores_nothing_and_the_next_one_commits,
    retention_takes_old_audit_rows_oldest_first_and_never_a_young_one,
);

/// Audit retention walks the oldest rows by id, in batches, and deletes those older than the
/// cutoff: all of them however many batches it takes, and never a younger one, even one
/// written with a clock behind its neighbours'.
async fn retention_takes_old_audit_rows_oldest_first_and_never_a_young_one(db: Db) {
    let Some((store, _db)) = store(db, "audit_retention").await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let at = |days_ago: i64, corr: &str| {
        let mut e = AuditEntry::new(corr, "U1", "command", Outcome::Received);
        e.at = now - time::Duration::days(days_ago);
        e
    };
    // 12,000 old rows (more than two batches), a young one among them, then young rows.
    let old: Vec<AuditEntry> = (0..6_000).map(|_| at(500, "old")).collect();
    let skewed = at(1, "young-between");
    let later_old: Vec<AuditEntry> = (0..6_000).map(|_| at(450, "old")).collect();
    let young: Vec<AuditEntry> = (0..10).map(|_| at(2, "young")).collect();
    for rows in [&old, &vec![skewed], &later_old, &young] {
        store
            .insert_audit(&rows.iter().collect::<Vec<_>>())
            .await
            .unwrap();
    }
    let cutoff = now - time::Duration::days(400);
    let mut gone = 0;
    for _ in 0..5 {
        gone += store
            .prune(pantheon::store::Prunable::Audit, cutoff)
            .await
            .unwrap();
    }
    assert_eq!(gone, 12_000, "every old row, across rounds");
    assert_eq!(store.audit_for("old").await.unwrap().len(), 0);
    assert_eq!(store.audit_for("young-between").await.unwrap().len(), 1);
    assert_eq!(store.audit_for("young").await.unwrap().len(), 10);
}

/// Requests with keys and no rows.
fn bare<'a>(keys: &[&'a str]) -> Vec<Claiming<'a>> {
    keys.iter()
        .map(|k| Claiming {
            key: Some(k),
            rows: &[],
            replayed: &[],
        })
        .collect()
}

async fn a_claim_is_taken_once_until_it_is_pruned(db: Db) {
    let Some((store, _db)) = store(db, "claims").await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let signed = now.unix_timestamp();
    let key = |sig: &str| pantheon::store::claim_key(signed, &format!("v0={sig}"));
    let (ka, kb, kc) = (key("aa11"), key("bb22"), key("cc33"));
    let a = AuditEntry::new("c-a", "U1", "command", Outcome::Received);
    let b = AuditEntry::new("c-b", "U1", "command", Outcome::Received);
    let dup = AuditEntry::new("c-dup", "U1", "command", Outcome::Received);
    let again = AuditEntry::new("c-again", "U1", "command", Outcome::Refused);
    let replay_a = AuditEntry::new("c-a", "U1", "command", Outcome::Refused);
    let plain = AuditEntry::new("c-plain", "U1", "command", Outcome::Received);
    let claiming = |key, rows, replayed| Claiming {
        key: Some(key),
        rows,
        replayed,
    };
    // The second "a" in one batch is a replay of the first; a request without a key has its
    // rows stored as they are.
    let fresh = store
        .insert_audit_claiming(
            &[
                claiming(
                    &ka,
                    std::slice::from_ref(&a),
                    std::slice::from_ref(&replay_a),
                ),
                Claiming {
                    key: None,
                    rows: std::slice::from_ref(&plain),
                    replayed: &[],
                },
                claiming(&kb, std::slice::from_ref(&b), &[]),
                claiming(
                    &ka,
                    std::slice::from_ref(&dup),
                    std::slice::from_ref(&again),
                ),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(fresh, [true, true, false]);
    let outcomes = |rows: Vec<pantheon::domain::audit::AuditRecord>| {
        rows.iter().map(|r| r.entry.outcome).collect::<Vec<_>>()
    };
    assert_eq!(
        outcomes(store.audit_for("c-a").await.unwrap()),
        [Outcome::Received]
    );
    assert_eq!(
        outcomes(store.audit_for("c-b").await.unwrap()),
        [Outcome::Received]
    );
    assert_eq!(
        outcomes(store.audit_for("c-plain").await.unwrap()),
        [Outcome::Received]
    );
    assert_eq!(
        outcomes(store.audit_for("c-again").await.unwrap()),
        [Outcome::Refused]
    );
    assert_eq!(store.audit_for("c-dup").await.unwrap().len(), 0);
    // A key claimed in an earlier batch: the replay rows go in.
    let late = AuditEntry::new("c-late", "U1", "command", Outcome::Received);
    let late_refused = AuditEntry::new("c-late-refused", "U1", "command", Outcome::Refused);
    let fresh = store
        .insert_audit_claiming(
            &[claiming(
                &kb,
                std::slice::from_ref(&late),
                std::slice::from_ref(&late_refused),
            )],
            now,
        )
        .await
        .unwrap();
    assert_eq!(fresh, [false]);
    assert_eq!(store.audit_for("c-late").await.unwrap().len(), 0);
    assert_eq!(store.audit_for("c-late-refused").await.unwrap().len(), 1);
    // Hex case does not make a new request.
    let upper = pantheon::store::claim_key(signed, "v0=BB22");
    let fresh = store
        .insert_audit_claiming(&bare(&[&upper, &kc]), now)
        .await
        .unwrap();
    assert_eq!(fresh, [false, true]);
    // A commit whose reply was lost is recognised by its timestamp, with the flags it had.
    let lost = now + time::Duration::seconds(1);
    let kd = key("dd44");
    store
        .insert_audit_claiming(&bare(&[&kd, &ka]), lost)
        .await
        .unwrap();
    assert_eq!(
        store.claims_committed_at(&[&kd, &ka], lost).await.unwrap(),
        Some(vec![true, false])
    );
    assert_eq!(
        store
            .claims_committed_at(&[&kd], lost + time::Duration::seconds(1))
            .await
            .unwrap(),
        None
    );
    // Claims go by when they were signed: none before a minute ago, all before a minute on.
    assert_eq!(
        store
            .prune_claims(now - time::Duration::minutes(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_claims(now + time::Duration::minutes(1))
            .await
            .unwrap(),
        4
    );
    let fresh = store
        .insert_audit_claiming(&bare(&[&ka]), now)
        .await
        .unwrap();
    assert_eq!(fresh, [true]);
    store.close().await;
}

async fn many_writers_racing_for_one_claim_get_it_once(db: Db) {
    let Some((store, _db)) = store(db, "claims_race").await else {
        return;
    };
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let row = AuditEntry::new(&format!("race-{i}"), "U1", "command", Outcome::Received);
                store
                    .insert_audit_claiming(
                        &[Claiming {
                            key: Some("slack:1700000000:same"),
                            rows: std::slice::from_ref(&row),
                            replayed: &[],
                        }],
                        time::OffsetDateTime::now_utc(),
                    )
                    .await
                    .unwrap()[0]
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one writer takes the claim");
    let mut stored = 0;
    for i in 0..16 {
        stored += store.audit_for(&format!("race-{i}")).await.unwrap().len();
    }
    assert_eq!(stored, 1, "and only its row is stored");
    store.close().await;
}

/// Run one statement on the test's database, beside the store.
async fn raw(url: &str, sql: &str) {
    use sqlx::Connection as _;
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

/// A batch whose claims cannot be written stores none of its rows either, and leaves nothing
/// behind that stops the next batch: no transaction left open on the writer's connection, no
/// lock held.
async fn a_batch_that_fails_stores_nothing_and_the_next_one_commits(db: Db) {
    let Some((store, db)) = store(db, "failed_batch").await else {
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    let key = pantheon::store::claim_key(now.unix_timestamp(), "v0=ee55");
    let row = AuditEntry::new("c-fails", "U1", "command", Outcome::Received);
    let batch = [Claiming {
        key: Some(&key),
        rows: std::slice::from_ref(&row),
        replayed: &[],
    }];
    raw(
        &db.url,
        "ALTER TABLE request_claims RENAME TO request_claims_away",
    )
    .await;
    let failed = store.insert_audit_claiming(&batch, now).await;
    assert!(failed.is_err(), "{failed:?}");
    raw(
        &db.url,
        "ALTER TABLE request_claims_away RENAME TO request_claims",
    )
    .await;
    assert_eq!(store.audit_for("c-fails").await.unwrap().len(), 0);
    let fresh = store.insert_audit_claiming(&batch, now).await.unwrap();
    assert_eq!(fresh, [true]);
    assert_eq!(store.audit_for("c-fails").await.unwrap().len(), 1);
    store.close().await;
}

async fn audit_entries_round_trip(db: Db) {
    let Some((store, _db)) = store(db, "round_trip").await else {
        return;
    };
    let mut first = AuditEntry::new("corr-1", "U1", "command", Outcome::Received)
        .channel("C1")
        .command("pager ack P1");
    // Postgres keeps microseconds; compare at that precision.
    first.at = first.at.replace_nanosecond(123_456_000).unwrap();
    let second = AuditEntry::new("corr-1", "U1", "command", Outcome::Succeeded)
        .detail("done")
        .duration(std::time::Duration::from_millis(42));
    let other = AuditEntry::new("corr-2", "github", "webhook", Outcome::Received);
    store
        .insert_audit(&[&first, &second, &other])
        .await
        .unwrap();

    let rows = store.audit_for("corr-1").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].entry, first);
    assert_eq!(rows[1].entry.outcome, Outcome::Succeeded);
    assert_eq!(rows[1].entry.duration_ms, Some(42));
    assert_eq!(rows[1].entry.detail.as_deref(), Some("done"));
    assert_eq!(rows[1].entry.channel, None);
    assert!(rows[0].id < rows[1].id);

    let recent = store.recent_audit(2).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].entry.correlation_id, "corr-2", "newest first");
    let older = store.audit_before(recent[1].id, 10).await.unwrap();
    assert_eq!(older.len(), 1, "the page after the last one shown");
    assert_eq!(older[0].entry, first);
    assert!(
        store
            .audit_before(older[0].id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.audit_for("nope").await.unwrap().is_empty());
    store.close().await;
}

async fn a_large_batch_is_one_insert(db: Db) {
    let Some((store, _db)) = store(db, "batch").await else {
        return;
    };
    let entries: Vec<AuditEntry> = (0..1000)
        .map(|i| AuditEntry::new("batch", &format!("U{i}"), "command", Outcome::Started))
        .collect();
    let refs: Vec<&AuditEntry> = entries.iter().collect();
    store.insert_audit(&refs).await.unwrap();
    let rows = store.audit_for("batch").await.unwrap();
    assert_eq!(rows.len(), 1000);
    // Ids follow the order of the batch.
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.entry.actor, format!("U{i}"));
    }
    store.close().await;
}

async fn concurrent_writers_lose_nothing(db: Db) {
    let Some((store, _db)) = store(db, "group_commit").await else {
        return;
    };
    let (audit, writer) = AuditLog::spawn(store.clone());
    let mut tasks = Vec::new();
    for i in 0..300 {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            audit
                .record(vec![
                    AuditEntry::new(&format!("c{i}"), "U1", "command", Outcome::Received),
                    AuditEntry::new(&format!("c{i}"), "U1", "command", Outcome::Succeeded),
                ])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("committed");
    }
    // Once record() returns, the rows are there.
    let all = store.recent_audit(1000).await.unwrap();
    assert_eq!(all.len(), 600);
    let ids: BTreeSet<&str> = all
        .iter()
        .map(|r| r.entry.correlation_id.as_str())
        .collect();
    assert_eq!(ids.len(), 300);
    drop(audit);
    writer.await.unwrap();
    store.close().await;
}

/// Rows queued with `submit` (nobody waits for them, so the writer lets them linger for
/// company) are all committed by the time the writer stops, including the last batch.
async fn submitted_rows_are_all_committed_when_the_writer_stops(db: Db) {
    let Some((store, _db)) = store(db, "submit_flush").await else {
        return;
    };
    let (audit, writer) = AuditLog::spawn(store.clone());
    for i in 0..500 {
        audit
            .submit(vec![AuditEntry::new(
                &format!("s{i}"),
                "U1",
                "command",
                Outcome::Invalid,
            )])
            .await
            .unwrap();
    }
    drop(audit);
    writer.await.unwrap();
    let all = store.recent_audit(1000).await.unwrap();
    assert_eq!(all.len(), 500);
    store.close().await;
}

/// A queued job to write log lines for.
fn log_job(correlation_id: &str) -> pantheon::domain::job::NewJob {
    pantheon::domain::job::NewJob {
        runbook: "deploy".into(),
        params: Default::default(),
        binding: "0".repeat(64),
        target: "api/staging".into(),
        requested_by: "U1".into(),
        approval_id: None,
        channel: "C1".into(),
        thread_ref: None,
        retry_safe: false,
        correlation_id: correlation_id.into(),
        created_at: time::OffsetDateTime::now_utc(),
        overrides: None,
    }
}

/// A worker that lost its lease may flush its last lines after the next attempt has written
/// lines with the same numbers: the attempt is part of each line's key, so none is dropped, and
/// the log reads attempt by attempt.
async fn log_lines_of_two_attempts_with_the_same_numbers_are_all_kept(db: Db) {
    use pantheon::domain::job::{LogLine, Stream};
    let Some((store, _db)) = store(db, "job_logs_attempts").await else {
        return;
    };
    let id = store
        .enqueue_job(&log_job("logs-attempts"), |_| Vec::new())
        .await
        .unwrap();
    let line = |attempt: i32, seq: i32, text: &str| LogLine {
        attempt,
        seq,
        at: time::OffsetDateTime::now_utc(),
        stream: Stream::Stdout,
        line: text.into(),
    };
    store
        .append_job_logs(id, &[line(1, 1, "first try, 1")])
        .await
        .unwrap();
    // The second attempt writes its first lines; then the first attempt's late flush arrives.
    store
        .append_job_logs(
            id,
            &[line(2, 1, "second try, 1"), line(2, 2, "second try, 2")],
        )
        .await
        .unwrap();
    store
        .append_job_logs(id, &[line(1, 2, "first try, 2 (late)")])
        .await
        .unwrap();
    let stored: Vec<(i32, i32, String)> = store
        .job_logs(id, None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.attempt, l.seq, l.line))
        .collect();
    assert_eq!(
        stored,
        [
            (1, 1, "first try, 1".into()),
            (1, 2, "first try, 2 (late)".into()),
            (2, 1, "second try, 1".into()),
            (2, 2, "second try, 2".into()),
        ]
    );
    // The newest lines are the last attempt's.
    let last: Vec<String> = store
        .job_logs(id, Some(1))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(last, ["second try, 2"]);
    store.close().await;
}

/// A job-log flush cut short may still have been stored; writing its lines again is harmless.
async fn a_job_log_line_written_twice_is_stored_once(db: Db) {
    use pantheon::domain::job::{LogLine, Stream};
    let Some((store, _db)) = store(db, "job_logs_twice").await else {
        return;
    };
    let id = store
        .enqueue_job(&log_job("logs-twice"), |_| Vec::new())
        .await
        .unwrap();
    let line = |seq: i32, text: &str| LogLine {
        attempt: 1,
        seq,
        at: time::OffsetDateTime::now_utc(),
        stream: Stream::Stdout,
        line: text.into(),
    };
    store
        .append_job_logs(id, &[line(1, "one"), line(2, "two")])
        .await
        .unwrap();
    store
        .append_job_logs(id, &[line(1, "one"), line(2, "two"), line(3, "three")])
        .await
        .unwrap();
    let stored: Vec<(i32, String)> = store
        .job_logs(id, None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.seq, l.line))
        .collect();
    assert_eq!(
        stored,
        [(1, "one".into()), (2, "two".into()), (3, "three".into())]
    );
    store.close().await;
}

async fn migrations_are_idempotent(db: Db) {
    let Some((store, _db)) = store(db, "migrate_twice").await else {
        return;
    };
    store.migrate().await.expect("second run is a no-op");
    assert!(!store.known_migrations().is_empty());
    store.close().await;
}

/// Both databases have the same migration versions, so a feature never lands in only one.
#[test]
fn migration_versions_match_across_databases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let versions = |db: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(db))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        v.sort();
        v
    };
    let pg = versions("postgres");
    let lite = versions("sqlite");
    assert!(!pg.is_empty());
    assert_eq!(
        pg, lite,
        "migrations/postgres and migrations/sqlite must have the same files"
    );
}

/// Both databases' migrations have the same versions and names: a migration added to one and
/// forgotten in the other would leave the stores apart.
#[test]
fn both_migration_folders_hold_the_same_versions() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let list = |db: &str| {
        let mut names: Vec<String> = std::fs::read_dir(root.join(db))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        names
    };
    let (pg, lite) = (list("postgres"), list("sqlite"));
    assert!(!pg.is_empty());
    assert_eq!(pg, lite, "migrations/postgres and migrations/sqlite differ");
    for (i, name) in pg.iter().enumerate() {
        let version: usize = name.split('_').next().unwrap().parse().unwrap();
        assert_eq!(
            version,
            i + 1,
            "versions run 1, 2, 3 … without gaps: {name}"
        );
    }
}

/// SQLite's write-ahead log is copied into the database and started over in the background
/// while the service writes, so it stays small without the writer stopping for it: a writer
/// that wrote 24 MiB in rounds a little apart leaves a log of a round or two, and the rows are
/// in the database file itself.
#[tokio::test]
async fn sqlite_checkpoints_its_log_while_writes_go_on() {
    let Some((store, db)) = store(Db::Sqlite, "checkpoints").await else {
        return;
    };
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    let size = |p: &str| std::fs::metadata(p).map_or(0, |m| m.len());
    let detail = "x".repeat(1000);
    let rows: Vec<AuditEntry> = (0..500)
        .map(|i| {
            AuditEntry::new(&format!("ckpt-{i}"), "U1", "command", Outcome::Received)
                .detail(detail.clone())
        })
        .collect();
    let refs: Vec<&AuditEntry> = rows.iter().collect();
    let mut largest_log = 0;
    for _round in 0..6 {
        // About 4 MiB a round.
        for _ in 0..8 {
            store.insert_audit(&refs).await.unwrap();
        }
        largest_log = largest_log.max(size(&format!("{path}-wal")));
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    let log = size(&format!("{path}-wal"));
    assert!(
        log < 12 << 20,
        "the log stays within a few rounds: {log} bytes (largest seen {largest_log})"
    );
    let file = size(&path);
    assert!(
        file > 20 << 20,
        "the rows are in the database file: {file} bytes"
    );
    store.close().await;
}
