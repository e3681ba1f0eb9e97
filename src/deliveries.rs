//! Group commit for webhook deliveries: callers wait until their delivery is committed, and
//! one writer commits whatever queued meanwhile in one transaction.

use crate::{
    domain::outbox::{Delivery, Recorded},
    store::{Store, StoreError},
};

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
    pub fn spawn(store: Store) -> (Self, tokio::task::JoinHandle<()>) {
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
                    // The database is down or stuck: each on its own would only wait as long
                    // again, per delivery.
                    Err(e @ StoreError::Unavailable(_)) => {
                        tracing::error!(error = %e, deliveries = deliveries.len(), "deliveries not stored");
                        for done in waiters {
                            let _ = done.send(Err(e.to_string()));
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
