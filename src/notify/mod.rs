//! Notifications: verified webhooks become stored deliveries (de-duplicated by delivery id),
//! routed to channels, and queued in the outbox that [`sender`] posts from.

pub mod format;
pub mod sender;

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    app::Services,
    domain::{
        audit::{AuditEntry, Outcome},
        outbox::{Delivery, NewOutbox, Recorded},
    },
    store::StoreError,
};
use format::Formatted;

/// The priority of incident notifications (PagerDuty): posted ahead of anything else waiting for
/// their channel, and never summarised into a burst.
pub const INCIDENT_PRIORITY: i16 = 1;

type Pending = (
    Delivery,
    tokio::sync::oneshot::Sender<Result<Recorded, String>>,
);

/// Group commit for deliveries: callers wait until their delivery is committed, and one writer
/// commits whatever queued meanwhile in one transaction, so a burst of webhooks costs a few
/// commits rather than one each.
#[derive(Clone)]
pub struct DeliveryWriter {
    tx: tokio::sync::mpsc::Sender<Pending>,
}

impl DeliveryWriter {
    pub fn spawn(store: crate::store::Store) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(4096);
        let task = tokio::spawn(async move {
            let mut batch: Vec<Pending> = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                let (deliveries, waiters): (Vec<Delivery>, Vec<_>) = batch.drain(..).unzip();
                for d in &deliveries {
                    crate::audit::log_entries(&d.audit);
                }
                match store.record_deliveries(&deliveries).await {
                    Ok(recorded) => {
                        for (done, r) in waiters.into_iter().zip(recorded) {
                            let _ = done.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        // One bad delivery (or a deadlock with another replica) must not fail
                        // the others: try each on its own.
                        tracing::warn!(error = %e, deliveries = deliveries.len(), "batch not stored; storing one by one");
                        for (d, done) in deliveries.into_iter().zip(waiters) {
                            let one = store
                                .record_deliveries(std::slice::from_ref(&d))
                                .await
                                .map(|mut r| r.remove(0))
                                .map_err(|e| e.to_string());
                            let _ = done.send(one);
                        }
                    }
                }
            }
        });
        (Self { tx }, task)
    }

    /// Store one delivery; returns once it is committed.
    pub async fn record(&self, delivery: Delivery) -> Result<Recorded, String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send((delivery, done))
            .await
            .map_err(|_| "the delivery writer has stopped".to_owned())?;
        wait.await
            .map_err(|_| "the delivery writer has stopped".to_owned())?
    }
}

pub fn body_hash(body: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(body))
}

/// Store a verified delivery and queue its messages, in one transaction.
pub async fn accept(
    services: &Services,
    source: &str,
    delivery_id: &str,
    body: &[u8],
    formatted: Formatted,
    payload: &Value,
) -> Result<(Recorded, usize), StoreError> {
    let now = OffsetDateTime::now_utc();
    let channels = services.catalogue.channels(&formatted.facts);
    // Events that come in bursts wait a moment so a burst becomes one message.
    let hold = if formatted.coalesce.is_some() {
        services.config.notifications.coalesce_window
    } else {
        Duration::ZERO
    };
    let due = now + time::Duration::try_from(hold).unwrap_or(time::Duration::ZERO);
    let messages: Vec<NewOutbox> = channels
        .iter()
        .map(|channel| NewOutbox {
            channel: channel.clone(),
            text: formatted.text.clone(),
            blocks: formatted.blocks.clone(),
            coalesce_key: formatted.coalesce.as_ref().map(|(k, _)| k.clone()),
            coalesce_label: formatted.coalesce.as_ref().map(|(_, l)| l.clone()),
            next_attempt_at: due,
            priority: if source == "pagerduty" {
                INCIDENT_PRIORITY
            } else {
                0
            },
        })
        .collect();
    let kind = formatted.facts.kind.clone();
    let detail = if channels.is_empty() {
        format!("{source} {kind} ({delivery_id}): stored, no route")
    } else {
        format!("{source} {kind} ({delivery_id}) → {}", channels.join(", "))
    };
    let entry = AuditEntry::new(delivery_id, source, "webhook", Outcome::Received).detail(detail);
    let count = messages.len();
    let recorded = services
        .deliveries
        .record(Delivery {
            source: source.to_owned(),
            delivery_id: delivery_id.to_owned(),
            body_sha256: Some(body_hash(body)),
            event: kind.clone(),
            payload: payload.clone(),
            now,
            messages,
            audit: vec![entry],
        })
        .await
        .map_err(StoreError::Unavailable)?;
    let label = if formatted.facts.known {
        kind.as_str()
    } else {
        "unknown"
    };
    let result = match recorded {
        Recorded::New { .. } => "new",
        Recorded::Duplicate => "duplicate",
    };
    metrics::counter!("pantheon_webhooks_total", "source" => source.to_owned(), "event" => label.to_owned(), "result" => result).increment(1);
    if !formatted.facts.known {
        metrics::counter!("pantheon_webhooks_unknown_total", "source" => source.to_owned())
            .increment(1);
    }
    if matches!(recorded, Recorded::New { .. }) && count > 0 {
        services.outbox_ready.notify_one();
    }
    Ok((recorded, count))
}
