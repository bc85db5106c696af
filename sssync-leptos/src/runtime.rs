//! The browser runtime (features `hydrate`, `csr`): one WebSocket per tab driving the core
//! client state machine, reconnecting with backoff. Single-threaded (wasm), so plain `RefCell`s;
//! no borrow is held across a call that could re-enter.

use crate::{Loaded, SyncError};
use futures_channel::oneshot;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use sssync_core::Version;
use sssync_core::client::{ClientState, EventTypes, Persist};
use sssync_core::protocol::{ClientMsg, ServerMsg};
use sssync_core::{Event, QueryKey, Rejection};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::{Rc, Weak};
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{BroadcastChannel, MessageEvent, WebSocket};

/// What tabs of one browser tell each other (BroadcastChannel `sssync`): so that a write shows
/// in every tab at once, also offline.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum TabMsg {
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
struct OtherTab {
    /// Its pending events: seq -> (name, args JSON).
    events: std::collections::BTreeMap<u64, (String, String)>,
    /// The identity tag they were made under, when known.
    who: Option<String>,
    /// When it was last heard from (ms since the epoch).
    heard: f64,
    /// It said it is gone.
    gone: bool,
}

const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 5_000;
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long a live connection may leave pending events unanswered before they are sent again
/// (the server acknowledges those it had as duplicates).
const ACK_TIMEOUT_MS: f64 = 20_000.0;
/// How long a load waits for the database to open before going on without the rows cache (an
/// open can be blocked by another tab holding an older version of the database).
const DB_OPEN_WAIT: Duration = Duration::from_secs(1);

/// A socket callback.
pub(crate) type Callback = Closure<dyn FnMut(web_sys::Event)>;

/// The signals the runtime keeps current for the UI.
pub(crate) struct Signals {
    pub(crate) changed: RwSignal<u64>,
    pub(crate) online: RwSignal<bool>,
    pub(crate) pending: RwSignal<usize>,
    pub(crate) rejection: RwSignal<Option<crate::Refused>>,
    pub(crate) notice: RwSignal<Option<String>>,
}

pub(crate) struct Runtime {
    me: Weak<Runtime>,
    pub(crate) state: RefCell<ClientState>,
    signals: Signals,
    url: String,
    ws: RefCell<Option<WebSocket>>,
    /// The current socket's callbacks (kept alive as long as the socket).
    callbacks: RefCell<Vec<Callback>>,
    live: Cell<bool>,
    /// The identity tag of this page load's last welcome (`""`: anonymous), once welcomed.
    welcomed_as: RefCell<Option<String>>,
    attempts: Cell<u32>,
    /// When the server was last heard from (ms since the epoch).
    last_heard: Cell<f64>,
    /// When an event was last answered (or the first pending one sent), for the watchdog that
    /// resends events a live connection leaves unanswered.
    last_progress: Cell<f64>,
    /// A resend the server asked for (`retry`) is scheduled.
    resend_scheduled: Cell<bool>,
    /// Keys with a subscription retry scheduled (one timer per key).
    resubscribing: RefCell<std::collections::HashSet<QueryKey>>,
    /// How many components hold each key.
    refs: RefCell<HashMap<QueryKey, usize>>,
    waiters: RefCell<Vec<(QueryKey, oneshot::Sender<()>)>>,
    types: StoredValue<EventTypes>,
    tabs: Option<BroadcastChannel>,
    /// Where this tab keeps its pending events and the rows cache (`None`: storage unavailable,
    /// memory only).
    db: RefCell<Option<Rc<indexed_db_futures::database::Database>>>,
    /// The database is still being opened; loads wait for it (a bounded time) in `db_waiters`.
    db_opening: Cell<bool>,
    db_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Keys (name, canonical args) whose confirmed rows changed since the cache was written.
    dirty: RefCell<BTreeSet<(String, String)>>,
    /// The server's history changed: the cache is cleared before the next write.
    clear_cache: Cell<bool>,
    /// A cache write is under way (it takes what is dirty when it starts, then looks again).
    flushing: Cell<bool>,
    /// The pending events last written there: (count, sum of seqs).
    saved: Cell<(usize, u64)>,
    /// Gone tabs' pending events this tab is sending.
    adoptions: RefCell<Vec<Rc<crate::adopt::Adoption>>>,
    /// The other tabs of this browser with pending events, by client id.
    others: RefCell<HashMap<String, OtherTab>>,
    /// Who waits for the outcome of this tab's pending events (an action's dispatch), by seq.
    /// Each entry goes when its event settles or is dropped, so it holds no more entries than
    /// there are pending events.
    outcomes: RefCell<HashMap<u64, oneshot::Sender<Result<(), crate::SyncError>>>>,
}

/// A random client id for this tab's page load (pending events live as long as the tab's
/// memory; the id must not outlive them, or a reload would reuse seqs).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if let Some(crypto) = web_sys::window().and_then(|w| w.crypto().ok()) {
        let _ = crypto.get_random_values_with_u8_array(&mut bytes);
    } else {
        for b in &mut bytes {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn socket_url() -> String {
    let location = web_sys::window().expect("a window").location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss:",
        _ => "ws:",
    };
    let host = location.host().unwrap_or_default();
    format!("{scheme}//{host}/sssync/ws")
}

impl Runtime {
    pub(crate) fn start(signals: Signals, types: StoredValue<EventTypes>) -> Rc<Runtime> {
        let rt = Rc::new_cyclic(|me| Runtime {
            me: me.clone(),
            state: RefCell::new(ClientState::new(random_id())),
            signals,
            url: socket_url(),
            ws: RefCell::new(None),
            callbacks: RefCell::new(Vec::new()),
            live: Cell::new(false),
            welcomed_as: RefCell::new(None),
            attempts: Cell::new(0),
            last_heard: Cell::new(now_ms()),
            last_progress: Cell::new(now_ms()),
            resend_scheduled: Cell::new(false),
            resubscribing: RefCell::new(std::collections::HashSet::new()),
            refs: RefCell::new(HashMap::new()),
            waiters: RefCell::new(Vec::new()),
            types,
            tabs: BroadcastChannel::new("sssync").ok(),
            db: RefCell::new(None),
            db_opening: Cell::new(true),
            db_waiters: RefCell::new(Vec::new()),
            dirty: RefCell::new(BTreeSet::new()),
            clear_cache: Cell::new(false),
            flushing: Cell::new(false),
            saved: Cell::new((0, 0)),
            adoptions: RefCell::new(Vec::new()),
            others: RefCell::new(HashMap::new()),
            outcomes: RefCell::new(HashMap::new()),
        });
        rt.listen_to_tabs();
        rt.connect();
        // Storage: open it, then adopt what gone tabs left (in the background; a failure
        // leaves this tab working from memory).
        {
            let weak = Rc::downgrade(&rt);
            leptos::task::spawn_local(async move {
                let db = crate::persist::open().await.map(Rc::new);
                let Some(rt) = weak.upgrade() else { return };
                *rt.db.borrow_mut() = db.clone();
                rt.db_settled();
                let Some(db) = db else { return };
                rt.yield_on_version_change(&db);
                // Welcomed before storage opened: nothing of another identity's stays.
                let welcomed_as = rt.welcomed_as.borrow().clone();
                if let Some(who) = welcomed_as {
                    let own = rt.state.borrow().client_id().to_owned();
                    crate::persist::forget_other_identities(&db, &own, &who).await;
                }
                rt.save_own(true);
                rt.flush_cache();
                // What gone tabs left: this tab sends it.
                rt.adopt_orphans(true);
            });
        }
        // Loads do not wait for a blocked open for long.
        {
            let weak = Rc::downgrade(&rt);
            set_timeout(
                move || {
                    if let Some(rt) = weak.upgrade() {
                        rt.db_settled();
                    }
                },
                DB_OPEN_WAIT,
            );
        }
        // The heartbeat of this tab (only while it has pending events: in its stored entry and
        // to the other tabs), and the check that the other tabs with pending events still live.
        {
            let weak = Rc::downgrade(&rt);
            set_interval(
                move || {
                    if let Some(rt) = weak.upgrade() {
                        rt.save_own(true);
                        if rt.state.borrow().pending_count() > 0 {
                            let tab = rt.state.borrow().client_id().to_owned();
                            rt.tell_tabs(&TabMsg::Beat { tab });
                        }
                        rt.adopt_orphans(false);
                    }
                },
                Duration::from_secs(5),
            );
        }
        // Back online: reconnect now rather than at the end of the backoff.
        if let Some(window) = web_sys::window() {
            let weak = Rc::downgrade(&rt);
            let on_online = Callback::new(move |_| {
                if let Some(rt) = weak.upgrade() {
                    rt.attempts.set(0);
                    rt.connect();
                    // What tabs closed meanwhile left goes now too.
                    rt.adopt_orphans(true);
                }
            });
            let _ = window
                .add_event_listener_with_callback("online", on_online.as_ref().unchecked_ref());
            // Gone offline: the socket may not notice for a long time; close it now (pending
            // writes wait, the status says offline).
            let weak = Rc::downgrade(&rt);
            let on_offline = Callback::new(move |_| {
                if let Some(rt) = weak.upgrade() {
                    rt.drop_socket();
                }
            });
            let _ = window
                .add_event_listener_with_callback("offline", on_offline.as_ref().unchecked_ref());
            // Both live as long as the page (one runtime per tab).
            on_online.forget();
            on_offline.forget();
        }
        // Heartbeat: a ping every interval; a connection silent for two intervals is dead.
        let weak = Rc::downgrade(&rt);
        set_interval(
            move || {
                if let Some(rt) = weak.upgrade() {
                    if rt.live.get()
                        && now_ms() - rt.last_heard.get() > 2.0 * PING_EVERY.as_millis() as f64
                    {
                        rt.drop_socket();
                    } else {
                        rt.send_if_live(&ClientMsg::Ping);
                        rt.watchdog();
                    }
                }
            },
            PING_EVERY,
        );
        rt
    }

    fn listen_to_tabs(self: &Rc<Self>) {
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

    fn tell_tabs(&self, msg: &TabMsg) {
        if let (Some(channel), Ok(text)) = (&self.tabs, serde_json::to_string(msg)) {
            let _ = channel.post_message(&wasm_bindgen::JsValue::from_str(&text));
        }
    }

    fn on_tab(self: &Rc<Self>, msg: TabMsg) {
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
                let a = crate::adopt::Adoption::start(&rt, entry, complete);
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
                        let a = crate::adopt::Adoption::start(&rt, entry, true);
                        rt.adoptions.borrow_mut().push(a);
                    }
                }
            }
            rt.after_change();
        });
    }

    /// Whether this tab is sending tab `id`'s pending events already.
    fn adopting(&self, id: &str) -> bool {
        self.adoptions
            .borrow()
            .iter()
            .any(|a| a.client_id() == id && !a.is_done())
    }

    /// Opens the socket, unless one is open or opening.
    fn connect(self: &Rc<Self>) {
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

    fn on_close(self: &Rc<Self>, e: &web_sys::Event) {
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
    fn retry(self: &Rc<Self>) {
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
    fn drop_socket(self: &Rc<Self>) {
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
    fn watchdog(&self) {
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

    fn on_text(&self, text: &str) {
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
                    st.who().unwrap_or_default().to_owned(),
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
            self.signals.rejection.set(Some(crate::Refused {
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
            let why = self.state.borrow().trouble().unwrap_or_default().to_owned();
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
        self.after_change();
    }

    /// Sends the pending events again after `after` (the server asked: `retry`).
    fn schedule_resend(&self, after: Duration) {
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
    fn schedule_resubscribe(&self, key: QueryKey, after: Duration) {
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

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn db(&self) -> Option<Rc<indexed_db_futures::database::Database>> {
        self.db.borrow().clone()
    }

    /// When a newer version of the app asks to upgrade the database, lets it: closes this tab's
    /// connection (which would otherwise block the upgrade until this tab closes) and goes on
    /// from memory.
    fn yield_on_version_change(&self, db: &indexed_db_futures::database::Database) {
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
    async fn database(&self) -> Option<Rc<indexed_db_futures::database::Database>> {
        if self.db_opening.get() {
            let (tx, rx) = oneshot::channel();
            self.db_waiters.borrow_mut().push(tx);
            let _ = rx.await;
        }
        self.db()
    }

    /// The database is open, unavailable, or not worth waiting for any longer.
    fn db_settled(&self) {
        self.db_opening.set(false);
        let waiters = std::mem::take(&mut *self.db_waiters.borrow_mut());
        for tx in waiters {
            let _ = tx.send(());
        }
    }

    /// Writes the confirmed rows of the keys that changed to the rows cache, in the background;
    /// one write at a time, each taking the newest rows (so a burst of deltas costs one write).
    fn flush_cache(&self) {
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

    /// A settled event of another tab leaves this tab's view once its connection has seen `v`:
    /// when it has not, a ping's answer says how far the server has fanned out (a tab whose
    /// queries do not change would otherwise never see it).
    fn catch_up(&self, v: Version) {
        if self.state.borrow().seen() < v {
            self.send_if_live(&ClientMsg::Ping);
        }
    }

    /// Shows a notice on the page.
    pub(crate) fn notice(&self, text: String) {
        self.signals.notice.set(Some(text));
    }

    pub(crate) fn show_rejection(&self, event: String, why: Rejection) {
        self.signals
            .rejection
            .set(Some(crate::Refused { event, why }));
    }

    /// Writes this tab's pending events to storage when they changed (or, with `beat`, to
    /// refresh the heartbeat); removes the entry when none is left.
    fn save_own(&self, beat: bool) {
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
                    who: st.who().map(str::to_owned),
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

    fn after_change(&self) {
        // The state describes its changes for a store: changed rows go to the rows cache (the
        // keys only: the write takes the newest rows); this runtime keeps its pending events
        // itself (`save_own`). A key no longer held stays cached.
        let ops = self.state.borrow_mut().drain_persist();
        let mut cache = false;
        let mut forget = Vec::new();
        for op in ops {
            match op {
                Persist::Rows { name, args, .. } => {
                    self.dirty.borrow_mut().insert((name, args));
                    cache = true;
                }
                Persist::ClearAll | Persist::ForgetIdentity => {
                    self.dirty.borrow_mut().clear();
                    self.clear_cache.set(true);
                    cache = true;
                }
                // Rows this identity may not read: gone from the cache too (kept rows of keys
                // no longer held are not).
                Persist::Forget { name, args } => {
                    self.dirty
                        .borrow_mut()
                        .remove(&(name.clone(), args.clone()));
                    forget.push(crate::persist::cache_key(&name, &args));
                }
                _ => {}
            }
        }
        if !forget.is_empty()
            && let Some(db) = self.db()
        {
            leptos::task::spawn_local(async move {
                crate::persist::uncache(&db, forget).await;
            });
        }
        if cache {
            self.flush_cache();
        }
        self.save_own(false);
        let pending = self.state.borrow().pending_count();
        self.signals.pending.set(pending);
        self.signals.changed.update(|n| *n += 1);
        let ready: Vec<oneshot::Sender<()>> = {
            let st = self.state.borrow();
            let mut waiters = self.waiters.borrow_mut();
            let (ready, waiting): (Vec<_>, Vec<_>) = waiters
                .drain(..)
                .partition(|(k, _)| st.confirmed(k).is_some());
            *waiters = waiting;
            ready.into_iter().map(|(_, tx)| tx).collect()
        };
        for tx in ready {
            let _ = tx.send(());
        }
    }

    fn send_raw(&self, m: &ClientMsg) {
        if let Some(ws) = self.ws.borrow().as_ref() {
            let _ = ws.send_with_str(&m.to_json());
        }
    }

    /// Sends now if welcomed; otherwise the next welcome resends what matters.
    fn send_if_live(&self, m: &ClientMsg) {
        if self.live.get() {
            self.send_raw(m);
        }
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

    fn loaded(&self, key: &QueryKey) -> Option<Loaded> {
        let st = self.state.borrow();
        let (version, rows) = st.confirmed(key)?;
        Some(Loaded {
            q: key.name().to_owned(),
            a: key.args_json().to_owned(),
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
    fn answer_outcomes(&self, update: &sssync_core::client::Update, welcome: bool) {
        if self.outcomes.borrow().is_empty() {
            return;
        }
        let mut outcomes = self.outcomes.borrow_mut();
        if update.identity_changed || update.identity_reset {
            for (_, tx) in outcomes.drain() {
                let _ = tx.send(Err(crate::SyncError::Forbidden(
                    "signed out: the event was dropped".into(),
                )));
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
                    (st.client_id().to_owned(), st.who().map(str::to_owned))
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
                self.signals.rejection.set(Some(crate::Refused {
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
