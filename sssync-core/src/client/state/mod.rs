//! The client's protocol state machine (no I/O).

use super::Prediction;
use super::persist::{Persist, PredictFn};
use crate::protocol::{
    ClientMsg, EventMsg, Hello, KeyRef, PROTOCOL, ProtocolError, Rejection, Sub,
};
use crate::query::QueryKey;
use crate::row::{Row, Rows};
use crate::schema::{Event, Query};
use crate::version::{Epoch, Version};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

mod messages;
mod persist_ops;
mod rebase;
mod tabs;

/// The first wait before subscribing again to a query that failed on the server; it doubles
/// with each failure in a row, up to `QUERY_RETRY_MAX`.
const QUERY_RETRY_MIN: Duration = Duration::from_millis(500);
const QUERY_RETRY_MAX: Duration = Duration::from_secs(30);

/// An event sent but not yet acknowledged.
#[derive(Clone)]
struct Pending {
    name: String,
    args: Arc<str>,
    /// `None` for an event restored without its type registered: sent, not predicted.
    predict: Option<PredictFn>,
    /// When this tab learned of it (see `ClientState::arrivals`).
    order: u64,
}

/// The confirmed state of one subscribed key.
#[derive(Clone, Debug, Default)]
struct Held {
    /// Confirmed rows and their version; `None` until the first snapshot.
    confirmed: Option<(Version, Rows)>,
    /// The rows did not match the server's (a digest mismatch, a delta that did not apply): a
    /// reset is asked for; the old rows stay shown (and stored) until it swaps in.
    resyncing: bool,
    /// The server could not serve this key (its query failed, its result is too large, the
    /// server is full): the error, and how many times in a row.
    failed: Option<(ProtocolError, u32)>,
}

/// What a message changed, for the layer above (UI, tests).
#[derive(Clone, Debug, Default)]
pub struct Update {
    /// Keys whose view may have changed.
    pub changed: Vec<QueryKey>,
    /// Events the server refused: their seq and why. Their predictions are gone from the view.
    pub rejected: Vec<(u64, Rejection)>,
    /// Events the server applied or refused, with the version of that outcome (other tabs drop
    /// their copies of these predictions once they have seen that version).
    pub settled: Vec<(u64, Version)>,
    /// Protocol errors the server reported.
    pub errors: Vec<ProtocolError>,
    /// Messages to send to the server now.
    pub send: Vec<ClientMsg>,
    /// The server's welcome was processed: the connection is live.
    pub live: bool,
    /// The server refused writes for now (`retry`): resend the pending events (with
    /// [`ClientState::resend`]) after this long.
    pub resend_after: Option<Duration>,
    /// Keys whose query failed on the server: subscribe again (with
    /// [`ClientState::resubscribe`]) after the given wait.
    pub retry_subs: Vec<(QueryKey, Duration)>,
    /// The connection lost track of the server (a message that did not parse, a gap in seqs
    /// the client cannot fill): close it and connect again.
    pub reconnect: bool,
    /// The server's history is not the one the client's cache came from (another database, or
    /// this one restored from an earlier copy): the cache was reset, and this many pending
    /// events are to be sent (once) into the new history, under their own seqs.
    pub history_reset: Option<usize>,
    /// The welcome names another identity than the one this client's rows and pending events
    /// were made under (signed out, or in as someone else): they were dropped (a store drops
    /// everything it kept of them, rows cached for keys no longer held included).
    pub identity_reset: bool,
    /// The server refused this client id to this identity (it belongs to another one), or
    /// said the connection's identity changed: everything held was dropped; take a new client
    /// id ([`ClientState::new_identity`]) and connect again.
    pub identity_changed: bool,
    /// Keys this identity may not read (`forbidden`): their rows were dropped, and they are
    /// not subscribed again by themselves.
    pub forbidden: Vec<QueryKey>,
}

/// Confirmed rows per key, pending events, and the view (confirmed + predictions).
pub struct ClientState {
    client_id: String,
    epoch: Option<Epoch>,
    keys: HashMap<QueryKey, Held>,
    /// Unacknowledged events by seq.
    pending: BTreeMap<u64, Pending>,
    /// Events a reconnect's welcome says are applied, whose effects may not have reached the
    /// confirmed rows yet: still predicted until every held key has answered its `sub`.
    settling: BTreeMap<u64, Pending>,
    /// Held keys that have not answered since the last welcome.
    awaiting: HashSet<QueryKey>,
    /// Keys whose `sub` is on its way (sent, not answered): sent again if the answer is lost.
    asked: HashSet<QueryKey>,
    /// Predictions of events pending in other tabs of this browser, by (tab, seq): shown here
    /// too, so that tabs see each other's writes at once, also offline.
    foreign: BTreeMap<(String, u64), (u64, PredictFn)>,
    /// A counter of the events this tab learned of, its own and other tabs': predictions apply
    /// in that order, so every tab shows writes in the order they were made.
    arrivals: u64,
    /// Foreign events the server has applied at a version this tab has not seen yet.
    foreign_done: Vec<(Version, (String, u64))>,
    next_seq: u64,
    views: HashMap<QueryKey, Rows>,
    /// The keys some unsettled event predicts into: their view is not the server's yet.
    predicted: HashSet<QueryKey>,
    /// The highest version any message of this connection has carried; deltas up to it have
    /// arrived for every subscription (the server sends them before acks).
    seen: Version,
    /// The highest version a server proved to this client in this epoch (a `welcome`'s or an
    /// `ack`'s), with its proof: a server whose database is below it has lost history.
    proven: Option<(Version, String)>,
    /// The last `gap` answered by resending (its `expected`): one resend per gap, not one per
    /// event that arrives out of order.
    resent_from: Option<u64>,
    /// The server refused writes for now (its message), until an event is settled again.
    write_blocked: Option<String>,
    /// Changes not yet handed to the store.
    persist: Vec<Persist>,
    /// The tag of the identity this client's rows and pending events belong to (`""`:
    /// anonymous), as the last welcome gave it; `None` before any.
    who: Option<String>,
}

impl ClientState {
    /// A fresh client with no cache.
    pub fn new(client_id: impl Into<String>) -> ClientState {
        ClientState {
            client_id: client_id.into(),
            epoch: None,
            keys: HashMap::new(),
            pending: BTreeMap::new(),
            settling: BTreeMap::new(),
            awaiting: HashSet::new(),
            asked: HashSet::new(),
            foreign: BTreeMap::new(),
            foreign_done: Vec::new(),
            arrivals: 0,
            next_seq: 1,
            views: HashMap::new(),
            predicted: HashSet::new(),
            seen: Version(0),
            proven: None,
            resent_from: None,
            write_blocked: None,
            persist: Vec::new(),
            who: None,
        }
    }

    /// The tag of the identity this client's rows and pending events belong to (`""`:
    /// anonymous), once a welcome said it.
    pub fn identity_tag(&self) -> Option<&str> {
        self.who.as_deref()
    }

    /// Drops every row and pending event (they belong to an identity that is no longer this
    /// client's) and goes on as `client_id`, from seq 1, its identity unknown until the next
    /// welcome. The subscriptions stay (they are sent again on the next connection).
    pub fn new_identity(&mut self, client_id: impl Into<String>) -> Update {
        self.forget_all();
        self.client_id = client_id.into();
        self.next_seq = 1;
        self.who = None;
        self.persist_meta();
        let mut u = self.recompute();
        u.identity_changed = true;
        u
    }

    /// This client's id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The `hello` to open a connection with. With a cache, it says how far this client got in
    /// that history (the highest seq settled, the highest version seen), so that a server whose
    /// database lost that history (a restored backup) can tell.
    pub fn hello(&self) -> ClientMsg {
        let known = self.epoch.is_some();
        ClientMsg::Hello(Hello {
            protocol: PROTOCOL,
            client_id: self.client_id.clone(),
            epoch: self.epoch.clone(),
            acked: known.then(|| self.acked()),
            version: self.proven.as_ref().map(|p| p.0),
            proof: self.proven.as_ref().map(|p| p.1.clone()),
        })
    }

    /// The highest seq the server has settled for this client, as far as it knows: every seq
    /// below the oldest pending event (or below the next seq, when none is pending).
    pub fn acked(&self) -> u64 {
        let first = self.pending.keys().next().copied().unwrap_or(self.next_seq);
        first.saturating_sub(1)
    }

    /// Whether the view of `key` is the server's confirmed rows: no event still waiting for
    /// the server (this tab's, or another tab's it shows) predicts into it.
    pub fn is_confirmed(&self, key: &QueryKey) -> bool {
        !self.predicted.contains(key)
    }

    /// Why the server refuses writes for now (`retry`), until one is settled again.
    pub fn write_blocked_reason(&self) -> Option<&str> {
        self.write_blocked.as_deref()
    }

    /// Why the server could not serve `key` lately, if it could not (cleared once it does).
    pub fn query_error(&self, key: &QueryKey) -> Option<&ProtocolError> {
        self.keys.get(key)?.failed.as_ref().map(|(e, _)| e)
    }

    /// The `sub` to send again for a key whose query failed (after the wait the update gave);
    /// `None` when it is no longer held or no longer failed.
    pub fn resubscribe(&mut self, key: &QueryKey) -> Option<ClientMsg> {
        self.keys.get(key)?.failed.as_ref()?;
        self.asked.insert(key.clone());
        Some(self.sub_msg(key))
    }

    /// Every pending event, to send again (after a `retry`, or when acknowledgements are late):
    /// the server acknowledges the ones it had as duplicates.
    pub fn resend(&mut self) -> Vec<ClientMsg> {
        self.resent_from = None;
        self.pending
            .keys()
            .map(|&seq| self.event_msg(seq))
            .collect()
    }

    /// Starts holding query `key`; returns the `sub` to send (when connected).
    pub fn subscribe(&mut self, key: QueryKey) -> ClientMsg {
        self.keys.entry(key.clone()).or_default();
        self.asked.insert(key.clone());
        self.sub_msg(&key)
    }

    /// The `sub`s still unanswered (their answer may be lost: a message the server could not
    /// read): send them again; a duplicate `sub` only costs a resume.
    pub fn unanswered(&self) -> Vec<ClientMsg> {
        let mut keys: Vec<&QueryKey> = self.asked.iter().collect();
        keys.sort();
        keys.into_iter().map(|k| self.sub_msg(k)).collect()
    }

    /// Seeds `key` with rows the server rendered (at version `v` of history `epoch`), so the
    /// client starts from them and subscribes from `v`. Ignored when the client holds newer
    /// rows, or rows of another history. Returns whether it took them.
    pub fn seed(&mut self, key: QueryKey, epoch: &Epoch, v: Version, rows: Vec<Row>) -> bool {
        if self.epoch.is_none() {
            self.epoch = Some(epoch.clone());
            self.persist_meta();
        }
        if self.epoch.as_ref() != Some(epoch) {
            return false;
        }
        let held = self.keys.entry(key.clone()).or_default();
        if held.confirmed.as_ref().is_some_and(|(have, _)| *have >= v) {
            return false;
        }
        let Ok(rows) = Rows::new(rows) else {
            return false;
        };
        held.confirmed = Some((v, rows));
        self.persist_rows(&key);
        self.recompute();
        true
    }

    /// Stops holding `key`; returns the `unsub` to send.
    pub fn unsubscribe(&mut self, key: &QueryKey) -> Option<ClientMsg> {
        self.keys.remove(key)?;
        self.views.remove(key);
        self.persist_rows(key);
        self.answered(key);
        Some(ClientMsg::Unsub(key_ref(key)))
    }

    fn sub_msg(&self, key: &QueryKey) -> ClientMsg {
        // Rows that did not match are not resumed from: a reset is what they need.
        let v = self
            .keys
            .get(key)
            .filter(|h| !h.resyncing)
            .and_then(|h| h.confirmed.as_ref())
            .map(|(v, _)| *v);
        ClientMsg::Sub(Sub {
            q: key.name().to_owned(),
            a: raw(key.args_json()),
            v,
        })
    }

    /// Queues event `e` with the next seq and applies its prediction; returns the message to
    /// send (when connected) and what changed. An event whose args are over the protocol's
    /// limit is refused here, before it takes a seq (the server would refuse it anyway).
    pub fn push<E: Event>(&mut self, e: E) -> Result<(ClientMsg, Update), Rejection> {
        let args: Arc<str> = serde_json::to_string(&e)
            .map_err(|err| Rejection::new("bad_args", err.to_string()))?
            .into();
        if args.len() > crate::query::MAX_ARGS_BYTES {
            return Err(Rejection::new(
                "too_large",
                format!(
                    "the event's args are {} bytes, over the limit of {}",
                    args.len(),
                    crate::query::MAX_ARGS_BYTES
                ),
            ));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let predict: PredictFn = Arc::new(move |p: &mut Prediction<'_>| e.predict(p));
        self.arrivals += 1;
        self.pending.insert(
            seq,
            Pending {
                name: E::NAME.to_owned(),
                args,
                predict: Some(predict),
                order: self.arrivals,
            },
        );
        self.persist_event(seq);
        self.persist_meta();
        let msg = self.event_msg(seq);
        Ok((msg, self.recompute()))
    }

    fn event_msg(&self, seq: u64) -> ClientMsg {
        let p = &self.pending[&seq];
        ClientMsg::Event(EventMsg {
            seq,
            name: p.name.clone(),
            args: raw(&p.args),
        })
    }

    /// The rows the UI shows for `key` (confirmed + predictions), if held and loaded.
    pub fn view(&self, key: &QueryKey) -> Option<&Rows> {
        self.views.get(key)
    }

    /// The typed rows of query `Q` with `args`, if held and loaded.
    pub fn rows<Q: Query>(&self, args: &Q::Args) -> Option<Vec<Q::Row>> {
        let key = QueryKey::new(Q::NAME, args).ok()?;
        self.view(&key)?
            .rows()
            .iter()
            .map(|r| r.decode::<Q::Row>())
            .collect::<Result<_, _>>()
            .ok()
    }

    /// The confirmed (server) rows of `key` and their version.
    pub fn confirmed(&self, key: &QueryKey) -> Option<(Version, &Rows)> {
        let (v, rows) = self.keys.get(key)?.confirmed.as_ref()?;
        Some((*v, rows))
    }

    /// How many events wait for the server.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// How many events named `name` wait for the server.
    pub fn pending_count_of(&self, name: &str) -> usize {
        self.pending.values().filter(|p| p.name == name).count()
    }

    /// The name of pending event `seq`.
    pub fn pending_name(&self, seq: u64) -> Option<&str> {
        self.pending.get(&seq).map(|p| p.name.as_str())
    }

    /// The events waiting for the server: (seq, name, args JSON), in seq order.
    pub fn pending_events(&self) -> Vec<(u64, String, String)> {
        self.pending
            .iter()
            .map(|(&seq, p)| (seq, p.name.clone(), p.args.to_string()))
            .collect()
    }

    /// The epoch of the cache, once a server has welcomed this client.
    pub fn epoch(&self) -> Option<&Epoch> {
        self.epoch.as_ref()
    }

    /// The highest version seen on the current connection.
    pub fn highest_version(&self) -> Version {
        self.seen
    }
}

impl ClientState {}

fn key_ref(key: &QueryKey) -> KeyRef {
    KeyRef {
        q: key.name().to_owned(),
        a: raw(key.args_json()),
    }
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("canonical args are JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::persist::EventTypes;
    use crate::delta::Put;
    use crate::protocol::{Ack, DeltaMsg, Limits, ServerMsg, Snapshot, Welcome};
    use crate::row::Digest;
    use serde::{Deserialize, Serialize};

    struct Items;
    impl Query for Items {
        const NAME: &'static str = "items";
        type Args = ();
        type Row = String;
        fn row_key(r: &String) -> String {
            r.clone()
        }
    }

    #[derive(Clone, Serialize, Deserialize)]
    struct AddItem(String);
    impl Event for AddItem {
        const NAME: &'static str = "add_item";
        fn predict(&self, view: &mut Prediction<'_>) {
            view.update(Items::request(()), |rows| rows.push(self.0.clone()));
        }
    }

    fn key() -> QueryKey {
        QueryKey::new("items", &()).unwrap()
    }

    fn welcome(last_seq: u64, version: u64) -> ServerMsg {
        ServerMsg::Welcome(Welcome {
            protocol: crate::protocol::PROTOCOL,
            epoch: Epoch("e".into()),
            version: Version(version),
            last_seq,
            limits: Limits::default(),
            proof: None,
            who: None,
        })
    }

    /// String rows, each its own key.
    fn rows_of(items: &[&str]) -> Vec<Row> {
        items
            .iter()
            .map(|r| Row::from_serialize(*r, r).unwrap())
            .collect()
    }

    fn snapshot(v: u64, rows: &[&str]) -> ServerMsg {
        let rows = rows_of(rows);
        ServerMsg::Snapshot(Snapshot {
            q: "items".into(),
            a: raw("null"),
            v: Version(v),
            reset: false,
            digest: Digest::of(&rows),
            rows,
        })
    }

    /// The delta from `from` to `to` that puts the row `k` after `after`, giving the rows
    /// `result` (its digest).
    fn put(from: u64, to: u64, k: &str, after: Option<&str>, result: &[&str]) -> ServerMsg {
        ServerMsg::Delta(DeltaMsg {
            q: "items".into(),
            a: raw("null"),
            from: Version(from),
            to: Version(to),
            puts: vec![Put {
                row: Row::from_serialize(k, &k).unwrap(),
                after: after.map(Into::into),
            }],
            dels: vec![],
            digest: Digest::of(&rows_of(result)),
        })
    }

    /// A client holding `key()` at version 1 with the rows `rows`.
    fn holding(rows: &[&str]) -> ClientState {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, rows));
        st
    }

    fn view(st: &ClientState) -> Vec<String> {
        st.rows::<Items>(&()).unwrap_or_default()
    }

    #[test]
    fn invariant_6_an_event_applied_before_a_reconnect_stays_shown_until_its_rows_arrive() {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &[]));
        st.push(AddItem("milk".into())).unwrap();
        assert_eq!(view(&st), ["milk"]);
        // The connection drops before the ack; on reconnect the server says seq 1 is applied.
        st.on_message(welcome(1, 2));
        assert_eq!(st.pending_count(), 0);
        assert_eq!(
            view(&st),
            ["milk"],
            "still shown while the resume delta is on its way"
        );
        // The resume delta brings the confirmed row: now it is confirmed, shown once.
        st.on_message(put(1, 2, "milk", None, &["milk"]));
        assert_eq!(view(&st), ["milk"]);
        assert_eq!(st.settling.len(), 0);
    }

    #[test]
    fn a_prediction_whose_rows_cannot_be_encoded_is_dropped_alone_and_the_others_show() {
        let mut st = holding(&["x"]);
        // The second "a" would give the list two rows with one key: that prediction is
        // dropped; the ones before and after it still show, in order.
        for item in ["a", "a", "b"] {
            st.push(AddItem(item.into())).unwrap();
        }
        assert_eq!(view(&st), ["x", "a", "b"]);
        assert!(!st.is_confirmed(&key()));
        // A delta rebases them all again, the same way.
        st.on_message(put(1, 2, "y", Some("x"), &["x", "y"]));
        assert_eq!(view(&st), ["x", "y", "a", "b"]);
    }

    #[test]
    fn predictions_through_two_row_types_of_one_query_keep_the_earlier_ones() {
        // The same query read as JSON values: a prediction through it finds the rows the
        // string predictions changed, and when those cannot be encoded (the second "a"),
        // the rebase goes one prediction at a time instead of losing the first "a".
        struct ItemsAsJson;
        impl Query for ItemsAsJson {
            const NAME: &'static str = "items";
            type Args = ();
            type Row = serde_json::Value;
            fn row_key(r: &serde_json::Value) -> String {
                r.as_str().unwrap_or_default().to_owned()
            }
        }
        #[derive(Clone, Serialize, Deserialize)]
        struct AddJson(String);
        impl Event for AddJson {
            const NAME: &'static str = "add_json";
            fn predict(&self, view: &mut Prediction<'_>) {
                view.update(ItemsAsJson::request(()), |rows| {
                    rows.push(self.0.clone().into())
                });
            }
        }
        let mut st = holding(&["x"]);
        st.push(AddItem("a".into())).unwrap();
        st.push(AddItem("a".into())).unwrap();
        st.push(AddJson("j".into())).unwrap();
        assert_eq!(view(&st), ["x", "a", "j"]);
    }

    #[test]
    fn a_key_predicted_into_through_update_where_is_not_confirmed_until_settled() {
        #[derive(Clone, Serialize, Deserialize)]
        struct AddEverywhere(String);
        impl Event for AddEverywhere {
            const NAME: &'static str = "add_everywhere";
            fn predict(&self, view: &mut Prediction<'_>) {
                view.update_where::<Items>(|_| true, |rows| rows.push(self.0.clone()));
            }
        }
        let mut st = holding(&["x"]);
        assert!(st.is_confirmed(&key()));
        st.push(AddEverywhere("a".into())).unwrap();
        assert_eq!(view(&st), ["x", "a"]);
        assert!(!st.is_confirmed(&key()), "the view shows a prediction");
        st.on_message(put(1, 2, "a", Some("x"), &["x", "a"]));
        st.on_message(ServerMsg::Ack(Ack {
            seq: 1,
            v: Version(2),
            dup: false,
            proof: None,
        }));
        assert_eq!(view(&st), ["x", "a"]);
        assert!(st.is_confirmed(&key()));
    }

    #[test]
    fn invariant_4_deltas_apply_only_on_their_base_version() {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome(0, 3));
        st.on_message(snapshot(3, &["a"]));
        let delta = |from: u64, to: u64| put(from, to, "b", Some("a"), &["a", "b"]);
        // The right base: applied.
        st.on_message(delta(3, 4));
        assert_eq!(view(&st), ["a", "b"]);
        // A duplicate: ignored.
        let u = st.on_message(delta(3, 4));
        assert!(u.send.is_empty());
        assert_eq!(view(&st), ["a", "b"]);
        // A gap: asks for a resync, changes nothing.
        let u = st.on_message(delta(5, 6));
        assert!(matches!(u.send.as_slice(), [ClientMsg::Resync(_)]));
        assert_eq!(view(&st), ["a", "b"]);
        // Acks drop pending events.
        st.push(AddItem("c".into())).unwrap();
        st.on_message(ServerMsg::Ack(Ack {
            seq: 1,
            v: Version(5),
            dup: false,
            proof: None,
        }));
        assert_eq!(st.pending_count(), 0);
    }

    struct Others;
    impl Query for Others {
        const NAME: &'static str = "others";
        type Args = ();
        type Row = String;
        fn row_key(r: &String) -> String {
            r.clone()
        }
    }

    #[test]
    fn a_query_is_confirmed_when_no_pending_event_predicts_into_it() {
        let others = QueryKey::new("others", &()).unwrap();
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.subscribe(others.clone());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &[]));
        st.on_message(ServerMsg::Snapshot(Snapshot {
            q: "others".into(),
            a: raw("null"),
            v: Version(1),
            reset: false,
            digest: Digest::of(std::iter::empty()),
            rows: vec![],
        }));
        assert!(st.is_confirmed(&key()) && st.is_confirmed(&others));
        st.push(AddItem("milk".into())).unwrap();
        assert!(!st.is_confirmed(&key()), "an event predicts into it");
        assert!(st.is_confirmed(&others), "no event touches it");
        assert_eq!(st.rows::<Others>(&()).unwrap(), Vec::<String>::new());
        st.on_message(ServerMsg::Ack(Ack {
            seq: 1,
            v: Version(1),
            dup: false,
            proof: None,
        }));
        assert!(st.is_confirmed(&key()));
    }

    #[test]
    fn a_settled_event_of_another_tab_leaves_an_idle_tab_once_a_pong_says_the_server_is_past_it() {
        let types = EventTypes::new().with::<AddItem>();
        let mut st = ClientState::new("tab-b");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &[]));
        let args = serde_json::to_string(&AddItem("from a".into())).unwrap();
        st.add_foreign("tab-a", 1, "add_item", &args, &types);
        // Settled at v9 (other lists' commits came before): this tab's list never changes.
        st.settle_foreign("tab-a", 1, Version(9));
        assert_eq!(view(&st), ["from a"]);
        let pong = |v| {
            ServerMsg::Pong(crate::protocol::Pong {
                v: Some(Version(v)),
            })
        };
        // A subscription still unanswered may bring older rows: the pong says nothing then.
        let other = QueryKey::from_json("items", r#"{"list":"other"}"#).unwrap();
        st.subscribe(other.clone());
        st.on_message(pong(9));
        assert_eq!(view(&st), ["from a"]);
        st.on_message(ServerMsg::Snapshot(Snapshot {
            q: "items".into(),
            a: raw(r#"{"list":"other"}"#),
            v: Version(5),
            reset: false,
            rows: vec![],
            digest: Digest::of([]),
        }));
        // Everything answered: the server is past v9, and so is this tab.
        st.on_message(pong(9));
        assert!(view(&st).is_empty(), "{:?}", view(&st));
    }

    #[test]
    fn another_tabs_settled_event_stays_shown_until_a_reconnect_has_brought_its_rows() {
        let types = EventTypes::new().with::<AddItem>();
        let mut st = ClientState::new("tab-b");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &[]));
        let args = serde_json::to_string(&AddItem("from a".into())).unwrap();
        st.add_foreign("tab-a", 1, "add_item", &args, &types);
        st.settle_foreign("tab-a", 1, Version(2));
        // A reconnect: the welcome is past v2, the subscription's answer not here yet.
        st.on_message(welcome(0, 3));
        assert_eq!(
            view(&st),
            ["from a"],
            "the write left the view before its rows came"
        );
        st.on_message(snapshot(3, &["from a"]));
        assert_eq!(view(&st), ["from a"]);
        assert!(st.is_confirmed(&key()));
    }

    #[test]
    fn invariant_7_another_tabs_pending_event_shows_here_in_order_until_this_tab_sees_it() {
        let types = EventTypes::new().with::<AddItem>();
        let mut st = ClientState::new("tab-b");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &[]));
        let args = serde_json::to_string(&AddItem("from a".into())).unwrap();
        st.add_foreign("tab-a", 1, "add_item", &args, &types);
        st.push(AddItem("from b".into())).unwrap();
        assert_eq!(
            view(&st),
            ["from a", "from b"],
            "in the order they were made"
        );
        // Tab a's event is applied at v2; this tab has not seen v2 yet: still predicted.
        st.settle_foreign("tab-a", 1, Version(2));
        assert_eq!(view(&st), ["from a", "from b"]);
        // This tab's own connection brings v2 (the row, confirmed): the prediction goes.
        let row = Row::from_serialize("from a", &"from a").unwrap();
        st.on_message(ServerMsg::Delta(DeltaMsg {
            q: "items".into(),
            a: raw("null"),
            from: Version(1),
            to: Version(2),
            puts: vec![Put {
                row: row.clone(),
                after: None,
            }],
            dels: vec![],
            digest: Digest::of([&row]),
        }));
        assert_eq!(view(&st), ["from a", "from b"]);
        assert!(st.foreign.is_empty());
        // A tab that goes away takes its predictions with it.
        st.add_foreign(
            "tab-c",
            1,
            "add_item",
            &serde_json::to_string(&AddItem("from c".into())).unwrap(),
            &types,
        );
        assert_eq!(view(&st), ["from a", "from b", "from c"]);
        st.drop_tab("tab-c");
        assert_eq!(view(&st), ["from a", "from b"]);
    }

    #[test]
    fn invariant_12_an_event_over_the_size_limit_is_refused_before_it_takes_a_seq() {
        let mut st = ClientState::new("c");
        let r = st
            .push(AddItem("x".repeat(crate::query::MAX_ARGS_BYTES)))
            .err()
            .unwrap();
        assert_eq!(r.code, "too_large");
        assert_eq!(st.pending_count(), 0);
        let (msg, _) = st.push(AddItem("ok".into())).unwrap();
        assert!(matches!(msg, ClientMsg::Event(ref e) if e.seq == 1));
    }

    fn bad_delta(from: u64, to: u64) -> ServerMsg {
        // Not the digest of the rows it makes ("a", "b"): the client's rows no longer match.
        put(from, to, "b", Some("a"), &["b"])
    }

    #[test]
    fn a_resync_keeps_the_old_rows_shown_and_stored_until_the_reset_swaps_in() {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome(0, 3));
        st.on_message(snapshot(3, &["a"]));
        st.drain_persist();
        let u = st.on_message(bad_delta(3, 4));
        assert!(matches!(u.send.as_slice(), [ClientMsg::Resync(_)]));
        assert_eq!(view(&st), ["a"], "the list does not vanish");
        assert!(
            st.drain_persist().is_empty(),
            "nothing is dropped from the store: a reload in between still has the rows"
        );
        // Deltas while the reset is on its way change nothing (they build on other rows).
        assert!(st.on_message(bad_delta(4, 5)).send.is_empty());
        assert_eq!(view(&st), ["a"]);
        // A reconnect meanwhile asks for the whole result, not a resume from rows that are off.
        let ServerMsg::Welcome(w) = welcome(0, 5) else {
            unreachable!()
        };
        let u = st.on_message(ServerMsg::Welcome(w));
        assert!(
            u.send
                .iter()
                .any(|m| matches!(m, ClientMsg::Sub(s) if s.v.is_none())),
            "{:?}",
            u.send
        );
        // The reset swaps in at once.
        let ServerMsg::Snapshot(mut s) = snapshot(5, &["a", "b"]) else {
            unreachable!()
        };
        s.reset = true;
        st.on_message(ServerMsg::Snapshot(s));
        assert_eq!(view(&st), ["a", "b"]);
        assert!(
            st.drain_persist()
                .iter()
                .any(|p| matches!(p, Persist::Rows { version, .. } if *version == Version(5)))
        );
    }

    fn gap(seq: u64, expected: u64) -> ServerMsg {
        ServerMsg::Gap(crate::protocol::Gap { seq, expected })
    }

    #[test]
    fn a_burst_of_gaps_resends_the_pending_events_once() {
        let mut st = ClientState::new("c");
        st.on_message(welcome(0, 1));
        for i in 0..5 {
            st.push(AddItem(format!("e{i}"))).unwrap();
        }
        // Events 2..5 arrived before 1 (reordered): four gaps, all expecting 1.
        let sent: usize = (2..=5).map(|s| st.on_message(gap(s, 1)).send.len()).sum();
        assert_eq!(sent, 5, "one resend of the five, not one per gap");
        // After progress, a new gap resends again.
        st.on_message(ServerMsg::Ack(Ack {
            seq: 1,
            v: Version(2),
            dup: false,
            proof: None,
        }));
        assert_eq!(st.on_message(gap(5, 2)).send.len(), 4);
    }

    #[test]
    fn a_gap_below_what_the_client_knows_settled_means_lost_history_and_reconnects() {
        let mut st = ClientState::new("c");
        st.on_message(welcome(0, 1));
        for i in 0..3 {
            st.push(AddItem(format!("e{i}"))).unwrap();
        }
        for seq in 1..=2 {
            st.on_message(ServerMsg::Ack(Ack {
                seq,
                v: Version(1 + seq),
                dup: false,
                proof: Some(format!("proof-of-{}", 1 + seq)),
            }));
        }
        // The server now expects seq 1 again: it lost 1 and 2 (a restored backup).
        let u = st.on_message(gap(3, 1));
        assert!(u.reconnect && u.send.is_empty());
        // The next hello says how far this client got, with the server's proof of the version.
        let ClientMsg::Hello(h) = st.hello() else {
            unreachable!()
        };
        assert_eq!((h.acked, h.version), (Some(2), Some(Version(3))));
        assert_eq!(h.proof.as_deref(), Some("proof-of-3"));
    }

    fn welcome_epoch(epoch: &str, last_seq: u64, version: u64) -> ServerMsg {
        ServerMsg::Welcome(Welcome {
            protocol: crate::protocol::PROTOCOL,
            epoch: Epoch(epoch.into()),
            version: Version(version),
            last_seq,
            limits: Limits::default(),
            proof: None,
            who: None,
        })
    }

    fn welcome_as(who: &str, last_seq: u64, version: u64) -> ServerMsg {
        let ServerMsg::Welcome(mut w) = welcome(last_seq, version) else {
            unreachable!()
        };
        w.who = Some(who.to_owned());
        ServerMsg::Welcome(w)
    }

    #[test]
    fn identity_changed_drops_the_rows_keeps_the_pending_events_and_lets_the_next_welcome_decide() {
        let identity_changed = || {
            ServerMsg::Error(crate::protocol::ProtocolError::new(
                crate::protocol::ErrorCode::IdentityChanged,
                "signed out, or signed in again",
            ))
        };
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome_as("a", 0, 1));
        st.on_message(snapshot(1, &["x"]));
        st.push(AddItem("unsent".into())).unwrap();
        let u = st.on_message(identity_changed());
        assert!(u.reconnect && !u.identity_changed);
        assert!(st.confirmed(&key()).is_none(), "nothing of the rows stays");
        assert_eq!(
            st.pending_count(),
            1,
            "the write waits for the next welcome"
        );
        // The same identity (a session replaced, not ended): the write goes, same id, same seq.
        let u = st.on_message(welcome_as("a", 0, 1));
        assert!(u.live && !u.identity_changed && !u.identity_reset);
        let sent: Vec<u64> = u
            .send
            .iter()
            .filter_map(|m| match m {
                ClientMsg::Event(e) => Some(e.seq),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [1]);
        assert_eq!(st.client_id(), "c");
        // Another identity: the write is dropped, and the used client id goes.
        st.on_message(identity_changed());
        let u = st.on_message(welcome_as("b", 0, 1));
        assert!(u.identity_changed);
        assert_eq!(st.pending_count(), 0);
    }

    #[test]
    fn a_welcome_under_another_identity_takes_a_new_client_id_when_seqs_were_used() {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome_as("a", 0, 1));
        // Seq 1, sent as "a", may still be in the server's writer: it must never be reused.
        st.push(AddItem("as a".into())).unwrap();
        let u = st.on_message(welcome_as("", 0, 1));
        assert!(
            u.identity_changed,
            "a seq of this client id was used under the old identity: a new client id is due"
        );
        assert!(
            u.send.is_empty(),
            "nothing is sent under the old client id: {:?}",
            u.send
        );
        assert_eq!(st.pending_count(), 0, "the old identity's write is dropped");
        st.new_identity("c2");
        let u = st.on_message(welcome_as("", 0, 1));
        assert!(!u.identity_changed && u.live);
        let (ClientMsg::Event(e), _) = st.push(AddItem("as nobody".into())).unwrap() else {
            unreachable!()
        };
        assert_eq!((st.client_id(), e.seq), ("c2", 1));

        // A client id that never sent anything keeps its id: no seq of it can be in flight.
        let mut st = ClientState::new("reader");
        st.subscribe(key());
        st.on_message(welcome_as("a", 0, 1));
        let u = st.on_message(welcome_as("b", 0, 1));
        assert!(!u.identity_changed && u.identity_reset && u.live);
        assert_eq!(st.client_id(), "reader");
    }

    #[test]
    fn a_new_history_resets_the_cache_and_sends_the_pending_events_under_their_own_seqs() {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &["x"]));
        for i in 0..4 {
            st.push(AddItem(format!("e{i}"))).unwrap();
        }
        for seq in 1..=2 {
            st.on_message(ServerMsg::Ack(Ack {
                seq,
                v: Version(1 + seq),
                dup: false,
                proof: None,
            }));
        }
        // A restored copy: a new epoch; the server moved this client's last_seq up to what it
        // settled (2), so seqs 3 and 4 are free and keep their numbers.
        let u = st.on_message(welcome_epoch("restored", 2, 2));
        assert_eq!(u.history_reset, Some(2));
        assert_eq!(
            st.pending_events().iter().map(|e| e.0).collect::<Vec<_>>(),
            [3, 4]
        );
        assert!(
            st.confirmed(&key()).is_none(),
            "the cache of the old history is gone"
        );
        let events: Vec<u64> = u
            .send
            .iter()
            .filter_map(|m| match m {
                ClientMsg::Event(e) => Some(e.seq),
                _ => None,
            })
            .collect();
        assert_eq!(events, [3, 4]);
    }

    #[test]
    fn a_new_history_that_has_every_settled_seq_keeps_the_pending_seqs_it_applied() {
        let mut st = ClientState::new("c");
        st.on_message(welcome(0, 1));
        for i in 0..3 {
            st.push(AddItem(format!("e{i}"))).unwrap();
        }
        st.on_message(ServerMsg::Ack(Ack {
            seq: 1,
            v: Version(2),
            dup: false,
            proof: None,
        }));
        // Another epoch, but it has seqs 1 and 2 of this client (2 was in flight): 2 must not
        // be sent again under another number (it would apply twice); 3 keeps its seq.
        st.on_message(welcome_epoch("rotated", 2, 5));
        assert_eq!(
            st.pending_events().iter().map(|e| e.0).collect::<Vec<_>>(),
            [3]
        );
    }

    #[test]
    fn a_retry_tells_when_to_resend_and_the_trouble_clears_on_the_next_ack() {
        let mut st = ClientState::new("c");
        st.on_message(welcome(0, 1));
        st.push(AddItem("a".into())).unwrap();
        let u = st.on_message(ServerMsg::Retry(crate::protocol::Retry {
            seq: 1,
            after_ms: 250,
            message: "disk full".into(),
        }));
        assert_eq!(u.resend_after, Some(Duration::from_millis(250)));
        assert_eq!(st.write_blocked_reason(), Some("disk full"));
        assert_eq!(st.resend().len(), 1);
        st.on_message(ServerMsg::Ack(Ack {
            seq: 1,
            v: Version(2),
            dup: false,
            proof: None,
        }));
        assert_eq!(st.write_blocked_reason(), None);
    }

    #[test]
    fn a_query_error_for_a_key_keeps_its_rows_and_asks_to_subscribe_again_with_backoff() {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &["a"]));
        let err = || ServerMsg::key_error(crate::protocol::ErrorCode::QueryFailed, "broke", &key());
        let u = st.on_message(err());
        assert_eq!(u.retry_subs, vec![(key(), Duration::from_millis(500))]);
        assert_eq!(view(&st), ["a"]);
        assert!(st.query_error(&key()).is_some());
        assert!(st.resubscribe(&key()).is_some());
        let u = st.on_message(err());
        assert_eq!(u.retry_subs, vec![(key(), Duration::from_millis(1000))]);
        st.on_message(snapshot(2, &["a", "b"]));
        assert!(st.query_error(&key()).is_none());
        assert!(st.resubscribe(&key()).is_none(), "it works again");
    }

    #[test]
    fn pending_events_are_counted_by_name_and_a_rejection_names_its_event() {
        let mut st = ClientState::new("c");
        st.subscribe(key());
        st.on_message(welcome(0, 1));
        st.on_message(snapshot(1, &[]));
        st.push(AddItem("a".into())).unwrap();
        st.push(AddItem("b".into())).unwrap();
        assert_eq!(st.pending_count_of("add_item"), 2);
        assert_eq!(st.pending_count_of("other"), 0);
        assert_eq!(st.pending_name(2), Some("add_item"));
        let u = st.on_message(ServerMsg::Reject(crate::protocol::Reject {
            seq: 2,
            v: Version(1),
            error: Rejection::new("nope", "refused"),
        }));
        assert_eq!(u.rejected.len(), 1);
        assert_eq!(st.pending_name(2), None);
        assert_eq!(st.pending_count_of("add_item"), 1);
        assert_eq!(view(&st), ["a"]);
    }
}
