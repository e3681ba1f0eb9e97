//! How fast the audit trail can be written: rows committed per second and CPU per row through
//! `Store::insert_audit`, one batch at a time, at the batch sizes the group-commit writer
//! produces (1 when idle, hundreds under load). Every row has a fresh correlation id and
//! timestamp, as in service. `cargo bench --bench audit`; SQLite, and Postgres at
//! TEST_DATABASE_URL when reachable. CPU is this process's (the Postgres server's is not counted).

use std::time::{Duration, Instant};

use pantheon::{
    dispatch::new_correlation_id,
    domain::audit::{AuditEntry, Outcome},
    store::{Claiming, Store, claim_key},
};
use sqlx::Connection as _;

const RUN: Duration = Duration::from_secs(3);

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn batch(n: usize) -> Vec<AuditEntry> {
    (0..n)
        .map(|i| {
            let outcome = if i % 2 == 0 {
                Outcome::Received
            } else {
                Outcome::Refused
            };
            AuditEntry::new(&new_correlation_id(), "U012ABCDEF", "command", outcome)
                .channel("C012ABCDEF")
                .command("pager incidents")
                .detail(
                    "response_url host `127.0.0.1` is not on the allow-list (RESPONSE_URL_HOSTS)",
                )
        })
        .collect()
}

/// Run `step` (which says how many `unit`s it wrote) over and over for [`RUN`]; print how many
/// a second, and the CPU per one.
async fn timed(what: &str, unit: &str, mut step: impl AsyncFnMut() -> usize) {
    let (mut done, started, cpu) = (0usize, Instant::now(), cpu_seconds());
    while started.elapsed() < RUN {
        done += step().await;
    }
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    println!(
        "{what}: {:>8.0} {unit}s/s, {:>6.2} µs CPU per {unit}",
        done as f64 / wall,
        cpu * 1e6 / done as f64
    );
}

async fn measure(label: &str, url: &str) {
    let store = Store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    for size in [1, 64, 512, 2048] {
        let what = format!("audit insert ({label}, batches of {size:>4})");
        timed(&what, "row", async || {
            let entries = batch(size);
            let refs: Vec<&AuditEntry> = entries.iter().collect();
            store.insert_audit(&refs).await.unwrap();
            size
        })
        .await;
    }
    // As the acknowledgement path writes: each request its claim on a fresh signature and one
    // row (its outcome: it is answered at once), batches of the sizes group commit makes under
    // load.
    let mut signature = 0u64;
    for requests in [1, 16, 128] {
        let what = format!("claim + 1 row ({label}, batches of {requests:>4})");
        timed(&what, "request", async || {
            let rows: Vec<Vec<AuditEntry>> = (0..requests).map(|_| batch(1)).collect();
            let keys: Vec<String> = (0..requests)
                .map(|_| {
                    signature += 1;
                    // Spread like real signatures, so each claim lands on a random page.
                    let a = signature.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let sig = format!("v0={a:016x}{:016x}", a.rotate_left(29) ^ signature);
                    claim_key(time::OffsetDateTime::now_utc().unix_timestamp(), &sig)
                })
                .collect();
            let claiming: Vec<Claiming<'_>> = keys
                .iter()
                .zip(&rows)
                .map(|(key, rows)| Claiming {
                    key: Some(key),
                    rows,
                    replayed: &[],
                })
                .collect();
            let fresh = store
                .insert_audit_claiming(&claiming, time::OffsetDateTime::now_utc())
                .await
                .unwrap();
            assert!(fresh.iter().all(|f| *f), "every signature is new");
            requests
        })
        .await;
    }
    store.close().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        measure(
            "sqlite",
            &format!("sqlite://{}", dir.path().join("audit.db").display()),
        )
        .await;
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match sqlx::PgConnection::connect(&admin).await {
            Ok(mut conn) => {
                let _ = sqlx::query("DROP DATABASE IF EXISTS pantheon_bench_audit WITH (FORCE)")
                    .execute(&mut conn)
                    .await;
                sqlx::query("CREATE DATABASE pantheon_bench_audit")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path("/pantheon_bench_audit");
                measure("postgres", url.as_str()).await;
            }
            Err(e) => println!("postgres skipped: cannot connect to {admin}: {e}"),
        }
    });
}
