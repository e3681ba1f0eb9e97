//! Housekeeping the store needs: claims on request signatures are forgotten once they are past
//! the replay window, and old rows go as `[retention]` says (webhook deliveries after 30 days,
//! job output after 90, the audit trail never unless configured). A loop runs [`run_once`]
//! every minute; tests call it directly.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{config::Keep, services::Services, signature::MAX_CLOCK_SKEW_SECS, store::Prunable};

/// How long a signature is remembered, counted from when it was signed: a copy is refused by
/// verification once its timestamp is more than the clock skew old. Five minutes more allow for
/// replicas whose clocks (the pruning one's, and the verifying one's) disagree by that much.
pub const CLAIM_WINDOW: time::Duration = time::Duration::seconds(MAX_CLOCK_SKEW_SECS + 300);

/// How long a Socket Mode delivery's id is remembered from when it first arrived: Slack
/// redelivers an unacknowledged event for up to a few minutes; an hour is ample.
pub const SOCKET_CLAIM_WINDOW: time::Duration = time::Duration::hours(1);

/// One round of upkeep at `now`.
pub async fn run_once(services: &Services, now: OffsetDateTime) {
    match services
        .store
        .prune_socket_claims(now - SOCKET_CLAIM_WINDOW)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(pruned = n, "forgot Socket Mode delivery ids"),
        Err(e) => tracing::warn!(error = %e, "pruning Socket Mode delivery ids failed"),
    }
    match services.store.prune_claims(now - CLAIM_WINDOW).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            pruned = n,
            "forgot request signatures past the replay window"
        ),
        Err(e) => tracing::warn!(error = %e, "pruning request signatures failed"),
    }
    let retention = &services.config.retention;
    let rounds = [
        (
            Prunable::Outbox,
            retention.webhook_deliveries,
            "settled notifications",
        ),
        (
            Prunable::Deliveries,
            retention.webhook_deliveries,
            "webhook payloads",
        ),
        (Prunable::JobLogs, retention.job_logs, "job log lines"),
        (Prunable::Audit, retention.audit_log, "audit rows"),
    ];
    for (what, keep, name) in rounds {
        let Keep::For(age) = keep else { continue };
        let Ok(age) = time::Duration::try_from(age) else {
            continue;
        };
        match services.store.prune(what, now - age).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("pantheon_retention_deleted_total", "what" => name).increment(n);
                tracing::info!(deleted = n, what = name, kept = %keep, "retention");
            }
            Err(e) => tracing::warn!(error = %e, what = name, "retention failed"),
        }
    }
}

pub async fn run(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        run_once(&services, OffsetDateTime::now_utc()).await;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.changed() => {}
        }
    }
}
