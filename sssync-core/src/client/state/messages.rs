//! What the server says, applied to the client's state: the welcome, snapshots, deltas,
//! acknowledgements, rejections, gaps and errors.

use super::{ClientState, QUERY_RETRY_MAX, QUERY_RETRY_MIN, Update, key_ref};
use crate::client::persist::Persist;
use crate::delta;
use crate::protocol::{ClientMsg, DeltaMsg, ProtocolError, ServerMsg, Snapshot, Welcome};
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::Version;
use std::time::Duration;

impl ClientState {
    /// Handles one server message.
    pub fn on_message(&mut self, msg: ServerMsg) -> Update {
        let mut u = self.on_message_inner(msg);
        if !self.foreign_done.is_empty() {
            let more = self.drop_seen_foreign();
            u.changed.extend(more.changed);
            u.changed.sort();
            u.changed.dedup();
        }
        u
    }

    pub(super) fn on_message_inner(&mut self, msg: ServerMsg) -> Update {
        match msg {
            ServerMsg::Welcome(w) => self.on_welcome(w),
            ServerMsg::Snapshot(s) => self.on_snapshot(s),
            ServerMsg::Delta(d) => self.on_delta(d),
            ServerMsg::Ack(a) => {
                self.note_version(a.v);
                self.note_proof(a.v, a.proof.clone());
                self.write_blocked = None;
                self.resent_from = None;
                // Every `sub` sent before this event has been answered before its ack.
                self.awaiting.clear();
                self.settle();
                // Acks come in seq order, after every delta up to `v`: the prediction can go
                // now without the UI ever showing the old value.
                let mut u = if self.pending.remove(&a.seq).is_some() {
                    self.persist.push(Persist::DropEvent(a.seq));
                    self.recompute()
                } else {
                    Update::default()
                };
                u.settled.push((a.seq, a.v));
                u
            }
            ServerMsg::Reject(r) => {
                self.note_version(r.v);
                self.write_blocked = None;
                self.resent_from = None;
                let mut u = if self.pending.remove(&r.seq).is_some() {
                    self.persist.push(Persist::DropEvent(r.seq));
                    self.recompute()
                } else {
                    Update::default()
                };
                u.rejected.push((r.seq, r.error));
                u.settled.push((r.seq, r.v));
                u
            }
            ServerMsg::Gap(g) => self.on_gap(g.expected),
            ServerMsg::Retry(r) => {
                self.write_blocked = Some(r.message);
                Update {
                    resend_after: Some(Duration::from_millis(r.after_ms)),
                    ..Update::default()
                }
            }
            ServerMsg::Error(e) => self.on_error(e),
            ServerMsg::Pong(p) => {
                // Every delta up to `v` of the subscriptions answered came before it (one whose
                // answer is still on its way may bring older rows: not then).
                if let Some(v) = p.v
                    && self.asked.is_empty()
                {
                    self.note_version(v);
                }
                Update::default()
            }
        }
    }

    /// A `gap`: the server expects seq `expected`. Resend from there, once per gap (not once
    /// per event that arrived out of order). When this client has nothing from `expected` on
    /// but later events, the server lacks seqs it had settled: its history changed under the
    /// same epoch (a restored backup); reconnecting lets it find out.
    pub(super) fn on_gap(&mut self, expected: u64) -> Update {
        let first = self.pending.keys().next().copied();
        if first.is_some_and(|f| f > expected) || (first.is_none() && self.next_seq > expected) {
            return Update {
                reconnect: true,
                ..Update::default()
            };
        }
        if self.resent_from == Some(expected) {
            return Update::default();
        }
        self.resent_from = Some(expected);
        Update {
            send: self
                .pending
                .range(expected..)
                .map(|(&seq, _)| self.event_msg(seq))
                .collect(),
            ..Update::default()
        }
    }

    /// An `error`: one about a key marks it failed (its rows stay shown) and, unless it cannot
    /// succeed later (an unknown query, args that do not fit), subscribes again after a
    /// backoff.
    pub(super) fn on_error(&mut self, e: ProtocolError) -> Update {
        let mut u = Update::default();
        use crate::protocol::ErrorCode;
        if e.key().is_none() && e.code == ErrorCode::Forbidden {
            // This client id is not this identity's: nothing held may stay, and the id must
            // change.
            self.forget_all();
            let mut u = self.recompute();
            u.identity_changed = true;
            u.errors.push(e);
            return u;
        }
        if e.key().is_none() && e.code == ErrorCode::IdentityChanged {
            // The request that opened the connection no longer names its identity (signed
            // out, or signed in again under a new session): nothing of the rows stays shown or
            // stored; the pending events stay, and the client reconnects with its current
            // credentials. The next welcome says whose they are: another identity's are
            // dropped then (and the client id too, once it was used), this one's are sent.
            self.forget_rows();
            let mut u = self.recompute();
            u.reconnect = true;
            u.errors.push(e);
            return u;
        }
        if let Some(key) = e.key()
            && let Some(held) = self.keys.get_mut(&key)
        {
            let n = held.failed.as_ref().map_or(0, |(_, n)| n + 1);
            let forbidden = e.code == ErrorCode::Forbidden;
            let retry = !matches!(
                e.code,
                ErrorCode::UnknownQuery | ErrorCode::BadArgs | ErrorCode::Forbidden
            );
            if forbidden {
                // Nothing of what this identity may not read stays, here or in a store.
                held.confirmed = None;
                held.resyncing = false;
                self.persist.push(Persist::Forget {
                    name: key.name().to_owned(),
                    args: key.args_json().to_owned(),
                });
                u.forbidden.push(key.clone());
            }
            let held = self.keys.get_mut(&key).expect("held");
            held.failed = Some((e.clone(), n));
            if retry {
                let wait = QUERY_RETRY_MIN
                    .saturating_mul(1 << n.min(10))
                    .min(QUERY_RETRY_MAX);
                u.retry_subs.push((key.clone(), wait));
            }
            // It answered (with an error): settled events do not wait for it.
            self.answered(&key);
            if forbidden {
                let mut r = self.recompute();
                u.changed.append(&mut r.changed);
            }
            u.changed.push(key);
        }
        u.errors.push(e);
        u
    }

    pub(super) fn note_version(&mut self, v: Version) {
        self.seen = self.seen.max(v);
    }

    /// Keeps the highest version a server proved.
    pub(super) fn note_proof(&mut self, v: Version, proof: Option<String>) {
        if let Some(p) = proof
            && self.proven.as_ref().is_none_or(|(have, _)| v > *have)
        {
            self.proven = Some((v, p));
        }
    }

    pub(super) fn on_welcome(&mut self, w: Welcome) -> Update {
        self.seen = w.version;
        // Rows and pending events made under another identity are not this one's.
        let tag = w.who.clone().unwrap_or_default();
        let identity_reset = self.who.as_ref().is_some_and(|old| *old != tag);
        if identity_reset {
            // A seq this client id used under the old identity may still be on its way in the
            // server (an event queued before the identity changed): reused for the new one, it
            // would be answered for the old write. A client id that used seqs goes: nothing
            // more is sent under it, the transport takes a new one and connects again.
            let used = self.next_seq > 1 || !self.pending.is_empty();
            self.forget_all();
            if used {
                self.who = None;
                let mut u = self.recompute();
                u.identity_changed = true;
                return u;
            }
            self.next_seq = w.last_seq + 1;
        }
        self.who = Some(tag);
        let mut history_reset = None;
        if self.epoch.as_ref() != Some(&w.epoch) {
            // Another history: nothing cached may be mixed into it (invariant 2). Keep the
            // subscriptions, drop their rows.
            let had = self.epoch.is_some();
            for h in self.keys.values_mut() {
                h.confirmed = None;
                h.resyncing = false;
            }
            self.views.clear();
            self.settling.clear();
            self.epoch = Some(w.epoch.clone());
            self.proven = None;
            self.persist.push(Persist::ClearAll);
            // Pending events keep their seqs: the server has every seq this client settled
            // (it moves a client's last_seq up to the `acked` of its hello), so those up to
            // last_seq were applied there (in flight when the history changed) and the others
            // were not. Seqs are never renumbered: a renumbered event could apply twice.
            let kept = self.pending.split_off(&(w.last_seq + 1));
            self.pending = kept;
            self.next_seq = self.next_seq.max(w.last_seq + 1);
            let seqs: Vec<u64> = self.pending.keys().copied().collect();
            for &seq in &seqs {
                self.persist_event(seq);
            }
            if had {
                history_reset = Some(seqs.len());
            }
        } else {
            // Same history: events up to last_seq are applied; their effects are in the rows
            // the subscriptions below bring.
            let kept = self.pending.split_off(&(w.last_seq + 1));
            for &seq in self.pending.keys() {
                self.persist.push(Persist::DropEvent(seq));
            }
            // Their effects arrive with the answers to the subscriptions below: keep showing
            // them until then (invariant 6 across a reconnect).
            let applied = std::mem::replace(&mut self.pending, kept);
            self.settling.extend(applied);
            self.next_seq = self.next_seq.max(w.last_seq + 1);
        }
        self.note_proof(w.version, w.proof.clone());
        self.resent_from = None;
        self.persist_meta();
        self.awaiting = self.keys.keys().cloned().collect();
        self.asked = self.awaiting.clone();
        self.settle();
        let mut keys: Vec<&QueryKey> = self.keys.keys().collect();
        keys.sort();
        let mut send: Vec<ClientMsg> = keys.into_iter().map(|k| self.sub_msg(k)).collect();
        send.extend(self.pending.keys().map(|&seq| self.event_msg(seq)));
        let mut u = self.recompute();
        u.send = send;
        u.live = true;
        u.history_reset = history_reset;
        u.identity_reset = identity_reset;
        u
    }

    pub(super) fn on_snapshot(&mut self, s: Snapshot) -> Update {
        let Ok(key) = QueryKey::from_json(&s.q, s.a.get()) else {
            return Update::default();
        };
        let Some(held) = self.keys.get_mut(&key) else {
            return Update::default(); // unsubscribed meanwhile
        };
        self.seen = self.seen.max(s.v);
        match Rows::new(s.rows) {
            Ok(rows) if rows.digest() == s.digest => {
                // Swapped in at once: the old rows (kept while a reset was on its way) go now.
                held.confirmed = Some((s.v, rows));
                held.resyncing = false;
                held.failed = None;
                self.persist_rows(&key);
                self.answered(&key);
                self.recompute()
            }
            _ => Update {
                send: vec![ClientMsg::Resync(key_ref(&key))],
                ..Update::default()
            },
        }
    }

    pub(super) fn on_delta(&mut self, d: DeltaMsg) -> Update {
        let Ok(key) = QueryKey::from_json(&d.q, d.a.get()) else {
            return Update::default();
        };
        let Some(held) = self.keys.get_mut(&key) else {
            return Update::default();
        };
        self.seen = self.seen.max(d.to);
        if held.resyncing {
            return Update::default(); // the reset is on its way; nothing applies to these rows
        }
        let Some((v, rows)) = held.confirmed.as_mut() else {
            return Update::default(); // the snapshot is on its way
        };
        if *v != d.from {
            // A duplicate (already past it) is ignored; a gap means we missed something.
            if d.to <= *v {
                return Update::default();
            }
            held.resyncing = true;
            self.asked.insert(key.clone());
            return Update {
                send: vec![ClientMsg::Resync(key_ref(&key))],
                ..Update::default()
            };
        }
        let delta = d.delta();
        let before = rows.digest();
        // Checked before anything changes (in time proportional to the delta): a delta that
        // does not apply, or gives other rows than the server's, leaves the rows held shown
        // (and stored) until the reset swaps in: the list never vanishes, and a reload in
        // between still has them.
        if delta::digest_after(rows, &delta) != Some(d.digest)
            || delta::apply(rows, &delta).is_err()
        {
            held.resyncing = true;
            self.asked.insert(key.clone());
            return Update {
                send: vec![ClientMsg::Resync(key_ref(&key))],
                ..Update::default()
            };
        }
        held.failed = None;
        *v = d.to;
        self.persist_rows(&key);
        self.answered(&key);
        if self.predicted.is_empty() && !self.predicting() {
            // No view showed a prediction after the last rebase, and no event predicts now:
            // every view is its confirmed rows, and this delta changed one of them. The view takes the same
            // delta (not a copy of every row, nor a rebase of every key).
            let took = match self.views.get_mut(&key) {
                Some(view) if view.digest() == before => delta::apply(view, &delta).is_ok(),
                _ => false,
            };
            if !took {
                match self.keys.get(&key).and_then(|h| h.confirmed.as_ref()) {
                    Some((_, rows)) => {
                        let rows = rows.clone();
                        self.views.insert(key.clone(), rows);
                    }
                    None => return self.recompute(),
                }
            }
            let touched = !(delta.puts.is_empty() && delta.dels.is_empty());
            return Update {
                changed: touched.then_some(key).into_iter().collect(),
                ..Update::default()
            };
        }
        self.recompute()
    }
}
