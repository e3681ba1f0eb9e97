//! The audit trail: one row per step, written with group commit.
//!
//! A single writer task drains whatever has queued and commits it in one transaction, so under
//! load hundreds of tiny transactions become a few larger ones. Callers that are about to act
//! (run a command, change state) use [`AuditLog::record`] and wait for the commit: nothing is
//! done unaudited. Answers that change nothing (help, a parse error, a refusal) use
//! [`AuditLog::submit`], which queues the rows and returns, so the acknowledgement does not wait
//! on the disk; those rows are committed with the next batch, milliseconds later. Each entry is
//! also one structured log line, emitted in the caller's span so it carries the request's
//! correlation id.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::{
    redact::{scrub, without_nul},
    store::Store,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A request arrived and was verified.
    Received,
    /// It could not be understood (unknown command, wrong arguments).
    Invalid,
    /// It was understood and not allowed (permissions, allow-list, busy).
    Refused,
    Started,
    Succeeded,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Received => "received",
            Outcome::Invalid => "invalid",
            Outcome::Refused => "refused",
            Outcome::Started => "started",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "received" => Outcome::Received,
            "invalid" => Outcome::Invalid,
            "refused" => Outcome::Refused,
            "started" => Outcome::Started,
            "succeeded" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            _ => return None,
        })
    }
}

/// One step, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    pub correlation_id: String,
    /// Slack user id, or the system part that acted (`github`, `worker`).
    pub actor: String,
    pub channel: Option<String>,
    /// What kind of step: `command`, `reply`, `approval.vote`, `job`, `webhook`, ...
    pub action: String,
    /// The command text as typed, with anything that looks like a credential masked.
    pub command: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub duration_ms: Option<i64>,
}

impl AuditEntry {
    pub fn new(correlation_id: &str, actor: &str, action: &str, outcome: Outcome) -> Self {
        Self {
            at: OffsetDateTime::now_utc(),
            correlation_id: without_nul(correlation_id).into_owned(),
            actor: without_nul(actor).into_owned(),
            channel: None,
            action: without_nul(action).into_owned(),
            command: None,
            outcome,
            detail: None,
            duration_ms: None,
        }
    }

    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = (!channel.is_empty()).then(|| without_nul(channel).into_owned());
        self
    }

    pub fn command(mut self, text: &str) -> Self {
        self.command = Some(scrub(&without_nul(text)).into_owned());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(scrub(&without_nul(&detail.into())).into_owned());
        self
    }

    pub fn duration(mut self, elapsed: Duration) -> Self {
        self.duration_ms = Some(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
        self
    }
}

/// A stored step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit trail could not be written: {0}")]
pub struct AuditError(pub String);

struct Pending {
    entries: Vec<AuditEntry>,
    done: Option<oneshot::Sender<Result<(), AuditError>>>,
}

/// Handle to the audit writer. Cloning is cheap; all clones feed the same writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

/// Most queued submissions (each a few entries) committed in one transaction.
const MAX_BATCH: usize = 2048;

impl AuditLog {
    /// Start the writer. It stops when every `AuditLog` handle is dropped, after committing
    /// what was queued.
    pub fn spawn(store: Store) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(writer(store, rx));
        (Self { tx }, task)
    }

    /// Log and durably store `entries`, returning once they are committed.
    pub async fn record(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        log_entries(&entries);
        let (done, wait) = oneshot::channel();
        self.enqueue(entries, Some(done)).await?;
        wait.await.map_err(|_| stopped())?
    }

    pub async fn record_one(&self, entry: AuditEntry) -> Result<(), AuditError> {
        self.record(vec![entry]).await
    }

    /// Log and queue `entries` for the next commit without waiting for it. Only for steps
    /// that change nothing; a failed commit is logged by the writer.
    pub async fn submit(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        log_entries(&entries);
        self.enqueue(entries, None).await
    }

    async fn enqueue(
        &self,
        entries: Vec<AuditEntry>,
        done: Option<oneshot::Sender<Result<(), AuditError>>>,
    ) -> Result<(), AuditError> {
        self.tx
            .send(Pending { entries, done })
            .await
            .map_err(|_| stopped())
    }
}

fn stopped() -> AuditError {
    AuditError("the audit writer has stopped".into())
}

/// One structured log line per entry (entries written outside [`AuditLog`] use this too).
pub fn log_entries(entries: &[AuditEntry]) {
    for e in entries {
        tracing::info!(
            target: "pantheon::audit",
            actor = %e.actor,
            channel = e.channel.as_deref().unwrap_or(""),
            action = %e.action,
            outcome = e.outcome.as_str(),
            command = e.command.as_deref().unwrap_or(""),
            detail = e.detail.as_deref().unwrap_or(""),
            duration_ms = e.duration_ms,
            "audit"
        );
    }
}

/// Batches committed concurrently. On Postgres, overlapping commits keep the writer from being
/// paced by one round trip at a time. SQLite has one writer per file: a second commit would
/// only wait on the file lock, while rows queued behind a single commit join the next batch.
fn max_in_flight(store: &Store) -> usize {
    match store {
        Store::Postgres(_) => 4,
        Store::Sqlite(_) => 1,
    }
}

/// How long rows that nobody waits for may wait for company before they are committed.
///
/// Every commit costs about as much as a hundred rows (a transaction, WAL pages for the table
/// and both indexes, a wake-up of the database thread), so committing each acknowledgement's
/// two rows on its own spends most of the writer's time on commits: at 10,000 commands a
/// second that was a fifth of a core, taken from the same cores that answer Slack. A few
/// milliseconds of company turns that into one commit per hundred requests. A row someone
/// waits for ([`AuditLog::record`]) ends the wait at once.
const LINGER: Duration = Duration::from_millis(4);

/// Submissions that are worth a commit of their own: a batch this large does not linger (under
/// a backlog, the batch taken after a commit usually is).
const ENOUGH: usize = 256;

async fn writer(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_in_flight(&store)));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batch: Vec<Pending> = Vec::new();
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        let closed = linger(&mut rx, &mut batch).await;
        let store = store.clone();
        tasks.spawn(async move {
            commit(&store, batch).await;
            drop(slot);
        });
        // Reap finished batches so the set does not grow.
        while tasks.try_join_next().is_some() {}
        if closed {
            break;
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Let more submissions join `batch` for up to [`LINGER`], unless someone waits on it or it
/// has [`ENOUGH`]. Returns whether the channel has closed (every handle dropped).
async fn linger(rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) -> bool {
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut seen = 0;
    loop {
        if batch.len() >= ENOUGH || batch[seen..].iter().any(|p| p.done.is_some()) {
            return false;
        }
        seen = batch.len();
        match tokio::time::timeout_at(deadline, rx.recv_many(batch, ENOUGH - seen)).await {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

async fn commit(store: &Store, batch: Vec<Pending>) {
    let entries: Vec<&AuditEntry> = batch.iter().flat_map(|p| p.entries.iter()).collect();
    let started = std::time::Instant::now();
    let mut result = store.insert_audit(&entries).await;
    // One quick retry covers a dropped connection; a database that stays down is reported to
    // every waiting caller, who then refuses to act unaudited.
    if result.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = store.insert_audit(&entries).await;
    }
    metrics::histogram!("pantheon_audit_batch_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("pantheon_audit_batch_rows").record(entries.len() as f64);
    let result = result.map_err(|e| {
        tracing::error!(error = %e, rows = entries.len(), "audit write failed");
        AuditError(e.to_string())
    });
    for pending in batch {
        if let Some(done) = pending.done {
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn pending(waits: bool) -> Pending {
        Pending {
            entries: vec![AuditEntry::new("c", "U1", "command", Outcome::Received)],
            done: waits.then(|| oneshot::channel().0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rows_nobody_waits_for_are_committed_together_after_the_linger() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = vec![pending(false)];
        let started = Instant::now();
        let more = tokio::spawn(async move {
            tokio::time::sleep(LINGER / 4).await;
            tx.send(pending(false)).await.unwrap();
            tx.send(pending(false)).await.unwrap();
            tokio::time::sleep(LINGER * 2).await;
            tx.send(pending(false)).await.unwrap();
        });
        assert!(!linger(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), 3, "the two sent within the linger joined");
        assert_eq!(started.elapsed(), LINGER);
        more.await.unwrap();
        assert_eq!(rx.len(), 1, "the late one waits for the next batch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_someone_waits_for_ends_the_linger_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = vec![pending(false)];
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 4).await;
            tx.send(pending(true)).await.unwrap();
            // Kept open, so only the waiter can end the linger early.
            tokio::time::sleep(LINGER * 10).await;
            drop(tx);
        });
        assert!(!linger(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), 2);
        assert_eq!(started.elapsed(), LINGER / 4);

        // A batch that starts with a waiter does not linger at all.
        let (_tx, mut rx) = mpsc::channel(16);
        let mut batch = vec![pending(true)];
        let started = Instant::now();
        assert!(!linger(&mut rx, &mut batch).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_batch_or_a_closed_channel_ends_the_linger() {
        let (tx, mut rx) = mpsc::channel(ENOUGH + 1);
        for _ in 0..ENOUGH {
            tx.send(pending(false)).await.unwrap();
        }
        let mut batch = vec![pending(false)];
        let started = Instant::now();
        assert!(!linger(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), ENOUGH);
        assert_eq!(rx.len(), 1, "one is left for the next batch");
        assert_eq!(started.elapsed(), Duration::ZERO);

        drop(tx);
        let mut batch = vec![pending(false)];
        assert!(linger(&mut rx, &mut batch).await, "the channel closed");
        assert_eq!(batch.len(), 2, "what was left still joined");
    }
}
