//! The tailer: the one task per engine that follows the durable change log in version order,
//! so that every commit reaches this instance's subscribers, whoever made it (this instance's
//! writer, another instance, an administrator's SQL, a second process on the same SQLite file).
//!
//! Each round reads, in one snapshot of the database, the versions after the last one it
//! processed and the changes they made, re-runs each affected live query once (invariant 10),
//! and queues the deltas; it also opens the groups new subscribers asked for, in the same
//! snapshot, so no commit can slip between a group's first result and its first delta. A round
//! starts when the writer commits, when the database rings (PostgreSQL's `NOTIFY`: only a
//! doorbell), and at every poll (a missed ring costs latency, never a change).
//!
//! A client that resumes from a version this instance does not remember (it restarted, or the
//! client was on another instance) gets a delta computed from the log when its query allows it
//! ([`ServerQuery::KEYED_BY`](super::ServerQuery::KEYED_BY)) and the log reaches back that far;
//! otherwise a snapshot marked `reset`.

use super::engine::{Cmd, EngineError, Inner};
use super::hub::{Outbox, Subscribed, query_failed};
use super::schema::QueryCtx;
use super::store::{Store, StoreError};
use super::writer::short;
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::Version;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the log is read when nothing rings.
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// Versions one round reads at most (a long backlog is read in several rounds).
const MAX_VERSIONS_PER_ROUND: u64 = 10_000;
/// Change-log versions kept by default (the retention horizon trails the current version by
/// this much).
pub(crate) const CHANGES_KEPT: u64 = 100_000;
/// Change-log rows one pruning deletes at most.
const PRUNE_ROWS: u64 = 10_000;
/// Changed keys a resume from the log carries at most; beyond, a reset snapshot is smaller.
const MAX_LOG_KEYS: usize = 10_000;
/// Subscriptions one round opens at most (the others wait for the next round).
const MAX_OPENS: usize = 256;

/// A subscriber for a key this instance has no live result for, or that resumes from a version
/// it does not remember.
pub(crate) struct Open {
    pub(crate) key: QueryKey,
    pub(crate) outbox: Outbox,
    pub(crate) client_v: Option<Version>,
}

pub(crate) async fn tailer<S: Store>(
    inner: Arc<Inner<S>>,
    mut rx: mpsc::Receiver<Open>,
    writer: mpsc::Sender<Cmd>,
) {
    let mut stop = inner.stop.subscribe();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut janitor = tokio::time::interval(Duration::from_secs(5).min(inner.group_ttl));
    janitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let _bell = inner.store.doorbell(inner.wake.clone());
    loop {
        let mut opens = Vec::new();
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = poll.tick() => {}
            open = rx.recv() => match open {
                Some(o) => opens.push(o),
                None => return,
            },
            _ = janitor.tick() => {
                inner.hub.evict_idle(inner.group_ttl);
                if let Err(e) = inner.store.prune(inner.log_keep, PRUNE_ROWS).await {
                    tracing::warn!(error = %e, "pruning the change log failed; retried later");
                }
                continue;
            }
            _ = stop.changed() => return,
        }
        while opens.len() < MAX_OPENS {
            match rx.try_recv() {
                Ok(o) => opens.push(o),
                Err(_) => break,
            }
        }
        match round(&inner, &writer, opens).await {
            Ok(more) => {
                if more {
                    inner.wake.notify_one();
                }
            }
            Err(e) => {
                // Nothing is lost: the log is durable, the next round reads it again.
                tracing::warn!(error = %e, "reading the change log failed; retried at the next poll");
            }
        }
    }
}

enum RoundError {
    Store(StoreError),
    Panicked(Panicked),
}

impl From<StoreError> for RoundError {
    fn from(e: StoreError) -> RoundError {
        RoundError::Store(e)
    }
}

impl From<Panicked> for RoundError {
    fn from(p: Panicked) -> RoundError {
        RoundError::Panicked(p)
    }
}

/// One round: returns whether the log has more to read right away.
async fn round<S: Store>(
    inner: &Inner<S>,
    writer: &mpsc::Sender<Cmd>,
    opens: Vec<Open>,
) -> Result<bool, StoreError> {
    let processed = inner.hub.processed();
    let mut conn = match inner.store.pool().acquire().await {
        Ok(c) => c,
        Err(e) => {
            refuse(&opens, &e);
            return Err(e);
        }
    };
    S::begin_read(&mut conn).await?;
    let read = async {
        let log = S::read_log(&mut conn, processed, MAX_VERSIONS_PER_ROUND).await?;
        // History changed under this instance: another instance gave the database a new epoch,
        // or the database went back (restored while this instance ran).
        let behind = log.version < processed;
        let new_epoch = log.epoch != *inner.epoch.borrow();
        if new_epoch || behind {
            inner.hub.clear();
        }
        let affected = if new_epoch || behind {
            Vec::new()
        } else {
            inner.hub.affected(&log.changes)
        };
        let mut results = Vec::with_capacity(affected.len());
        for key in affected {
            let rows = run(inner, &mut conn, &key).await?;
            results.push((key, rows));
        }
        let mut opened = Vec::with_capacity(opens.len());
        let mut fresh: HashSet<QueryKey> = HashSet::new();
        for o in &opens {
            let needs_read = inner.hub.current(&o.key).is_none()
                && !fresh.contains(&o.key)
                && o.outbox.wants(&o.key);
            let rows = if needs_read {
                fresh.insert(o.key.clone());
                Some(run(inner, &mut conn, &o.key).await?)
            } else {
                None
            };
            opened.push(rows);
        }
        Ok::<_, RoundError>((log, new_epoch, behind, results, opened))
    }
    .await;
    // A read transaction: ending it either way changes nothing. After a panic the
    // connection's state is unknown: it is not reused.
    if matches!(read, Err(RoundError::Panicked(_))) || S::rollback(&mut conn).await.is_err() {
        conn.close_on_drop();
    }
    drop(conn);
    let (log, new_epoch, behind, results, opened) = match read {
        Ok(r) => r,
        Err(RoundError::Store(e)) => {
            refuse(&opens, &e);
            return Err(e);
        }
        Err(RoundError::Panicked(Panicked(key))) => {
            tracing::error!(%key, "a query panicked; dropping it");
            let failed = query_failed(&key, "the query panicked");
            inner.hub.fail(&key, &failed);
            for o in opens.iter().filter(|o| o.key == key) {
                o.outbox.send_msg(&failed);
            }
            // The others go again at once, without it.
            for o in opens.into_iter().filter(|o| o.key != key) {
                let _ = inner.opens.try_send(o);
            }
            return Ok(true);
        }
    };
    if log.unsealed {
        let _ = writer.try_send(Cmd::Seal);
    }
    if new_epoch {
        tracing::warn!(epoch = %log.epoch, "the database has a new epoch: every client resets");
        inner.epoch.send_replace(log.epoch.clone());
    }
    if behind {
        tracing::warn!(from = %processed, to = %log.version, "the database went back in history");
        inner.hub.reset_processed(log.version);
    }
    let v = log.version;
    for (key, rows) in results {
        match rows {
            Ok(rows) => {
                inner.hub.update(&key, rows, v);
            }
            Err(e) => {
                tracing::error!(%key, error = %e, "re-run failed; dropping the query");
                inner.hub.fail(&key, &e.for_key(&key));
            }
        }
    }
    inner.hub.set_processed(v);
    for (o, rows) in opens.iter().zip(opened) {
        if let Some(rows) = rows {
            let made = rows.and_then(|rows| {
                let deps = inner.deps(&o.key)?;
                inner
                    .hub
                    .create(&o.key, deps, rows, v)
                    .map_err(|_| EngineError::Overloaded(inner.limits.max_groups))
            });
            if let Err(e) = made {
                tracing::warn!(key = %o.key, error = %e, "query could not be opened");
                o.outbox.send_msg(&e.for_key(&o.key));
                continue;
            }
        }
        subscribe(inner, o).await;
    }
    // A round reads a bounded number of versions: a longer backlog takes more rounds.
    Ok(log.version.0 >= processed.0.saturating_add(MAX_VERSIONS_PER_ROUND))
}

/// A query panicked: the round is abandoned (its connection's state is unknown) and the key
/// dropped, so that the next round goes on without it.
struct Panicked(QueryKey);

/// Runs `key`'s query on the round's snapshot.
async fn run<S: Store>(
    inner: &Inner<S>,
    conn: &mut <S::Db as sqlx::Database>::Connection,
    key: &QueryKey,
) -> Result<Result<Rows, EngineError>, Panicked> {
    use futures_util::FutureExt;
    let Some(entry) = inner.registry.queries.get(key.name()) else {
        return Ok(Err(EngineError::UnknownQuery(key.name().to_owned())));
    };
    let run =
        std::panic::AssertUnwindSafe((entry.run)(conn, &QueryCtx::default(), key.args_json()))
            .catch_unwind()
            .await;
    match run {
        Ok(rows) => Ok(rows
            .map_err(EngineError::from)
            .and_then(|r| inner.result(r))),
        Err(_) => Err(Panicked(key.clone())),
    }
}

/// The opens of a round that could not read: each subscriber is told for its key (it retries).
fn refuse(opens: &[Open], e: &StoreError) {
    for o in opens {
        o.outbox.send_msg(&query_failed(&o.key, &short(e)));
    }
}

/// Subscribes an open's outbox to its (now existing) group: from memory when the group
/// remembers the client's version, else from the log when the query allows it, else a reset.
async fn subscribe<S: Store>(inner: &Inner<S>, o: &Open) {
    match inner.hub.subscribe(&o.key, &o.outbox, o.client_v) {
        Subscribed::Yes => {}
        Subscribed::NoGroup => {
            // Evicted meanwhile (the hub is full of busier keys): the client retries.
            o.outbox
                .send_msg(&EngineError::Overloaded(inner.limits.max_groups).for_key(&o.key));
        }
        Subscribed::Behind(v) => {
            let keys = match log_keys(inner, &o.key, v).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(key = %o.key, error = %e, "reading the log for a resume failed");
                    None
                }
            };
            inner
                .hub
                .subscribe_from(&o.key, &o.outbox, v, keys.as_ref());
        }
    }
}

/// The keys of `key`'s rows that changed after `v`, from the durable log, when the query's
/// rows are one table's rows (`KEYED_BY`) and every dependency is on that table.
async fn log_keys<S: Store>(
    inner: &Inner<S>,
    key: &QueryKey,
    v: Version,
) -> Result<Option<HashSet<String>>, EngineError> {
    let Some(entry) = inner.registry.queries.get(key.name()) else {
        return Ok(None);
    };
    let Some(table) = entry.keyed_by else {
        return Ok(None);
    };
    if v > inner.hub.processed() {
        return Ok(None);
    }
    // Every change after `v`, also those after the group's result (their rows are sent as the
    // group has them: the puts and deletes of a key never mislead) and those not sealed yet
    // (a write made outside the engine shows in the rows before its entry has a version).
    let upto = Version(i64::MAX as u64);
    let deps = inner.deps(key)?;
    if deps.is_empty() || deps.iter().any(|d| d.table != table) {
        return Ok(None);
    }
    let mut out = HashSet::new();
    for d in &deps {
        match inner
            .store
            .changed_keys(table, d.part.as_deref(), v, upto, MAX_LOG_KEYS)
            .await?
        {
            Some(keys) => out.extend(keys),
            None => return Ok(None),
        }
        if out.len() > MAX_LOG_KEYS {
            return Ok(None);
        }
    }
    Ok(Some(out))
}
