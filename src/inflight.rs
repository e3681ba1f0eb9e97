//! How many commands run in the background at once: `[limits] max_in_flight` in all, and
//! `max_in_flight_per_user` for any one person, so that one person (or one stolen account)
//! cannot hold every slot and leave everyone else "busy". Votes and cancels take no slot at
//! all: they are how people get out of a jam.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots.
pub struct InFlight {
    /// Every running command holds one permit; shutdown waits for all of them.
    pub global: Arc<Semaphore>,
    total: usize,
    per_user: usize,
    users: Mutex<HashMap<String, usize>>,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every slot is taken.
    Everyone,
    /// This person already holds their share.
    You { share: usize },
}

impl Busy {
    pub fn message(self) -> String {
        match self {
            Busy::Everyone => "Pantheon is busy right now (too many commands in flight). Nothing was run; try again in a moment.".to_owned(),
            Busy::You { share } => format!(
                "You already have {share} commands running, your share; wait for one to finish. Nothing was run."
            ),
        }
    }

    pub fn detail(self) -> String {
        match self {
            Busy::Everyone => "busy: too many commands in flight".to_owned(),
            Busy::You { share } => format!("busy: this user already runs {share} commands"),
        }
    }
}

/// A held slot, given back when dropped.
pub struct Slot {
    _global: OwnedSemaphorePermit,
    owner: Arc<InFlight>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut users = self.owner.lock();
        if let Some(n) = users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

impl InFlight {
    pub fn new(total: usize, per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            global: Arc::new(Semaphore::new(total)),
            total,
            per_user: per_user.clamp(1, total.max(1)),
            users: Mutex::new(HashMap::new()),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `user`, or why not.
    pub fn try_acquire(self: &Arc<Self>, user: &str) -> Result<Slot, Busy> {
        let mut users = self.lock();
        let held = users.get(user).copied().unwrap_or(0);
        if held >= self.per_user {
            return Err(Busy::You {
                share: self.per_user,
            });
        }
        let permit = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Everyone)?;
        users.insert(user.to_owned(), held + 1);
        drop(users);
        Ok(Slot {
            _global: permit,
            owner: self.clone(),
            user: user.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_cannot_take_every_slot() {
        let slots = InFlight::new(4, 2);
        let a1 = slots.try_acquire("U1").unwrap();
        let _a2 = slots.try_acquire("U1").unwrap();
        assert_eq!(slots.try_acquire("U1").err(), Some(Busy::You { share: 2 }));
        let _b1 = slots.try_acquire("U2").unwrap();
        let _b2 = slots.try_acquire("U2").unwrap();
        assert_eq!(slots.try_acquire("U3").err(), Some(Busy::Everyone));
        drop(a1);
        let _c = slots.try_acquire("U3").unwrap();
        assert_eq!(slots.lock().get("U1"), Some(&1));
    }

    #[test]
    fn a_share_is_never_more_than_the_total() {
        let slots = InFlight::new(1, 16);
        let _a = slots.try_acquire("U1").unwrap();
        assert_eq!(slots.try_acquire("U1").err(), Some(Busy::You { share: 1 }));
    }
}
