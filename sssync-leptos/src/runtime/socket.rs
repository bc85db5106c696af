//! The WebSocket: connecting with backoff, the heartbeat and the watchdog, and every message
//! the server sends, handed to the core client state machine.

use super::tabs::TabMsg;
use super::{ACK_TIMEOUT_MS, BACKOFF_MAX_MS, BACKOFF_MIN_MS, Callback, Runtime, now_ms, random_id};
use leptos::prelude::*;
use sssync_core::QueryKey;
use sssync_core::protocol::{ClientMsg, ServerMsg};
use std::rc::{Rc, Weak};
use std::time::Duration;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, WebSocket};

impl Runtime {
    /// Opens the socket, unless one is open or opening.
    pub(super) fn connect(self: &Rc<Self>) {
        if self.ws.borrow().is_some() {
            return;
        }
        let ws = match WebSocket::new(&self.url) {
            Ok(ws) => ws,
            Err(_) => return self.retry(),
        };
        let weak: Weak<Runtime> = Rc::downgrade(self);
        let on_open = {
            let weak = weak.clone();
            Callback::new(move |_| {
                if let Some(rt) = weak.upgrade() {
                    let hello = rt.state.borrow().hello();
                    rt.send_raw(&hello);
                }
            })
        };
        let on_message = {
            let weak = weak.clone();
            Callback::new(move |e: web_sys::Event| {
                let Some(text) = e
                    .dyn_ref::<MessageEvent>()
                    .and_then(|m| m.data().as_string())
                else {
                    return;
                };
                if let Some(rt) = weak.upgrade() {
                    rt.on_text(&text);
                }
            })
        };
        let on_close = Callback::new(move |e: web_sys::Event| {
            if let Some(rt) = weak.upgrade() {
                rt.on_close(&e);
            }
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        *self.callbacks.borrow_mut() = vec![on_open, on_message, on_close];
        *self.ws.borrow_mut() = Some(ws);
    }

    pub(super) fn on_close(self: &Rc<Self>, e: &web_sys::Event) {
        // Only the current socket's close counts (an old one may close late).
        let current = self.ws.borrow().as_ref().is_some_and(|ws| {
            e.target().is_some_and(|t| {
                let t: &wasm_bindgen::JsValue = t.as_ref();
                let ws: &wasm_bindgen::JsValue = ws.as_ref();
                t == ws
            })
        });
        if !current {
            return;
        }
        self.live.set(false);
        self.signals.online.set(false);
        self.ws.borrow_mut().take();
        self.retry();
    }

    /// Reconnects after an exponential backoff.
    pub(super) fn retry(self: &Rc<Self>) {
        let n = self.attempts.get().min(16);
        self.attempts.set(n + 1);
        let delay = (BACKOFF_MIN_MS << n).min(BACKOFF_MAX_MS);
        let weak = Rc::downgrade(self);
        set_timeout(
            move || {
                if let Some(rt) = weak.upgrade() {
                    rt.connect();
                }
            },
            Duration::from_millis(delay),
        );
    }

    /// Closes the current socket and treats the connection as lost (reconnecting with backoff).
    pub(super) fn drop_socket(self: &Rc<Self>) {
        let ws = self.ws.borrow_mut().take();
        if let Some(ws) = ws {
            // Its callbacks go with it (they are dropped at the next connect).
            ws.set_onopen(None);
            ws.set_onmessage(None);
            ws.set_onclose(None);
            let _ = ws.close();
            self.live.set(false);
            self.signals.online.set(false);
            self.retry();
        }
    }

    /// Pending events a live connection has left unanswered for long are sent again.
    pub(super) fn watchdog(&self) {
        if self.live.get() && now_ms() - self.last_progress.get() > ACK_TIMEOUT_MS {
            self.last_progress.set(now_ms());
            // Answers that did not come (a message the server could not read): ask again.
            let again = {
                let mut st = self.state.borrow_mut();
                let mut again = st.unanswered();
                again.extend(st.resend());
                again
            };
            for m in &again {
                self.send_raw(m);
            }
        }
    }

    pub(super) fn on_text(&self, text: &str) {
        self.last_heard.set(now_ms());
        let Ok(msg) = ServerMsg::parse(text) else {
            // The stream lost something this tab cannot name: start over (resume).
            if let Some(rt) = self.me.upgrade() {
                rt.drop_socket();
            }
            return;
        };
        // An error before the welcome: the hello did not get through as sent; start over
        // (unless this client id is refused to this identity: handled below).
        let refused_id = matches!(&msg, ServerMsg::Error(e) if e.key().is_none()
            && matches!(e.code, sssync_core::ErrorCode::Forbidden | sssync_core::ErrorCode::IdentityChanged));
        if !self.live.get() && matches!(msg, ServerMsg::Error(_)) && !refused_id {
            if let Some(rt) = self.me.upgrade() {
                rt.drop_socket();
            }
            return;
        }
        if matches!(
            msg,
            ServerMsg::Ack(_)
                | ServerMsg::Reject(_)
                | ServerMsg::Gap(_)
                | ServerMsg::Retry(_)
                | ServerMsg::Welcome(_)
        ) {
            self.last_progress.set(now_ms());
        }
        // Which event a rejection is about (the state forgets it).
        let refused = match &msg {
            ServerMsg::Reject(r) => self.state.borrow().pending_name(r.seq).map(str::to_owned),
            _ => None,
        };
        let welcome = matches!(msg, ServerMsg::Welcome(_));
        // A delta or a snapshot changes the views of the keys its update names, no other.
        let keyed = matches!(msg, ServerMsg::Delta(_) | ServerMsg::Snapshot(_));
        let update = self.state.borrow_mut().on_message(msg);
        self.answer_outcomes(&update, welcome);
        if update.identity_changed {
            // This tab's id and everything it held were another identity's: they go (from
            // storage too), and the tab goes on under a new id.
            let old = self.state.borrow().client_id().to_owned();
            self.state.borrow_mut().new_identity(random_id());
            self.others.borrow_mut().clear();
            self.tell_tabs(&TabMsg::Gone { tab: old.clone() });
            if let Some(db) = self.db() {
                leptos::task::spawn_local(async move {
                    crate::persist::remove(&db, &old).await;
                });
            }
            self.signals.notice.set(Some(
                "You were signed out (or in as someone else): this page forgot what it held \
                 for the previous account."
                    .to_owned(),
            ));
            self.after_change();
            if let Some(rt) = self.me.upgrade() {
                rt.attempts.set(0);
                rt.drop_socket();
            }
            return;
        }
        if update.live {
            self.live.set(true);
            self.attempts.set(0);
            self.signals.online.set(true);
            // Nothing of another identity's stays in this browser's storage.
            let (own, who) = {
                let st = self.state.borrow();
                (
                    st.client_id().to_owned(),
                    st.identity_tag().unwrap_or_default().to_owned(),
                )
            };
            *self.welcomed_as.borrow_mut() = Some(who.clone());
            if let Some(db) = self.db() {
                leptos::task::spawn_local(async move {
                    crate::persist::forget_other_identities(&db, &own, &who).await;
                });
            }
        }
        for m in &update.send {
            self.send_raw(m);
        }
        if let Some((_, r)) = update.rejected.last() {
            self.signals.rejection.set(Some(crate::error::Refused {
                event: refused.unwrap_or_default(),
                why: r.clone(),
            }));
        }
        if !update.settled.is_empty() {
            let tab = self.state.borrow().client_id().to_owned();
            for &(seq, v) in &update.settled {
                self.tell_tabs(&TabMsg::Settled {
                    tab: tab.clone(),
                    seq,
                    v,
                });
            }
        }
        if let Some(n) = update.history_reset {
            let sent = match n {
                0 => String::new(),
                1 => " and sent your unsaved change again".to_owned(),
                n => format!(" and sent your {n} unsaved changes again"),
            };
            self.signals.notice.set(Some(format!(
                "The server's data changed history (restored from an earlier copy, or another \
                 database): this page reloaded its data{sent}."
            )));
        }
        if let Some(after) = update.resend_after {
            let why = self
                .state
                .borrow()
                .write_blocked_reason()
                .unwrap_or_default()
                .to_owned();
            self.signals.notice.set(Some(format!(
                "The server cannot save changes right now ({why}); they are kept here and sent \
                 again in {} s.",
                after.as_millis().div_ceil(1000)
            )));
            self.schedule_resend(after);
        } else if !update.settled.is_empty()
            && self
                .signals
                .notice
                .get_untracked()
                .is_some_and(|n| n.starts_with("The server cannot save"))
        {
            self.signals.notice.set(None);
        }
        for (key, after) in update.retry_subs {
            self.schedule_resubscribe(key, after);
        }
        if update.reconnect
            && let Some(rt) = self.me.upgrade()
        {
            rt.drop_socket();
        }
        if keyed {
            self.after_change_of(Some(&update.changed));
        } else {
            self.after_change();
        }
    }

    /// Sends the pending events again after `after` (the server asked: `retry`).
    pub(super) fn schedule_resend(&self, after: Duration) {
        if self.resend_scheduled.replace(true) {
            return;
        }
        let weak = self.me.clone();
        set_timeout(
            move || {
                let Some(rt) = weak.upgrade() else { return };
                rt.resend_scheduled.set(false);
                if rt.live.get() {
                    rt.last_progress.set(now_ms());
                    let again = rt.state.borrow_mut().resend();
                    for m in &again {
                        rt.send_raw(m);
                    }
                }
            },
            after,
        );
    }

    /// Subscribes again to a key whose query failed on the server, after `after`.
    pub(super) fn schedule_resubscribe(&self, key: QueryKey, after: Duration) {
        if !self.resubscribing.borrow_mut().insert(key.clone()) {
            return; // one timer per key
        }
        let weak = self.me.clone();
        set_timeout(
            move || {
                let Some(rt) = weak.upgrade() else { return };
                rt.resubscribing.borrow_mut().remove(&key);
                if !rt.live.get() {
                    return; // the next welcome subscribes to every held key anyway
                }
                let msg = rt.state.borrow_mut().resubscribe(&key);
                if let Some(m) = msg {
                    rt.send_raw(&m);
                }
            },
            after,
        );
    }

    pub(super) fn send_raw(&self, m: &ClientMsg) {
        if let Some(ws) = self.ws.borrow().as_ref() {
            let _ = ws.send_with_str(&m.to_json());
        }
    }

    /// Sends now if welcomed; otherwise the next welcome resends what matters.
    pub(super) fn send_if_live(&self, m: &ClientMsg) {
        if self.live.get() {
            self.send_raw(m);
        }
    }
}
