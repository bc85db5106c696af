//! The clients the rows drive: native clients, raw WebSocket subscribers and writers (light,
//! for crowds of thousands), and the helpers that fill lists.

use super::Result;
use sssync_core::client::native::NativeClient;
use sssync_core::protocol::ServerMsg;
use sssync_fault::app::{AddItem, Items, ListArgs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(super) fn add(list: &str, id: String, title: String) -> AddItem {
    AddItem {
        uid: id.clone(),
        id,
        list_id: list.to_owned(),
        title,
    }
}

pub(super) fn list(id: &str) -> ListArgs {
    ListArgs {
        list_id: id.to_owned(),
    }
}

pub(super) const WAIT: Duration = Duration::from_secs(120);

/// `n` clients of `ws`, the `i`-th subscribed to the list `{prefix}-{i}`, once each has its
/// rows.
pub(super) async fn subscribers(ws: &str, prefix: &str, n: usize) -> Result<Vec<NativeClient>> {
    let lists: Vec<ListArgs> = (0..n).map(|i| list(&format!("{prefix}-{i}"))).collect();
    let clients: Vec<NativeClient> = lists
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let c = NativeClient::connect(ws.to_owned(), format!("{prefix}-{i}"));
            c.subscribe::<Items>(l);
            c
        })
        .collect();
    for (c, l) in clients.iter().zip(&lists) {
        c.wait_for(WAIT, |s| s.rows::<Items>(l).is_some()).await?;
    }
    Ok(clients)
}

/// Fills `list` with `n` rows through `writer`, `window` events in flight at most.
pub(super) async fn fill(writer: &NativeClient, list: &str, n: usize, prefix: &str) -> Result<()> {
    // A window of 256 events in flight, refilled as they are acknowledged.
    const WINDOW: usize = 256;
    for i in 0..n {
        if writer.with_state(|s| s.pending_count()) >= WINDOW {
            writer
                .wait_for(WAIT, |s| s.pending_count() <= WINDOW / 2)
                .await?;
        }
        writer
            .send(add(
                list,
                format!("{prefix}{i:06}"),
                format!("a row of reasonable length, number {i}"),
            ))
            .ok_or("the client refused an event")?;
    }
    writer.wait_for(WAIT, |s| s.pending_count() == 0).await?;
    Ok(())
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) type WsRead = futures_util::stream::SplitStream<Ws>;

pub(super) type WsWrite =
    futures_util::stream::SplitSink<Ws, tokio_tungstenite::tungstenite::Message>;

/// A raw connection that said hello as `client_id` (a new client: its welcome has no seq).
pub(super) async fn raw_connect(ws: &str, client_id: &str) -> Result<(WsWrite, WsRead)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(ws))
        .await
        .map_err(|_| "connecting timed out")??;
    socket.get_ref().get_ref().set_nodelay(true)?;
    let (mut tx, mut rx) = socket.split();
    let hello = serde_json::json!({"t": "hello", "protocol": 1, "client_id": client_id});
    tx.send(Message::text(hello.to_string())).await?;
    match next(&mut rx).await? {
        ServerMsg::Welcome(w) if w.last_seq == 0 => Ok((tx, rx)),
        other => Err(format!("expected a fresh welcome, got {other:?}").into()),
    }
}

/// The next server message on a raw connection.
pub(super) async fn next(rx: &mut WsRead) -> Result<ServerMsg> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(ServerMsg::parse(&t)?),
            Ok(Some(Ok(_))) => {}
            _ => return Err("the connection ended".into()),
        }
    }
}

/// Fills `list` with `n` rows over a connection of its own that speaks the wire protocol
/// directly, a window of events in flight: the lightest load generator (no client state, no
/// predictions), so that the server, not the client, is what is measured.
pub(super) async fn raw_fill(
    ws: &str,
    client_id: &str,
    list: &str,
    n: usize,
    prefix: &str,
) -> Result<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    const WINDOW: usize = 1024;
    let (mut tx, mut rx) = raw_connect(ws, client_id).await?;
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < n {
        while sent < n && sent - acked < WINDOW {
            let i = sent;
            sent += 1;
            let event = serde_json::json!({
                "t": "event", "seq": sent, "name": "add_item",
                "args": add(list, format!("{prefix}{i:06}"),
                            format!("a row of reasonable length, number {i}")),
            });
            tx.feed(Message::text(event.to_string())).await?;
        }
        tx.flush().await?;
        match next(&mut rx).await? {
            ServerMsg::Ack(a) if a.seq as usize == acked + 1 => acked += 1,
            other => return Err(format!("expected the ack of {}, got {other:?}", acked + 1).into()),
        }
    }
    Ok(())
}

pub(super) fn snapshot_path(list_id: &str) -> String {
    let args = serde_json::json!({ "list_id": list_id }).to_string();
    let encoded: String = args
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/sssync/snapshot/items?a={encoded}")
}

/// What the subscribers of the fan-out saw: for each write, when each subscriber had it.
pub(super) struct Fan {
    pub(super) arrivals: Vec<std::sync::Mutex<Vec<Instant>>>,
    pub(super) counts: Vec<AtomicUsize>,
    pub(super) done: tokio::sync::Notify,
    pub(super) refetch: AtomicBool,
    pub(super) refetched_bytes: AtomicU64,
    pub(super) delta_bytes: AtomicU64,
    pub(super) subscribers: usize,
}

impl Fan {
    /// For `writes` writes, each to reach `subscribers` subscribers.
    pub(super) fn new(writes: usize, subscribers: usize) -> Arc<Fan> {
        Arc::new(Fan {
            arrivals: (0..writes).map(|_| Default::default()).collect(),
            counts: (0..writes).map(|_| AtomicUsize::new(0)).collect(),
            done: tokio::sync::Notify::new(),
            refetch: AtomicBool::new(false),
            refetched_bytes: AtomicU64::new(0),
            delta_bytes: AtomicU64::new(0),
            subscribers,
        })
    }

    /// The latencies of the writes of `range` (sent at `sent`), every subscriber's, sorted.
    pub(super) fn latencies(
        &self,
        sent: &[Instant],
        range: std::ops::Range<usize>,
    ) -> Vec<Duration> {
        let mut all: Vec<Duration> = range
            .flat_map(|w| {
                let at = sent[w];
                self.arrivals[w]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|t| *t - at)
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    pub(super) fn arrive(&self, w: usize) {
        if let Some(a) = self.arrivals.get(w) {
            a.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now());
            if self.counts[w].fetch_add(1, Ordering::SeqCst) + 1 == self.subscribers {
                self.done.notify_one();
            }
        }
    }
}

/// The light subscribers' WebSocket settings: a 4 KiB read buffer (tungstenite's default, 128
/// KiB, is zeroed on every read: most of the load generator's CPU with a thousand sockets).
pub(super) fn light_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// A light raw connection (see [`light_config`]) that said hello as `client_id` and subscribed
/// to the items of `list`, once the list's snapshot has arrived.
pub(super) async fn subscribed(ws: &str, client_id: &str, list: &str) -> Result<Ws> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_with_config(ws, Some(light_config()), true),
    )
    .await
    .map_err(|_| "connecting timed out")??;
    let hello = serde_json::json!({
        "t": "hello", "protocol": sssync_core::protocol::PROTOCOL, "client_id": client_id,
    });
    socket.send(Message::text(hello.to_string())).await?;
    let sub = serde_json::json!({ "t": "sub", "q": "items", "a": { "list_id": list } });
    socket.send(Message::text(sub.to_string())).await?;
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""t":"snapshot""#) => return Ok(socket),
            Ok(Some(Ok(_))) => {}
            _ => return Err(format!("{client_id} got no snapshot").into()),
        }
    }
}

/// A subscriber of `list` (as client `client_id`) that only notes when each write's delta
/// arrives (write `w` adds the row `fan-{w}`), or, refetching, asks `refetch` to GET the
/// snapshot: a raw WebSocket speaking the protocol, so that a thousand of them cost the load
/// generator little. Answers once the list's snapshot has arrived; the task reads on.
pub(super) async fn light_subscriber(
    ws: &str,
    (client_id, list): (&str, &str),
    fan: Arc<Fan>,
    refetch: tokio::sync::mpsc::Sender<usize>,
) -> Result<tokio::task::JoinHandle<()>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = subscribed(ws, client_id, list).await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            let Message::Text(t) = frame else { continue };
            if !t.contains(r#""t":"delta""#) {
                continue;
            }
            fan.delta_bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
            for part in t.split(r#""k":"fan-"#).skip(1) {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(w) = digits.parse::<usize>() {
                    if fan.refetch.load(Ordering::SeqCst) {
                        let _ = refetch.try_send(w);
                    } else {
                        fan.arrive(w);
                    }
                }
            }
        }
    }))
}

/// One client of the many-keys row: subscribes to `list`, then notes when each write's delta
/// arrives (`k-{w}` in its puts), or, refetching (the baseline), asks for the whole result
/// again over its own connection (`resync`) and notes when that snapshot arrives.
pub(super) async fn key_subscriber(
    ws: &str,
    client_id: String,
    list: String,
    fan: Arc<Fan>,
) -> Result<tokio::task::JoinHandle<()>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = subscribed(ws, &client_id, &list).await?;
    let resync =
        serde_json::json!({ "t": "resync", "q": "items", "a": { "list_id": list } }).to_string();
    Ok(tokio::spawn(async move {
        // Writes whose refetch is under way, in order.
        let mut waiting: std::collections::VecDeque<usize> = Default::default();
        while let Some(Ok(frame)) = socket.next().await {
            let Message::Text(t) = frame else { continue };
            if t.contains(r#""t":"snapshot""#) {
                if let Some(w) = waiting.pop_front() {
                    fan.refetched_bytes
                        .fetch_add(t.len() as u64, Ordering::Relaxed);
                    fan.arrive(w);
                }
                continue;
            }
            if !t.contains(r#""t":"delta""#) {
                continue;
            }
            fan.delta_bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
            for part in t.split(r#""k":"k-"#).skip(1) {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(w) = digits.parse::<usize>() {
                    if fan.refetch.load(Ordering::SeqCst) {
                        waiting.push_back(w);
                        if socket.send(Message::text(resync.clone())).await.is_err() {
                            return;
                        }
                    } else {
                        fan.arrive(w);
                    }
                }
            }
        }
    }))
}

/// Waits until each write of `range` has reached `each` subscribers.
pub(super) async fn wait_all(fan: &Fan, range: std::ops::Range<usize>, each: usize) -> Result<()> {
    for w in range {
        while fan.counts[w].load(Ordering::SeqCst) < each {
            tokio::time::timeout(WAIT, fan.done.notified())
                .await
                .map_err(|_| format!("write {w} did not reach its subscribers"))?;
        }
    }
    Ok(())
}

/// A connection that sends `add_item` events (seq 1, 2, 3…) and, in a task of its own, reads
/// their acknowledgements.
pub(super) struct RawWriter {
    pub(super) tx: WsWrite,
    pub(super) seq: u64,
    pub(super) acked: tokio::sync::watch::Receiver<u64>,
    pub(super) reader: tokio::task::JoinHandle<()>,
}

impl RawWriter {
    pub(super) async fn connect(ws: &str, client_id: &str) -> Result<RawWriter> {
        let (tx, mut rx) = raw_connect(ws, client_id).await?;
        let (acks, acked) = tokio::sync::watch::channel(0u64);
        let reader = tokio::spawn(async move {
            while let Ok(msg) = next(&mut rx).await {
                if let ServerMsg::Ack(a) = msg {
                    acks.send_replace(a.seq);
                }
            }
        });
        Ok(RawWriter {
            tx,
            seq: 0,
            acked,
            reader,
        })
    }

    /// Sends one event (at most 256 unacknowledged).
    pub(super) async fn send(&mut self, list: &str, id: String, title: String) -> Result<()> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let floor = self.seq.saturating_sub(256);
        tokio::time::timeout(WAIT, self.acked.wait_for(|a| *a >= floor))
            .await
            .map_err(|_| "events are not acknowledged")??;
        self.seq += 1;
        let event = serde_json::json!({
            "t": "event", "seq": self.seq, "name": "add_item", "args": add(list, id, title),
        });
        self.tx.send(Message::text(event.to_string())).await?;
        Ok(())
    }

    /// Waits until every event sent is acknowledged.
    pub(super) async fn settle(mut self) -> Result<()> {
        let seq = self.seq;
        tokio::time::timeout(WAIT, self.acked.wait_for(|a| *a >= seq))
            .await
            .map_err(|_| "events are not acknowledged")??;
        self.reader.abort();
        Ok(())
    }
}
