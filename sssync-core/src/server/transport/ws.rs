//! The WebSocket session: the hello and welcome, then subscriptions, resyncs, events and
//! pings multiplexed on one connection (invariant 11), the heartbeat, and asking the
//! application again who the connection is.

use super::reidentify::Reidentify;
use super::{check_hello, unavailable};
use crate::protocol::{ClientMsg, ErrorCode, Hello, ServerMsg, decode_client};
use crate::query::QueryKey;
use crate::server::Engine;
use crate::server::cmd::{EventCmd, Reply};
use crate::server::error::EngineError;
use crate::server::hub::{Outbox, slow_consumer};
use crate::server::schema::Identity;
use crate::server::store::Store;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::time::timeout;

pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) const PING_EVERY: Duration = Duration::from_secs(20);

pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(60);

pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The WebSocket read buffer per connection, in bytes.
pub(super) const READ_BUFFER: usize = 4 * 1024;

pub(super) async fn ws_handler<S: Store>(
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

/// The answer to a `hello` the engine could not welcome.
pub(super) fn welcome_failed(e: EngineError) -> ServerMsg {
    match e {
        EngineError::Forbidden(m) => ServerMsg::error(ErrorCode::Forbidden, m),
        e => ServerMsg::error(
            ErrorCode::Internal,
            format!("the server cannot welcome this client now: {e}"),
        ),
    }
}

/// One client's connection, from `hello` to close.
pub(super) async fn connection<S: Store>(
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
pub(super) enum Control {
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
pub(super) async fn control(
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

pub(super) struct Session<'a, S: Store> {
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
