//! Throughput and CPU rows: events committed and fanned out, and a change no subscribed query
//! reads, against the same writes through sqlx alone.

use super::child::Child;
use super::client_row::us;
use super::clients::{WAIT, list, raw_fill, subscribers};
use super::{Error, Result};
use crate::table::{Line, Size};
use futures_util::future::try_join_all;
use sssync_core::client::native::NativeClient;
use sssync_core::server::{Engine, Outcome, SqliteStore, Store, router};
use sssync_fault::app::{self, ListArgs};
use std::time::{Duration, Instant};

pub(super) const PLAIN_INSERT: &str = "INSERT INTO items (id, list_id, title, pos) VALUES ($1, $2, $3, \
                            COALESCE((SELECT MAX(pos) FROM items WHERE list_id = $2), 0) + 1)";

pub(super) const PLAIN_LOG: &str =
    "INSERT INTO applied (uid, kind, target, amount) VALUES ($1, 'add_item', $1, 1)";

/// `AddItem`'s writes through sqlx alone on either database, `per_tx` to a transaction, one
/// transaction at a time: the item `i` goes to the list `list(i)`. Answers the rate and this
/// process's CPU per write. One to a transaction is the plain baseline; 512 (the engine's
/// batch) is what the driver itself does at most, the floor under any engine built on it.
pub(super) async fn sqlx_writes(
    url: &str,
    n: usize,
    per_tx: usize,
    list: impl Fn(usize) -> String,
) -> Result<(f64, Duration)> {
    macro_rules! writes {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::raw_sql(app::SCHEMA).execute(&pool).await?;
            let (t, c0) = (Instant::now(), cpu()?);
            for chunk in (0..n).collect::<Vec<_>>().chunks(per_tx) {
                let mut tx = pool.begin().await?;
                for &i in chunk {
                    let id = format!("plain-{i}");
                    sqlx::query(PLAIN_INSERT)
                        .bind(&id)
                        .bind(list(i))
                        .bind("a plain write")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(PLAIN_LOG).bind(&id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            let took = (t.elapsed(), cpu()? - c0);
            pool.close().await;
            took
        }};
    }
    let (took, cpu) = if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        writes!(pool)
    } else {
        writes!(SqliteStore::open(url).await?.pool().clone())
    };
    Ok((n as f64 / took.as_secs_f64(), cpu / n as u32))
}

/// The plain baseline's rate: one transaction per write, events per second.
pub(super) async fn plain_writes(url: &str, n: usize) -> Result<f64> {
    Ok(sqlx_writes(url, n, 1, |_| "plain".into()).await?.0)
}

/// The driver's floor: the same writes, 512 to a transaction (rate, CPU per write).
pub(super) async fn plain_batched_writes(
    url: &str,
    n: usize,
    list: impl Fn(usize) -> String,
) -> Result<(f64, Duration)> {
    sqlx_writes(url, n, 512, list).await
}

/// Events committed and fanned out: 4 writers, each adding items to a list of its own, 256
/// events in flight each, and a subscriber of each list (a client of its own: a writer that
/// subscribed would re-apply its pending predictions on every delta, the client's cost, not
/// the server's).
pub(super) async fn throughput(
    server: &Child,
    size: Size,
    (plain, floor): (f64, f64),
    db: &str,
    target: f64,
) -> Result<Line> {
    const CLIENTS: usize = 4;
    let per = size.events / CLIENTS;
    let lists: Vec<ListArgs> = (0..CLIENTS).map(|c| list(&format!("tp-{c}"))).collect();
    let watchers = subscribers(&server.ws(), "tp", CLIENTS).await?;
    let t = Instant::now();
    try_join_all(
        watchers
            .iter()
            .zip(&lists)
            .enumerate()
            .map(|(c, (watcher, l))| async move {
                raw_fill(
                    &server.ws(),
                    &format!("tp-writer-{c}"),
                    &l.list_id,
                    per,
                    &format!("tp{c}-"),
                )
                .await?;
                let last = format!("tp{c}-{:06}", per - 1);
                let key = sssync_core::QueryKey::new("items", l)?;
                watcher
                    .wait_for(WAIT, |s| {
                        s.view(&key)
                            .is_some_and(|rows| rows.rows().iter().any(|r| *r.key == *last))
                    })
                    .await?;
                Ok::<_, Error>(())
            }),
    )
    .await?;
    let rate = (per * CLIENTS) as f64 / t.elapsed().as_secs_f64();
    Ok(Line {
        what: format!("events committed and fanned out ({db})"),
        target: if target >= 20_000.0 {
            ">= 20,000/s"
        } else {
            ">= 5,000/s"
        },
        sssync: format!("{rate:.0}/s"),
        baseline: format!(
            "{plain:.0}/s (one transaction per write; the driver's floor, the same writes 512 to \
             a transaction through sqlx alone: {floor:.0}/s)"
        ),
        ratio: rate / plain,
        met: Some(rate >= target),
    })
}

/// This process's CPU time (user + system), from `CLOCK_PROCESS_CPUTIME_ID` (nanoseconds).
pub(super) fn cpu() -> Result<Duration> {
    Ok(cpu_time::ProcessTime::try_now()?.as_duration())
}

/// The server CPU of a change no subscribed query reads (200 other keys subscribed), in an
/// engine in this process, 256 changes in flight (as under load: committed in batches),
/// against the same writes through sqlx alone, batched the same.
pub(super) async fn no_op_change(url: &str, plain_url: &str, size: Size) -> Result<Line> {
    let n = size.noop_changes;
    let store = SqliteStore::open(url).await?;
    sqlx::raw_sql(app::SCHEMA).execute(store.pool()).await?;
    let engine = app::declare(Engine::builder(store)).start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ws = format!("ws://{}/sssync/ws", listener.local_addr()?);
    let app = router(engine.clone());
    let serve = tokio::spawn(async move { axum::serve(listener, app).await });
    let watchers = subscribers(&ws, "watched", 200).await?;
    let received: u64 = watchers.iter().map(NativeClient::bytes_received).sum();
    let run = |i: usize| {
        serde_json::json!({
            "uid": format!("u{i}"), "id": format!("x{i}"),
            "list_id": format!("nobody-{}", i % 50), "title": "read by no query"
        })
        .to_string()
    };
    // As the engine runs under load: 256 changes in flight, committed in batches.
    use futures_util::{StreamExt, TryStreamExt};
    let c0 = cpu()?;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (engine, args) = (engine.clone(), run(i));
            async move {
                match engine.apply("add_item", &args).await? {
                    Outcome::Applied { .. } => Ok::<_, Error>(()),
                    r => Err(format!("not applied: {r:?}").into()),
                }
            }
        })
        .buffer_unordered(256)
        .try_collect::<()>()
        .await?;
    let ours = (cpu()? - c0) / n as u32;
    let untouched = watchers
        .iter()
        .map(NativeClient::bytes_received)
        .sum::<u64>()
        == received;
    drop(watchers);
    engine.shutdown();
    serve.abort();

    let (_, plain) = plain_batched_writes(plain_url, n, |i| format!("nobody-{}", i % 50)).await?;
    let over = ours.saturating_sub(plain);
    if !untouched {
        return Err("a change no query reads reached a subscriber".into());
    }
    Ok(Line {
        what: "a change no subscribed query reads (SQLite)".into(),
        target: "< 20 µs server CPU",
        sssync: format!(
            "{:.0} µs CPU ({:.0} µs over the write itself)",
            us(ours),
            us(over)
        ),
        baseline: format!(
            "{:.0} µs CPU (the same writes through sqlx alone, 512 to a transaction)",
            us(plain)
        ),
        ratio: plain.as_secs_f64() / ours.as_secs_f64().max(1e-9),
        met: Some(over < Duration::from_micros(20)),
    })
}
