//! The embedded task queue, in the SQLite database beside the task records, so queued tasks
//! survive a restart of `nagare serve`. It keeps SQS's semantics: a received message is hidden
//! until its visibility timeout passes, and one received more than `max_receives` times is
//! dead-lettered (kept, marked dead, never delivered again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use tokio::sync::Notify;

use super::{Message, QueueDepth, TaskQueue};
use crate::error::Error;
use crate::store::{Database, unix_now_ms};

/// The embedded queue. Receives take the fairness groups in turn: of the groups with a message
/// ready, the one served longest ago gives its oldest.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Database,
    /// Wakes waiting receivers when this process sends.
    sent: Arc<Notify>,
    /// When each group was last served, by a count of receives.
    served: Arc<Mutex<Served>>,
    max_receives: u32,
    /// How long `receive` waits for a message before returning none.
    wait: Duration,
}

impl SqliteQueue {
    /// A message received more than `max_receives` times is dead-lettered instead.
    pub fn new(db: Database, max_receives: u32) -> Self {
        Self {
            db,
            sent: Arc::new(Notify::new()),
            served: Arc::default(),
            max_receives,
            wait: Duration::from_secs(1),
        }
    }

    /// Messages dead-lettered so far, for tests and operators.
    pub async fn dead_letters(&self) -> Result<Vec<String>, Error> {
        self.db
            .with(|db| {
                let mut q = db
                    .prepare("SELECT task_id FROM task_queue WHERE dead = 1 ORDER BY message_id")?;
                let ids = q.query_map([], |row| row.get(0))?;
                ids.collect()
            })
            .await
    }

    async fn take(&self, max: usize, visibility_secs: u64) -> Result<Vec<Message>, Error> {
        let max_receives = self.max_receives;
        let served = self.served.clone();
        self.db
            .with(move |db| {
                let tx = db.savepoint()?;
                let now = unix_now_ms();
                // The oldest ready message of each group.
                let mut ready: Vec<(i64, String, u32, String)> = {
                    let mut q = tx.prepare(
                        "SELECT message_id, task_id, receive_count, grp FROM task_queue
                         WHERE message_id IN (
                           SELECT MIN(message_id) FROM task_queue
                           WHERE dead = 0 AND visible_at <= ?1 GROUP BY grp)",
                    )?;
                    let rows = q.query_map(params![now], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut served = served.lock().unwrap_or_else(|p| p.into_inner());
                ready.sort_by_key(|(id, _, _, group)| (served.last(group), *id));
                let mut messages = Vec::with_capacity(max.min(ready.len()));
                for (message_id, task_id, count, group) in ready {
                    if messages.len() == max {
                        break;
                    }
                    let count = count + 1;
                    if count > max_receives {
                        tx.execute(
                            "UPDATE task_queue SET dead = 1, receipt = NULL WHERE message_id = ?1",
                            [message_id],
                        )?;
                        tracing::warn!(task_id = %task_id, receives = count - 1, "task dead-lettered");
                        continue;
                    }
                    let receipt = uuid::Uuid::new_v4().to_string();
                    let hidden_until = now + visibility_secs * 1000;
                    tx.execute(
                        "UPDATE task_queue SET receive_count = ?2, visible_at = ?3, receipt = ?4
                         WHERE message_id = ?1",
                        params![message_id, count, hidden_until, receipt],
                    )?;
                    served.serve(&group);
                    messages.push(Message {
                        task_id,
                        receipt,
                        receive_count: count,
                        group,
                    });
                }
                tx.commit()?;
                Ok(messages)
            })
            .await
    }
}

/// When each fairness group was last served.
#[derive(Default)]
struct Served {
    tick: u64,
    last: HashMap<String, u64>,
}

impl Served {
    /// Groups not served since this process started (or since the map was last trimmed) go
    /// first.
    fn last(&self, group: &str) -> u64 {
        self.last.get(group).copied().unwrap_or(0)
    }

    fn serve(&mut self, group: &str) {
        // Bounded: past this many groups, start the turns afresh.
        if self.last.len() >= 100_000 {
            self.last.clear();
        }
        self.tick += 1;
        self.last.insert(group.to_owned(), self.tick);
    }
}

#[async_trait]
impl TaskQueue for SqliteQueue {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn send(&self, task_id: &str, group: &str) -> Result<(), Error> {
        let (id, group) = (task_id.to_owned(), group.to_owned());
        self.db
            .with(move |db| {
                db.execute(
                    "INSERT INTO task_queue (task_id, visible_at, grp) VALUES (?1, ?2, ?3)",
                    params![id, unix_now_ms(), group],
                )?;
                Ok(())
            })
            .await?;
        self.sent.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility_secs: u64) -> Result<Vec<Message>, Error> {
        // Registered before looking, so a send between the look and the wait still wakes us.
        let sent = self.sent.notified();
        tokio::pin!(sent);
        sent.as_mut().enable();
        let messages = self.take(max, visibility_secs).await?;
        if !messages.is_empty() {
            return Ok(messages);
        }
        // Nothing yet: wait for a send here, or a while for hidden messages to reappear.
        let _ = tokio::time::timeout(self.wait, sent).await;
        self.take(max, visibility_secs).await
    }

    async fn extend(&self, receipt: &str, visibility_secs: u64) -> Result<(), Error> {
        let receipt = receipt.to_owned();
        self.db
            .with(move |db| {
                let until = unix_now_ms() + visibility_secs * 1000;
                db.execute(
                    "UPDATE task_queue SET visible_at = ?2 WHERE receipt = ?1",
                    params![receipt, until],
                )?;
                Ok(())
            })
            .await
    }

    async fn put_back(&self, message: &Message, delay_secs: u64) -> Result<(), Error> {
        let receipt = message.receipt.clone();
        self.db
            .with(move |db| {
                let visible_at = unix_now_ms() + delay_secs * 1000;
                db.execute(
                    "UPDATE task_queue SET visible_at = ?2, receipt = NULL,
                       receive_count = MAX(receive_count - 1, 0)
                     WHERE receipt = ?1",
                    params![receipt, visible_at],
                )?;
                Ok(())
            })
            .await?;
        if delay_secs == 0 {
            self.sent.notify_waiters();
        }
        Ok(())
    }

    async fn delete(&self, receipt: &str) -> Result<(), Error> {
        let receipt = receipt.to_owned();
        self.db
            .with(move |db| {
                db.execute("DELETE FROM task_queue WHERE receipt = ?1", [receipt])?;
                Ok(())
            })
            .await
    }

    async fn depth(&self) -> Result<QueueDepth, Error> {
        self.db
            .with(|db| {
                db.query_row(
                    "SELECT COALESCE(SUM(dead = 0 AND visible_at <= ?1), 0),
                            COALESCE(SUM(dead = 0 AND visible_at > ?1), 0),
                            COALESCE(SUM(dead = 1), 0)
                     FROM task_queue",
                    [unix_now_ms()],
                    |row| {
                        Ok(QueueDepth {
                            waiting: row.get(0)?,
                            in_flight: row.get(1)?,
                            dead: row.get(2)?,
                        })
                    },
                )
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max_receives: u32) -> SqliteQueue {
        let mut q = SqliteQueue::new(Database::in_memory().unwrap(), max_receives);
        q.wait = Duration::from_millis(10);
        q
    }

    #[tokio::test]
    async fn a_received_message_is_hidden_until_deleted_or_its_timeout_passes() {
        let q = queue(3);
        q.send("t1", "").await.unwrap();
        let first = q.receive(10, 60).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].receive_count, 1);
        assert!(q.receive(10, 60).await.unwrap().is_empty(), "hidden");
        // Visibility 0: it reappears at once, counted again, with a new receipt.
        q.extend(&first[0].receipt, 0).await.unwrap();
        let again = q.receive(10, 60).await.unwrap();
        assert_eq!(again[0].receive_count, 2);
        assert_ne!(again[0].receipt, first[0].receipt);
        // The old receipt no longer deletes it; the new one does.
        q.delete(&first[0].receipt).await.unwrap();
        q.extend(&again[0].receipt, 0).await.unwrap();
        let third = q.receive(10, 60).await.unwrap();
        q.delete(&third[0].receipt).await.unwrap();
        q.extend(&third[0].receipt, 0).await.unwrap();
        assert!(q.receive(10, 60).await.unwrap().is_empty(), "deleted");
    }

    #[tokio::test]
    async fn groups_take_turns_and_a_put_back_receive_does_not_count() {
        let q = queue(3);
        for i in 0..4 {
            q.send(&format!("a{i}"), "alice").await.unwrap();
        }
        q.send("b0", "bob").await.unwrap();
        let mut order = Vec::new();
        for _ in 0..4 {
            let m = q.receive(1, 60).await.unwrap().remove(0);
            order.push(m.task_id);
        }
        // Bob's one task comes second, not after Alice's backlog.
        assert_eq!(order, ["a0", "b0", "a1", "a2"]);

        let m = q.receive(1, 60).await.unwrap().remove(0);
        assert_eq!((m.task_id.as_str(), m.receive_count), ("a3", 1));
        q.put_back(&m, 0).await.unwrap();
        let again = q.receive(1, 60).await.unwrap().remove(0);
        assert_eq!((again.task_id.as_str(), again.receive_count), ("a3", 1));
    }

    #[tokio::test]
    async fn a_message_received_too_often_is_dead_lettered() {
        let q = queue(2);
        q.send("poison", "").await.unwrap();
        for n in 1..=2 {
            let m = q.receive(1, 0).await.unwrap();
            assert_eq!(m[0].receive_count, n);
        }
        assert!(q.receive(1, 0).await.unwrap().is_empty());
        assert_eq!(q.dead_letters().await.unwrap(), ["poison"]);
        q.send("fresh", "").await.unwrap();
        q.send("taken", "").await.unwrap();
        q.receive(1, 60).await.unwrap();
        let depth = q.depth().await.unwrap();
        assert_eq!((depth.waiting, depth.in_flight, depth.dead), (1, 1, 1));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_send() {
        let mut q = queue(3);
        q.wait = Duration::from_secs(30);
        let receiver = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(1, 60).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.send("t1", "").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), receiver)
            .await
            .expect("woken by the send")
            .unwrap()
            .unwrap();
        assert_eq!(got[0].task_id, "t1");
    }
}
