//! The HTTP side: one WebSocket per client for everything live, and a GET snapshot endpoint.
//!
//! - `GET {base}/ws`: the WebSocket. The client's first message is `hello`; then any of `sub`,
//!   `unsub`, `resync`, `event`, `ping`, in any order, multiplexed (invariant 11). The server
//!   pings every 20 s and closes a connection it has not heard from for 60 s.
//! - `GET {base}/snapshot/{query}?a={args JSON}`: one result, as a `snapshot` message; the ETag
//!   is the result's digest, so an unchanged result costs a `304`.
//! - The plain-HTTP path, for clients without WebSocket: `GET {base}/sse?hello=…&subs=…` streams
//!   the same server messages as server-sent events for a fixed set of subscriptions (reopen it
//!   to change them; it resumes from the versions given), and `POST {base}/events` applies
//!   events and answers their outcomes. Both are stateless: any instance serves either.

use super::Engine;
use super::cmd::{EventCmd, Reply};
use super::error::EngineError;
use super::hub::{Outbox, slow_consumer};
use super::schema::{IdentifyError, Identity, QueryCtx};
use super::store::Store;
pub use crate::protocol::valid_client_id;
use crate::protocol::{
    ClientMsg, ErrorCode, EventMsg, EventsBody, Hello, PROTOCOL, ProtocolError, ServerMsg,
    Snapshot, Sub, decode_client,
};
use crate::query::QueryKey;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::time::timeout;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(20);
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

impl EventCmd {
    /// An event as it came over the wire. One whose args are over the limit goes to the writer
    /// as a refusal: its seq is used, so the client's later events are not stuck behind it.
    fn from_wire(
        client_id: std::sync::Arc<str>,
        identity: &Identity,
        e: EventMsg,
        limits: &crate::protocol::Limits,
        reply: Reply,
    ) -> EventCmd {
        let len = e.args.get().len();
        let refused = (len > limits.max_args_bytes).then(|| {
            crate::protocol::Rejection::new(
                "too_large",
                format!(
                    "the event's args are {len} bytes, over the limit of {}",
                    limits.max_args_bytes
                ),
            )
        });
        EventCmd {
            client_id,
            identity: identity.clone(),
            seq: e.seq,
            name: e.name,
            args: if refused.is_some() {
                serde_json::value::RawValue::from_string("null".into()).expect("JSON")
            } else {
                e.args
            },
            reply,
            refused,
            record_rejection: true,
        }
    }
}

/// The engine's routes, to merge into an application's router (they carry their own state).
pub fn router<S: Store>(engine: Engine<S>) -> Router {
    Router::new()
        .route("/sssync/ws", get(ws_handler::<S>))
        .route("/sssync/snapshot/{query}", get(snapshot_handler::<S>))
        .route("/sssync/sse", get(sse_handler::<S>))
        .route("/sssync/events", axum::routing::post(events_handler::<S>))
        .with_state(engine)
}

/// Binds `addr` for `axum::serve`, with `TCP_NODELAY` on every connection it accepts. A
/// server's messages are small frames written back to back (an ack, then deltas); with
/// Nagle's algorithm on (axum's default), a frame written while the previous one is
/// unacknowledged waits for the peer's delayed ACK, up to 40 ms.
pub async fn listen(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<NoDelayListener> {
    Ok(NoDelayListener(tokio::net::TcpListener::bind(addr).await?))
}

/// A TCP listener whose connections have `TCP_NODELAY` on (see [`listen`]).
#[derive(Debug)]
pub struct NoDelayListener(tokio::net::TcpListener);

impl NoDelayListener {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        // A socket that refuses the option still works, only slower.
        let _ = io.set_nodelay(true);
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The WebSocket read buffer per connection, in bytes.
const READ_BUFFER: usize = 4 * 1024;

async fn ws_handler<S: Store>(
    State(engine): State<Engine<S>>,
    parts: Parts,
    ws: WebSocketUpgrade,
) -> Response {
    // Frames up to 4x the limit are read and answered with a typed `too_large` error (the
    // connection goes on); larger ones end the connection.
    let hard = engine.limits().max_message_bytes * 4;
    // Who it is could not be told: the client comes back later (it keeps what it holds).
    let identity = match engine.identify(&parts).await {
        Ok(i) => i,
        Err(e) => return unavailable(&e),
    };
    ws.max_message_size(hard)
        .max_frame_size(hard)
        // The read buffer is allocated whole per connection (tungstenite's default is 128 KiB,
        // most of an idle connection's memory); clients' frames are small, and a bigger one
        // is read in several chunks.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| connection(engine, socket, parts, identity))
}

/// The request's parts, kept for the connection's life (to ask again who it is), in buffers of
/// their own: hyper parses a request's URI and header values as slices of its read buffer (8 to
/// 16 KiB), and so is axum's copy of the URI (`OriginalUri`, in the extensions); kept as they
/// are, they would keep that buffer alive as long as the connection lives (most of an idle
/// connection's memory).
fn detached(mut parts: Parts) -> Parts {
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), copy);
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse() {
        parts.uri = uri;
    }
    // So does axum's copy of the URI in the extensions.
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get()
        && let Ok(copy) = uri.to_string().parse()
    {
        parts.extensions.insert(axum::extract::OriginalUri(copy));
    }
    parts
}

/// The answer to a request whose sender could not be told (see [`IdentifyError`]): `503`,
/// try again in a second.
fn unavailable(e: &IdentifyError) -> Response {
    tracing::warn!(error = %e, "a request is answered 503: its identity could not be told");
    let mut r = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        format!("{e}; nothing changed, try again later"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// How long a live connection waits to ask again who it is after the application could not
/// tell, at first (it doubles, up to [`REIDENTIFY_RETRY_MAX`]).
const REIDENTIFY_RETRY: Duration = Duration::from_secs(1);
const REIDENTIFY_RETRY_MAX: Duration = Duration::from_secs(60);

/// Asks the application again who a live connection is: at once when it says identities
/// changed, and periodically (a session that expired, or was signed out on another instance).
/// When the application cannot tell (its session store failed for a moment), the connection
/// keeps its identity and asks again soon.
struct Reidentify {
    parts: Parts,
    identity: Identity,
    signal: tokio::sync::watch::Receiver<u64>,
    every: tokio::time::Interval,
    /// When to ask again after a failure to tell, and how many failures in a row.
    retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    failures: u32,
}

impl Reidentify {
    fn new<S: Store>(engine: &Engine<S>, parts: Parts, identity: Identity) -> Reidentify {
        let every = engine.inner.reidentify_every;
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Reidentify {
            parts: detached(parts),
            identity,
            signal: engine.inner.reidentify.subscribe(),
            every,
            retry: None,
            failures: 0,
        }
    }

    /// Waits for the next time to ask.
    async fn due(&mut self) {
        let retry = &mut self.retry;
        let retry = async move {
            match retry {
                Some(at) => at.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.signal.changed() => {
                if r.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ = self.every.tick() => {}
            () = retry => {}
        }
    }

    /// Whether the connection is still who it was (else the message to end it with). A few
    /// connections ask at once (the engine's permits); one the application cannot tell about
    /// stays who it was and asks again later.
    async fn check<S: Store>(&mut self, engine: &Engine<S>) -> Result<(), ServerMsg> {
        self.retry = None;
        let asked = {
            let _permit = engine.inner.reidentifying.acquire().await;
            engine.identify(&self.parts).await
        };
        let now = match asked {
            Ok(now) => {
                self.failures = 0;
                now
            }
            Err(e) => {
                let wait = REIDENTIFY_RETRY
                    .saturating_mul(1 << self.failures.min(6))
                    .min(REIDENTIFY_RETRY_MAX);
                self.failures = self.failures.saturating_add(1);
                tracing::warn!(error = %e, ?wait, "a connection's identity could not be told; it stays as it was and asks again");
                self.retry = Some(Box::pin(tokio::time::sleep(wait)));
                return Ok(());
            }
        };
        if now == self.identity {
            return Ok(());
        }
        tracing::info!("a connection's identity changed; it closes");
        Err(ServerMsg::error(
            ErrorCode::IdentityChanged,
            "this connection's identity is no longer valid (signed out, or the session \
             expired): drop what it held and reconnect",
        ))
    }
}

/// The answer to a `hello` the engine could not welcome.
fn welcome_failed(e: EngineError) -> ServerMsg {
    match e {
        EngineError::Forbidden(m) => ServerMsg::error(ErrorCode::Forbidden, m),
        e => ServerMsg::error(
            ErrorCode::Internal,
            format!("the server cannot welcome this client now: {e}"),
        ),
    }
}

/// One client's connection, from `hello` to close.
async fn connection<S: Store>(
    engine: Engine<S>,
    socket: WebSocket,
    parts: Parts,
    identity: Identity,
) {
    let (mut sink, mut stream) = socket.split();
    let send_now = |msg: ServerMsg| Message::Text(msg.to_json().into());

    // 1. hello
    let hello: Hello = loop {
        let Ok(Some(Ok(frame))) = timeout(HELLO_TIMEOUT, stream.next()).await else {
            return;
        };
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(_) => return,
            _ => continue,
        };
        let problem = match ClientMsg::parse(&text) {
            Ok(ClientMsg::Hello(h)) => match check_hello(h) {
                Ok(h) => break h,
                Err(e) if e.code == ErrorCode::ProtocolMismatch => {
                    let _ = sink.send(send_now(ServerMsg::Error(e))).await;
                    return;
                }
                Err(e) => ServerMsg::Error(e),
            },
            Ok(_) => ServerMsg::error(ErrorCode::HelloFirst, "send hello first"),
            Err(e) => ServerMsg::error(ErrorCode::Malformed, e.to_string()),
        };
        if sink.send(send_now(problem)).await.is_err() {
            return;
        }
    };
    // Watched from before the welcome: a new epoch made meanwhile (by another client's hello)
    // must close this connection too.
    let mut epoch = engine.inner.epoch.subscribe();
    // The big futures a connection awaits once (the welcome) or now and then (a message, a
    // re-identification) are boxed while they run: inline, each would size the connection's
    // task, which lives as long as the connection, idle or not.
    let (welcome, same_history) = match Box::pin(engine.welcome(&hello, &identity)).await {
        Ok(w) => w,
        Err(e) => {
            let _ = sink.send(send_now(welcome_failed(e))).await;
            return;
        }
    };
    if *epoch.borrow_and_update() != welcome.epoch {
        return; // the client reconnects into the new epoch
    }
    let limits = engine.limits();
    let (outbox, mut queue) = Outbox::new(
        engine.next_conn_id(),
        limits.max_queued_messages,
        limits.max_queued_bytes,
    );
    let outbox = outbox.with_identity(identity.clone());
    let mut reidentify = Reidentify::new(&engine, parts, identity.clone());
    if sink
        .send(send_now(ServerMsg::Welcome(welcome)))
        .await
        .is_err()
    {
        return;
    }

    // 2. the session
    let mut conn = Session {
        engine: &engine,
        outbox: &outbox,
        client_id: hello.client_id.into(),
        identity,
        same_history,
        subs: HashSet::new(),
    };
    let mut stop = engine.inner.stop.subscribe();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    'connection: loop {
        // What rarely happens (a slow queue, a new epoch, a ping due, a re-identification, the
        // engine stopping) is one future, armed once and kept while messages flow: re-armed on
        // every message, its waits on the engine-wide watches (shared by every connection)
        // cost a thousand connections a lock each per delta.
        let event = {
            let control = control(
                &outbox.wake,
                &mut epoch,
                &mut ping,
                &mut reidentify,
                &mut stop,
            );
            tokio::pin!(control);
            loop {
                tokio::select! {
                    biased;
                    event = &mut control => break event,
                    // Outgoing before incoming: the queue drains before more is read (a client
                    // that floods the server with messages still gets its answers).
                    Some(out) = queue.recv() => {
                        // A connection cut off as too slow sends nothing more: what is queued
                        // after the refused message must not arrive without it.
                        if outbox.is_slow() {
                            break Control::Woken;
                        }
                        match timeout(SEND_TIMEOUT, sink.send(Message::Text(out))).await {
                            Ok(Ok(())) => {}
                            _ => break 'connection,
                        }
                    }
                    // Flow control: while the answers it is owed (events in flight, messages
                    // queued) fill half its queue, nothing more is read from the client; its
                    // own socket then slows it down, instead of its answers overflowing the
                    // queue.
                    frame = stream.next(), if !outbox.busy() => {
                        let Some(Ok(frame)) = frame else { break 'connection };
                        last_heard = Instant::now();
                        match frame {
                            Message::Text(text) => {
                                if !Box::pin(conn.handle(&text)).await {
                                    break 'connection;
                                }
                            }
                            Message::Binary(_) => {
                                outbox.send_msg(&ServerMsg::error(
                                    ErrorCode::Malformed,
                                    "binary frames are not part of the protocol",
                                ));
                            }
                            Message::Close(_) => break 'connection,
                            Message::Ping(_) | Message::Pong(_) => {}
                        }
                    }
                }
            }
        };
        match event {
            Control::Woken => {
                if outbox.is_slow() {
                    let _ = timeout(SEND_TIMEOUT, sink.send(send_now(slow_consumer()))).await;
                    break;
                }
            }
            // The database's history changed (a restored backup: the client reconnects and
            // finds the new epoch), or the engine stops.
            Control::End => break,
            Control::Ping => {
                // A busy connection does not read (not even pongs): its silence is the
                // server's doing. A client that stopped reading is found by its sends timing
                // out.
                if outbox.busy() {
                    last_heard = Instant::now();
                }
                if last_heard.elapsed() > SILENCE_LIMIT {
                    break;
                }
                if timeout(SEND_TIMEOUT, sink.send(Message::Ping(Default::default())))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Control::Reidentify => {
                if let Err(msg) = Box::pin(reidentify.check(&engine)).await {
                    let _ = timeout(SEND_TIMEOUT, sink.send(send_now(msg))).await;
                    break;
                }
            }
        }
    }
    for key in &conn.subs {
        engine.unsubscribe(key, &outbox);
    }
    let _ = sink.close().await;
}

/// What ends a connection's flow of messages for a moment (see [`control`]).
enum Control {
    /// The outbox woke the connection: it may have been cut off as too slow, or an event it
    /// was owed went unanswered (it may read again).
    Woken,
    /// A new epoch, or the engine stops: the connection ends.
    End,
    /// Time to ping (and to check the client was heard from).
    Ping,
    /// Time to ask again who the connection is.
    Reidentify,
}

/// The next rare event of a connection.
async fn control(
    wake: &tokio::sync::Notify,
    epoch: &mut tokio::sync::watch::Receiver<crate::version::Epoch>,
    ping: &mut tokio::time::Interval,
    reidentify: &mut Reidentify,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Control {
    tokio::select! {
        biased;
        _ = wake.notified() => Control::Woken,
        _ = epoch.changed() => Control::End,
        _ = stop.changed() => Control::End,
        _ = ping.tick() => Control::Ping,
        _ = reidentify.due() => Control::Reidentify,
    }
}

struct Session<'a, S: Store> {
    engine: &'a Engine<S>,
    outbox: &'a Outbox,
    client_id: std::sync::Arc<str>,
    identity: Identity,
    same_history: bool,
    subs: HashSet<QueryKey>,
}

impl<S: Store> Session<'_, S> {
    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.outbox.send_msg(&ServerMsg::error(code, message));
    }

    /// Handles one text message; false ends the connection.
    async fn handle(&mut self, text: &str) -> bool {
        let limits = self.engine.limits();
        let msg = match decode_client(text, limits) {
            Ok(m) => m,
            Err(e) => {
                self.outbox.send_msg(&ServerMsg::Error(e));
                return true;
            }
        };
        match msg {
            ClientMsg::Hello(_) => self.error(ErrorCode::HelloFirst, "hello was already received"),
            ClientMsg::Ping => {
                // After every delta up to the version fanned out (held while a resume of this
                // connection is on its way).
                self.outbox
                    .send_answer(&ServerMsg::Pong(crate::protocol::Pong {
                        v: Some(self.engine.current_version()),
                    }));
            }
            ClientMsg::Sub(sub) => {
                let key = match self.engine.key(&sub.q, sub.a.get(), &self.identity) {
                    Ok(k) => k,
                    Err(e) => {
                        self.key_error(e, &sub.q, sub.a.get());
                        return true;
                    }
                };
                if !self.subs.contains(&key) && self.subs.len() >= limits.max_subscriptions {
                    // Keys refused or revoked since do not count.
                    self.subs.retain(|k| self.outbox.wants(k));
                }
                if !self.subs.contains(&key) && self.subs.len() >= limits.max_subscriptions {
                    self.error(
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "at most {} subscriptions per connection",
                            limits.max_subscriptions
                        ),
                    );
                    return true;
                }
                self.subs.insert(key.clone());
                // A version from another history means nothing here.
                let v = sub.v.filter(|_| self.same_history);
                if self.engine.subscribe(key, self.outbox, v).await.is_err() {
                    return false;
                }
            }
            ClientMsg::Unsub(k) => {
                if let Ok(key) = self.engine.key(&k.q, k.a.get(), &self.identity)
                    && self.subs.remove(&key)
                {
                    self.engine.unsubscribe(&key, self.outbox);
                }
            }
            ClientMsg::Resync(k) => {
                let key = match self.engine.key(&k.q, k.a.get(), &self.identity) {
                    Ok(key) => key,
                    Err(e) => {
                        self.key_error(e, &k.q, k.a.get());
                        return true;
                    }
                };
                // Only a key this connection follows and may still read: one refused or revoked
                // is no longer wanted (the tailer unwants it), and asks nothing.
                if !self.subs.contains(&key) || !self.outbox.wants(&key) {
                    return true;
                }
                // A checked key's reader is authorized again by the tailer, in the snapshot its
                // rows come from: it is never served from the group directly (its first
                // authorization may still be on its way, or its access withdrawn meanwhile).
                let served = !self.engine.inner.checked(&key)
                    && self.engine.inner.hub.resync(&key, self.outbox);
                if !served && self.engine.subscribe(key, self.outbox, None).await.is_err() {
                    return false;
                }
            }
            ClientMsg::Event(e) => {
                let reply = Reply::Outbox(self.outbox.clone(), self.outbox.in_flight());
                let cmd =
                    EventCmd::from_wire(self.client_id.clone(), &self.identity, e, limits, reply);
                if self.engine.submit(cmd).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// A `sub` or `resync` for a key that cannot be: the error names the key as the client
    /// sent it (canonical when its args are JSON), so the client can tell which query failed.
    fn key_error(&self, e: EngineError, q: &str, a: &str) {
        let (code, message) = match e {
            EngineError::UnknownQuery(q) => (
                ErrorCode::UnknownQuery,
                format!("no query named {q:?} is registered"),
            ),
            other => (ErrorCode::BadArgs, other.to_string()),
        };
        let msg = match QueryKey::from_json(q, a) {
            Ok(key) => ServerMsg::key_error(code, message, &key),
            Err(_) => ServerMsg::error(code, message),
        };
        self.outbox.send_msg(&msg);
    }
}

async fn snapshot_handler<S: Store>(
    State(engine): State<Engine<S>>,
    Path(query): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    parts: Parts,
) -> Response {
    let headers = &parts.headers;
    let args = params.get("a").map_or("{}", String::as_str);
    let fail = |status: StatusCode, code: ErrorCode, message: String| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&ProtocolError::new(code, message)).expect("serializes"),
        )
            .into_response()
    };
    if args.len() > engine.limits().max_args_bytes * 4 {
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "the args are over the limit".into(),
        );
    }
    let ctx = QueryCtx {
        identity: match engine.identify(&parts).await {
            Ok(i) => i,
            Err(e) => return unavailable(&e),
        },
    };
    match engine.snapshot_json(&query, args, &ctx).await {
        Ok((key, v, rows)) => {
            // The digest ignores order; the ETag must not (a reordered result is a new one).
            let order = rows.rows().iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, r| {
                r.key.bytes().chain([0xff]).fold(h, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                })
            });
            let etag = format!("W/\"{}-{order:016x}\"", rows.digest());
            let fresh = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|h| h.split(',').any(|t| t.trim() == etag));
            let etag_header = HeaderValue::from_str(&etag).expect("ASCII");
            // A result that depends on who asks (a checked or per-identity query) is no shared
            // cache's to keep: one user's rows must never be served to another.
            let private = engine.inner.checked(&key);
            let mark = |mut r: Response| {
                if private {
                    let h = r.headers_mut();
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
                    h.insert(
                        header::VARY,
                        HeaderValue::from_static("Cookie, Authorization"),
                    );
                }
                r
            };
            if fresh {
                return mark(
                    (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response(),
                );
            }
            let body = ServerMsg::Snapshot(Snapshot {
                q: key.name().to_owned(),
                a: serde_json::value::RawValue::from_string(key.args_json().to_owned())
                    .expect("canonical JSON"),
                v,
                reset: false,
                digest: rows.digest(),
                rows: rows.into_rows(),
            })
            .to_json();
            let response = (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (header::ETAG, etag_header),
                    (
                        header::HeaderName::from_static("x-sssync-epoch"),
                        HeaderValue::from_str(&engine.epoch().0).expect("hex"),
                    ),
                ],
                body,
            )
                .into_response();
            mark(response)
        }
        Err(EngineError::UnknownQuery(q)) => fail(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownQuery,
            format!("no query named {q:?} is registered"),
        ),
        Err(EngineError::BadArgs(m)) => fail(StatusCode::BAD_REQUEST, ErrorCode::BadArgs, m),
        Err(EngineError::Forbidden(m)) => fail(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m),
        Err(e @ EngineError::TooLarge(..)) => fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            e.to_string(),
        ),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            e.to_string(),
        ),
    }
}

/// The query of `GET /sssync/sse`: the client's `hello` and its subscriptions, as JSON.
#[derive(serde::Deserialize)]
struct SseParams {
    hello: String,
    #[serde(default)]
    subs: Option<String>,
}

fn json_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&ProtocolError::new(code, message)).expect("serializes"),
    )
        .into_response()
}

/// A `hello` this server accepts: its protocol, a valid client id.
fn check_hello(hello: Hello) -> Result<Hello, ProtocolError> {
    let bad = |code, message: String| ProtocolError::new(code, message);
    if hello.protocol != PROTOCOL {
        return Err(bad(
            ErrorCode::ProtocolMismatch,
            format!(
                "this server speaks protocol {PROTOCOL}, not {}",
                hello.protocol
            ),
        ));
    }
    if !valid_client_id(&hello.client_id) {
        return Err(bad(
            ErrorCode::Malformed,
            "client_id must be 1 to 64 ASCII letters, digits, '-' or '_'".into(),
        ));
    }
    Ok(hello)
}

/// Server-sent events: `welcome`, then the subscriptions' snapshots or resume deltas, then live
/// deltas, each as one `data:` line of JSON.
async fn sse_handler<S: Store>(
    State(engine): State<Engine<S>>,
    Query(params): Query<SseParams>,
    parts: Parts,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let limits = engine.limits().clone();
    if params.hello.len() + params.subs.as_ref().map_or(0, String::len) > limits.max_message_bytes {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "the query is over the limit",
        );
    }
    let hello = match serde_json::from_str::<Hello>(&params.hello)
        .map_err(|e| ProtocolError::new(ErrorCode::Malformed, e.to_string()))
        .and_then(check_hello)
    {
        Ok(h) => h,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.code, e.message),
    };
    let subs: Vec<Sub> = match params.subs.as_deref().map(serde_json::from_str).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, ErrorCode::Malformed, e.to_string()),
    };
    if subs.len() > limits.max_subscriptions {
        return json_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::TooManySubscriptions,
            format!(
                "at most {} subscriptions per connection",
                limits.max_subscriptions
            ),
        );
    }
    let identity = match engine.identify(&parts).await {
        Ok(i) => i,
        Err(e) => return unavailable(&e),
    };
    let keys = match subs
        .iter()
        .map(|s| engine.key(&s.q, s.a.get(), &identity))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(k) => k,
        Err(EngineError::UnknownQuery(q)) => {
            return json_error(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownQuery,
                format!("no query named {q:?} is registered"),
            );
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, ErrorCode::BadArgs, e.to_string()),
    };
    let (welcome, same_history) = match Box::pin(engine.welcome(&hello, &identity)).await {
        Ok(w) => w,
        Err(EngineError::Forbidden(m)) => {
            return json_error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m);
        }
        Err(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                format!("the server cannot welcome this client now: {e}"),
            );
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let (outbox, mut queue) = Outbox::new(
            engine.next_conn_id(),
            limits.max_queued_messages,
            limits.max_queued_bytes,
        );
        let outbox = outbox.with_identity(identity.clone());
        let mut reidentify = Reidentify::new(&engine, parts, identity);
        let mut epoch = engine.inner.epoch.subscribe();
        let welcome = ServerMsg::Welcome(welcome);
        if tx
            .send(Event::default().data(welcome.to_json()))
            .await
            .is_err()
        {
            return;
        }
        // Subscribed while the queue drains: several big snapshots must not pile up first.
        let subscribing = {
            let (engine, outbox, keys) = (engine.clone(), outbox.clone(), keys.clone());
            tokio::spawn(async move {
                for (key, sub) in keys.iter().zip(&subs) {
                    let v = sub.v.filter(|_| same_history);
                    if engine.subscribe(key.clone(), &outbox, v).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut stop = engine.inner.stop.subscribe();
        loop {
            tokio::select! {
                Some(out) = queue.recv() => {
                    if tx.send(Event::default().data(out.as_str())).await.is_err() {
                        break;
                    }
                }
                _ = outbox.wake.notified() => {
                    if outbox.is_slow() {
                        let _ = tx.send(Event::default().data(slow_consumer().to_json())).await;
                        break;
                    }
                }
                _ = epoch.changed() => break,
                _ = tx.closed() => break,
                _ = stop.changed() => break,
                _ = reidentify.due() => {
                    if let Err(msg) = Box::pin(reidentify.check(&engine)).await {
                        let _ = tx.send(Event::default().data(msg.to_json())).await;
                        break;
                    }
                }
            }
        }
        subscribing.abort();
        for key in &keys {
            engine.unsubscribe(key, &outbox);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(PING_EVERY))
        .into_response()
}

/// Events applied over plain HTTP: the answer is their outcomes (`ack`, `reject`, `gap`), in
/// order, as a JSON array.
async fn events_handler<S: Store>(
    State(engine): State<Engine<S>>,
    parts: Parts,
    body: axum::body::Bytes,
) -> Response {
    let limits = engine.limits();
    let identity = match engine.identify(&parts).await {
        Ok(i) => i,
        Err(e) => return unavailable(&e),
    };
    let parsed = match EventsBody::decode(&body, limits) {
        Ok(b) => b,
        Err(e) => {
            let status = if e.code == ErrorCode::TooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return json_error(status, e.code, e.message);
        }
    };
    // Submit them all before waiting, so that they share one batch (one commit).
    let mut waiting = Vec::with_capacity(parsed.events.len());
    for e in parsed.events {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = EventCmd::from_wire(
            parsed.client_id.as_str().into(),
            &identity,
            e,
            limits,
            Reply::Once(tx),
        );
        if engine.submit(cmd).await.is_err() {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                "the engine has stopped",
            );
        }
        waiting.push(rx);
    }
    let mut out = Vec::with_capacity(waiting.len());
    for rx in waiting {
        out.push(
            rx.await.unwrap_or_else(|_| {
                ServerMsg::error(ErrorCode::Internal, "the engine has stopped")
            }),
        );
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&out).expect("serializes"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_copy_of_the_request_does_not_hold_the_connections_read_buffer() {
        use axum::body::Bytes;
        // hyper parses the URI and the header values as slices of its read buffer.
        let mut read = b"/sssync/ws session=abc".to_vec();
        read.resize(16 * 1024, b' ');
        let buffer = Bytes::from(read);
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts.uri = axum::http::Uri::from_maybe_shared(buffer.slice(0..10)).unwrap();
        parts.headers.insert(
            header::COOKIE,
            HeaderValue::from_maybe_shared(buffer.slice(11..22)).unwrap(),
        );
        parts
            .extensions
            .insert(axum::extract::OriginalUri(parts.uri.clone()));
        let kept = detached(parts);
        assert!(
            buffer.is_unique(),
            "the kept parts still point into the read buffer"
        );
        assert_eq!(kept.uri, "/sssync/ws");
        assert_eq!(kept.headers[header::COOKIE], "session=abc");
        let axum::extract::OriginalUri(original) = kept.extensions.get().unwrap();
        assert_eq!(original, "/sssync/ws");
    }

    #[tokio::test]
    async fn connections_accepted_by_listen_send_without_nagles_delay() {
        let mut listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, client) = tokio::join!(
            axum::serve::Listener::accept(&mut listener),
            tokio::net::TcpStream::connect(addr)
        );
        client.unwrap();
        let (io, _) = accepted;
        assert!(
            io.nodelay().unwrap(),
            "TCP_NODELAY is off on an accepted connection"
        );
    }
}
