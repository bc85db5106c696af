//! Resume rows: a client that missed changes, and a write's delta while a crowd resumes.

use super::child::Child;
use super::clients::{
    Fan, WAIT, add, fill, light_config, light_subscriber, list, next, raw_connect, raw_fill,
    snapshot_path,
};
use super::{Result, ms};
use crate::http::Http;
use crate::percentile;
use crate::table::{Line, Size};
use sssync_core::client::native::NativeClient;
use sssync_core::protocol::ServerMsg;
use sssync_fault::app::{self, Items};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Write -> its subscriber while a crowd of clients resumes on a fresh instance (the one they
/// were on restarted: its groups remember nothing, so each resume is read from the durable
/// log): `crowd` raw clients on `crowd_keys` lists reconnect at once with a version, while one
/// write at a time goes to another list. Baseline: the same writes on a fresh instance with no
/// crowd. (Resumes read in the tailer, one after another, held every fan-out behind them.)
pub(super) async fn resume_crowd(
    (quiet_url, busy_url): &(String, String),
    size: Size,
    db: &str,
) -> Result<Line> {
    let (crowd, keys, writes) = (size.crowd, size.crowd_keys, size.crowd_writes);
    let quiet = writes_while_resuming(quiet_url, writes, 0, keys).await?;
    let busy = writes_while_resuming(busy_url, writes, crowd, keys).await?;
    let (q99, b99) = (percentile(&quiet, 0.99), percentile(&busy, 0.99));
    Ok(Line {
        what: format!("write -> its subscriber while {crowd} clients resume on {keys} keys ({db})"),
        target: "p99 < 50 ms",
        sssync: format!(
            "p50 {} / p99 {} ({} writes)",
            ms(percentile(&busy, 0.5)),
            ms(b99),
            busy.len()
        ),
        baseline: format!(
            "p50 {} / p99 {} (no crowd)",
            ms(percentile(&quiet, 0.5)),
            ms(q99)
        ),
        ratio: q99.as_secs_f64() / b99.as_secs_f64().max(1e-9),
        met: Some(b99 < Duration::from_millis(50)),
    })
}

/// On `db_url`, `keys` lists of 20 rows; then, on a fresh instance: `crowd` clients (on those
/// lists, each resuming from version 1) connect at once while writes go one at a time, every
/// 5 ms, to a list of their own; the latencies of that list's subscriber, for writes until every
/// client of the crowd has its resume (at least `writes` of them).
pub(super) async fn writes_while_resuming(
    db_url: &str,
    writes: usize,
    crowd: usize,
    keys: usize,
) -> Result<Vec<Duration>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    const MAX_WRITES: usize = 20_000;
    {
        // The lists the crowd reads; then the instance goes.
        let server = Child::start(db_url).await?;
        for k in 0..keys {
            let (id, list) = (format!("crowd-fill-{k}"), format!("crowd-{k}"));
            raw_fill(&server.ws(), &id, &list, 20, &format!("c{k}-")).await?;
        }
    }
    let tag = if crowd == 0 { "quiet" } else { "busy" };
    let server = Child::start(db_url).await?;
    let list = format!("alone-{tag}");
    let fan = Fan::new(MAX_WRITES, 1);
    let (refetch, _unused) = tokio::sync::mpsc::channel(1);
    let watcher = light_subscriber(
        &server.ws(),
        (&format!("alone-sub-{tag}"), &list),
        fan.clone(),
        refetch,
    )
    .await?;
    let (mut tx, mut rx) = raw_connect(&server.ws(), &format!("alone-writer-{tag}")).await?;
    let resumed = Arc::new(AtomicUsize::new(0));
    let crowd_tasks: Vec<_> = (0..crowd)
        .map(|i| {
            let (ws, resumed) = (server.ws(), resumed.clone());
            let list = format!("crowd-{}", i % keys.max(1));
            tokio::spawn(async move {
                let Ok(Ok((mut socket, _))) = tokio::time::timeout(
                    WAIT,
                    tokio_tungstenite::connect_async_with_config(ws, Some(light_config()), true),
                )
                .await
                else {
                    return;
                };
                let hello = serde_json::json!({
                    "t": "hello", "protocol": sssync_core::protocol::PROTOCOL,
                    "client_id": format!("crowd-{i}"),
                });
                let sub = serde_json::json!({
                    "t": "sub", "q": "items", "a": { "list_id": list }, "v": 1,
                });
                for m in [hello, sub] {
                    if socket.send(Message::text(m.to_string())).await.is_err() {
                        return;
                    }
                }
                let mut counted = false;
                while let Some(Ok(frame)) = socket.next().await {
                    if let Message::Text(t) = frame
                        && !counted
                        && (t.contains(r#""t":"delta""#) || t.contains(r#""t":"snapshot""#))
                    {
                        counted = true;
                        resumed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while sent.len() < MAX_WRITES && (sent.len() < writes || resumed.load(Ordering::SeqCst) < crowd)
    {
        tick.tick().await;
        let w = sent.len();
        let event = serde_json::json!({
            "t": "event", "seq": w + 1, "name": "add_item",
            "args": add(&list, format!("fan-{w}"), format!("write {w}")),
        });
        sent.push(Instant::now());
        tx.send(Message::text(event.to_string())).await?;
        match next(&mut rx).await? {
            ServerMsg::Ack(a) if a.seq as usize == w + 1 => {}
            other => return Err(format!("expected the ack of {}, got {other:?}", w + 1).into()),
        }
        // The delta comes before the ack on its own connection, not on the watcher's: wait.
        let deadline = tokio::time::Instant::now() + WAIT;
        while fan.counts[w].load(Ordering::SeqCst) == 0 {
            if tokio::time::timeout_at(deadline, fan.done.notified())
                .await
                .is_err()
            {
                return Err(format!("write {w} never reached its subscriber").into());
            }
        }
    }
    for t in &crowd_tasks {
        t.abort();
    }
    watcher.abort();
    if resumed.load(Ordering::SeqCst) < crowd {
        return Err(format!(
            "only {} of {crowd} clients resumed within {MAX_WRITES} writes",
            resumed.load(Ordering::SeqCst)
        )
        .into());
    }
    Ok(fan.latencies(&sent, 0..sent.len()))
}

/// `writer` fills the list `big` with `rows` rows; a reader connected to `reader_url` loads
/// it, goes offline, misses `missed` changes (half deletes, half adds), and comes back through
/// `back_url` (another instance, or the same server). Answers the bytes of the reader's first
/// load and of its resume.
pub(crate) async fn miss_and_resume(
    writer: &NativeClient,
    reader_url: String,
    back_url: String,
    rows: usize,
    missed: usize,
) -> Result<(u64, u64)> {
    fill(writer, "big", rows, "g").await?;
    let reader = NativeClient::connect(reader_url, "big-reader");
    reader.subscribe::<Items>(&list("big"));
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("big"))
                .is_some_and(|r| r.len() == rows)
        })
        .await?;
    let whole = reader.bytes_received();
    reader.set_online(false);
    reader.wait_for(WAIT, |_| !reader.is_live()).await?;
    for i in 0..missed / 2 {
        writer.send(app::DelItem {
            uid: format!("d{i}"),
            id: format!("g{:06}", i * 3),
            list_id: "big".into(),
        });
        writer.send(add("big", format!("n{i:06}"), "added while away".into()));
    }
    writer.wait_for(WAIT, |s| s.pending_count() == 0).await?;
    let before = reader.bytes_received();
    reader.set_url(back_url);
    reader.set_online(true);
    let last = format!("n{:06}", missed / 2 - 1);
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("big"))
                .is_some_and(|r| r.len() == rows && r.iter().any(|i| i.id == last))
        })
        .await?;
    Ok((whole, reader.bytes_received() - before))
}

/// A subscriber of a big result goes away, misses changes, comes back: the resume's bytes
/// against the whole result's.
pub(super) async fn reconnect(server: &Child, size: Size, db: &str) -> Result<Line> {
    let (rows, missed) = (size.big_rows, size.missed);
    let writer = NativeClient::connect(server.ws(), "big-writer");
    let (whole, resume) = miss_and_resume(&writer, server.ws(), server.ws(), rows, missed).await?;
    let refetch = Http::connect(&server.addr)
        .await?
        .get(&snapshot_path("big"))
        .await?
        .len();
    Ok(Line {
        what: format!("reconnect after missed changes ({missed} to a {rows}-row query, {db})"),
        target: "payload ∝ changed rows",
        sssync: format!(
            "{resume} B ({:.0} B per change)",
            resume as f64 / missed as f64
        ),
        baseline: format!("{refetch} B (the first load, on the socket: {whole} B)"),
        ratio: refetch as f64 / resume.max(1) as f64,
        met: None,
    })
}
