//! What components ask of the runtime: holding and releasing keys, loading a key's rows,
//! and sending events (with a waiter for their outcome).

use super::tabs::TabMsg;
use super::{Runtime, now_ms};
use crate::{Loaded, SyncError};
use futures_channel::oneshot;
use leptos::prelude::*;
use sssync_core::protocol::ClientMsg;
use sssync_core::{Event, QueryKey, Rejection};

impl Runtime {
    /// Why the server could not serve `key` lately, if it could not.
    pub(crate) fn query_error(&self, key: &QueryKey) -> Option<String> {
        self.state
            .borrow()
            .query_error(key)
            .map(|e| e.message.clone())
    }

    /// Why the server refused `key` to this identity, when it did (the rows are gone).
    pub(crate) fn forbidden(&self, key: &QueryKey) -> Option<String> {
        self.state
            .borrow()
            .query_error(key)
            .filter(|e| e.code == sssync_core::ErrorCode::Forbidden)
            .map(|e| e.message.clone())
    }

    /// A component holds `key` (with the rows the server rendered, if any).
    pub(crate) fn hold(&self, key: QueryKey, loaded: Option<Loaded>) {
        let first = {
            let mut refs = self.refs.borrow_mut();
            let n = refs.entry(key.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        let msg = {
            let mut st = self.state.borrow_mut();
            if let Some(l) = loaded {
                st.seed(key.clone(), &l.epoch, l.version, l.rows);
            }
            st.subscribe(key)
        };
        if first {
            self.send_if_live(&msg);
        }
        self.after_change();
    }

    /// Newer rows of a held key from a client-side load.
    pub(crate) fn seed(&self, key: QueryKey, l: Loaded) {
        let took = self
            .state
            .borrow_mut()
            .seed(key, &l.epoch, l.version, l.rows);
        if took {
            self.after_change();
        }
    }

    /// A component no longer holds `key`; the last one unsubscribes.
    pub(crate) fn release(&self, key: &QueryKey) {
        let last = {
            let mut refs = self.refs.borrow_mut();
            match refs.get_mut(key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    refs.remove(key);
                    true
                }
                None => false,
            }
        };
        if last {
            let msg = self.state.borrow_mut().unsubscribe(key);
            if let Some(m) = msg {
                self.send_if_live(&m);
            }
        }
    }

    /// The rows of `key` for a client-side load: at once when this tab holds them or the
    /// browser's rows cache has them (then synced from their version), else after the
    /// subscription's first snapshot.
    pub(crate) async fn load(&self, key: QueryKey) -> Result<Loaded, SyncError> {
        if let Some(l) = self.loaded(&key) {
            return Ok(l);
        }
        // Once welcomed, the cache is read only when it is known to be this identity's (its
        // forgetting of another identity's rows may still be running).
        let cache_is_ours = match self.welcomed_as.borrow().as_deref() {
            Some(who) => crate::persist::stored_who().as_deref().unwrap_or("") == who,
            None => true,
        };
        if let Some(db) = self.database().await.filter(|_| cache_is_ours) {
            let name = crate::persist::cache_key(key.name(), key.args_json());
            if let Some(c) = crate::persist::cached(&db, &name).await {
                // Ignored when rows of another history or newer rows arrived meanwhile.
                self.state
                    .borrow_mut()
                    .seed(key.clone(), &c.epoch, c.version, c.rows);
            }
            if let Some(l) = self.loaded(&key) {
                let msg = self.state.borrow_mut().subscribe(key.clone());
                self.send_if_live(&msg);
                self.after_change();
                // The cache already holds exactly these rows: no need to write them back.
                self.dirty
                    .borrow_mut()
                    .remove(&(key.name().to_owned(), key.args_json().to_owned()));
                return Ok(l);
            }
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push((key.clone(), tx));
        let msg = self.state.borrow_mut().subscribe(key.clone());
        self.send_if_live(&msg);
        rx.await
            .map_err(|_| SyncError::Request("the client stopped".into()))?;
        self.loaded(&key)
            .ok_or_else(|| SyncError::Request("the rows went away".into()))
    }

    pub(super) fn loaded(&self, key: &QueryKey) -> Option<Loaded> {
        let st = self.state.borrow();
        let (version, rows) = st.confirmed(key)?;
        Some(Loaded {
            query: key.name().to_owned(),
            args: key.args_json().to_owned(),
            epoch: st.epoch()?.clone(),
            version,
            rows: rows.rows().to_vec(),
        })
    }

    /// Queues an event like [`Runtime::send`], and answers its outcome once the server settled
    /// it: `Ok(())` when applied, the rejection otherwise.
    pub(crate) fn send_awaiting<E: Event>(
        &self,
        e: E,
    ) -> oneshot::Receiver<Result<(), crate::SyncError>> {
        let (tx, rx) = oneshot::channel();
        match self.send(e) {
            Ok(seq) => {
                self.outcomes.borrow_mut().insert(seq, tx);
            }
            // Refused before it was sent (args over the limit): shown as the last rejection too.
            Err(why) => {
                let _ = tx.send(Err(crate::SyncError::Rejected(why)));
            }
        }
        rx
    }

    /// Answers the waiters of events the server settled (applied or refused), and of events
    /// that are gone (another identity's).
    pub(super) fn answer_outcomes(&self, update: &sssync_core::client::Update, welcome: bool) {
        if self.outcomes.borrow().is_empty() {
            return;
        }
        let mut outcomes = self.outcomes.borrow_mut();
        if update.identity_changed || update.identity_reset {
            for (_, tx) in outcomes.drain() {
                let _ = tx.send(Err(crate::SyncError::Forbidden(sssync_core::Forbidden(
                    "signed out: the event was dropped".into(),
                ))));
            }
            return;
        }
        for (seq, why) in &update.rejected {
            if let Some(tx) = outcomes.remove(seq) {
                let _ = tx.send(Err(crate::SyncError::Rejected(why.clone())));
            }
        }
        for (seq, _) in &update.settled {
            if let Some(tx) = outcomes.remove(seq) {
                let _ = tx.send(Ok(()));
            }
        }
        if welcome {
            // The server settled, while its answer was lost with the old connection, every
            // event up to the client's `last_seq`: they are no longer pending (their effects,
            // or their absence if refused, arrive with the rows). The others stay pending.
            let state = self.state.borrow();
            let gone: Vec<u64> = outcomes
                .keys()
                .copied()
                .filter(|&seq| state.pending_name(seq).is_none())
                .collect();
            for seq in gone {
                if let Some(tx) = outcomes.remove(&seq) {
                    let _ = tx.send(Ok(()));
                }
            }
        }
    }

    /// Queues an event: predicted now, sent when connected; its seq. One the client refuses
    /// (args over the limit) shows as the last rejection.
    pub(crate) fn send<E: Event>(&self, e: E) -> Result<u64, Rejection> {
        if self.state.borrow().pending_count() == 0 {
            self.last_progress.set(now_ms());
        }
        let pushed = self.state.borrow_mut().push(e);
        let seq = match pushed {
            Ok((msg, _)) => {
                self.send_if_live(&msg);
                let ClientMsg::Event(ev) = &msg else {
                    unreachable!("a pushed event is an event message")
                };
                let (tab, who) = {
                    let st = self.state.borrow();
                    (
                        st.client_id().to_owned(),
                        st.identity_tag().map(str::to_owned),
                    )
                };
                self.tell_tabs(&TabMsg::Event {
                    tab,
                    seq: ev.seq,
                    name: ev.name.clone(),
                    args: ev.args.get().to_owned(),
                    who,
                });
                Ok(ev.seq)
            }
            Err(why) => {
                self.signals.rejection.set(Some(crate::error::Refused {
                    event: E::NAME.to_owned(),
                    why: why.clone(),
                }));
                Err(why)
            }
        };
        self.after_change();
        seq
    }
}
