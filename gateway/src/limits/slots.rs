//! The cap on upstream streams, shared fairly: one principal holds at most its share of the
//! slots, so its stalled chats cannot take them all, and when slots free up the waiting
//! principal that holds the fewest gets the next one (round robin between principals, rather
//! than first come, first served).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Upstream stream slots.
pub struct Slots {
    max: usize,
    per_principal: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_use: usize,
    /// Slots held, by principal key.
    held: HashMap<String, usize>,
    /// Waiting requests in arrival order.
    waiting: VecDeque<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    key: String,
    ticket: u64,
    grant: oneshot::Sender<Slot>,
}

/// One upstream stream's slot; dropping it frees the slot for the next waiter.
pub struct Slot {
    /// `None` once released by hand (a grant its waiter no longer wanted).
    slots: Option<Arc<Slots>>,
    key: String,
}

impl Slots {
    /// `max` slots, at most `per_principal` of them for one principal.
    pub fn new(max: usize, per_principal: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_principal: per_principal.clamp(1, max.max(1)),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `key`, waiting at most `wait`; `None` when none came in time.
    pub async fn acquire(self: &Arc<Self>, key: &str, wait: Duration) -> Option<Slot> {
        let (ticket, granted) = {
            let mut state = self.state();
            if state.waiting.is_empty() && self.may_take(&state, key) {
                return Some(self.take(&mut state, key));
            }
            let (grant, granted) = oneshot::channel();
            state.next_ticket += 1;
            let ticket = state.next_ticket;
            state.waiting.push_back(Waiter {
                key: key.to_owned(),
                ticket,
                grant,
            });
            (ticket, granted)
        };
        match tokio::time::timeout(wait, granted).await {
            Ok(Ok(slot)) => Some(slot),
            _ => {
                // Out of the queue; a slot granted in the meantime is dropped, which passes it on.
                self.state().waiting.retain(|w| w.ticket != ticket);
                None
            }
        }
    }

    fn may_take(&self, state: &State, key: &str) -> bool {
        state.in_use < self.max && state.held.get(key).copied().unwrap_or(0) < self.per_principal
    }

    fn take(self: &Arc<Self>, state: &mut State, key: &str) -> Slot {
        state.in_use += 1;
        *state.held.entry(key.to_owned()).or_default() += 1;
        Slot {
            slots: Some(self.clone()),
            key: key.to_owned(),
        }
    }

    /// Gives free slots to waiters: each time to the waiting principal holding the fewest, the
    /// earliest of those first.
    fn grant(self: &Arc<Self>, state: &mut State) {
        loop {
            let next = state
                .waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| self.may_take(state, &w.key) && !w.grant.is_closed())
                .min_by_key(|(i, w)| (state.held.get(&w.key).copied().unwrap_or(0), *i))
                .map(|(i, _)| i);
            let Some(i) = next else {
                state.waiting.retain(|w| !w.grant.is_closed());
                return;
            };
            let Some(waiter) = state.waiting.remove(i) else {
                return;
            };
            let slot = self.take(state, &waiter.key);
            if let Err(mut slot) = waiter.grant.send(slot) {
                // It gave up just now: take the slot back here, under the lock already held.
                slot.slots = None;
                release(state, &slot.key);
            }
        }
    }

    /// Slots held now, for tests.
    pub fn in_use(&self) -> usize {
        self.state().in_use
    }
}

fn release(state: &mut State, key: &str) {
    state.in_use = state.in_use.saturating_sub(1);
    if let Some(n) = state.held.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            state.held.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            let mut state = slots.state();
            release(&mut state, &self.key);
            slots.grant(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_millis(10);

    #[tokio::test]
    async fn one_principal_holds_at_most_its_share() {
        let slots = Slots::new(4, 2);
        let a1 = slots.acquire("a", NOW).await;
        let a2 = slots.acquire("a", NOW).await;
        assert!(a1.is_some() && a2.is_some());
        assert!(slots.acquire("a", NOW).await.is_none(), "a is at its share");
        let b = slots.acquire("b", NOW).await;
        assert!(b.is_some(), "b gets a slot while a's are stalled");
        assert_eq!(slots.in_use(), 3);
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_waiting_principal_holding_the_fewest() {
        let slots = Slots::new(2, 2);
        let a1 = slots.acquire("a", NOW).await.unwrap();
        let _a2 = slots.acquire("a", NOW).await.unwrap();
        let long = Duration::from_secs(5);
        // a asks again first, then b: b holds none, so b is served first.
        let a3 = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("a", long).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("b", long).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a1);
        let b = b.await.unwrap().expect("b was served");
        assert_eq!(b.key, "b");
        assert!(!a3.is_finished(), "a waits while b holds the freed slot");
        a3.abort();
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_slot_taken() {
        let slots = Slots::new(1, 1);
        let a = slots.acquire("a", NOW).await.unwrap();
        assert!(slots.acquire("b", NOW).await.is_none());
        drop(a);
        assert_eq!(slots.in_use(), 0);
        assert!(slots.acquire("b", NOW).await.is_some());
    }
}
