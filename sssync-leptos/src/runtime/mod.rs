//! The browser runtime (features `hydrate`, `csr`): one WebSocket per tab driving the core
//! client state machine, reconnecting with backoff. Single-threaded (wasm), so plain `RefCell`s;
//! no borrow is held across a call that could re-enter.

use futures_channel::oneshot;
use leptos::prelude::*;
use sssync_core::Version;
use sssync_core::client::{ClientState, EventTypes, Persist};
use sssync_core::protocol::ClientMsg;
use sssync_core::{QueryKey, Rejection};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::{Rc, Weak};
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{BroadcastChannel, WebSocket};

mod adopt;
mod cache;
mod loads;
mod socket;
mod tabs;

use tabs::{OtherTab, TabMsg};

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
    pub(crate) rows_of: StoredValue<crate::triggers::RowTriggers>,
    pub(crate) online: RwSignal<bool>,
    pub(crate) pending: RwSignal<usize>,
    pub(crate) rejection: RwSignal<Option<crate::error::Refused>>,
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
    adoptions: RefCell<Vec<Rc<adopt::Adoption>>>,
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

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A settled event of another tab leaves this tab's view once its connection has seen `v`:
    /// when it has not, a ping's answer says how far the server has fanned out (a tab whose
    /// queries do not change would otherwise never see it).
    fn catch_up(&self, v: Version) {
        if self.state.borrow().highest_version() < v {
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
            .set(Some(crate::error::Refused { event, why }));
    }

    fn after_change(&self) {
        self.after_change_of(None);
    }

    /// After a change to the views of `keys` only (`None`: of any key): the rows of those
    /// keys' hooks are read again, everything else the UI shows of the client too.
    pub(super) fn after_change_of(&self, keys: Option<&[QueryKey]>) {
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
        self.signals.rows_of.with_value(|t| t.notify(keys));
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
}
