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

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::{
    domain::audit::AuditEntry,
    store::{Claiming, Store},
};

#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit trail could not be written: {0}")]
pub struct AuditError(pub String);

/// Whether a request's claim (its signature) was new when its rows were committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Seen for the first time: its own rows were stored.
    First,
    /// Seen before, here or on another replica: a replay, recorded as such.
    Replay,
}

/// A request's claim on its key, and the rows to store instead if the key was taken.
struct Claim {
    key: String,
    replayed: Vec<AuditEntry>,
}

/// What the writer hands back: the result, and the rows it stored (or tried to), for the log.
type Done = oneshot::Sender<(Result<Claimed, AuditError>, Vec<AuditEntry>)>;

struct Pending {
    entries: Vec<AuditEntry>,
    claim: Option<Claim>,
    done: Option<Done>,
    /// Rows of a request about to act, not yet acted on: if its caller stops waiting before
    /// their commit begins, it has answered "try again" and they are not written.
    before_acting: bool,
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

    /// Durably store `entries` and log them, returning once they are committed.
    pub async fn record(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        self.commit(entries, None).await.map(drop)
    }

    pub async fn record_one(&self, entry: AuditEntry) -> Result<(), AuditError> {
        self.record(vec![entry]).await
    }

    /// Store a request's rows together with its claim on `key` (a signature), in one
    /// transaction, before the request acts. If the key was claimed before (within the replay
    /// window, by any replica), `replayed` is stored instead and the answer is
    /// [`Claimed::Replay`]. Without a key, only the rows. If the caller stops waiting before the
    /// commit begins (it answered "try again" and will not act), they are not written; a commit
    /// already under way may still land.
    pub async fn record_claimed(
        &self,
        key: Option<String>,
        entries: Vec<AuditEntry>,
        replayed: Vec<AuditEntry>,
    ) -> Result<Claimed, AuditError> {
        let claim = key.map(|key| Claim { key, replayed });
        self.commit_as(entries, claim, true).await
    }

    async fn commit(
        &self,
        entries: Vec<AuditEntry>,
        claim: Option<Claim>,
    ) -> Result<Claimed, AuditError> {
        self.commit_as(entries, claim, false).await
    }

    async fn commit_as(
        &self,
        entries: Vec<AuditEntry>,
        claim: Option<Claim>,
        before_acting: bool,
    ) -> Result<Claimed, AuditError> {
        let (done, wait) = oneshot::channel();
        let sent = self
            .tx
            .send(Pending {
                entries,
                claim,
                done: Some(done),
                before_acting,
            })
            .await;
        if let Err(mpsc::error::SendError(pending)) = sent {
            log_entries(&pending.entries);
            return Err(stopped());
        }
        let (result, stored) = wait.await.map_err(|_| stopped())?;
        // Logged once the outcome is known, in the caller's span (its correlation id), and
        // whether or not the database took them: the log is the trace of last resort.
        log_entries(&stored);
        result
    }

    /// Queue `entries` if there is room now, without waiting for room or for the commit (they
    /// are logged either way). For a row that must not hold up an answer already late.
    pub fn try_submit(&self, entries: Vec<AuditEntry>) {
        log_entries(&entries);
        let pending = Pending {
            entries,
            claim: None,
            done: None,
            before_acting: false,
        };
        if self.tx.try_send(pending).is_err() {
            tracing::warn!("the audit queue is full; the row above is in the log only");
        }
    }

    /// Log and queue `entries` for the next commit without waiting for it. Only for steps
    /// that change nothing; a failed commit is logged by the writer.
    pub async fn submit(&self, entries: Vec<AuditEntry>) -> Result<(), AuditError> {
        log_entries(&entries);
        self.tx
            .send(Pending {
                entries,
                claim: None,
                done: None,
                before_acting: false,
            })
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
/// rows on their own spends most of the writer's time on commits: at 10,000 commands a
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
        gather(&mut rx, &mut batch).await;
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

/// Let the requests that are ready to run (their bytes are in, on this runtime) reach the queue
/// before the batch is taken: a commit ends with more requests waiting in the sockets than in the
/// queue, since the database's thread shares their cores. Yielding once lets the runtime poll
/// its sockets and run those requests, so they join this commit instead of each starting a small
/// one of its own. On an idle server nothing else is ready and this returns at once.
async fn gather(rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
    if batch.len() >= ENOUGH {
        return;
    }
    tokio::task::yield_now().await;
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
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

/// Commit one batch in one transaction. Claims are taken first; each request whose key was
/// already taken (or taken earlier in this batch) has its `replayed` rows stored instead.
///
/// Rows of a request that stopped waiting before acting are left out while their commit has not
/// begun: it has answered "try again" and done nothing (a slow or unreachable database holds a
/// batch for seconds, and an acknowledgement waits at most [`crate::dispatch::AUDIT_PATIENCE`]).
/// Rows of steps already done are written whoever waits.
async fn commit(store: &Store, mut batch: Vec<Pending>) {
    batch.retain(still_awaited);
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let now = OffsetDateTime::now_utc();
    let mut result = try_commit(store, &batch, now).await;
    // One quick retry covers a dropped connection; a database that stays down is reported to
    // every waiting caller, who then refuses to act unaudited. A try that failed usually stored
    // nothing; but if only its reply was lost, its claims are there with our timestamp, and a
    // second try would find them all "taken" and refuse every request as a replay: look first.
    if result.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let keys = claim_keys(&batch);
        let committed = if keys.is_empty() {
            None
        } else {
            store.claims_committed_at(&keys, now).await.ok().flatten()
        };
        result = match committed {
            Some(fresh) => Ok(fresh),
            None => {
                batch.retain(still_awaited);
                if batch.is_empty() {
                    return;
                }
                try_commit(store, &batch, now).await
            }
        };
    }
    finish(batch, result, started);
}

/// Whether a submission is still to be written: it records what happened whoever waits, or its
/// caller, about to act, still waits.
fn still_awaited(p: &Pending) -> bool {
    !p.before_acting || p.done.as_ref().is_none_or(|done| !done.is_closed())
}

fn claim_keys(batch: &[Pending]) -> Vec<&str> {
    batch
        .iter()
        .filter_map(|p| p.claim.as_ref().map(|c| c.key.as_str()))
        .collect()
}

/// One try at storing `batch`: which of its claims were fresh (none without claims).
async fn try_commit(
    store: &Store,
    batch: &[Pending],
    now: OffsetDateTime,
) -> Result<Vec<bool>, crate::store::StoreError> {
    if batch.iter().all(|p| p.claim.is_none()) {
        let entries: Vec<&AuditEntry> = batch.iter().flat_map(|p| p.entries.iter()).collect();
        store.insert_audit(&entries).await.map(|()| Vec::new())
    } else {
        store.insert_audit_claiming(&claiming(batch), now).await
    }
}

/// Count, log and answer every waiting caller of a batch.
fn finish(
    batch: Vec<Pending>,
    result: Result<Vec<bool>, crate::store::StoreError>,
    started: std::time::Instant,
) {
    let claims = batch.iter().any(|p| p.claim.is_some());
    let rows = match &result {
        Ok(fresh) if claims => Claiming::stored(&claiming(&batch), fresh).count(),
        _ => batch.iter().map(|p| p.entries.len()).sum(),
    };
    metrics::histogram!("pantheon_audit_batch_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("pantheon_audit_batch_rows").record(rows as f64);
    let result = result.map_err(|e| {
        tracing::error!(error = %e, rows, "audit write failed");
        AuditError(e.to_string())
    });
    let mut fresh = result.as_ref().ok().map(|f| f.iter().copied());
    for pending in batch {
        let claimed = match (&pending.claim, fresh.as_mut()) {
            (Some(_), Some(flags)) => {
                if flags.next().unwrap_or(true) {
                    Claimed::First
                } else {
                    Claimed::Replay
                }
            }
            _ => Claimed::First,
        };
        let Some(done) = pending.done else { continue };
        let stored = match (claimed, pending.claim) {
            (Claimed::Replay, Some(claim)) => claim.replayed,
            _ => pending.entries,
        };
        let _ = done.send((result.clone().map(|_| claimed), stored));
    }
}

/// Each request of a batch as the store takes it: its key, its rows, and its replay rows.
fn claiming(batch: &[Pending]) -> Vec<Claiming<'_>> {
    batch
        .iter()
        .map(|p| Claiming {
            key: p.claim.as_ref().map(|c| c.key.as_str()),
            rows: &p.entries,
            replayed: p.claim.as_ref().map_or(&[], |c| &c.replayed),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::Outcome;
    use tokio::time::Instant;

    fn pending(waits: bool) -> Pending {
        Pending {
            entries: vec![AuditEntry::new("c", "U1", "command", Outcome::Received)],
            claim: None,
            done: waits.then(|| oneshot::channel().0),
            before_acting: false,
        }
    }

    #[test]
    fn only_rows_of_a_request_that_gave_up_before_acting_are_dropped() {
        let (done, waiting) = oneshot::channel();
        let mut before = pending(false);
        before.done = Some(done);
        before.before_acting = true;
        assert!(still_awaited(&before), "its caller still waits");
        drop(waiting);
        assert!(
            !still_awaited(&before),
            "it answered \"try again\" and will not act"
        );
        // A step already done is written whoever waits for it.
        let (done, waiting) = oneshot::channel();
        let mut after = pending(false);
        after.done = Some(done);
        drop(waiting);
        assert!(still_awaited(&after));
        assert!(still_awaited(&pending(false)));
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
