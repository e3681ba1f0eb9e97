//! The background loops (job workers, reaper, expirer, outbox sender, upkeep): spawned through
//! [`Background::spawn`], so that one which ends before it was asked to stop (a panic, a loop
//! that returned) is noticed and logged, and tests fail when one died.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

#[derive(Debug, Default)]
pub struct Background {
    stopping: AtomicBool,
    died: Mutex<Vec<String>>,
}

/// Records its loop as dead when dropped (the loop ended or unwound) before the stop.
struct Watch {
    background: Arc<Background>,
    name: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.background.stopping.load(Ordering::SeqCst) {
            tracing::error!(task = %self.name, "a background task ended before it was stopped");
            if let Ok(mut died) = self.background.died.lock() {
                died.push(std::mem::take(&mut self.name));
            }
        }
    }
}

impl Background {
    pub fn spawn<F>(
        self: &Arc<Self>,
        name: impl Into<String>,
        task: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let watch = Watch {
            background: self.clone(),
            name: name.into(),
        };
        tokio::spawn(async move {
            let _watch = watch;
            task.await;
        })
    }

    /// Say that the loops are being stopped: from now on, one that ends is not a death.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The loops that ended before they were stopped.
    pub fn died(&self) -> Vec<String> {
        self.died.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loop_that_panics_or_returns_early_is_reported_and_a_stopped_one_is_not() {
        let background = Arc::new(Background::default());
        let panicked = background.spawn("panics", async { panic!("boom") });
        let _ = panicked.await;
        let returned = background.spawn("returns", async {});
        let _ = returned.await;
        assert_eq!(background.died(), ["panics", "returns"]);
        background.stopping();
        background.spawn("stopped", async {}).await.unwrap();
        assert_eq!(background.died(), ["panics", "returns"]);
    }
}
