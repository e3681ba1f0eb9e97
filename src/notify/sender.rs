//! The outbox sender: posts queued messages through the chat port, about one per second per
//! channel, coalescing waiting messages with the same key into one; honours `Retry-After` on
//! 429, retries 5xx and network failures with backoff, and records each message as sent,
//! merged or failed. Rows live in the database, so nothing is lost across a restart; a row
//! claimed by a sender that dies is tried again when its claim lapses.

use std::{collections::HashMap, sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::sync::watch;

use super::Notifications;
use crate::{
    chat::{self, Message},
    clients::vendor::{ErrorKind, VendorError},
    domain::audit::{AuditEntry, Outcome},
};
use crate::{domain::outbox::OutboxRow, store::StoreError};

/// How long claimed rows stay hidden from other senders.
const CLAIM: time::Duration = time::Duration::seconds(30);
/// One message per channel per this long (Slack's documented pace for posting to a channel).
const PER_CHANNEL: time::Duration = time::Duration::seconds(1);
const BATCH: i64 = 200;

pub async fn run(outbox: Arc<Notifications>, mut stop: watch::Receiver<bool>) {
    let mut pace = Pace::default();
    let mut warned = false;
    while !*stop.borrow() {
        if !outbox.notices.configured() {
            if !warned {
                tracing::warn!(
                    "SLACK_BOT_TOKEN is not set: notifications wait in the outbox until it is"
                );
                warned = true;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        match send_due(&outbox, &mut pace).await {
            Ok(0) => {
                let now = OffsetDateTime::now_utc();
                let wait = match outbox.store.next_outbox_due().await {
                    Ok(Some(due)) => (due - now)
                        .clamp(time::Duration::milliseconds(5), time::Duration::seconds(1)),
                    _ => time::Duration::seconds(1),
                };
                tokio::select! {
                    () = outbox.ready.notified() => {}
                    () = tokio::time::sleep(wait.try_into().unwrap_or(Duration::from_secs(1))) => {}
                    _ = stop.changed() => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "outbox claim failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// When each channel may next be posted to.
#[derive(Debug, Default)]
pub struct Pace {
    next_allowed: HashMap<String, OffsetDateTime>,
}

/// One round of the sender: claim what is due and post it, per channel in order, one message
/// per channel now and the rest when the channel's pace allows. How many rows were claimed
/// (0: nothing was due). The sender loop repeats this; tests call it to send without waiting.
pub async fn send_due(outbox: &Arc<Notifications>, pace: &mut Pace) -> Result<usize, StoreError> {
    let now = OffsetDateTime::now_utc();
    let rows = outbox.store.claim_outbox(now, now + CLAIM, BATCH).await?;
    let claimed = rows.len();
    let mut by_channel: Vec<(String, Vec<OutboxRow>)> = Vec::new();
    for row in rows {
        match by_channel.iter_mut().find(|(c, _)| *c == row.channel) {
            Some((_, list)) => list.push(row),
            None => by_channel.push((row.channel.clone(), vec![row])),
        }
    }
    let sends = by_channel.into_iter().map(|(channel, rows)| {
        let allowed = pace.next_allowed.get(&channel).copied();
        let outbox = outbox.clone();
        async move {
            let next = send_channel(&outbox, &channel, rows, allowed).await;
            (channel, next)
        }
    });
    for (channel, next) in futures_join_all(sends).await {
        pace.next_allowed.insert(channel, next);
    }
    pace.next_allowed
        .retain(|_, t| *t > OffsetDateTime::now_utc() - time::Duration::minutes(5));
    Ok(claimed)
}

/// Run the per-channel sends concurrently (each channel is independent).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            results.push(v);
        }
    }
    results
}

/// Send the first message (or coalesced group) of one channel; put the rest back for later.
/// Returns when the channel may be posted to next.
async fn send_channel(
    outbox: &Notifications,
    channel: &str,
    rows: Vec<OutboxRow>,
    allowed: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let ids = |rows: &[OutboxRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    if let Some(at) = allowed.filter(|at| *at > now) {
        release(outbox, &ids(&rows), at, None, false).await;
        return at;
    }
    // First, rows a sender had begun posting when it died (or that met an answer that did not
    // say whether Slack took them): settle exactly the rows of that message if it is in the
    // channel, and only then post anything.
    let rows = match recover(outbox, channel, rows, now).await {
        Recovered::Settled => return now,
        Recovered::Go(rows) => rows,
    };
    // Rows come highest priority first. An incident goes alone, ahead of the rest. Otherwise
    // the first row and every waiting row with its coalescing key go as one message; and when
    // more are waiting for this channel than it can take at one a second, they all go as one
    // summary instead of queueing for minutes.
    let threshold = outbox.policy.summarize_after;
    let ordinary = rows.iter().filter(|r| r.priority == 0).count();
    let key = rows[0].coalesce_key.clone();
    let (unit, rest, summary): (Vec<OutboxRow>, Vec<OutboxRow>, bool) =
        if rows[0].priority == 0 && threshold > 0 && ordinary >= threshold {
            let (unit, rest) = rows.into_iter().partition(|r| r.priority == 0);
            (unit, rest, true)
        } else if let Some(k) = &key {
            let (unit, rest) = rows
                .into_iter()
                .partition(|r| r.coalesce_key.as_ref() == Some(k));
            (unit, rest, false)
        } else {
            let mut rows = rows;
            let rest = rows.split_off(1);
            (rows, rest, false)
        };
    if !rest.is_empty() {
        release(outbox, &ids(&rest), now + PER_CHANNEL, None, false).await;
    }
    let message = if summary {
        metrics::counter!("pantheon_outbox_summaries_total").increment(1);
        compose_summary(&unit)
    } else {
        compose(&unit)
    };
    let first = unit[0].id;
    let merged: Vec<i64> = unit[1..].iter().map(|r| r.id).collect();
    let attempts = unit.iter().map(|r| r.attempts).max().unwrap_or(0);
    let started = std::time::Instant::now();
    let post = new_post_token();
    if let Err(e) = outbox
        .store
        .outbox_posting(&ids(&unit), Some(post), OffsetDateTime::now_utc())
        .await
    {
        // Without the mark a crash during the post would go unnoticed: try again later.
        tracing::error!(error = %e, "outbox rows not marked as posting; trying again later");
        return now + PER_CHANNEL;
    }
    match outbox
        .notices
        .post_notice(channel, &message, first, post)
        .await
    {
        Ok(posted) => {
            metrics::counter!("pantheon_outbox_sent_total").increment(1);
            metrics::counter!("pantheon_outbox_merged_total").increment(merged.len() as u64);
            for r in &unit {
                let age = (OffsetDateTime::now_utc() - r.created_at)
                    .as_seconds_f64()
                    .max(0.0);
                metrics::histogram!("pantheon_outbox_delivery_seconds").record(age);
            }
            let detail = if merged.is_empty() {
                format!("posted to {channel} (ts {})", posted.at)
            } else {
                format!(
                    "posted {} messages as one to {channel} (ts {})",
                    unit.len(),
                    posted.at
                )
            };
            let entry = AuditEntry::new(
                &format!("outbox-{first}"),
                "notifier",
                "notify.post",
                Outcome::Succeeded,
            )
            .channel(channel)
            .detail(detail)
            .duration(started.elapsed());
            if let Err(e) = outbox
                .store
                .outbox_sent(
                    first,
                    &merged,
                    &posted.at,
                    OffsetDateTime::now_utc(),
                    vec![entry],
                )
                .await
            {
                tracing::error!(error = %e, "outbox row posted but not marked sent");
            }
            OffsetDateTime::now_utc() + PER_CHANNEL
        }
        Err(VendorError {
            kind: ErrorKind::RateLimited { resets },
            ..
        }) => {
            let at = resets
                .unwrap_or(now + time::Duration::seconds(30))
                .max(now + PER_CHANNEL);
            tracing::info!(channel, retry_at = %at, "Slack rate limit; waiting as told");
            metrics::counter!("pantheon_outbox_rate_limited_total").increment(1);
            // A 429 means Slack did not take it: no need to look for it next time.
            if let Err(e) = outbox.store.outbox_posting(&ids(&unit), None, now).await {
                tracing::warn!(error = %e, "could not clear the posting marks");
            }
            release(outbox, &ids(&unit), at, Some("rate limited (429)"), false).await;
            at
        }
        Err(e) if transient(&e) => {
            let attempt = attempts + 1;
            if attempt >= outbox.policy.max_attempts {
                give_up(outbox, channel, &unit, &e.to_string()).await;
            } else {
                // 1 s, 2 s, 4 s, … : the rows behind this one in its channel wait for it (a
                // channel reads in order), so the first retries come soon.
                let backoff = time::Duration::seconds(1i64 << (attempt - 1).clamp(0, 8))
                    .min(time::Duration::minutes(5));
                tracing::warn!(channel, error = %e, attempt, "posting failed; will retry");
                release(
                    outbox,
                    &ids(&unit),
                    now + backoff,
                    Some(&e.to_string()),
                    true,
                )
                .await;
            }
            now + PER_CHANNEL
        }
        Err(e) => {
            give_up(outbox, channel, &unit, &e.to_string()).await;
            now + PER_CHANNEL
        }
    }
}

enum Recovered {
    /// A message found in the channel settled its rows; the rest were put back.
    Settled,
    /// Nothing to settle: go on with these rows.
    Go(Vec<OutboxRow>),
}

/// Rows claimed with a "maybe posted" mark: look for the message they were posted in (each try
/// carries a token of its own as message metadata). Found: every pending row posted in it is
/// recorded as sent, the others put back. Not found: those rows' marks are cleared. Not knowable
/// (no `channels:history`, Slack down): they go on, and may appear twice. Rows marked for another
/// post wait for the next round, so each round settles one post.
async fn recover(
    outbox: &Notifications,
    channel: &str,
    rows: Vec<OutboxRow>,
    now: OffsetDateTime,
) -> Recovered {
    let Some(post) = rows
        .iter()
        .find(|r| r.maybe_posted)
        .and_then(|r| r.posting_as)
    else {
        return Recovered::Go(rows);
    };
    let (marked, others): (Vec<OutboxRow>, Vec<OutboxRow>) = rows
        .into_iter()
        .partition(|r| r.maybe_posted && r.posting_as == Some(post));
    let (later, others): (Vec<OutboxRow>, Vec<OutboxRow>) =
        others.into_iter().partition(|r| r.maybe_posted);
    if !later.is_empty() {
        let ids: Vec<i64> = later.iter().map(|r| r.id).collect();
        release(outbox, &ids, now, None, false).await;
    }
    let oldest =
        marked.iter().map(|r| r.created_at).min().unwrap_or(now) - time::Duration::minutes(1);
    match outbox.notices.find_notice(channel, oldest, post).await {
        Ok(Some(ts)) => {
            // Every row of that post, claimed now or not.
            let ids = match outbox.store.pending_posted_as(post).await {
                Ok(ids) if !ids.is_empty() => ids,
                Ok(_) => marked.iter().map(|r| r.id).collect(),
                Err(e) => {
                    tracing::error!(error = %e, "outbox rows of a found post not read");
                    marked.iter().map(|r| r.id).collect()
                }
            };
            metrics::counter!("pantheon_outbox_repeats_avoided_total").increment(1);
            tracing::info!(
                channel,
                ts,
                rows = ids.len(),
                "notification already in the channel; not posted again"
            );
            let entry = AuditEntry::new(
                &format!("outbox-{}", ids[0]),
                "notifier",
                "notify.post",
                Outcome::Succeeded,
            )
            .channel(channel)
            .detail(format!(
                "already in {channel} (ts {ts}), posted before a restart: not posted again"
            ));
            if let Err(e) = outbox
                .store
                .outbox_sent(
                    ids[0],
                    &ids[1..],
                    &ts,
                    OffsetDateTime::now_utc(),
                    vec![entry],
                )
                .await
            {
                tracing::error!(error = %e, "outbox rows found posted but not marked sent");
            }
            let rest: Vec<i64> = others
                .iter()
                .map(|r| r.id)
                .filter(|id| !ids.contains(id))
                .collect();
            if !rest.is_empty() {
                release(outbox, &rest, now, None, false).await;
            }
            Recovered::Settled
        }
        Ok(None) => {
            let ids = outbox
                .store
                .pending_posted_as(post)
                .await
                .unwrap_or_else(|_| marked.iter().map(|r| r.id).collect());
            if let Err(e) = outbox.store.outbox_posting(&ids, None, now).await {
                tracing::warn!(error = %e, "could not clear the posting marks");
            }
            let mut rows: Vec<OutboxRow> = marked
                .into_iter()
                .map(|mut r| {
                    r.maybe_posted = false;
                    r.posting_as = None;
                    r
                })
                .chain(others)
                .collect();
            rows.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
            Recovered::Go(rows)
        }
        Err(e) => {
            metrics::counter!("pantheon_outbox_possible_repeats_total").increment(1);
            tracing::warn!(channel, error = %e, "cannot check whether a notification was posted before; posting it (it may appear twice)");
            let mut rows: Vec<OutboxRow> = marked.into_iter().chain(others).collect();
            rows.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
            Recovered::Go(rows)
        }
    }
}

/// A token for one try at posting: unique, so a message found later in the channel is this try
/// and no other.
fn new_post_token() -> i64 {
    i64::try_from(uuid::Uuid::new_v4().as_u64_pair().0 >> 1).unwrap_or(1)
}

fn transient(e: &VendorError) -> bool {
    matches!(
        e.kind,
        ErrorKind::Server { .. }
            | ErrorKind::Timeout
            | ErrorKind::Unreachable
            | ErrorKind::Malformed { .. }
    )
}

async fn release(
    outbox: &Notifications,
    ids: &[i64],
    at: OffsetDateTime,
    error: Option<&str>,
    count_attempt: bool,
) {
    if let Err(e) = outbox
        .store
        .outbox_retry(ids, at, error, count_attempt)
        .await
    {
        tracing::error!(error = %e, "outbox rows not rescheduled; their claim will lapse");
    }
}

async fn give_up(outbox: &Notifications, channel: &str, unit: &[OutboxRow], error: &str) {
    tracing::error!(
        channel,
        error,
        rows = unit.len(),
        "notification not delivered"
    );
    metrics::counter!("pantheon_outbox_failed_total").increment(unit.len() as u64);
    let entries = unit
        .iter()
        .map(|r| {
            AuditEntry::new(
                &format!("outbox-{}", r.id),
                "notifier",
                "notify.post",
                Outcome::Failed,
            )
            .channel(channel)
            .detail(format!("not delivered: {error}"))
        })
        .collect();
    let ids: Vec<i64> = unit.iter().map(|r| r.id).collect();
    if let Err(e) = outbox
        .store
        .outbox_failed(&ids, error, OffsetDateTime::now_utc(), entries)
        .await
    {
        tracing::error!(error = %e, "outbox rows not marked failed");
    }
}

/// Many waiting rows as one message: their first lines, and why they come together.
fn compose_summary(unit: &[OutboxRow]) -> Message {
    let title = format!(
        "{} notifications arrived faster than Slack takes messages here (one a second per channel), so they come as one",
        unit.len()
    );
    let mut blocks: Vec<chat::Block> = vec![chat::section(&format!("*{}*", chat::escape(&title)))];
    let lines: Vec<String> = unit
        .iter()
        .map(|r| format!("• {}", r.text.lines().next().unwrap_or_default()))
        .collect();
    let shown: Vec<String> = lines.iter().take(chat::MAX_LIST_LINES).cloned().collect();
    blocks.extend(chat::sections_of_lines(&shown));
    if lines.len() > shown.len() {
        blocks.push(chat::context(&format!(
            "… and {} more",
            lines.len() - shown.len()
        )));
    }
    Message::blocks(
        format!("{}\n{}", chat::escape(&title), shown.join("\n")),
        blocks,
    )
}

/// One row as it was; several as one message under their label ("5 pushes to acme/api main").
fn compose(unit: &[OutboxRow]) -> Message {
    if let [one] = unit {
        return Message::blocks(one.text.clone(), one.blocks.clone());
    }
    let label = unit[0]
        .coalesce_label
        .clone()
        .unwrap_or_else(|| "updates".to_owned());
    let title = format!("{} {label}", unit.len());
    let mut blocks: Vec<chat::Block> = vec![chat::section(&format!("*{}*", chat::escape(&title)))];
    let lines: Vec<String> = unit
        .iter()
        .flat_map(|r| r.text.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let shown: Vec<String> = lines.iter().take(chat::MAX_LIST_LINES).cloned().collect();
    blocks.extend(chat::sections_of_lines(&shown));
    if lines.len() > shown.len() {
        blocks.push(chat::context(&format!(
            "… and {} more lines",
            lines.len() - shown.len()
        )));
    }
    Message::blocks(
        format!("{}\n{}", chat::escape(&title), shown.join("\n")),
        blocks,
    )
}
