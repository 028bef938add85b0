//! The WebSocket connections of this `nagare serve` process, by id, so a task's worker can push
//! its outcome into a socket's outbound queue, where it waits its turn behind the session's own
//! frames and obeys the same bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use nagare_authorizer::Principal;
use tokio::sync::mpsc;

use super::Outbound;
use crate::error::Error;
use crate::push::{ConnectionDirectory, ConnectionPusher, ConnectionTarget, PushError};

/// The open sockets of this process.
pub struct LocalConnections {
    open: Mutex<HashMap<Arc<str>, Local>>,
    /// Sockets per principal, taken at the upgrade (see [`LocalConnections::seat`]).
    seats: Mutex<HashMap<String, usize>>,
    /// How long a push waits for room in a full queue before it fails. The session closes a
    /// client that stays that slow, so a push never waits on it for long.
    wait: Duration,
}

struct Local {
    sub: String,
    tenant: String,
    out: mpsc::Sender<Outbound>,
}

/// A connection's place in [`LocalConnections`]; dropping it, when the session ends, removes it.
pub struct Registration {
    id: Arc<str>,
    registry: Arc<LocalConnections>,
}

impl Registration {
    /// The connection id the client learns from `pong` and names in a task's `connection_id`.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl LocalConnections {
    pub fn new(wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            seats: Mutex::new(HashMap::new()),
            wait,
        })
    }

    /// A seat for one more socket of `principal`, or `rate_limited` when it has `max` open.
    /// Taken before the upgrade is answered, so a refusal is a plain 429.
    pub fn seat(self: &Arc<Self>, principal: &Principal, max: usize) -> Result<Seat, Error> {
        let key = principal.key();
        let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        let taken = seats.entry(key.clone()).or_default();
        if *taken >= max {
            return Err(Error::RateLimited {
                message: format!(
                    "rate limited: {max} WebSocket connections are already open for this user"
                ),
                retry_after: Duration::from_secs(1),
            });
        }
        *taken += 1;
        Ok(Seat {
            key,
            registry: self.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Local>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection of `principal` whose frames go to `out`, under a fresh id.
    pub fn register(
        self: &Arc<Self>,
        principal: &Principal,
        out: mpsc::Sender<Outbound>,
    ) -> Registration {
        let id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        let local = Local {
            sub: principal.sub.clone(),
            tenant: principal.tenant.clone(),
            out,
        };
        self.lock().insert(id.clone(), local);
        Registration {
            id,
            registry: self.clone(),
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One open socket of a principal; dropping it when the session ends frees the seat.
pub struct Seat {
    key: String,
    registry: Arc<LocalConnections>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut seats = self
            .registry
            .seats
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = seats.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                seats.remove(&self.key);
            }
        }
    }
}

#[async_trait]
impl ConnectionPusher for LocalConnections {
    async fn post(
        &self,
        _endpoint: &str,
        connection_id: &str,
        frame: Bytes,
    ) -> Result<(), PushError> {
        let out = match self.lock().get(connection_id) {
            Some(local) => local.out.clone(),
            None => return Err(PushError::Gone),
        };
        let text = Utf8Bytes::try_from(frame).map_err(|e| PushError::Failed {
            message: format!("a frame that is not UTF-8: {e}"),
            retryable: false,
        })?;
        match tokio::time::timeout(self.wait, out.send(Outbound::text(text))).await {
            Ok(Ok(())) => Ok(()),
            // The session ended between the look-up and the send.
            Ok(Err(_)) => Err(PushError::Gone),
            Err(_) => Err(PushError::Failed {
                message: "the client is not reading".into(),
                retryable: false,
            }),
        }
    }
}

#[async_trait]
impl ConnectionDirectory for LocalConnections {
    async fn find(&self, connection_id: &str) -> Result<Option<ConnectionTarget>, Error> {
        Ok(self
            .lock()
            .get(connection_id)
            .map(|local| ConnectionTarget {
                sub: local.sub.clone(),
                tenant: local.tenant.clone(),
                endpoint: String::new(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::Message;

    use super::*;
    use crate::chat::test_support::alice;

    #[tokio::test]
    async fn a_registered_connection_is_found_pushed_to_and_forgotten_when_dropped() {
        let registry = LocalConnections::new(Duration::from_millis(50));
        let (out, mut queued) = mpsc::channel(1);
        let registration = registry.register(&alice(), out);
        let id = registration.id().to_string();
        let found = registry.find(&id).await.unwrap().unwrap();
        assert_eq!(found.sub, alice().sub);

        registry.post("", &id, Bytes::from("{}")).await.unwrap();
        assert!(
            matches!(queued.recv().await, Some(Outbound::Frame(m)) if matches!(&*m, Message::Text(t) if t.as_str() == "{}"))
        );

        // A full queue that is never read: the push gives up instead of waiting forever.
        registry.post("", &id, Bytes::from("1")).await.unwrap();
        let stuck = registry.post("", &id, Bytes::from("2")).await;
        assert!(matches!(stuck, Err(PushError::Failed { .. })), "{stuck:?}");

        drop(registration);
        assert!(registry.is_empty());

        // Seats: at most `max` per principal, freed when dropped.
        let seats: Vec<Seat> = (0..2)
            .map(|_| registry.seat(&alice(), 2).unwrap())
            .collect();
        assert!(matches!(
            registry.seat(&alice(), 2),
            Err(Error::RateLimited { .. })
        ));
        drop(seats);
        assert!(registry.seat(&alice(), 2).is_ok());
        assert!(registry.find(&id).await.unwrap().is_none());
        let gone = registry.post("", &id, Bytes::from("{}")).await;
        assert!(matches!(gone, Err(PushError::Gone)), "{gone:?}");
    }
}
