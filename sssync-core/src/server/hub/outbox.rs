//! A connection's outbox: what the hub queues for one connection, bounded in messages and
//! in bytes (a slow consumer is cut off, never buffered without bound), and the events in
//! flight on it.

use super::lock;
use crate::protocol::ServerMsg;
use crate::query::QueryKey;
use crate::server::schema::Identity;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};

/// The queue of one connection: bounded in messages and in bytes; a connection that lets it
/// fill is cut off (it reconnects and resumes) instead of growing memory (invariant 12).
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    pub(crate) id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    slow: Arc<AtomicBool>,
    /// The keys the connection currently subscribes to: a group created after the connection
    /// dropped its key must not subscribe it.
    wanted: Arc<Mutex<HashSet<QueryKey>>>,
    pub(crate) wake: Arc<Notify>,
    /// Who the connection is (checked queries authorize it, again when their access changes).
    identity: Arc<Identity>,
    /// Events the connection sent that are not answered yet.
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
    /// Subscriptions being resumed off the tailer, and the answers held until they are.
    joins: Arc<Mutex<Joins>>,
}

/// An outbox's subscriptions being resumed off the tailer (see [`Hub::join`]) and the answers
/// held meanwhile: an answer (an ack, a pong) says every delta before it has been sent, which
/// a resume still on its way would make untrue.
#[derive(Debug, Default)]
pub(super) struct Joins {
    pending: usize,
    held: Vec<Utf8Bytes>,
}

/// One event in flight on a connection (see [`Outbox::busy`]): counted until dropped.
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    answered: bool,
}

impl InFlight {
    /// Its answer is about to be queued (the queue wakes the connection).
    pub(crate) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        // Dropped unanswered: nothing is queued to wake a connection that stopped reading
        // while busy; it looks again.
        if !self.answered {
            self.wake.notify_one();
        }
    }
}

/// The receiving end of an [`Outbox`] (the connection's task).
pub(crate) struct OutboxRx {
    pub(super) rx: mpsc::Receiver<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
}

impl OutboxRx {
    /// The next queued message.
    pub(crate) async fn recv(&mut self) -> Option<Utf8Bytes> {
        let m = self.rx.recv().await?;
        self.queued.fetch_sub(m.len(), Ordering::Relaxed);
        Some(m)
    }
}

impl Outbox {
    pub(crate) fn new(id: u64, capacity: usize, max_bytes: usize) -> (Outbox, OutboxRx) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                id,
                tx,
                queued: queued.clone(),
                max_bytes,
                slow: Arc::new(AtomicBool::new(false)),
                wanted: Arc::new(Mutex::new(HashSet::new())),
                wake: Arc::new(Notify::new()),
                identity: Arc::new(Identity::anonymous()),
                in_flight: Arc::new(AtomicUsize::new(0)),
                capacity: capacity.max(1),
                joins: Arc::new(Mutex::new(Joins::default())),
            },
            OutboxRx { rx, queued },
        )
    }

    /// The same outbox, for a connection of `identity`.
    pub(crate) fn with_identity(mut self, identity: Identity) -> Outbox {
        self.identity = Arc::new(identity);
        self
    }

    /// Who the connection is.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Queues a message; false when the connection is gone or too slow. Once it is too slow,
    /// nothing more is queued (a later, smaller message, an ack, must not overtake the one
    /// refused).
    pub(crate) fn send(&self, msg: Utf8Bytes) -> bool {
        if self.is_slow() {
            return false;
        }
        let len = msg.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        // One message always fits an empty queue (a snapshot may be big); beyond that, bytes.
        if before > 0 && before + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.mark_slow();
            return false;
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                self.mark_slow();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    fn mark_slow(&self) {
        self.slow.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn send_msg(&self, msg: &ServerMsg) -> bool {
        self.send(msg.to_json().into())
    }

    /// Queues an answer (to an event, to a ping): after every delta queued before it, and after
    /// the resumes of subscriptions that joined their groups before it (it waits for them).
    pub(crate) fn send_answer(&self, msg: &ServerMsg) -> bool {
        let text: Utf8Bytes = msg.to_json().into();
        let mut j = lock(&self.joins);
        if j.pending > 0 {
            j.held.push(text);
            return true;
        }
        self.send(text)
    }

    /// A subscription of the connection is being resumed off the tailer: answers wait.
    pub(super) fn begin_join(&self) {
        lock(&self.joins).pending += 1;
    }

    /// Its resume is queued (or given up): the answers held go once none is left.
    pub(crate) fn end_join(&self) {
        let mut j = lock(&self.joins);
        j.pending = j.pending.saturating_sub(1);
        if j.pending == 0 {
            for text in std::mem::take(&mut j.held) {
                self.send(text);
            }
        }
    }

    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    /// Counts one more event in flight on this connection, until the guard drops.
    pub(crate) fn in_flight(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            count: self.in_flight.clone(),
            wake: self.wake.clone(),
            answered: false,
        }
    }

    /// Whether the connection should stop reading from its client for now: the answers it
    /// owes (events in flight) and the messages queued fill half its queue, or the queued bytes
    /// half their bound. What is left is room for the deltas of its subscriptions.
    pub(crate) fn busy(&self) -> bool {
        let queued = self.tx.max_capacity() - self.tx.capacity();
        self.in_flight.load(Ordering::Relaxed) + queued >= self.capacity.div_ceil(2)
            || self.queued.load(Ordering::Relaxed) >= self.max_bytes / 2
    }

    /// Whether the connection behind it has gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The connection subscribes to `key` from now on.
    pub(crate) fn want(&self, key: &QueryKey) {
        lock(&self.wanted).insert(key.clone());
    }

    /// The connection no longer subscribes to `key`.
    pub(crate) fn unwant(&self, key: &QueryKey) {
        lock(&self.wanted).remove(key);
    }

    pub(crate) fn wants(&self, key: &QueryKey) -> bool {
        lock(&self.wanted).contains(key)
    }

    /// Bytes waiting in the queue.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}
