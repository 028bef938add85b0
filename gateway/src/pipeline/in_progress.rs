//! Chats in progress in a conversation, by request id: a retry that arrives while the first try
//! is still running waits for it and then gets its stored answer, instead of calling the model a
//! second time. In this process only; across replicas the store's conditional write still keeps
//! one exchange per request id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Owner, conversation id, request id.
type Key = (String, String, String);

/// The chats in progress.
#[derive(Default)]
pub struct InProgress(Mutex<HashMap<Key, Arc<Notify>>>);

/// What [`InProgress::claim`] found.
pub enum Claim {
    /// No other try is running: this one runs, and holds the claim until it ends.
    Mine(Running),
    /// Another try is running; this resolves when it has ended, recorded or not.
    Wait(tokio::sync::futures::OwnedNotified),
}

/// A claimed chat; dropping it (the chat recorded, failed or cancelled) wakes the waiters.
pub struct Running {
    registry: Arc<InProgress>,
    key: Key,
}

impl InProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Notify>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `(owner, conversation, request)` for this try, or says how to wait for the try
    /// that has it.
    pub fn claim(self: &Arc<Self>, owner: &str, conversation: &str, request: &str) -> Claim {
        let key = (
            owner.to_owned(),
            conversation.to_owned(),
            request.to_owned(),
        );
        let mut running = self.lock();
        if let Some(notify) = running.get(&key) {
            // Made under the lock, so the end of the running try cannot slip past it.
            return Claim::Wait(notify.clone().notified_owned());
        }
        running.insert(key.clone(), Arc::new(Notify::new()));
        Claim::Mine(Running {
            registry: self.clone(),
            key,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(notify) = self.registry.lock().remove(&self.key) {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_try_waits_for_the_first_then_may_claim() {
        let registry = Arc::new(InProgress::default());
        let Claim::Mine(first) = registry.claim("alice", "c1", "r1") else {
            panic!("nothing was running");
        };
        let Claim::Wait(waiting) = registry.claim("alice", "c1", "r1") else {
            panic!("the first try is running");
        };
        // Another request id, conversation or owner is independent.
        assert!(matches!(
            registry.claim("alice", "c1", "r2"),
            Claim::Mine(_)
        ));
        assert!(matches!(registry.claim("bob", "c1", "r1"), Claim::Mine(_)));
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("the end of the first try wakes the second");
        assert!(matches!(
            registry.claim("alice", "c1", "r1"),
            Claim::Mine(_)
        ));
    }
}
