//! Housekeeping the store needs: claims on request signatures are forgotten once they are past
//! the replay window. A loop runs [`run_once`] every minute; tests call it directly.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{app::Services, signature::MAX_CLOCK_SKEW_SECS};

/// How long a signature is remembered: a request is accepted up to the clock skew either side of
/// its timestamp, so after twice that no copy of it can pass verification any more.
pub const CLAIM_WINDOW: time::Duration = time::Duration::seconds(2 * MAX_CLOCK_SKEW_SECS);

/// One round of upkeep at `now`.
pub async fn run_once(services: &Services, now: OffsetDateTime) {
    match services.store.prune_claims(now - CLAIM_WINDOW).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            pruned = n,
            "forgot request signatures past the replay window"
        ),
        Err(e) => tracing::warn!(error = %e, "pruning request signatures failed"),
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
