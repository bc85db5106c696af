//! What a client keeps across reloads: its id, the epoch of its cache, the confirmed rows and
//! version of each key, and the pending events (sent exactly once when a connection returns).
//!
//! [`ClientState`](super::ClientState) does no I/O: each change it makes is also described as
//! [`Persist`] operations, which the transport hands to its [`ClientStore`] (memory here,
//! IndexedDB in the browser). [`ClientState::restore`](super::ClientState::restore) rebuilds a
//! client from what a store kept.

use crate::row::Row;
use crate::schema::Event;
use crate::version::{Epoch, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One change to what a client keeps.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Persist {
    /// The client's epoch and next event seq.
    Meta {
        /// The history the cache belongs to.
        epoch: Option<Epoch>,
        /// The seq the next event will get.
        next_seq: u64,
        /// The tag of the identity the rows and events belong to (`""`: anonymous).
        who: Option<String>,
    },
    /// The confirmed rows of a key at a version (replacing what was kept for it).
    Rows {
        /// The query's name.
        name: String,
        /// Its canonical args.
        args: String,
        /// The version of the rows.
        version: Version,
        /// The rows, in order (shared with the client's state: no copy).
        rows: Arc<Vec<Row>>,
    },
    /// Forget the rows of a key.
    DropRows {
        /// The query's name.
        name: String,
        /// Its canonical args.
        args: String,
    },
    /// A pending event.
    Event {
        /// Its seq.
        seq: u64,
        /// Its name.
        name: String,
        /// Its args, as JSON.
        args: Arc<str>,
    },
    /// An event is no longer pending (acknowledged or rejected).
    DropEvent(u64),
    /// Forget every row (a new epoch); pending events are rewritten after this.
    ClearAll,
    /// Forget the rows of a key this identity may not read, also where rows of keys no longer
    /// held are kept (a browser's rows cache).
    Forget {
        /// The query's name.
        name: String,
        /// Its canonical args.
        args: String,
    },
    /// Everything kept belongs to an identity that is no longer this client's: forget it all
    /// (a browser also forgets other tabs' pending events of that identity).
    ForgetIdentity,
}

/// What a store gives back when a client starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// The epoch of the kept rows.
    pub epoch: Option<Epoch>,
    /// The seq the next event gets (0: nothing kept).
    pub next_seq: u64,
    /// The tag of the identity the kept rows and events belong to.
    #[serde(default)]
    pub who: Option<String>,
    /// Kept rows: (query name, canonical args) → (version, rows).
    pub keys: BTreeMap<(String, String), (Version, Vec<Row>)>,
    /// Pending events by seq: (name, args JSON).
    pub events: BTreeMap<u64, (String, String)>,
}

impl Persisted {
    /// Applies operations in order.
    pub fn apply(&mut self, ops: impl IntoIterator<Item = Persist>) {
        for op in ops {
            match op {
                Persist::Meta {
                    epoch,
                    next_seq,
                    who,
                } => {
                    self.epoch = epoch;
                    self.next_seq = next_seq;
                    self.who = who;
                }
                Persist::Rows {
                    name,
                    args,
                    version,
                    rows,
                } => {
                    self.keys
                        .insert((name, args), (version, Arc::unwrap_or_clone(rows)));
                }
                Persist::DropRows { name, args } | Persist::Forget { name, args } => {
                    self.keys.remove(&(name, args));
                }
                Persist::ForgetIdentity => {
                    self.keys.clear();
                    self.events.clear();
                }
                Persist::Event { seq, name, args } => {
                    self.events.insert(seq, (name, args.to_string()));
                }
                Persist::DropEvent(seq) => {
                    self.events.remove(&seq);
                }
                Persist::ClearAll => {
                    self.keys.clear();
                    self.events.clear();
                }
            }
        }
    }
}

/// Where a client keeps its state. Implementations must apply operations in order.
pub trait ClientStore: Send + Sync + 'static {
    /// What was kept (empty for a new client).
    fn load(&self) -> Persisted;
    /// Keeps these changes.
    fn save(&self, ops: Vec<Persist>);
}

/// A store in memory: survives a client (a transport) restarting within the process, and is
/// what a browser falls back to when it has no storage.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Persisted>>,
}

impl ClientStore for MemoryStore {
    fn load(&self) -> Persisted {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn save(&self, ops: Vec<Persist>) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(ops);
    }
}

pub(crate) type PredictFn = Arc<dyn Fn(&mut super::Prediction<'_>) + Send + Sync>;
type Revive = fn(&str) -> Option<PredictFn>;

/// The client's event types by name, so that pending events restored from a store predict
/// again.
#[derive(Clone, Default)]
pub struct EventTypes {
    revive: HashMap<&'static str, Revive>,
}

impl EventTypes {
    /// No types (restored events are sent, but not predicted).
    pub fn new() -> EventTypes {
        EventTypes::default()
    }

    /// Adds event type `E`.
    pub fn with<E: Event>(mut self) -> EventTypes {
        self.add::<E>();
        self
    }

    /// Adds event type `E` (in place).
    pub fn add<E: Event>(&mut self) {
        self.revive.insert(E::NAME, revive::<E>);
    }

    pub(crate) fn predictor(&self, name: &str, args: &str) -> Option<PredictFn> {
        (self.revive.get(name)?)(args)
    }
}

fn revive<E: Event>(args: &str) -> Option<PredictFn> {
    let e: E = serde_json::from_str(args).ok()?;
    Some(Arc::new(move |p: &mut super::Prediction<'_>| e.predict(p)))
}
