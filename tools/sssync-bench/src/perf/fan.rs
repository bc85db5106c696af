//! Fan-out rows: one write to a key's subscribers, to many keys' subscribers, and the bytes a
//! one-row change costs, against refetch-on-invalidate.

use super::child::Child;
use super::clients::{
    Fan, RawWriter, WAIT, add, fill, key_subscriber, light_subscriber, list, snapshot_path,
    wait_all,
};
use super::{Result, ms};
use crate::http::Http;
use crate::percentile;
use crate::table::{Line, Size};
use sssync_core::client::native::NativeClient;
use sssync_fault::app::Items;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Write -> every subscriber of one key: sssync's deltas, then refetch-on-invalidate (the
/// delta only says "changed"; each subscriber then GETs the snapshot).
pub(super) async fn fan_out(server: &Child, size: Size, db: &str) -> Result<Line> {
    let (n, writes) = (size.subscribers, size.fan_writes);
    let fan = Fan::new(2 * writes, n);
    let writer = NativeClient::connect(server.ws(), "fan-writer");
    // The list the subscribers read: 100 rows, a TodoMVC list's worth.
    fill(&writer, "fan", 100, "pre-").await?;
    let mut subscribers = Vec::with_capacity(n);
    let mut refetchers = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(64);
        subscribers.push(
            light_subscriber(&server.ws(), (&format!("fan-{i}"), "fan"), fan.clone(), tx).await?,
        );
        let mut http = Http::connect(&server.addr).await?;
        let fan = fan.clone();
        refetchers.push(tokio::spawn(async move {
            let path = snapshot_path("fan");
            while let Some(w) = rx.recv().await {
                match http.get(&path).await {
                    Ok(body) => {
                        fan.refetched_bytes
                            .fetch_add(body.len() as u64, Ordering::Relaxed);
                        fan.arrive(w);
                    }
                    Err(e) => eprintln!("refetch: {e}"),
                }
            }
        }));
    }
    let bytes_before = fan.delta_bytes.load(Ordering::SeqCst);
    let mut sent = Vec::with_capacity(2 * writes);
    let mut bytes_sssync = 0;
    for w in 0..2 * writes {
        if w == writes {
            bytes_sssync = fan.delta_bytes.load(Ordering::SeqCst) - bytes_before;
            fan.refetch.store(true, Ordering::SeqCst);
        }
        sent.push(Instant::now());
        writer
            .send(add(
                "fan",
                format!("fan-{w}"),
                format!("fanned out, write {w}"),
            ))
            .ok_or("the client refused an event")?;
        wait_all(&fan, w..w + 1, n).await?;
    }
    let (ours, theirs) = (
        fan.latencies(&sent, 0..writes),
        fan.latencies(&sent, writes..2 * writes),
    );
    for task in refetchers.into_iter().chain(subscribers) {
        task.abort();
    }
    let per = (n * writes) as f64;
    let (p99, base_p99) = (percentile(&ours, 0.99), percentile(&theirs, 0.99));
    Ok(Line {
        what: format!("write -> 1 key's subscribers ({n}, {db})"),
        target: "p99 < 10 ms",
        sssync: format!(
            "p50 {} / p99 {}; {:.0} B each",
            ms(percentile(&ours, 0.5)),
            ms(p99),
            bytes_sssync as f64 / per
        ),
        baseline: format!(
            "p50 {} / p99 {}; {:.0} B each",
            ms(percentile(&theirs, 0.5)),
            ms(base_p99),
            fan.refetched_bytes.load(Ordering::Relaxed) as f64 / per
        ),
        ratio: base_p99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
        met: (n >= 1000).then_some(p99 < Duration::from_millis(10)),
    })
}

/// Write -> its key's subscribers, with many clients on many keys connected: `clients` clients,
/// `keys` lists (each read by `clients / keys` of them, 20 items each), writes to one list after
/// another at a steady rate (1,000 a second); the latency from sending a write to each
/// subscriber of its list having it. Baseline: the same, each subscriber refetching the whole
/// list (over its own connection: `resync`, a snapshot) when told of the change.
pub(super) async fn fan_out_keys(server: &Child, size: Size, db: &str) -> Result<Line> {
    use futures_util::{StreamExt, TryStreamExt};
    let (clients, keys, writes) = (size.many_clients, size.many_keys, size.many_writes);
    let per_key = clients / keys;
    let fan = Fan::new(2 * writes, per_key);
    let ws = server.ws();
    // The lists' items, from 4 writers.
    futures_util::future::try_join_all((0..4).map(|c| {
        let ws = ws.clone();
        async move {
            let mut conn = RawWriter::connect(&ws, &format!("mk-fill-{c}")).await?;
            for k in (c..keys).step_by(4) {
                for i in 0..20 {
                    conn.send(&format!("k{k}"), format!("pre-{k}-{i}"), "an item".into())
                        .await?;
                }
            }
            conn.settle().await
        }
    }))
    .await?;
    let subscribers: Vec<tokio::task::JoinHandle<()>> = futures_util::stream::iter(0..clients)
        .map(|i| {
            key_subscriber(
                &ws,
                format!("mk-{i}"),
                format!("k{}", i % keys),
                fan.clone(),
            )
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let mut writer = RawWriter::connect(&ws, "mk-writer").await?;
    let mut sent = Vec::with_capacity(2 * writes);
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for w in 0..2 * writes {
        if w == writes {
            // Every write of the first half has reached its subscribers.
            wait_all(&fan, 0..writes, per_key).await?;
            fan.refetch.store(true, Ordering::SeqCst);
        }
        pace.tick().await;
        sent.push(Instant::now());
        writer
            .send(
                &format!("k{}", w % keys),
                format!("k-{w}"),
                format!("write {w}"),
            )
            .await?;
    }
    wait_all(&fan, writes..2 * writes, per_key).await?;
    writer.settle().await?;
    let (ours, theirs) = (
        fan.latencies(&sent, 0..writes),
        fan.latencies(&sent, writes..2 * writes),
    );
    for task in subscribers {
        task.abort();
    }
    let (p99, base_p99) = (percentile(&ours, 0.99), percentile(&theirs, 0.99));
    let per = (per_key * writes) as f64;
    Ok(Line {
        what: format!("write -> its key's subscribers ({clients} clients on {keys} keys, {db})"),
        target: "p99 < 50 ms",
        sssync: format!(
            "p50 {} / p99 {}; {:.0} B each",
            ms(percentile(&ours, 0.5)),
            ms(p99),
            fan.delta_bytes.load(Ordering::Relaxed) as f64 / (2.0 * per)
        ),
        baseline: format!(
            "p50 {} / p99 {}; {:.0} B each (refetch on invalidate, over the same connection)",
            ms(percentile(&theirs, 0.5)),
            ms(base_p99),
            fan.refetched_bytes.load(Ordering::Relaxed) as f64 / per
        ),
        ratio: base_p99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
        met: (clients >= 10_000).then_some(p99 < Duration::from_millis(50)),
    })
}

/// The bytes a subscriber of a 1,000-row result receives for a 1-row change, against the
/// bytes of refetching the result.
pub(super) async fn bytes_one_change(server: &Child, db: &str) -> Result<Line> {
    let writer = NativeClient::connect(server.ws(), "bytes-writer");
    fill(&writer, "bytes", 1000, "b").await?;
    let reader = NativeClient::connect(server.ws(), "bytes-reader");
    reader.subscribe::<Items>(&list("bytes"));
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("bytes"))
                .is_some_and(|r| r.len() == 1000)
        })
        .await?;
    let before = reader.bytes_received();
    writer
        .send(add("bytes", "b-new".into(), "the one change".into()))
        .ok_or("refused")?;
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("bytes"))
                .is_some_and(|r| r.len() == 1001)
        })
        .await?;
    let delta = reader.bytes_received() - before;
    let snapshot = Http::connect(&server.addr)
        .await?
        .get(&snapshot_path("bytes"))
        .await?
        .len();
    let ratio = snapshot as f64 / delta.max(1) as f64;
    Ok(Line {
        what: format!("bytes, 1-row change in a 1,000-row query ({db})"),
        target: ">= 100x fewer than a refetch",
        sssync: format!("{delta} B"),
        baseline: format!("{snapshot} B"),
        ratio,
        met: Some(ratio >= 100.0),
    })
}
