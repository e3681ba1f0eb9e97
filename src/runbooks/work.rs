//! What the workers and the approval messages share within one process: the wake-up when a job
//! is queued, and one approval-message refresh at a time per request.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

#[derive(Default)]
pub struct Work {
    queued: tokio::sync::Notify,
    approval_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Work {
    /// Wake the idle workers: a job was queued, so one of them claims it at once.
    pub fn queued(&self) {
        self.queued.notify_waiters();
    }

    /// Resolves when [`Work::queued`] is next called.
    pub fn wait_queued(&self) -> tokio::sync::futures::Notified<'_> {
        self.queued.notified()
    }

    /// Run `refresh` while no other refresh of request `request_id`'s message runs, so that
    /// each reads the state afresh under the lock and the last update sent is always the latest
    /// state (a slow "running" cannot land after "succeeded").
    pub async fn one_refresh_at_a_time<T>(
        &self,
        request_id: i64,
        refresh: impl Future<Output = T>,
    ) -> T {
        let lock = {
            let mut locks = self
                .approval_locks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            locks.entry(request_id).or_default().clone()
        };
        let out = {
            let _held = lock.lock().await;
            refresh.await
        };
        // Clones are made under the map's mutex: once ours is dropped under it too, a count of
        // one (the map's) means nobody else waits or is about to, so the entry can go.
        let mut locks = self
            .approval_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        drop(lock);
        if locks
            .get(&request_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&request_id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refreshes_of_one_request_do_not_overlap_and_leave_no_lock_behind() {
        let work = Arc::new(Work::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (work, inside, most) = (work.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    work.one_refresh_at_a_time(7, async {
                        let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(work.approval_locks.lock().unwrap().is_empty());
    }
}
