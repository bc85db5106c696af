//! IndexedDB: opening it (or going on in memory), writing the rows cache and this tab's pending
//! events, and yielding to a newer version of the app.

use super::{Callback, Runtime, now_ms};
use futures_channel::oneshot;
use sssync_core::QueryKey;
use std::rc::Rc;
use wasm_bindgen::JsCast;

impl Runtime {
    pub(crate) fn db(&self) -> Option<Rc<indexed_db_futures::database::Database>> {
        self.db.borrow().clone()
    }

    /// When a newer version of the app asks to upgrade the database, lets it: closes this tab's
    /// connection (which would otherwise block the upgrade until this tab closes) and goes on
    /// from memory.
    pub(super) fn yield_on_version_change(&self, db: &indexed_db_futures::database::Database) {
        use indexed_db_futures::internals::SystemRepr;
        let raw: &web_sys::IdbDatabase = db.as_sys().as_ref();
        let target = raw.clone();
        let weak = self.me.clone();
        let on_change = Callback::new(move |_| {
            target.close();
            if let Some(rt) = weak.upgrade() {
                rt.db.borrow_mut().take();
            }
        });
        raw.set_onversionchange(Some(on_change.as_ref().unchecked_ref()));
        on_change.forget(); // one per tab
    }

    /// The database, once open; while it is being opened, waits (at most `DB_OPEN_WAIT`).
    pub(super) async fn database(&self) -> Option<Rc<indexed_db_futures::database::Database>> {
        if self.db_opening.get() {
            let (tx, rx) = oneshot::channel();
            self.db_waiters.borrow_mut().push(tx);
            let _ = rx.await;
        }
        self.db()
    }

    /// The database is open, unavailable, or not worth waiting for any longer.
    pub(super) fn db_settled(&self) {
        self.db_opening.set(false);
        let waiters = std::mem::take(&mut *self.db_waiters.borrow_mut());
        for tx in waiters {
            let _ = tx.send(());
        }
    }

    /// Writes the confirmed rows of the keys that changed to the rows cache, in the background;
    /// one write at a time, each taking the newest rows (so a burst of deltas costs one write).
    pub(super) fn flush_cache(&self) {
        if self.db().is_none() && !self.db_opening.get() {
            // No storage (or no longer): nothing will take these.
            self.dirty.borrow_mut().clear();
        }
        if self.flushing.get() || self.db().is_none() {
            return;
        }
        self.flushing.set(true);
        let weak = self.me.clone();
        leptos::task::spawn_local(async move {
            loop {
                let Some(rt) = weak.upgrade() else { return };
                let Some(db) = rt.db() else {
                    rt.flushing.set(false);
                    return;
                };
                let clear = rt.clear_cache.take();
                let keys = std::mem::take(&mut *rt.dirty.borrow_mut());
                if !clear && keys.is_empty() {
                    rt.flushing.set(false);
                    return;
                }
                let entries: Vec<(String, crate::persist::Cached)> = {
                    let st = rt.state.borrow();
                    keys.iter()
                        .filter_map(|(name, args)| {
                            let key = QueryKey::from_json(name, args).ok()?;
                            let (version, rows) = st.confirmed(&key)?;
                            Some((
                                crate::persist::cache_key(name, args),
                                crate::persist::Cached {
                                    epoch: st.epoch()?.clone(),
                                    version,
                                    rows: rows.rows().to_vec(),
                                },
                            ))
                        })
                        .collect()
                };
                drop(rt);
                if clear {
                    crate::persist::clear_cache(&db).await;
                }
                crate::persist::cache(&db, entries, now_ms()).await;
            }
        });
    }

    /// Writes this tab's pending events to storage when they changed (or, with `beat`, to
    /// refresh the heartbeat); removes the entry when none is left.
    pub(super) fn save_own(&self, beat: bool) {
        let Some(db) = self.db() else { return };
        let (entry, sig) = {
            let st = self.state.borrow();
            let events = st.pending_events();
            let sig = (events.len(), events.iter().map(|e| e.0).sum::<u64>());
            (
                crate::persist::Entry {
                    client_id: st.client_id().to_owned(),
                    epoch: st.epoch().cloned(),
                    events,
                    beat: now_ms(),
                    who: st.identity_tag().map(str::to_owned),
                },
                sig,
            )
        };
        if sig == self.saved.get() && !(beat && sig.0 > 0) {
            return;
        }
        self.saved.set(sig);
        leptos::task::spawn_local(async move {
            if entry.events.is_empty() {
                crate::persist::remove(&db, &entry.client_id).await;
            } else {
                crate::persist::save(&db, &entry).await;
            }
        });
    }
}
