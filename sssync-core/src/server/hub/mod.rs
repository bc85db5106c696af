//! Subscriptions grouped by query key (invariant 10): one result per key, whatever the number
//! of subscribers; each change is diffed once and the same bytes are queued for every
//! subscriber.
//!
//! Locks (std `Mutex`es: nothing inside awaits, every operation is short): one for the maps
//! (which keys exist, which keys depend on what), and one per group for its rows and
//! subscribers, so that serializing a big snapshot or diffing a big result holds up only that
//! key. Order: the maps' lock, then a group's, then an outbox's wanted set; never the other way.

use super::store::Change;
use crate::delta::{self};
use crate::protocol::ServerMsg;
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::Version;
use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod group;
mod messages;
mod outbox;
mod watches;

use group::Group;
pub(crate) use group::Patched;
use messages::{log_resume_msg, resume_msg, snapshot_msg};
pub(crate) use messages::{query_failed, row_bytes, slow_consumer};
pub(crate) use outbox::{InFlight, Outbox};
pub use watches::ChangeWatch;
pub(crate) use watches::Watches;

/// How many query keys are live on an instance, and how many subscriptions they have (see
/// [`Engine::counts`](crate::server::Engine::counts)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Live query keys (one group each).
    pub keys: usize,
    /// Subscriptions, over every key.
    pub subscriptions: usize,
}

/// How many deleted keys a group remembers for resuming clients; older resumes get a reset.
const MAX_TOMBSTONES: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A dependency as the change log records it: a table and, for a partitioned one, the
/// partition value's text (as the store's triggers write it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DepKey {
    pub(crate) table: String,
    pub(crate) part: Option<String>,
}

#[derive(Default)]
struct Maps {
    groups: HashMap<QueryKey, Arc<Mutex<Group>>>,
    by_dep: HashMap<DepKey, HashSet<QueryKey>>,
    by_access: HashMap<DepKey, HashSet<QueryKey>>,
}

impl Maps {
    fn remove(&mut self, key: &QueryKey) -> Option<Arc<Mutex<Group>>> {
        let g = self.groups.remove(key)?;
        let (deps, access) = {
            let g = lock(&g);
            (g.deps.clone(), g.access.clone())
        };
        for (map, deps) in [(&mut self.by_dep, deps), (&mut self.by_access, access)] {
            for d in deps {
                if let Some(set) = map.get_mut(&d) {
                    set.remove(key);
                    if set.is_empty() {
                        map.remove(&d);
                    }
                }
            }
        }
        Some(g)
    }
}

/// The keys of `map` that some changes touch.
fn touched(map: &HashMap<DepKey, HashSet<QueryKey>>, changes: &[Change]) -> Vec<QueryKey> {
    let mut out: HashSet<QueryKey> = HashSet::new();
    for c in changes {
        if c.whole {
            // Every row of the table: every key that depends on any part of it.
            for (d, keys) in map {
                if d.table == c.table {
                    out.extend(keys.iter().cloned());
                }
            }
            continue;
        }
        let any = DepKey {
            table: c.table.clone(),
            part: None,
        };
        if let Some(keys) = map.get(&any) {
            out.extend(keys.iter().cloned());
        }
        if c.part.is_some() {
            let one = DepKey {
                table: c.table.clone(),
                part: c.part.clone(),
            };
            if let Some(keys) = map.get(&one) {
                out.extend(keys.iter().cloned());
            }
        }
    }
    let mut out: Vec<QueryKey> = out.into_iter().collect();
    out.sort();
    out
}

/// All groups of one engine.
pub(crate) struct Hub {
    maps: Mutex<Maps>,
    /// The database version every group reflects (every commit up to it has been fanned out).
    processed: watch::Sender<Version>,
    max_groups: usize,
    /// What was derived from results outside the hub (kept pages), by dependency.
    pub(crate) watches: Watches,
}

/// What a subscription found.
pub(crate) enum Subscribed {
    /// Subscribed (the snapshot or resume delta is queued), or no longer wanted.
    Yes,
    /// No group for this key yet: the engine must create it.
    NoGroup,
    /// The client resumes from a version the group does not remember: the engine resumes it
    /// from the durable log, or resets it ([`Hub::subscribe_from`]).
    Behind(Version),
}

/// The hub holds `max_groups` live keys, none of them idle.
#[derive(Debug)]
pub(crate) struct Full;

impl Hub {
    pub(crate) fn new(max_groups: usize) -> Hub {
        Hub {
            maps: Mutex::new(Maps::default()),
            processed: watch::channel(Version(0)).0,
            max_groups: max_groups.max(1),
            watches: Watches::default(),
        }
    }

    fn group(&self, key: &QueryKey) -> Option<Arc<Mutex<Group>>> {
        lock(&self.maps).groups.get(key).cloned()
    }

    pub(crate) fn processed(&self) -> Version {
        *self.processed.borrow()
    }

    /// The database went back in history (restored while this instance ran): start over from
    /// `v`.
    pub(crate) fn reset_processed(&self, v: Version) {
        self.processed.send_replace(v);
    }

    pub(crate) fn set_processed(&self, v: Version) {
        self.processed.send_if_modified(|p| {
            let newer = v > *p;
            if newer {
                *p = v;
            }
            newer
        });
    }

    /// Waits until every commit up to `v` has been fanned out, at most `limit`; false on time
    /// out.
    pub(crate) async fn wait_processed(&self, v: Version, limit: Duration) -> bool {
        let mut rx = self.processed.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|p| *p >= v))
            .await
            .is_ok_and(|r| r.is_ok())
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
        let Some(g) = self.group(key) else {
            return Subscribed::NoGroup;
        };
        let processed = self.processed();
        let mut g = lock(&g);
        if g.dead {
            return Subscribed::NoGroup;
        }
        if outbox.is_closed() || !outbox.wants(key) {
            return Subscribed::Yes; // gone, or unsubscribed meanwhile: nothing to do
        }
        let msg = match client_v {
            Some(v) if v >= g.horizon && v <= processed => resume_msg(key, &g, v),
            Some(v) => return Subscribed::Behind(v),
            None => snapshot_msg(key, &g, false),
        };
        g.subs.insert(outbox.id, outbox.clone());
        g.idle_since = None;
        outbox.send(msg);
        Subscribed::Yes
    }

    /// Makes `outboxes` (subscribers that resume from a version the group does not remember)
    /// join the group of `key` while their resume is read from the durable log, off the tailer:
    /// they get no delta until [`Hub::subscribe_from`] sends them theirs, but a change of access
    /// checks them like every subscriber, and their answers wait (each must call
    /// [`Outbox::end_join`] once its resume is queued). Answers the group's version now (the
    /// resume adds the group's own changes after it to those the log read finds), or `None`
    /// without a group.
    pub(crate) fn join(&self, key: &QueryKey, outboxes: &[Outbox]) -> Option<Version> {
        let g = self.group(key)?;
        let mut g = lock(&g);
        if g.dead {
            return None;
        }
        for o in outboxes {
            g.joining.insert(o.id, o.clone());
            o.begin_join();
        }
        g.idle_since = None;
        Some(g.version)
    }

    /// Subscribes `outbox` to the group of `key` for a client that holds its result at `v`,
    /// which the group does not remember: with `changed` (the keys of the rows that changed
    /// since `v`, from the durable log, read while the group was at version `since` or later),
    /// a delta of those rows and of those the group changed after `since`; without, a reset
    /// snapshot.
    pub(crate) fn subscribe_from(
        &self,
        key: &QueryKey,
        outbox: &Outbox,
        v: Version,
        since: Version,
        changed: Option<&HashSet<String>>,
    ) -> Subscribed {
        let Some(g) = self.group(key) else {
            return Subscribed::NoGroup;
        };
        let mut g = lock(&g);
        g.joining.remove(&outbox.id);
        if g.dead {
            return Subscribed::NoGroup;
        }
        // Gone, unsubscribed, or refused meanwhile (a revocation also takes it out of
        // `joining`).
        if outbox.is_closed() || !outbox.wants(key) {
            if g.subs.is_empty() && g.joining.is_empty() && g.idle_since.is_none() {
                g.idle_since = Some(Instant::now());
            }
            return Subscribed::Yes;
        }
        let msg = match changed {
            // What changed after `since` is in the group's memory, when it reaches back that far.
            Some(keys) if since >= g.horizon => {
                let mut keys = keys.clone();
                keys.extend(
                    g.changed_at
                        .iter()
                        .filter(|&(_, &at)| at > since)
                        .map(|(k, _)| k.to_string()),
                );
                keys.extend(
                    g.tombstones
                        .iter()
                        .filter(|(at, _)| *at > since)
                        .map(|(_, k)| k.to_string()),
                );
                log_resume_msg(key, &g, v, &keys)
            }
            _ => snapshot_msg(key, &g, true),
        };
        g.subs.insert(outbox.id, outbox.clone());
        g.idle_since = None;
        outbox.send(msg);
        Subscribed::Yes
    }

    /// Creates a group from a fresh result at `version` (the engine serializes this with
    /// writes). When the hub is full, the longest idle group goes; when none is idle, `Full`.
    pub(crate) fn create(
        &self,
        key: &QueryKey,
        deps: Vec<DepKey>,
        access: Vec<DepKey>,
        rows: Rows,
        version: Version,
    ) -> Result<(), Full> {
        let mut maps = lock(&self.maps);
        if maps.groups.contains_key(key) {
            return Ok(());
        }
        if maps.groups.len() >= self.max_groups {
            let oldest = maps
                .groups
                .iter()
                .filter_map(|(k, g)| Some((lock(g).idle_since?, k.clone())))
                .min();
            match oldest {
                Some((_, k)) => {
                    if let Some(g) = maps.remove(&k) {
                        lock(&g).dead = true;
                    }
                }
                None => return Err(Full),
            }
        }
        for d in &deps {
            maps.by_dep
                .entry(d.clone())
                .or_default()
                .insert(key.clone());
        }
        for d in &access {
            maps.by_access
                .entry(d.clone())
                .or_default()
                .insert(key.clone());
        }
        let changed_at = rows
            .rows()
            .iter()
            .map(|r| (r.key.clone(), version))
            .collect();
        maps.groups.insert(
            key.clone(),
            Arc::new(Mutex::new(Group {
                deps,
                access,
                args: RawValue::from_string(key.args_json().to_owned()).expect("canonical JSON"),
                bytes: rows.rows().iter().map(row_bytes).sum(),
                rows,
                version,
                changed_at,
                tombstones: VecDeque::new(),
                horizon: version,
                subs: HashMap::new(),
                joining: HashMap::new(),
                idle_since: Some(Instant::now()),
                dead: false,
            })),
        );
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, key: &QueryKey, conn: u64) {
        if let Some(g) = self.group(key) {
            let mut g = lock(&g);
            g.subs.remove(&conn);
            g.joining.remove(&conn);
            if g.subs.is_empty() && g.joining.is_empty() && g.idle_since.is_none() {
                g.idle_since = Some(Instant::now());
            }
        }
    }

    /// Queues a reset snapshot of `key` for `outbox` (serialized under that group's lock only);
    /// false if there is no group. Nothing for an outbox that does not want the key (refused,
    /// revoked, or unsubscribed): it is answered as done.
    pub(crate) fn resync(&self, key: &QueryKey, outbox: &Outbox) -> bool {
        let Some(g) = self.group(key) else {
            return false;
        };
        let mut g = lock(&g);
        if g.dead {
            return false;
        }
        if !outbox.wants(key) || outbox.is_closed() {
            return true;
        }
        // A client that asks for a reset follows the key: after its group failed and was made
        // again, it is not a subscriber of the new one yet.
        g.subs.insert(outbox.id, outbox.clone());
        g.idle_since = None;
        outbox.send(snapshot_msg(key, &g, true));
        true
    }

    /// The current rows of `key`, if some group holds them.
    pub(crate) fn current(&self, key: &QueryKey) -> Option<(Version, Rows)> {
        let g = self.group(key)?;
        let g = lock(&g);
        (!g.dead).then(|| (g.version, g.rows.clone()))
    }

    /// The groups some changes can affect.
    pub(crate) fn affected(&self, changes: &[Change]) -> Vec<QueryKey> {
        touched(&lock(&self.maps).by_dep, changes)
    }

    /// The groups whose authorization some changes touch, with their subscribers (each to be
    /// checked again).
    pub(crate) fn access_touched(&self, changes: &[Change]) -> Vec<(QueryKey, Vec<Outbox>)> {
        let keys = touched(&lock(&self.maps).by_access, changes);
        keys.into_iter()
            .filter_map(|k| {
                let g = self.group(&k)?;
                let g = lock(&g);
                let subs: Vec<Outbox> =
                    g.subs.values().chain(g.joining.values()).cloned().collect();
                Some((k, subs))
            })
            .collect()
    }

    /// Ends `outbox`'s subscription to `key` with `msg` (its access was withdrawn): it gets
    /// nothing more of the key, also if it subscribes again meanwhile.
    pub(crate) fn revoke(&self, key: &QueryKey, outbox: &Outbox, msg: &ServerMsg) {
        if let Some(g) = self.group(key) {
            let mut g = lock(&g);
            g.subs.remove(&outbox.id);
            g.joining.remove(&outbox.id);
            if g.subs.is_empty() && g.joining.is_empty() && g.idle_since.is_none() {
                g.idle_since = Some(Instant::now());
            }
        }
        outbox.unwant(key);
        outbox.send_msg(msg);
    }

    /// A new result of `key` at `version`: diffs it against the group's, queues the one delta
    /// for every subscriber. Returns the number of subscribers it was queued for.
    pub(crate) fn update(&self, key: &QueryKey, rows: Rows, version: Version) -> usize {
        let Some(g) = self.group(key) else {
            return 0;
        };
        let mut g = lock(&g);
        let g = &mut *g;
        let d = delta::diff(&g.rows, &rows);
        if d.is_empty() {
            return 0;
        }
        g.bytes = rows.rows().iter().map(row_bytes).sum();
        g.rows = rows;
        g.changed(key, d.puts, d.dels, version)
    }
}

impl Hub {
    /// Patches `key`'s result at `version` with what the incremental read `found` among the
    /// `changed` keys (see [`incremental::patch`](super::incremental::patch)), and queues the
    /// delta for every subscriber, like [`Hub::update`]. A result that would grow past
    /// `max_bytes` is not patched.
    pub(crate) fn patch(
        &self,
        key: &QueryKey,
        changed: &HashSet<Arc<str>>,
        found: Vec<super::incremental::Found>,
        version: Version,
        limit: Option<usize>,
        max_bytes: usize,
    ) -> Patched {
        use super::incremental::{Patch, patch};
        let Some(g) = self.group(key) else {
            return Patched::NoGroup;
        };
        let mut g = lock(&g);
        let g = &mut *g;
        if g.dead {
            return Patched::NoGroup;
        }
        let size = |rows: &Rows, keys: &mut dyn Iterator<Item = &Arc<str>>| -> usize {
            keys.filter_map(|k| rows.get(k)).map(row_bytes).sum()
        };
        let before = size(&g.rows, &mut changed.iter());
        // The rows a window may push out are unchanged ones: their size, before they go.
        let tail: HashMap<Arc<str>, usize> = match limit {
            Some(_) => g
                .rows
                .rows()
                .iter()
                .rev()
                .take(changed.len())
                .map(|r| (r.key.clone(), row_bytes(r)))
                .collect(),
            None => HashMap::new(),
        };
        let (puts, dels) = match patch(&mut g.rows, changed, found, limit) {
            Patch::Rerun => return Patched::Rerun,
            // Half-patched: nobody reads these rows before the caller fails the key.
            Patch::Inconsistent => {
                g.dead = true;
                return Patched::Inconsistent;
            }
            Patch::Done { puts, dels } => (puts, dels),
        };
        let after = size(&g.rows, &mut changed.iter());
        let pushed_out: usize = dels
            .iter()
            .filter(|k| !changed.contains(*k))
            .map(|k| tail.get(k).copied().unwrap_or(0))
            .sum();
        let bytes = (g.bytes + after).saturating_sub(before + pushed_out);
        if bytes > max_bytes {
            // The key fails with `too_large` (its group goes, with what the patch did; nobody
            // reads those rows meanwhile).
            g.dead = true;
            return Patched::TooLarge(bytes);
        }
        g.bytes = bytes;
        if puts.is_empty() && dels.is_empty() {
            return Patched::Done(0);
        }
        Patched::Done(g.changed(key, puts, dels, version))
    }

    /// A group's query failed after a change (or its result grew too large): drop the group and
    /// tell each subscriber, for that key, with `error` (the client keeps its rows, shows the
    /// query as failed and subscribes again later) rather than leave it with rows that are
    /// silently out of date.
    pub(crate) fn fail(&self, key: &QueryKey, error: &ServerMsg) {
        let removed = lock(&self.maps).remove(key);
        if let Some(g) = removed {
            let mut g = lock(&g);
            g.dead = true;
            let msg: Utf8Bytes = error.to_json().into();
            for o in g.subs.values().chain(g.joining.values()) {
                o.send(msg.clone());
            }
            g.subs.clear();
            g.joining.clear();
        }
    }

    /// Drops every group without a word (a new epoch: their connections close anyway).
    pub(crate) fn clear(&self) {
        let mut maps = lock(&self.maps);
        for g in maps.groups.values() {
            lock(g).dead = true;
        }
        maps.groups.clear();
        maps.by_dep.clear();
        maps.by_access.clear();
    }

    /// Drops groups nobody has subscribed to for `idle`.
    pub(crate) fn evict_idle(&self, idle: Duration) {
        let mut maps = lock(&self.maps);
        let now = Instant::now();
        let dead: Vec<QueryKey> = maps
            .groups
            .iter()
            .filter(|(_, g)| lock(g).idle_since.is_some_and(|t| now - t >= idle))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            if let Some(g) = maps.remove(&k) {
                lock(&g).dead = true;
            }
        }
    }

    /// How many groups and subscriptions there are (metrics, tests).
    pub(crate) fn counts(&self) -> Counts {
        let maps = lock(&self.maps);
        Counts {
            keys: maps.groups.len(),
            subscriptions: maps.groups.values().map(|g| lock(g).subs.len()).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::outbox::OutboxRx;
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

    fn dep(table: &str, part: Option<&str>) -> DepKey {
        DepKey {
            table: table.into(),
            part: part.map(str::to_owned),
        }
    }

    fn outbox(id: u64, capacity: usize, key: &QueryKey) -> (Outbox, OutboxRx) {
        let (o, rx) = Outbox::new(id, capacity, 1 << 20);
        o.want(key);
        (o, rx)
    }

    #[tokio::test]
    async fn an_event_dropped_unanswered_wakes_the_busy_connection_that_stopped_reading() {
        // Queue of 2: one event in flight makes the connection busy (it stops reading).
        let (o, _rx) = Outbox::new(1, 2, 1 << 20);
        let answered = o.in_flight();
        assert!(o.busy());
        // Answered: no longer owed before its answer is queued (the queue wakes it).
        answered.answered();
        assert!(!o.busy());
        // Dropped with no answer (nothing is queued): the connection is woken to read again.
        let dropped = o.in_flight();
        assert!(o.busy());
        drop(dropped);
        assert!(!o.busy());
        tokio::time::timeout(Duration::from_secs(5), o.wake.notified())
            .await
            .expect("woken");
    }

    #[test]
    fn invariant_12_a_slow_subscriber_is_cut_off_not_buffered() {
        let hub = Hub::new(10);
        let key = QueryKey::from_json("q", "{}").unwrap();
        hub.create(&key, vec![dep("t", None)], vec![], rows(0), Version(1))
            .unwrap();
        let (fast, mut fast_rx) = outbox(1, 2, &key);
        let (slow, _slow_rx) = outbox(2, 2, &key);
        hub.subscribe(&key, &fast, None);
        hub.subscribe(&key, &slow, None);
        fast_rx.rx.try_recv().unwrap(); // the snapshot
        for v in 2..6 {
            hub.update(&key, rows(v as i64), Version(v));
            while fast_rx.rx.try_recv().is_ok() {}
        }
        assert!(!fast.is_slow());
        assert!(slow.is_slow(), "its queue of 2 overflowed");
    }

    #[test]
    fn invariant_12_an_outbox_is_bounded_in_bytes_not_only_in_messages() {
        let (o, _rx) = Outbox::new(1, 1000, 100);
        // One message always fits an empty queue, even a big one.
        assert!(o.send("x".repeat(150).into()));
        assert!(
            !o.send("y".into()),
            "the queue already holds 150 bytes of 100"
        );
        assert!(o.is_slow());
        let (o, _rx2) = Outbox::new(2, 1000, 100);
        assert!(o.send("a".repeat(60).into()));
        assert!(!o.send("b".repeat(60).into()));
        assert_eq!(o.queued_bytes(), 60);
    }

    #[test]
    fn invariant_10_unaffected_groups_are_not_touched() {
        let hub = Hub::new(10);
        let a = QueryKey::from_json("q", r#"{"l":"a"}"#).unwrap();
        let b = QueryKey::from_json("q", r#"{"l":"b"}"#).unwrap();
        let all = QueryKey::from_json("all", "{}").unwrap();
        hub.create(&a, vec![dep("t", Some("a"))], vec![], rows(0), Version(1))
            .unwrap();
        hub.create(&b, vec![dep("t", Some("b"))], vec![], rows(0), Version(1))
            .unwrap();
        hub.create(&all, vec![dep("t", None)], vec![], rows(0), Version(1))
            .unwrap();
        let change = |table: &str, part: Option<&str>, whole: bool| Change {
            version: Version(2),
            table: table.into(),
            part: part.map(str::to_owned),
            whole,
        };
        let hit = hub.affected(&[change("t", Some("a"), false)]);
        assert_eq!(hit, vec![all.clone(), a.clone()]);
        assert!(hub.affected(&[change("other", None, false)]).is_empty());
        // A change of the whole table (a TRUNCATE) reaches every partition.
        assert_eq!(hub.affected(&[change("t", None, true)]), vec![all, a, b]);
    }

    #[test]
    fn invariant_12_the_number_of_groups_is_bounded_idle_ones_go_first() {
        let hub = Hub::new(2);
        let k = |i: u32| QueryKey::from_json("q", &format!(r#"{{"i":{i}}}"#)).unwrap();
        hub.create(&k(1), vec![], vec![], rows(0), Version(1))
            .unwrap();
        hub.create(&k(2), vec![], vec![], rows(0), Version(1))
            .unwrap();
        let (o, _rx) = outbox(1, 10, &k(2));
        hub.subscribe(&k(2), &o, None);
        // Key 1 is idle: it makes room for key 3.
        hub.create(&k(3), vec![], vec![], rows(0), Version(1))
            .unwrap();
        assert!(hub.current(&k(1)).is_none());
        let (o3, _rx3) = outbox(2, 10, &k(3));
        hub.subscribe(&k(3), &o3, None);
        // Both live keys have subscribers: a fourth is refused.
        assert!(
            hub.create(&k(4), vec![], vec![], rows(0), Version(1))
                .is_err()
        );
        assert_eq!(
            hub.counts(),
            Counts {
                keys: 2,
                subscriptions: 2
            }
        );
    }

    #[test]
    fn a_key_the_connection_dropped_before_its_group_existed_is_not_subscribed() {
        let hub = Hub::new(10);
        let key = QueryKey::from_json("q", "{}").unwrap();
        let (o, mut rx) = outbox(1, 10, &key);
        o.unwant(&key); // unsubscribed before the group was made
        hub.create(&key, vec![dep("t", None)], vec![], rows(0), Version(1))
            .unwrap();
        hub.subscribe(&key, &o, None);
        assert_eq!(
            hub.counts(),
            Counts {
                keys: 1,
                subscriptions: 0
            }
        );
        hub.update(&key, rows(1), Version(2));
        assert!(rx.rx.try_recv().is_err(), "no snapshot or delta for it");
    }
}
