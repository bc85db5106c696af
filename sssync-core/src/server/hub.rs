//! Subscriptions grouped by query key (invariant 10): one result per key, whatever the number
//! of subscribers; each change is diffed once and the same bytes are queued for every
//! subscriber. A std `Mutex` guards it: nothing inside awaits, every operation is short.

use super::schema::Dependency;
use crate::delta::{self, Put};
use crate::protocol::{DeltaMsg, ErrorCode, ServerMsg, Snapshot};
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::Version;
use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// How many deleted keys a group remembers for resuming clients; older resumes get a reset.
const MAX_TOMBSTONES: usize = 10_000;

/// The queue of one connection: bounded; a connection that lets it fill is cut off (it
/// reconnects and resumes) instead of growing memory (invariant 12).
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    pub(crate) id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    slow: Arc<AtomicBool>,
    /// A query this connection follows could not be kept current: the connection closes so
    /// that the client resubscribes instead of holding stale rows.
    failed: Arc<AtomicBool>,
    pub(crate) wake: Arc<Notify>,
}

impl Outbox {
    pub(crate) fn new(id: u64, capacity: usize) -> (Outbox, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Outbox {
                id,
                tx,
                slow: Arc::new(AtomicBool::new(false)),
                failed: Arc::new(AtomicBool::new(false)),
                wake: Arc::new(Notify::new()),
            },
            rx,
        )
    }

    /// Queues a message; false when the connection is gone or too slow.
    pub(crate) fn send(&self, msg: Utf8Bytes) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.store(true, Ordering::Relaxed);
                self.wake.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn send_msg(&self, msg: &ServerMsg) -> bool {
        self.send(msg.to_json().into())
    }

    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Whether the connection behind it has gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

struct Group {
    deps: Vec<Dependency>,
    /// The canonical args, as sent on the wire.
    args: Box<RawValue>,
    rows: Rows,
    /// The version of the last change of `rows` (deltas go from it).
    version: Version,
    /// For each row, the version it last changed (or moved) at: resuming clients get the rows
    /// changed after their version.
    changed_at: HashMap<Arc<str>, Version>,
    tombstones: VecDeque<(Version, Arc<str>)>,
    /// Resumes from versions below this cannot be served (not remembered).
    horizon: Version,
    subs: HashMap<u64, Outbox>,
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct State {
    groups: HashMap<QueryKey, Group>,
    by_dep: HashMap<Dependency, HashSet<QueryKey>>,
    /// The database version every group reflects.
    processed: Version,
}

/// All groups of one engine.
#[derive(Default)]
pub(crate) struct Hub {
    state: Mutex<State>,
}

/// What a subscription found.
pub(crate) enum Subscribed {
    /// Subscribed; the snapshot or resume delta is queued.
    Yes,
    /// No group for this key yet: the engine must create it.
    NoGroup,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn processed(&self) -> Version {
        self.lock().processed
    }

    pub(crate) fn set_processed(&self, v: Version) {
        let mut st = self.lock();
        st.processed = st.processed.max(v);
    }

    /// Subscribes `outbox` to an existing group and queues what the client needs: nothing new
    /// but a version update when it is current, the missed rows when it resumes from a
    /// remembered version, a reset snapshot otherwise.
    pub(crate) fn subscribe(
        &self,
        key: &QueryKey,
        outbox: &Outbox,
        client_v: Option<Version>,
    ) -> Subscribed {
        let mut st = self.lock();
        let processed = st.processed;
        let Some(g) = st.groups.get_mut(key) else {
            return Subscribed::NoGroup;
        };
        if outbox.is_closed() {
            return Subscribed::Yes; // the connection went away meanwhile: nothing to do
        }
        g.subs.insert(outbox.id, outbox.clone());
        g.idle_since = None;
        let msg = match client_v {
            Some(v) if v >= g.horizon && v <= processed => resume_msg(key, g, v),
            Some(_) => snapshot_msg(key, g, true),
            None => snapshot_msg(key, g, false),
        };
        outbox.send(msg);
        Subscribed::Yes
    }

    /// Creates a group from a fresh result at `version` (the engine serializes this with writes).
    pub(crate) fn create(
        &self,
        key: &QueryKey,
        deps: Vec<Dependency>,
        rows: Rows,
        version: Version,
    ) {
        let mut st = self.lock();
        if st.groups.contains_key(key) {
            return;
        }
        for d in &deps {
            st.by_dep.entry(d.clone()).or_default().insert(key.clone());
        }
        let changed_at = rows
            .rows()
            .iter()
            .map(|r| (r.key.clone(), version))
            .collect();
        st.groups.insert(
            key.clone(),
            Group {
                deps,
                args: RawValue::from_string(key.args_json().to_owned()).expect("canonical JSON"),
                rows,
                version,
                changed_at,
                tombstones: VecDeque::new(),
                horizon: version,
                subs: HashMap::new(),
                idle_since: Some(Instant::now()),
            },
        );
    }

    pub(crate) fn unsubscribe(&self, key: &QueryKey, conn: u64) {
        let mut st = self.lock();
        if let Some(g) = st.groups.get_mut(key) {
            g.subs.remove(&conn);
            if g.subs.is_empty() {
                g.idle_since = Some(Instant::now());
            }
        }
    }

    /// Queues a reset snapshot of `key` for `outbox`; false if there is no group.
    pub(crate) fn resync(&self, key: &QueryKey, outbox: &Outbox) -> bool {
        let st = self.lock();
        match st.groups.get(key) {
            Some(g) => {
                outbox.send(snapshot_msg(key, g, true));
                true
            }
            None => false,
        }
    }

    /// The current rows of `key`, if some group holds them.
    pub(crate) fn current(&self, key: &QueryKey) -> Option<(Version, Rows)> {
        let st = self.lock();
        st.groups.get(key).map(|g| (g.version, g.rows.clone()))
    }

    /// The groups a batch's changes can affect.
    pub(crate) fn affected(&self, changes: &[(String, Option<String>)]) -> Vec<QueryKey> {
        let st = self.lock();
        let mut out: HashSet<QueryKey> = HashSet::new();
        for (table, part) in changes {
            let any = Dependency {
                table: table.clone(),
                partition: None,
            };
            if let Some(keys) = st.by_dep.get(&any) {
                out.extend(keys.iter().cloned());
            }
            if part.is_some() {
                let one = Dependency {
                    table: table.clone(),
                    partition: part.clone(),
                };
                if let Some(keys) = st.by_dep.get(&one) {
                    out.extend(keys.iter().cloned());
                }
            }
        }
        let mut out: Vec<QueryKey> = out.into_iter().collect();
        out.sort();
        out
    }

    /// A new result of `key` at `version`: diffs it against the group's, queues the one delta
    /// for every subscriber. Returns the number of subscribers it was queued for.
    pub(crate) fn update(&self, key: &QueryKey, rows: Rows, version: Version) -> usize {
        let mut st = self.lock();
        let Some(g) = st.groups.get_mut(key) else {
            return 0;
        };
        let d = delta::diff(&g.rows, &rows);
        if d.is_empty() {
            return 0;
        }
        for p in &d.puts {
            g.changed_at.insert(p.row.key.clone(), version);
        }
        for k in &d.dels {
            g.changed_at.remove(k);
            g.tombstones.push_back((version, k.clone()));
        }
        while g.tombstones.len() > MAX_TOMBSTONES {
            if let Some((v, _)) = g.tombstones.pop_front() {
                g.horizon = g.horizon.max(v);
            }
        }
        let msg: Utf8Bytes = ServerMsg::Delta(DeltaMsg {
            q: key.name().to_owned(),
            a: g.args.clone(),
            from: g.version,
            to: version,
            puts: d.puts,
            dels: d.dels,
            digest: rows.digest(),
        })
        .to_json()
        .into();
        g.rows = rows;
        g.version = version;
        let mut sent = 0;
        g.subs.retain(|_, o| {
            if o.send(msg.clone()) {
                sent += 1;
            }
            !o.is_closed()
        });
        if g.subs.is_empty() && g.idle_since.is_none() {
            g.idle_since = Some(Instant::now());
        }
        sent
    }

    /// A group's query failed after a change: drop the group and close its subscribers'
    /// connections (they reconnect, resubscribe, and get a fresh result or an error) rather than
    /// leave them with rows that are silently out of date.
    pub(crate) fn fail(&self, key: &QueryKey) {
        let mut st = self.lock();
        if let Some(g) = st.groups.remove(key) {
            for o in g.subs.values() {
                o.fail();
            }
            for d in g.deps {
                if let Some(set) = st.by_dep.get_mut(&d) {
                    set.remove(key);
                }
            }
        }
    }

    /// Drops every group, closing their subscribers' connections.
    pub(crate) fn fail_all(&self) {
        let keys: Vec<QueryKey> = self.lock().groups.keys().cloned().collect();
        for k in keys {
            self.fail(&k);
        }
    }

    /// Drops groups nobody has subscribed to for `idle`.
    pub(crate) fn evict_idle(&self, idle: Duration) {
        let mut st = self.lock();
        let now = Instant::now();
        let dead: Vec<QueryKey> = st
            .groups
            .iter()
            .filter(|(_, g)| g.idle_since.is_some_and(|t| now - t >= idle))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            if let Some(g) = st.groups.remove(&k) {
                for d in g.deps {
                    if let Some(set) = st.by_dep.get_mut(&d) {
                        set.remove(&k);
                        if set.is_empty() {
                            st.by_dep.remove(&d);
                        }
                    }
                }
            }
        }
    }

    /// How many groups and subscriptions there are (metrics, tests).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (
            st.groups.len(),
            st.groups.values().map(|g| g.subs.len()).sum(),
        )
    }
}

fn snapshot_msg(key: &QueryKey, g: &Group, reset: bool) -> Utf8Bytes {
    ServerMsg::Snapshot(Snapshot {
        q: key.name().to_owned(),
        a: g.args.clone(),
        v: g.version,
        reset,
        rows: g.rows.rows().to_vec(),
        digest: g.rows.digest(),
    })
    .to_json()
    .into()
}

/// The rows changed after `v` (the client holds the result at `v`), as a delta to the group's
/// version.
fn resume_msg(key: &QueryKey, g: &Group, v: Version) -> Utf8Bytes {
    let rows = g.rows.rows();
    let puts: Vec<Put> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| g.changed_at.get(&r.key).is_some_and(|&c| c > v))
        .map(|(i, r)| Put {
            row: r.clone(),
            after: i.checked_sub(1).map(|p| rows[p].key.clone()),
        })
        .collect();
    let mut dels: Vec<Arc<str>> = g
        .tombstones
        .iter()
        .filter(|(at, k)| *at > v && g.rows.get(k).is_none())
        .map(|(_, k)| k.clone())
        .collect();
    dels.sort();
    dels.dedup();
    ServerMsg::Delta(DeltaMsg {
        q: key.name().to_owned(),
        a: g.args.clone(),
        from: v,
        to: g.version,
        puts,
        dels,
        digest: g.rows.digest(),
    })
    .to_json()
    .into()
}

/// The error a connection gets before it is closed because a query it follows failed.
pub(crate) fn query_failed() -> ServerMsg {
    ServerMsg::error(
        ErrorCode::Internal,
        "a query this connection follows failed after a change; reconnect to resubscribe",
    )
}

/// The error message a slow connection gets before it is closed.
pub(crate) fn slow_consumer() -> ServerMsg {
    ServerMsg::error(
        ErrorCode::SlowConsumer,
        "this connection fell too far behind; reconnect and resume",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Row;

    fn rows(n: i64) -> Rows {
        Rows::new(
            (0..n)
                .map(|i| Row::from_serialize(format!("k{i}"), &i).unwrap())
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn invariant_12_a_slow_subscriber_is_cut_off_not_buffered() {
        let hub = Hub::default();
        let key = QueryKey::from_json("q", "{}").unwrap();
        hub.create(&key, vec![Dependency::table("t")], rows(0), Version(1));
        let (fast, mut fast_rx) = Outbox::new(1, 2);
        let (slow, _slow_rx) = Outbox::new(2, 2);
        hub.subscribe(&key, &fast, None);
        hub.subscribe(&key, &slow, None);
        fast_rx.try_recv().unwrap(); // the snapshot
        for v in 2..6 {
            hub.update(&key, rows(v as i64), Version(v));
            while fast_rx.try_recv().is_ok() {}
        }
        assert!(!fast.is_slow());
        assert!(slow.is_slow(), "its queue of 2 overflowed");
    }

    #[test]
    fn invariant_10_unaffected_groups_are_not_touched() {
        let hub = Hub::default();
        let a = QueryKey::from_json("q", r#"{"l":"a"}"#).unwrap();
        let b = QueryKey::from_json("q", r#"{"l":"b"}"#).unwrap();
        let all = QueryKey::from_json("all", "{}").unwrap();
        hub.create(
            &a,
            vec![Dependency::partition("t", "a")],
            rows(0),
            Version(1),
        );
        hub.create(
            &b,
            vec![Dependency::partition("t", "b")],
            rows(0),
            Version(1),
        );
        hub.create(&all, vec![Dependency::table("t")], rows(0), Version(1));
        let hit = hub.affected(&[("t".into(), Some("a".into()))]);
        assert_eq!(hit, vec![all.clone(), a.clone()]);
        assert!(hub.affected(&[("other".into(), None)]).is_empty());
    }
}
