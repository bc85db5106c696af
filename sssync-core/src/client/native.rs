//! A native client transport (feature `native-client`): drives a [`ClientState`] over a
//! WebSocket with tokio, reconnecting with backoff and resuming.

use super::{ClientState, ClientStore, EventTypes, Update};
use crate::protocol::{ClientMsg, ProtocolError, Rejection, ServerMsg};
use crate::query::QueryKey;
use crate::schema::{Event, Query};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// Outgoing messages waiting for the socket; beyond this the client waits (bounded).
const OUTGOING: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a live connection may leave an event unanswered before the client sends its
/// pending events again (the server acknowledges those it had as duplicates).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Test modes: deliver some events twice, or out of order (the server must cope: duplicates are
/// acknowledged and not applied again, gaps are resent in order).
#[derive(Clone, Copy, Debug, Default)]
pub struct Chaos {
    /// Every n-th event message is sent twice (0: never).
    pub duplicate_every: u32,
    /// Every n-th event message is held back and sent after the next one (0: never).
    pub reorder_every: u32,
}

/// A callback that sees every server message.
pub type Observer = Arc<dyn Fn(&ServerMsg) + Send + Sync>;

/// How a [`NativeClient`] starts.
#[derive(Clone, Default)]
pub struct Options {
    /// Where the client keeps its rows and pending events (none: nothing survives the client).
    pub store: Option<Arc<dyn ClientStore>>,
    /// The event types, to predict restored pending events again.
    pub event_types: EventTypes,
    /// Called with every message from the server (logging, the tour example).
    pub observer: Option<Observer>,
    /// Test modes.
    pub chaos: Chaos,
    /// How long a live connection may leave pending events or subscriptions unanswered before
    /// they are sent again, and how long a connection may wait for its welcome (default 10 s).
    pub ack_timeout: Option<Duration>,
    /// The longest wait between reconnection attempts (default 5 s).
    pub max_backoff: Option<Duration>,
    /// Headers of the WebSocket upgrade request (a `Cookie`, an `Authorization`): who the
    /// client is, to a server that identifies requests.
    pub headers: Vec<(String, String)>,
}

struct Shared {
    state: Mutex<ClientState>,
    store: Option<Arc<dyn ClientStore>>,
    observer: Option<Observer>,
    chaos: Chaos,
    ack_timeout: Duration,
    max_backoff: Duration,
    /// Whether the current connection has been welcomed (messages can flow).
    live: AtomicBool,
    online: AtomicBool,
    url: Mutex<String>,
    headers: Mutex<Vec<(String, String)>>,
    rejected: Mutex<Vec<(u64, Rejection)>>,
    errors: Mutex<Vec<ProtocolError>>,
    bytes_in: AtomicU64,
    changes: watch::Sender<u64>,
    kick: Notify,
}

/// A client connected (or reconnecting) to an sssync server.
#[derive(Clone)]
pub struct NativeClient {
    shared: Arc<Shared>,
    out: mpsc::Sender<ClientMsg>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

/// A wait that ran out of time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition not met within {0:?}")]
pub struct TimedOut(pub Duration);

impl NativeClient {
    /// Connects to the WebSocket at `url` (`ws://host:port/sssync/ws`) as `client_id`.
    pub fn connect(url: impl Into<String>, client_id: impl Into<String>) -> NativeClient {
        NativeClient::connect_with(url, client_id, Options::default())
    }

    /// Connects with options: a store to restore from and keep to, test modes, an observer.
    pub fn connect_with(
        url: impl Into<String>,
        client_id: impl Into<String>,
        options: Options,
    ) -> NativeClient {
        let (changes, _) = watch::channel(0);
        let state = match &options.store {
            Some(store) => ClientState::restore(client_id, store.load(), &options.event_types),
            None => ClientState::new(client_id),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            store: options.store,
            observer: options.observer,
            chaos: options.chaos,
            ack_timeout: options.ack_timeout.unwrap_or(ACK_TIMEOUT),
            max_backoff: options.max_backoff.unwrap_or(BACKOFF_MAX),
            live: AtomicBool::new(false),
            online: AtomicBool::new(true),
            url: Mutex::new(url.into()),
            headers: Mutex::new(options.headers),
            rejected: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            bytes_in: AtomicU64::new(0),
            changes,
            kick: Notify::new(),
        });
        let (out, rx) = mpsc::channel(OUTGOING);
        let task = tokio::spawn(run(shared.clone(), rx));
        NativeClient {
            shared,
            out,
            task: Arc::new(task),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClientState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state and hands what changed to the store.
    fn mutate<T>(&self, f: impl FnOnce(&mut ClientState) -> T) -> (T, bool) {
        let mut st = self.state();
        let out = f(&mut st);
        self.shared.keep(&mut st);
        (out, self.shared.live.load(Ordering::SeqCst))
    }

    /// Sends `msg` if the connection is live; otherwise the next welcome resends what matters.
    fn send_if_live(&self, msg: ClientMsg, live: bool) {
        if live {
            // A full queue means the socket is stuck; the reconnect resends everything.
            let _ = self.out.try_send(msg);
        }
    }

    /// Holds query `Q` with `args` from now on.
    pub fn subscribe<Q: Query>(&self, args: &Q::Args) -> QueryKey {
        let key = QueryKey::new(Q::NAME, args).expect("query args serialize within limits");
        let (msg, live) = {
            let mut st = self.state();
            (
                st.subscribe(key.clone()),
                self.shared.live.load(Ordering::SeqCst),
            )
        };
        self.send_if_live(msg, live);
        key
    }

    /// Sends event `e` (predicted at once, sent when connected, exactly once). Returns its seq;
    /// `None` when the client refuses to send it (args over the limit): the refusal is then in
    /// [`NativeClient::rejected`] with seq 0.
    pub fn send<E: Event>(&self, e: E) -> Option<u64> {
        let (pushed, live) = self.mutate(|st| st.push(e).map(|(msg, _)| msg));
        let msg = match pushed {
            Ok(m) => m,
            Err(r) => {
                self.shared
                    .rejected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((0, r));
                self.shared.changes.send_modify(|n| *n += 1);
                return None;
            }
        };
        let seq = match &msg {
            ClientMsg::Event(m) => m.seq,
            _ => 0,
        };
        self.shared.changes.send_modify(|n| *n += 1);
        self.send_if_live(msg, live);
        Some(seq)
    }

    /// The typed view of query `Q` with `args` (confirmed rows + predictions), once loaded.
    pub fn rows<Q: Query>(&self, args: &Q::Args) -> Option<Vec<Q::Row>> {
        self.state().rows::<Q>(args)
    }

    /// Runs `f` on the client state.
    pub fn with_state<T>(&self, f: impl FnOnce(&ClientState) -> T) -> T {
        f(&self.state())
    }

    /// Events the server refused so far.
    pub fn rejected(&self) -> Vec<(u64, Rejection)> {
        self.shared
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Protocol errors the server reported so far.
    pub fn errors(&self) -> Vec<ProtocolError> {
        self.shared
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bytes of server messages received so far.
    pub fn bytes_received(&self) -> u64 {
        self.shared.bytes_in.load(Ordering::Relaxed)
    }

    /// Whether the connection is up and welcomed.
    pub fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Goes offline (closes the connection and stays away) or back online.
    pub fn set_online(&self, online: bool) {
        self.shared.online.store(online, Ordering::SeqCst);
        self.shared.kick.notify_one();
    }

    /// Sends these upgrade headers from the next connection on (a new cookie after signing
    /// in or out).
    pub fn set_headers(&self, headers: Vec<(String, String)>) {
        *self
            .shared
            .headers
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = headers;
    }

    /// This client's id now (it changes when the server refuses it to this identity).
    pub fn client_id(&self) -> String {
        self.state().client_id().to_owned()
    }

    /// Connects to another address from the next connection on.
    pub fn set_url(&self, url: impl Into<String>) {
        *self.shared.url.lock().unwrap_or_else(|e| e.into_inner()) = url.into();
    }

    /// Waits until `f` holds on the state (checked after every change), at most `limit`.
    pub async fn wait_for(
        &self,
        limit: Duration,
        mut f: impl FnMut(&ClientState) -> bool,
    ) -> Result<(), TimedOut> {
        let mut changes = self.shared.changes.subscribe();
        let check = async {
            loop {
                if f(&self.state()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(limit, check)
            .await
            .map_err(|_| TimedOut(limit))
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl Shared {
    /// Hands the state's pending changes to the store (called with the state locked, so the
    /// store sees them in order).
    fn keep(&self, st: &mut ClientState) {
        let ops = st.drain_persist();
        if let Some(store) = &self.store
            && !ops.is_empty()
        {
            store.save(ops);
        }
    }
}

/// A new client id (unique in practice: the time, a counter, and the old id's hash).
fn fresh_id(old: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let h = old.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!(
        "n{nanos:x}-{:x}-{h:x}-{}",
        N.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// Connect, hello, pump messages; on any failure wait (exponential backoff) and do it again.
async fn run(shared: Arc<Shared>, mut out: mpsc::Receiver<ClientMsg>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if !shared.online.load(Ordering::SeqCst) {
            shared.kick.notified().await;
            continue;
        }
        let request = {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
            let url = shared.url.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let headers = shared
                .headers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            url.into_client_request().map(|mut r| {
                for (name, value) in headers {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        r.headers_mut().append(n, v);
                    }
                }
                r
            })
        };
        let connected = match request {
            Ok(r) => tokio_tungstenite::connect_async_with_config(r, None, true).await,
            Err(e) => Err(e),
        };
        let ws = match connected {
            Ok((ws, _)) => ws,
            Err(e) => {
                tracing::debug!(error = %e, "connect failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.kick.notified() => {}
                }
                backoff = (backoff * 2).min(shared.max_backoff);
                continue;
            }
        };
        // Messages queued for an older connection are stale: the welcome resends what counts.
        while out.try_recv().is_ok() {}
        let welcomed = session(&shared, ws, &mut out).await;
        shared.live.store(false, Ordering::SeqCst);
        shared.changes.send_modify(|n| *n += 1);
        if welcomed {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(shared.max_backoff);
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection; returns whether it got as far as the welcome.
async fn session(shared: &Shared, ws: Ws, out: &mut mpsc::Receiver<ClientMsg>) -> bool {
    let (mut sink, mut stream) = ws.split();
    let hello = shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .hello();
    if sink.send(Message::text(hello.to_json())).await.is_err() {
        return false;
    }
    let mut welcomed = false;
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    let mut chaos = ChaosState::default();
    // Timers the server's answers ask for: resend the pending events; subscribe again to
    // keys whose query failed.
    let mut resend_at: Option<Instant> = None;
    let mut resubscribe: Vec<(Instant, QueryKey)> = Vec::new();
    // When an answer to an event last came (or the first pending event went out).
    let mut progress = Instant::now();
    let mut watchdog =
        tokio::time::interval((shared.ack_timeout / 4).max(Duration::from_millis(10)));
    loop {
        let next_timer = resend_at
            .into_iter()
            .chain(resubscribe.iter().map(|(at, _)| *at))
            .min();
        let timer = async {
            match next_timer {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut outgoing: Vec<ClientMsg> = Vec::new();
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return welcomed,
                    Some(Ok(_)) => continue,
                };
                shared.bytes_in.fetch_add(text.len() as u64, Ordering::Relaxed);
                // A message that does not parse means the stream lost something: start over.
                let Ok(msg) = ServerMsg::parse(&text) else { return welcomed };
                // An error before the welcome: the hello did not get through as sent (or this
                // client id is not this identity's: the state forgets everything, below).
                let refused_id = matches!(&msg, ServerMsg::Error(e) if e.key().is_none()
                    && matches!(e.code, crate::protocol::ErrorCode::Forbidden | crate::protocol::ErrorCode::IdentityChanged));
                if !welcomed && matches!(msg, ServerMsg::Error(_)) && !refused_id {
                    return false;
                }
                if let Some(observe) = &shared.observer {
                    observe(&msg);
                }
                if matches!(msg, ServerMsg::Ack(_) | ServerMsg::Reject(_) | ServerMsg::Gap(_) | ServerMsg::Retry(_) | ServerMsg::Welcome(_)) {
                    progress = Instant::now();
                }
                let update: Update = {
                    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                    let u = st.on_message(msg);
                    shared.keep(&mut st);
                    if u.live {
                        shared.live.store(true, Ordering::SeqCst);
                    }
                    u
                };
                welcomed |= update.live;
                if !update.rejected.is_empty() {
                    shared.rejected.lock().unwrap_or_else(|e| e.into_inner()).extend(update.rejected);
                }
                if !update.errors.is_empty() {
                    shared.errors.lock().unwrap_or_else(|e| e.into_inner()).extend(update.errors);
                }
                if let Some(after) = update.resend_after {
                    resend_at.get_or_insert(Instant::now() + after);
                }
                for (key, after) in update.retry_subs {
                    resubscribe.retain(|(_, k)| *k != key);
                    resubscribe.push((Instant::now() + after, key));
                }
                outgoing = update.send;
                if update.identity_changed {
                    // Everything held was another identity's: go on under a new client id.
                    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                    let id = fresh_id(st.client_id());
                    st.new_identity(id);
                    shared.keep(&mut st);
                    drop(st);
                    shared.changes.send_modify(|n| *n += 1);
                    return true;
                }
                shared.changes.send_modify(|n| *n += 1);
                if update.reconnect {
                    return welcomed;
                }
            }
            Some(m) = out.recv() => {
                if matches!(m, ClientMsg::Event(_)) && shared.state.lock().unwrap_or_else(|e| e.into_inner()).pending_count() == 1 {
                    progress = Instant::now();
                }
                outgoing.push(m);
            }
            _ = ping.tick() => {
                if let Some(held) = chaos.held.take()
                    && sink.send(Message::text(held)).await.is_err()
                {
                    return welcomed;
                }
                outgoing.push(ClientMsg::Ping);
            }
            _ = watchdog.tick() => {
                if !welcomed {
                    if progress.elapsed() >= shared.ack_timeout {
                        return false; // no welcome: connect again
                    }
                    continue;
                }
                let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if progress.elapsed() >= shared.ack_timeout {
                    progress = Instant::now();
                    // Answers that did not come (a message the server could not read): ask again.
                    outgoing = st.unanswered();
                    outgoing.extend(st.resend());
                }
            }
            () = timer => {
                let now = Instant::now();
                let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if resend_at.is_some_and(|at| at <= now) {
                    resend_at = None;
                    progress = now;
                    outgoing.extend(st.resend());
                }
                let (due, later): (Vec<_>, Vec<_>) = resubscribe.drain(..).partition(|(at, _)| *at <= now);
                resubscribe = later;
                for (_, key) in due {
                    outgoing.extend(st.resubscribe(&key));
                }
            }
            _ = shared.kick.notified() => {
                if !shared.online.load(Ordering::SeqCst) {
                    let _ = sink.close().await;
                    return welcomed;
                }
            }
        }
        for m in outgoing {
            for text in chaos.outgoing(shared.chaos, m) {
                if sink.send(Message::text(text)).await.is_err() {
                    return welcomed;
                }
            }
        }
    }
}

/// The counters of the test modes for one connection.
#[derive(Default)]
struct ChaosState {
    events: u32,
    held: Option<String>,
}

impl ChaosState {
    /// The frames to send for `msg` under `chaos`.
    fn outgoing(&mut self, chaos: Chaos, msg: ClientMsg) -> Vec<String> {
        let text = msg.to_json();
        if !matches!(msg, ClientMsg::Event(_)) {
            return vec![text];
        }
        self.events += 1;
        let n = self.events;
        let mut out = Vec::with_capacity(3);
        if chaos.reorder_every > 0 && n.is_multiple_of(chaos.reorder_every) && self.held.is_none() {
            self.held = Some(text);
            return out;
        }
        out.push(text.clone());
        if chaos.duplicate_every > 0 && n.is_multiple_of(chaos.duplicate_every) {
            out.push(text);
        }
        out.extend(self.held.take());
        out
    }
}
