//! Across instances (PostgreSQL): a write on one instance to a subscriber of another, against
//! LISTEN/NOTIFY and a re-read.

use super::child::Child;
use super::clients::{Fan, WAIT, add, fill, light_subscriber, wait_all};
use super::throughput::PLAIN_INSERT;
use super::{Result, ms};
use crate::percentile;
use crate::table::{Line, Size};
use sssync_core::client::native::NativeClient;
use sssync_fault::app::{self};
use std::time::{Duration, Instant};

/// A write through one instance -> its delta on a subscriber of another: two servers (two
/// processes, each with its own pool and tailer) on one PostgreSQL schema, a writer on the
/// first, a subscriber of the same 100-row list on the second, one write at a time. Against
/// PostgreSQL's own floor for the same hop without an engine: the write and a `NOTIFY`
/// committed through sqlx, a `LISTEN` connection that hears it and reads the list again.
pub(super) async fn across_instances(
    schema_url: &str,
    plain_url: &str,
    size: Size,
) -> Result<Line> {
    let writes = size.across_writes;
    let (a, b) = (
        Child::start(schema_url).await?,
        Child::start(schema_url).await?,
    );
    let fan = Fan::new(writes, 1);
    let writer = NativeClient::connect(a.ws(), "across-writer");
    fill(&writer, "across", 100, "pre-").await?;
    let (tx, _refetches) = tokio::sync::mpsc::channel::<usize>(1);
    let subscriber = light_subscriber(&b.ws(), ("across-0", "across"), fan.clone(), tx).await?;
    let mut sent = Vec::with_capacity(writes);
    for w in 0..writes {
        sent.push(Instant::now());
        writer
            .send(add(
                "across",
                format!("fan-{w}"),
                format!("across instances, write {w}"),
            ))
            .ok_or("the client refused an event")?;
        wait_all(&fan, w..w + 1, 1).await?;
    }
    subscriber.abort();
    let ours = fan.latencies(&sent, 0..writes);
    let theirs = notify_and_reread(plain_url, writes).await?;
    let (p99, base_p99) = (percentile(&ours, 0.99), percentile(&theirs, 0.99));
    Ok(Line {
        what: "write on one instance -> delta on another's subscriber (PostgreSQL)".into(),
        target: "p99 < 50 ms",
        sssync: format!("p50 {} / p99 {}", ms(percentile(&ours, 0.5)), ms(p99)),
        baseline: format!(
            "p50 {} / p99 {} (PostgreSQL alone: the write and a NOTIFY through sqlx, heard by a \
             LISTEN connection that reads the list again)",
            ms(percentile(&theirs, 0.5)),
            ms(base_p99)
        ),
        ratio: base_p99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
        met: Some(p99 < Duration::from_millis(50)),
    })
}

/// The baseline of [`across_instances`], in a schema without the engine: `writes` times, one
/// at a time, an item and a `NOTIFY` committed in one transaction on one connection, then,
/// once a `LISTEN` connection has the notification, the list read again there (100 rows). The
/// time from the write's start to the list read, with the new item in it.
pub(super) async fn notify_and_reread(url: &str, writes: usize) -> Result<Vec<Duration>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await?;
    sqlx::raw_sql(app::SCHEMA).execute(&pool).await?;
    let channel = format!("perf_across_{}", std::process::id());
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen(&channel).await?;
    let insert = |id: String| {
        sqlx::query(PLAIN_INSERT)
            .bind(id)
            .bind("across")
            .bind("a plain write")
    };
    for i in 0..100 {
        insert(format!("pre-{i}")).execute(&pool).await?;
    }
    let mut took = Vec::with_capacity(writes);
    for w in 0..writes {
        let id = format!("plain-{w}");
        let t = Instant::now();
        let mut tx = pool.begin().await?;
        insert(id.clone()).execute(&mut *tx).await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tokio::time::timeout(WAIT, listener.recv())
            .await
            .map_err(|_| "the notification never came")??;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM items WHERE list_id = 'across' ORDER BY pos, id")
                .fetch_all(&mut listener)
                .await?;
        if !ids.contains(&id) {
            return Err(format!("the list read after {id}'s notification lacks it").into());
        }
        took.push(t.elapsed());
    }
    took.sort();
    // The listener holds one of the pool's connections: closing the pool waits for it.
    drop(listener);
    pool.close().await;
    Ok(took)
}
