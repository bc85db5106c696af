//! Adopting the pending events of a tab that is gone: a second, short-lived WebSocket speaks as
//! that tab's client id, sends its events with their own seqs (the server applies each once,
//! whoever sends it), and, when all are settled, removes the tab's entry. Meanwhile this tab
//! predicts them, like another tab's pending events.

use super::{Callback, Runtime};
use crate::persist::{self, Entry};
use leptos::prelude::*;
use sssync_core::protocol::{ClientMsg, EventMsg, Hello, PROTOCOL, ServerMsg};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Duration;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, WebSocket};

const RETRY: Duration = Duration::from_secs(2);

pub(crate) struct Adoption {
    entry: Entry,
    /// The entry holds every pending event of the tab from its first (its stored queue), not
    /// only those it told this tab of.
    complete: bool,
    rt: Weak<Runtime>,
    ws: RefCell<Option<WebSocket>>,
    callbacks: RefCell<Vec<Callback>>,
    /// Sent seq -> the event's original seq, for the events not yet settled.
    outstanding: RefCell<BTreeMap<u64, u64>>,
    /// The current connection has been welcomed (only then can "nothing outstanding" mean
    /// "all settled").
    welcomed: Cell<bool>,
    /// The last gap answered by resending (one resend per gap).
    resent_from: Cell<Option<u64>>,
    done: Cell<bool>,
}

impl Adoption {
    pub(crate) fn start(rt: &Rc<Runtime>, entry: Entry, complete: bool) -> Rc<Adoption> {
        for (seq, name, args) in &entry.events {
            rt.predict_foreign(&entry.client_id, *seq, name, args);
        }
        let a = Rc::new(Adoption {
            entry,
            complete,
            rt: Rc::downgrade(rt),
            ws: RefCell::new(None),
            callbacks: RefCell::new(Vec::new()),
            outstanding: RefCell::new(BTreeMap::new()),
            welcomed: Cell::new(false),
            resent_from: Cell::new(None),
            done: Cell::new(false),
        });
        a.connect();
        a
    }

    /// The gone tab's client id.
    pub(crate) fn client_id(&self) -> &str {
        &self.entry.client_id
    }

    /// Every event is settled, or dropped.
    pub(crate) fn is_done(&self) -> bool {
        self.done.get()
    }

    fn connect(self: &Rc<Self>) {
        if self.done.get() {
            return;
        }
        let Some(rt) = self.rt.upgrade() else { return };
        let Ok(ws) = WebSocket::new(rt.url()) else {
            return self.retry();
        };
        let weak = Rc::downgrade(self);
        let on_open = {
            let weak = weak.clone();
            Callback::new(move |_| {
                if let Some(a) = weak.upgrade() {
                    // Every seq below the gone tab's first pending event was settled (known only
                    // from its complete queue).
                    let acked = a
                        .entry
                        .events
                        .iter()
                        .map(|e| e.0)
                        .min()
                        .map(|s| s - 1)
                        .filter(|_| a.complete);
                    a.send(&ClientMsg::Hello(Hello {
                        protocol: PROTOCOL,
                        client_id: a.entry.client_id.clone(),
                        epoch: a.entry.epoch.clone(),
                        acked,
                        version: None,
                        proof: None,
                    }));
                }
            })
        };
        let on_message = {
            let weak = weak.clone();
            Callback::new(move |e: web_sys::Event| {
                let text = e
                    .dyn_ref::<MessageEvent>()
                    .and_then(|m| m.data().as_string());
                if let (Some(a), Some(text)) = (weak.upgrade(), text)
                    && let Ok(msg) = ServerMsg::parse(&text)
                {
                    a.on_message(msg);
                }
            })
        };
        let on_close = Callback::new(move |_| {
            if let Some(a) = weak.upgrade() {
                a.ws.borrow_mut().take();
                a.welcomed.set(false);
                a.retry();
            }
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        *self.callbacks.borrow_mut() = vec![on_open, on_message, on_close];
        *self.ws.borrow_mut() = Some(ws);
    }

    fn retry(self: &Rc<Self>) {
        if self.done.get() {
            return;
        }
        let weak = Rc::downgrade(self);
        set_timeout(
            move || {
                if let Some(a) = weak.upgrade() {
                    a.connect();
                }
            },
            RETRY,
        );
    }

    fn send(&self, m: &ClientMsg) {
        if let Some(ws) = self.ws.borrow().as_ref() {
            let _ = ws.send_with_str(&m.to_json());
        }
    }

    fn send_event(&self, sent: u64, original: u64) {
        if let Some((_, name, args)) = self.entry.events.iter().find(|(s, ..)| *s == original)
            && let Ok(args) = serde_json::value::RawValue::from_string(args.clone())
        {
            self.send(&ClientMsg::Event(EventMsg {
                seq: sent,
                name: name.clone(),
                args,
            }));
        }
    }

    fn on_message(self: &Rc<Self>, msg: ServerMsg) {
        let Some(rt) = self.rt.upgrade() else { return };
        let id = &self.entry.client_id;
        match msg {
            // The gone tab's events were another identity's (its client id is refused to this
            // one, or the welcome names someone else), or nobody can tell whose (saved before
            // its tab was ever welcomed): they are not this tab's to send.
            ServerMsg::Error(e)
                if e.key().is_none() && e.code == sssync_core::ErrorCode::Forbidden =>
            {
                return self.abandon(&rt, None);
            }
            // The connection's own request no longer names its identity: ask again (the
            // welcome decides).
            ServerMsg::Error(e)
                if e.key().is_none() && e.code == sssync_core::ErrorCode::IdentityChanged =>
            {
                if let Some(ws) = self.ws.borrow().as_ref() {
                    let _ = ws.close();
                }
                return;
            }
            ServerMsg::Welcome(w)
                if self
                    .entry
                    .who
                    .as_ref()
                    .is_none_or(|who| *who != w.who.clone().unwrap_or_default()) =>
            {
                let unknown = self.entry.who.is_none();
                return self.abandon(
                    &rt,
                    unknown.then_some("made before this browser knew who was signed in"),
                );
            }
            // Known only from what the tab told this one: an event it made before is missing
            // (never stored, gone with it), and the later ones cannot apply without it.
            ServerMsg::Welcome(w)
                if !self.complete
                    && self
                        .entry
                        .events
                        .iter()
                        .map(|e| e.0)
                        .filter(|&s| s > w.last_seq)
                        .min()
                        .is_some_and(|s| s > w.last_seq + 1) =>
            {
                return self.abandon(&rt, Some("whose earlier changes were lost with it"));
            }
            ServerMsg::Welcome(w) => {
                self.welcomed.set(true);
                self.resent_from.set(None);
                let mut out = self.outstanding.borrow_mut();
                out.clear();
                // The same rule as the tab's own client state, whatever the epoch: the server
                // has every seq the gone tab settled (its hello's `acked` moves the server's
                // last_seq up to them), so those up to last_seq were applied and the others
                // keep their seqs (never renumbered: a renumbered event could apply twice).
                for (seq, ..) in &self.entry.events {
                    if *seq <= w.last_seq {
                        // Already applied (its tab got that far): its rows come with them.
                        rt.settle_foreign(id, *seq, w.version, true);
                    } else {
                        out.insert(*seq, *seq);
                    }
                }
                let to_send: Vec<(u64, u64)> = out.iter().map(|(&s, &o)| (s, o)).collect();
                drop(out);
                for (sent, original) in to_send {
                    self.send_event(sent, original);
                }
            }
            ServerMsg::Ack(a) => self.settled(&rt, a.seq, a.v),
            ServerMsg::Reject(r) => {
                let name = self
                    .outstanding
                    .borrow()
                    .get(&r.seq)
                    .and_then(|o| self.entry.events.iter().find(|e| e.0 == *o))
                    .map(|e| e.1.clone())
                    .unwrap_or_default();
                rt.show_rejection(name, r.error.clone());
                self.settled(&rt, r.seq, r.v);
            }
            ServerMsg::Gap(g) if self.resent_from.replace(Some(g.expected)) != Some(g.expected) => {
                self.resend_from(g.expected);
            }
            ServerMsg::Retry(r) => {
                // The server cannot save for now: send them again when it says.
                let weak = Rc::downgrade(self);
                set_timeout(
                    move || {
                        if let Some(a) = weak.upgrade() {
                            a.resend_from(0);
                        }
                    },
                    Duration::from_millis(r.after_ms),
                );
            }
            _ => {}
        }
        if self.welcomed.get() && self.outstanding.borrow().is_empty() && !self.done.get() {
            self.finish(&rt);
        }
    }

    fn resend_from(&self, from: u64) {
        let again: Vec<(u64, u64)> = self
            .outstanding
            .borrow()
            .range(from..)
            .map(|(&s, &o)| (s, o))
            .collect();
        for (sent, original) in again {
            self.send_event(sent, original);
        }
    }

    fn settled(&self, rt: &Rc<Runtime>, sent: u64, v: sssync_core::Version) {
        self.resent_from.set(None);
        let original = self.outstanding.borrow_mut().remove(&sent);
        if let Some(original) = original {
            rt.settle_foreign(&self.entry.client_id, original, v, true);
        }
    }

    /// The events are not this tab's to send (another identity's, or nobody's known): nothing
    /// of them is sent, shown or kept; with `why`, the page says how many went.
    fn abandon(&self, rt: &Rc<Runtime>, why: Option<&str>) {
        let seqs: Vec<u64> = self.entry.events.iter().map(|e| e.0).collect();
        rt.drop_foreign_tab(&self.entry.client_id, &seqs);
        if let Some(why) = why {
            let n = seqs.len();
            let changes = if n == 1 { "change" } else { "changes" };
            rt.notice(format!(
                "{n} {changes} of a closed tab could not be sent ({why})."
            ));
        }
        self.finish(rt);
    }

    /// Every event is settled: forget the tab.
    fn finish(&self, rt: &Rc<Runtime>) {
        self.done.set(true);
        if let Some(ws) = self.ws.borrow_mut().take() {
            ws.set_onclose(None);
            ws.set_onmessage(None);
            ws.set_onopen(None);
            let _ = ws.close();
        }
        persist::clear_gone(&self.entry.client_id);
        if let Some(db) = rt.db() {
            let id = self.entry.client_id.clone();
            leptos::task::spawn_local(async move {
                persist::remove(&db, &id).await;
            });
        }
    }
}
