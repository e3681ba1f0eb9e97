//! Notifications: verified webhooks become stored deliveries (de-duplicated by delivery id),
//! routed to channels, and queued in the outbox that [`sender`] posts from.

pub mod format;
pub mod payload;
pub mod sender;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;

use crate::{
    chat::ChatPort,
    clients::zendesk::Zendesk,
    config::NotificationsSection,
    deliveries::DeliveryWriter,
    domain::{
        audit::{AuditEntry, Outcome},
        catalogue::Catalogue,
        outbox::{Delivery, NewOutbox, Recorded},
    },
    store::{Store, StoreError},
};
use webhook::Webhook;

/// The notification side, on its own: where deliveries are stored (with group commit), where
/// their messages go (the routes), the outbox they wait in, the chat port the [`sender`] posts
/// through, and how it paces, summarises and gives up. Only this module and the sender reach
/// inside.
pub struct Notifications {
    store: Store,
    deliveries: DeliveryWriter,
    /// The routes.
    catalogue: Arc<Catalogue>,
    /// For links to tickets named in a notification, when Zendesk is configured.
    zendesk: Option<Zendesk>,
    /// The chat platform as the sender uses it: no retries of its own, since the sender paces
    /// and retries per channel.
    notices: Arc<dyn ChatPort>,
    /// Woken when messages are queued.
    ready: tokio::sync::Notify,
    policy: NotificationsSection,
}

impl Notifications {
    pub fn new(
        store: Store,
        deliveries: DeliveryWriter,
        catalogue: Arc<Catalogue>,
        zendesk: Option<Zendesk>,
        notices: Arc<dyn ChatPort>,
        policy: NotificationsSection,
    ) -> Self {
        Self {
            store,
            deliveries,
            catalogue,
            zendesk,
            notices,
            ready: tokio::sync::Notify::new(),
            policy,
        }
    }

    /// Store a delivery (its messages and audit rows with it), once: a delivery id seen before
    /// is [`Recorded::Duplicate`]. Waits until it is committed.
    pub async fn record(&self, delivery: Delivery) -> Result<Recorded, String> {
        self.deliveries.record(delivery).await
    }

    /// Store a verified delivery and queue its messages, in one transaction.
    pub async fn accept(
        &self,
        webhook: &Webhook,
        body: &[u8],
    ) -> Result<(Recorded, usize), StoreError> {
        let source = webhook.source();
        let delivery_id = webhook.delivery_id();
        let payload = webhook.payload();
        let zendesk = self.zendesk.as_ref();
        let formatted = webhook.format(|id| {
            let id: u64 = id.parse().ok()?;
            zendesk.map(|z| z.ticket_link(id))
        });
        let now = OffsetDateTime::now_utc();
        let channels = self.catalogue.channels(&formatted.facts);
        // Events that come in bursts wait a moment so a burst becomes one message.
        let hold = if formatted.coalesce.is_some() {
            self.policy.coalesce_window
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
        let entry =
            AuditEntry::new(delivery_id, source, "webhook", Outcome::Received).detail(detail);
        let count = messages.len();
        let recorded = self
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
            self.queued();
        }
        Ok((recorded, count))
    }

    /// Tell the sender that messages were queued.
    pub fn queued(&self) {
        self.ready.notify_one();
    }
}

/// The priority of incident notifications (PagerDuty): posted ahead of anything else waiting for
/// their channel, and never summarised into a burst.
pub const INCIDENT_PRIORITY: i16 = 1;

pub fn body_hash(body: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(body))
}
