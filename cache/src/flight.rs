//! Coalescing: identical requests in flight share one upstream stream. The first becomes the
//! leader and its producer pushes every piece into the flight; each subscriber (the leader's own
//! request included) reads the pieces from the beginning, as they arrive. When every subscriber
//! has gone, the producer stops, which aborts the one upstream call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::CacheKey;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Pieces<P> {
    items: Vec<P>,
    finished: bool,
}

struct Life {
    subscribers: usize,
    /// Abandoned by every subscriber: no one may join any more.
    closed: bool,
}

/// One upstream stream and everyone reading it.
pub struct Flight<P> {
    pieces: Mutex<Pieces<P>>,
    changed: Notify,
    life: Mutex<Life>,
    abandoned: Notify,
}

impl<P: Clone> Flight<P> {
    /// A new flight, with its leader as the first subscriber. Unregistered, no one can join it.
    pub fn lead() -> (Arc<Self>, Subscription<P>) {
        let flight = Arc::new(Self {
            pieces: Mutex::new(Pieces {
                items: Vec::new(),
                finished: false,
            }),
            changed: Notify::new(),
            life: Mutex::new(Life {
                subscribers: 1,
                closed: false,
            }),
            abandoned: Notify::new(),
        });
        let sub = Subscription {
            flight: flight.clone(),
            next: 0,
        };
        (flight, sub)
    }

    fn try_subscribe(self: &Arc<Self>) -> Option<Subscription<P>> {
        let mut life = lock(&self.life);
        if life.closed {
            return None;
        }
        life.subscribers += 1;
        Some(Subscription {
            flight: self.clone(),
            next: 0,
        })
    }

    /// Adds a piece for every subscriber.
    pub fn push(&self, piece: P) {
        lock(&self.pieces).items.push(piece);
        self.changed.notify_waiters();
    }

    /// No more pieces will come.
    pub fn finish(&self) {
        lock(&self.pieces).finished = true;
        self.changed.notify_waiters();
    }

    /// Resolves once every subscriber has gone, and closes the flight to newcomers.
    pub async fn abandoned(&self) {
        loop {
            let notified = self.abandoned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut life = lock(&self.life);
                if life.subscribers == 0 {
                    life.closed = true;
                    return;
                }
            }
            notified.await;
        }
    }
}

/// One reader of a flight. Dropping it unsubscribes.
pub struct Subscription<P: Clone> {
    flight: Arc<Flight<P>>,
    next: usize,
}

impl<P: Clone> Subscription<P> {
    /// The next piece, waiting for it if need be; `None` once the flight has finished.
    pub async fn next(&mut self) -> Option<P> {
        loop {
            let notified = self.flight.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let pieces = lock(&self.flight.pieces);
                if let Some(piece) = pieces.items.get(self.next) {
                    self.next += 1;
                    return Some(piece.clone());
                }
                if pieces.finished {
                    return None;
                }
            }
            notified.await;
        }
    }
}

impl<P: Clone> Drop for Subscription<P> {
    fn drop(&mut self) {
        let mut life = lock(&self.flight.life);
        life.subscribers -= 1;
        if life.subscribers == 0 {
            self.flight.abandoned.notify_waiters();
        }
    }
}

/// How a request joined.
pub enum Joined<P: Clone> {
    /// No identical request was in flight: this one calls the model and feeds the flight.
    Leader(Arc<Flight<P>>, Subscription<P>),
    /// It reads the flight of an identical request.
    Follower(Subscription<P>),
}

/// The flights in progress, by key.
pub struct Flights<P> {
    map: Mutex<HashMap<CacheKey, Arc<Flight<P>>>>,
}

impl<P> Default for Flights<P> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<P: Clone> Flights<P> {
    /// Joins the flight of `key`, or starts one.
    pub fn join(&self, key: CacheKey) -> Joined<P> {
        let mut map = lock(&self.map);
        if let Some(sub) = map.get(&key).and_then(Flight::try_subscribe) {
            return Joined::Follower(sub);
        }
        let (flight, sub) = Flight::lead();
        map.insert(key, flight.clone());
        Joined::Leader(flight, sub)
    }

    /// The flight is over (its answer stored, or abandoned): later requests start afresh.
    pub fn land(&self, key: &CacheKey, flight: &Arc<Flight<P>>) {
        let mut map = lock(&self.map);
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[tokio::test]
    async fn followers_get_every_piece_from_the_beginning() {
        let flights = Flights::<u32>::default();
        let Joined::Leader(flight, mut leader) = flights.join(key(1)) else {
            panic!("first is the leader")
        };
        flight.push(1);
        flight.push(2);
        let Joined::Follower(mut late) = flights.join(key(1)) else {
            panic!("second follows")
        };
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(p) = late.next().await {
                got.push(p);
            }
            got
        });
        tokio::task::yield_now().await;
        flight.push(3);
        flight.finish();
        assert_eq!(reader.await.unwrap(), [1, 2, 3]);
        let mut got = Vec::new();
        while let Some(p) = leader.next().await {
            got.push(p);
        }
        assert_eq!(got, [1, 2, 3]);
        flights.land(&key(1), &flight);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_flight_everyone_left_is_closed_and_replaced() {
        let flights = Flights::<u32>::default();
        let Joined::Leader(flight, leader) = flights.join(key(2)) else {
            panic!()
        };
        let Joined::Follower(follower) = flights.join(key(2)) else {
            panic!()
        };
        drop(leader);
        let waiting = tokio::spawn({
            let flight = flight.clone();
            async move { flight.abandoned().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one subscriber is left");
        drop(follower);
        waiting.await.unwrap();
        // Closed: a newcomer leads a new flight instead of joining a dying one.
        assert!(matches!(flights.join(key(2)), Joined::Leader(f, _) if !Arc::ptr_eq(&f, &flight)));
    }
}
