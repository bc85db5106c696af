//! The other tabs of this browser (a BroadcastChannel): a write shows in every tab at once, also
//! offline, and the pending events of a tab that went (closed, crashed) are adopted and sent.

use super::{Callback, Runtime, now_ms};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use sssync_core::Version;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use web_sys::MessageEvent;

/// What tabs of one browser tell each other (BroadcastChannel `sssync`): so that a write shows
/// in every tab at once, also offline.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum TabMsg {
    /// Tab `tab` has event `seq` pending (made under identity tag `who`, when known).
    Event {
        tab: String,
        seq: u64,
        name: String,
        args: String,
        #[serde(default)]
        who: Option<String>,
    },
    /// The server settled it at version `v` (a tab that adopted it may say so too).
    Settled { tab: String, seq: u64, v: Version },
    /// Tab `tab` is gone; its pending events are left for the others to send.
    Gone { tab: String },
    /// Tab `tab`, which has pending events, is alive.
    Beat { tab: String },
}

/// What this tab knows of another tab of the browser that has pending events, so that it can
/// send them when that tab goes (closed, crashed, discarded) while this one stays open.
pub(super) struct OtherTab {
    /// Its pending events: seq -> (name, args JSON).
    events: std::collections::BTreeMap<u64, (String, String)>,
    /// The identity tag they were made under, when known.
    who: Option<String>,
    /// When it was last heard from (ms since the epoch).
    heard: f64,
    /// It said it is gone.
    gone: bool,
}

impl Runtime {
    pub(super) fn listen_to_tabs(self: &Rc<Self>) {
        let Some(channel) = &self.tabs else { return };
        let weak = Rc::downgrade(self);
        let on_message = Callback::new(move |e: web_sys::Event| {
            let Some(text) = e
                .dyn_ref::<MessageEvent>()
                .and_then(|m| m.data().as_string())
            else {
                return;
            };
            if let (Some(rt), Ok(msg)) = (weak.upgrade(), serde_json::from_str::<TabMsg>(&text)) {
                rt.on_tab(msg);
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget(); // one per tab, for the page's life
        if let Some(window) = web_sys::window() {
            let weak = Rc::downgrade(self);
            let on_hide = Callback::new(move |_| {
                if let Some(rt) = weak.upgrade() {
                    let tab = rt.state.borrow().client_id().to_owned();
                    // Synchronous: the page may be gone before any promise resolves.
                    crate::persist::mark_gone(&tab);
                    rt.tell_tabs(&TabMsg::Gone { tab });
                }
            });
            let _ = window
                .add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
            on_hide.forget();
            // Back from the back-forward cache: this tab lives again.
            let weak = Rc::downgrade(self);
            let on_show = Callback::new(move |_| {
                if let Some(rt) = weak.upgrade() {
                    crate::persist::clear_gone(rt.state.borrow().client_id());
                }
            });
            let _ = window
                .add_event_listener_with_callback("pageshow", on_show.as_ref().unchecked_ref());
            on_show.forget();
        }
    }

    pub(super) fn tell_tabs(&self, msg: &TabMsg) {
        if let (Some(channel), Ok(text)) = (&self.tabs, serde_json::to_string(msg)) {
            let _ = channel.post_message(&wasm_bindgen::JsValue::from_str(&text));
        }
    }

    pub(super) fn on_tab(self: &Rc<Self>, msg: TabMsg) {
        let now = now_ms();
        let mut gone = false;
        let mut catch_up = None;
        // Views are recomputed inside; the signals below tell the UI.
        {
            let mut st = self.state.borrow_mut();
            let mut others = self.others.borrow_mut();
            match msg {
                TabMsg::Event {
                    tab,
                    seq,
                    name,
                    args,
                    who,
                } => {
                    self.types
                        .with_value(|types| st.add_foreign(&tab, seq, &name, &args, types));
                    let other = others.entry(tab).or_insert_with(|| OtherTab {
                        events: std::collections::BTreeMap::new(),
                        who: None,
                        heard: now,
                        gone: false,
                    });
                    other.events.insert(seq, (name, args));
                    // Made by a tab not welcomed yet: the browser's identity is the one this
                    // tab's live connection was welcomed as (the server tells it when that
                    // changes).
                    let who = who.or_else(|| {
                        self.live
                            .get()
                            .then(|| self.welcomed_as.borrow().clone())
                            .flatten()
                    });
                    other.who = who.or(other.who.take());
                    other.heard = now;
                }
                TabMsg::Settled { tab, seq, v } => {
                    st.settle_foreign(&tab, seq, v);
                    catch_up = Some(v);
                    if let Some(other) = others.get_mut(&tab) {
                        other.events.remove(&seq);
                        other.heard = now;
                        if other.events.is_empty() {
                            others.remove(&tab);
                        }
                    }
                }
                // Its pending events stay shown here: this tab sends them (below).
                TabMsg::Gone { tab } => {
                    if let Some(other) = others.get_mut(&tab) {
                        other.gone = true;
                    }
                    gone = true;
                }
                TabMsg::Beat { tab } => {
                    if let Some(other) = others.get_mut(&tab) {
                        other.heard = now;
                    }
                }
            };
        }
        if gone {
            self.adopt_orphans(true);
        }
        if let Some(v) = catch_up {
            self.catch_up(v);
        }
        self.after_change();
    }

    /// Sends the pending events of tabs that are gone: those that said so, and those silent
    /// for `ORPHAN_AFTER_MS` (crashed, discarded), from what they stored and what they told this
    /// tab; with `scan_storage`, also the stored queues of gone tabs this tab never heard of.
    /// Several tabs may adopt one queue at once: the server applies each event once.
    pub(crate) fn adopt_orphans(self: &Rc<Self>, scan_storage: bool) {
        self.adoptions.borrow_mut().retain(|a| !a.is_done());
        let now = now_ms();
        // What each dead tab told this one, as an entry of its own.
        let dead: Vec<crate::persist::Entry> = self
            .others
            .borrow()
            .iter()
            .filter(|(id, t)| {
                !t.events.is_empty()
                    && (t.gone
                        || crate::persist::is_gone(id)
                        || now - t.heard > crate::persist::ORPHAN_AFTER_MS)
                    && !self.adopting(id)
            })
            .map(|(id, t)| crate::persist::Entry {
                client_id: id.clone(),
                epoch: None,
                events: t
                    .events
                    .iter()
                    .map(|(seq, (n, a))| (*seq, n.clone(), a.clone()))
                    .collect(),
                beat: 0.0,
                who: t.who.clone(),
            })
            .collect();
        if dead.is_empty() && !scan_storage {
            return;
        }
        let weak = self.me.clone();
        leptos::task::spawn_local(async move {
            let Some(rt) = weak.upgrade() else { return };
            let stored = match rt.db() {
                Some(db) => crate::persist::load_all(&db).await,
                None => Vec::new(),
            };
            let own = rt.state.borrow().client_id().to_owned();
            let epoch = rt.state.borrow().epoch().cloned();
            let now = now_ms();
            for told in dead {
                let id = told.client_id.clone();
                if rt.adopting(&id) {
                    continue;
                }
                // What the tab stored is complete (every pending event from its first); what it
                // told this tab is newer. Without a stored queue, the events it made before
                // this tab heard of it are not known: the adoption checks for them.
                let (entry, complete) = match stored.iter().find(|e| e.client_id == id) {
                    Some(e) => {
                        let mut e = e.clone();
                        let last = e.events.last().map_or(0, |x| x.0);
                        e.events
                            .extend(told.events.into_iter().filter(|x| x.0 > last));
                        (e, true)
                    }
                    None => (
                        crate::persist::Entry {
                            epoch: epoch.clone(),
                            ..told
                        },
                        false,
                    ),
                };
                rt.others.borrow_mut().remove(&id);
                let a = super::adopt::Adoption::start(&rt, entry, complete);
                rt.adoptions.borrow_mut().push(a);
            }
            if scan_storage {
                for entry in stored {
                    let gone = crate::persist::is_gone(&entry.client_id)
                        || now - entry.beat > crate::persist::ORPHAN_AFTER_MS;
                    let known_alive = rt.others.borrow().contains_key(&entry.client_id);
                    if entry.client_id != own
                        && gone
                        && !known_alive
                        && !entry.events.is_empty()
                        && !rt.adopting(&entry.client_id)
                    {
                        let a = super::adopt::Adoption::start(&rt, entry, true);
                        rt.adoptions.borrow_mut().push(a);
                    }
                }
            }
            rt.after_change();
        });
    }

    /// Whether this tab is sending tab `id`'s pending events already.
    pub(super) fn adopting(&self, id: &str) -> bool {
        self.adoptions
            .borrow()
            .iter()
            .any(|a| a.client_id() == id && !a.is_done())
    }

    pub(crate) fn predict_foreign(&self, tab: &str, seq: u64, name: &str, args: &str) {
        {
            let mut st = self.state.borrow_mut();
            self.types
                .with_value(|types| st.add_foreign(tab, seq, name, args, types));
        }
        self.after_change();
    }

    /// Another tab's pending events will never apply (another identity's, or lost): their
    /// predictions go, here and in the other tabs.
    pub(crate) fn drop_foreign_tab(&self, tab: &str, seqs: &[u64]) {
        self.state.borrow_mut().drop_tab(tab);
        for &seq in seqs {
            self.tell_tabs(&TabMsg::Settled {
                tab: tab.to_owned(),
                seq,
                v: Version(0),
            });
        }
        self.after_change();
    }

    /// Another tab's event `seq` was settled at `v`; `adopted`: found by this tab's adoption,
    /// which tells the other tabs too (the gone tab cannot).
    pub(crate) fn settle_foreign(&self, tab: &str, seq: u64, v: Version, adopted: bool) {
        self.state.borrow_mut().settle_foreign(tab, seq, v);
        if adopted {
            self.tell_tabs(&TabMsg::Settled {
                tab: tab.to_owned(),
                seq,
                v,
            });
        }
        self.catch_up(v);
        self.after_change();
    }
}
