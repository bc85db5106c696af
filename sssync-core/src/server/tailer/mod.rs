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

use super::cmd::{Cmd, Inner, Open};
use super::error::EngineError;
use super::hub::{Outbox, Subscribed, query_failed};
use super::schema::Identity;
use super::store::short;
use super::store::{Store, StoreError};
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::Version;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

mod opens;
mod patch;

use opens::{authorize, overloaded, refuse, resume};
use patch::incremental;

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
    // The commit mark of the last version fanned out (see `store::COMMIT_MARK`).
    let mut mark: Option<String> = None;
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
        match round(&inner, &writer, opens, &mut mark).await {
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
    inner: &Arc<Inner<S>>,
    writer: &mpsc::Sender<Cmd>,
    opens: Vec<Open>,
    mark: &mut Option<String>,
) -> Result<bool, StoreError> {
    let processed = inner.hub.processed();
    let mut conn = match inner.store.pool().acquire().await {
        Ok(c) => c,
        Err(e) => {
            refuse(&opens, &e);
            return Err(e);
        }
    };
    if let Err(e) = super::store::begin_read::<S>(&mut conn).await {
        // The opens are answered (their clients subscribe again).
        refuse(&opens, &e);
        return Err(e);
    }
    let read = async {
        let log = S::read_log(&mut conn, processed, MAX_VERSIONS_PER_ROUND).await?;
        // History changed under this instance: another instance gave the database a new epoch,
        // or the database went back (restored while this instance ran).
        // The database went back in history (restored while this instance ran): below the
        // version fanned out, or that version now another commit (it caught up since).
        let rewritten = matches!((&*mark, &log.mark_after), (Some(a), Some(b)) if a != b);
        let behind = log.version < processed || rewritten;
        let new_epoch = log.epoch != *inner.epoch.borrow();
        // Commits pruned before this instance read them (it fell behind the log's retention:
        // a long pause, a lost database connection): no live result can be brought up to date
        // from the log.
        let lagged = !behind && log.misses_after(processed);
        let lost = new_epoch || behind || lagged;
        if lost {
            inner.hub.clear();
        }
        let affected = if lost {
            Vec::new()
        } else {
            inner.hub.affected(&log.changes)
        };
        // Subscribers whose access these commits may have withdrawn are checked again, at the
        // version whose deltas they would get next.
        let mut revoked = Vec::new();
        if !lost {
            for (key, subs) in inner.hub.access_touched(&log.changes) {
                let mut seen: HashMap<Identity, Result<(), EngineError>> = HashMap::new();
                for o in subs {
                    let verdict = match seen.get(o.identity()) {
                        Some(v) => v.as_ref().map(|_| ()).map_err(EngineError::clone_kind),
                        None => {
                            let v = authorize(inner, &mut conn, &key, o.identity()).await?;
                            let out = v.as_ref().map(|_| ()).map_err(EngineError::clone_kind);
                            seen.insert(o.identity().clone(), v);
                            out
                        }
                    };
                    if let Err(e) = verdict {
                        revoked.push((key.clone(), o, e));
                    }
                }
            }
        }
        // Withdrawn access ends before any delta of these commits goes out.
        for (key, outbox, e) in revoked {
            tracing::info!(%key, conn = outbox.id, "access withdrawn; the subscription ends");
            inner.hub.revoke(&key, &outbox, &e.for_key(&key));
        }
        // Declarative queries are patched with the rows that changed (their deltas go now);
        // the others, and those the patch cannot tell, are re-run.
        let rerun = incremental(inner, &mut conn, &log, processed, affected).await?;
        let mut results = Vec::with_capacity(rerun.len());
        for key in rerun {
            let rows = run(inner, &mut conn, &key).await?;
            results.push((key, rows));
        }
        // New subscribers of checked keys are authorized in this snapshot too.
        let mut verdicts = Vec::with_capacity(opens.len());
        for o in &opens {
            verdicts.push(if inner.checked(&o.key) && o.outbox.wants(&o.key) {
                authorize(inner, &mut conn, &o.key, o.outbox.identity()).await?
            } else {
                Ok(())
            });
        }
        let mut opened = Vec::with_capacity(opens.len());
        let mut fresh: HashSet<QueryKey> = HashSet::new();
        for (o, verdict) in opens.iter().zip(&verdicts) {
            let needs_read = verdict.is_ok()
                && inner.hub.current(&o.key).is_none()
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
        Ok::<_, RoundError>((log, new_epoch, behind, lagged, results, verdicts, opened))
    }
    .await;
    // A read transaction: ending it either way changes nothing. After a panic the
    // connection's state is unknown: it is not reused.
    if matches!(
        read,
        Err(RoundError::Panicked(Panicked { panic: true, .. }))
    ) || S::rollback(&mut conn).await.is_err()
    {
        conn.close_on_drop();
    }
    drop(conn);
    let (log, new_epoch, behind, lagged, results, verdicts, opened) = match read {
        Ok(r) => r,
        Err(RoundError::Store(e)) => {
            refuse(&opens, &e);
            return Err(e);
        }
        Err(RoundError::Panicked(Panicked { key, why, .. })) => {
            tracing::error!(%key, %why, "a query failed in the round's snapshot; dropping it");
            let failed = query_failed(&key, &why);
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
    *mark = log.mark.clone();
    if log.unsealed {
        let _ = writer.try_send(Cmd::Seal);
    }
    if new_epoch {
        tracing::warn!(epoch = %log.epoch, "the database has a new epoch: every client resets");
        inner.epoch.send_replace(log.epoch.clone());
    }
    if behind {
        tracing::warn!(
            from = %processed,
            to = %log.version,
            "the database went back in history (restored while this instance ran): a new epoch"
        );
        inner.hub.reset_processed(log.version);
        // The versions clients hold will be given to other commits: every client must reset.
        // The writer gives the database a new epoch (once, whichever instance asks first),
        // which closes every connection. Also when the copy brought an epoch of its own back
        // (one clients may still hold, from before what the copy lost): a history two ways is
        // no history. Should the writer's queue be full, this instance's connections close at
        // once: their clients' hellos prove the lost history.
        let (reply, _) = tokio::sync::oneshot::channel();
        if writer
            .try_send(Cmd::NewEpoch {
                seen: log.epoch.clone(),
                reply,
            })
            .is_err()
        {
            inner.close_connections();
        }
    }
    if lagged && !new_epoch {
        tracing::warn!(
            processed = %processed,
            horizon = %log.horizon,
            "this instance fell behind the change log's retention: its live results are \
             dropped and its connections closed (their clients resume, or reset)"
        );
        inner.close_connections();
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
    // What was derived from rows these commits changed (a kept page) is stale from now on,
    // before any of them is acknowledged (the writer acknowledges once `v` is processed).
    if new_epoch || behind || lagged {
        inner.hub.watches.change_all();
    } else {
        inner.hub.watches.touched(&log.changes);
    }
    inner.hub.set_processed(v);
    // Subscribers that resume from a version no group remembers, by key and version: their
    // log reads run off the tailer, one per key and version.
    let mut resumes: HashMap<(QueryKey, Version), Vec<Outbox>> = HashMap::new();
    for ((o, rows), verdict) in opens.iter().zip(opened).zip(verdicts) {
        if let Err(e) = verdict {
            // Refused: out of the group too, had anything put it there.
            o.outbox.unwant(&o.key);
            inner.hub.unsubscribe(&o.key, o.outbox.id);
            o.outbox.send_msg(&e.for_key(&o.key));
            continue;
        }
        if let Some(rows) = rows {
            let made = rows.and_then(|rows| {
                let deps = inner.deps(&o.key)?;
                let access = inner.access_deps(&o.key)?;
                inner
                    .hub
                    .create(&o.key, deps, access, rows, v)
                    .map_err(|_| EngineError::Overloaded(inner.limits.max_groups))
            });
            if let Err(e) = made {
                tracing::warn!(key = %o.key, error = %e, "query could not be opened");
                o.outbox.send_msg(&e.for_key(&o.key));
                continue;
            }
        }
        match inner.hub.subscribe(&o.key, &o.outbox, o.client_v) {
            Subscribed::Yes => {}
            // Evicted meanwhile (the hub is full of busier keys): the client retries.
            Subscribed::NoGroup => overloaded(inner, o),
            Subscribed::Behind(v) => resumes
                .entry((o.key.clone(), v))
                .or_default()
                .push(o.outbox.clone()),
        }
    }
    if !resumes.is_empty() {
        // They join their groups now (a change of access in a later round checks them too),
        // and get their deltas once the log is read.
        let joined: Vec<_> = resumes
            .into_iter()
            .filter_map(
                |((key, v), outboxes)| match inner.hub.join(&key, &outboxes) {
                    Some(since) => Some((key, v, since, outboxes)),
                    None => {
                        for outbox in &outboxes {
                            outbox.send_msg(
                                &EngineError::Overloaded(inner.limits.max_groups).for_key(&key),
                            );
                        }
                        None
                    }
                },
            )
            .collect();
        tokio::spawn(resume(inner.clone(), joined));
    }
    // A round reads a bounded number of versions: a longer backlog takes more rounds.
    Ok(log.version.0 >= processed.0.saturating_add(MAX_VERSIONS_PER_ROUND))
}

/// A query (or its authorization) panicked, or failed with a database error, which may have
/// spoilt the round's transaction (PostgreSQL refuses every later statement of it): the round
/// is abandoned and the key dropped (its subscribers are told, and subscribe again later), so
/// that the next round goes on without it.
struct Panicked {
    key: QueryKey,
    why: String,
    /// It panicked: the connection's state is unknown, it is not reused.
    panic: bool,
}

impl Panicked {
    fn panic(key: &QueryKey) -> Panicked {
        Panicked {
            key: key.clone(),
            why: "the query panicked".into(),
            panic: true,
        }
    }
}

/// What a handler's storage error means for the round: a database error that is the moment's
/// fault fails the whole round (read again at the next poll); any other database error drops
/// the key (the transaction may be spoilt); the rest (a row that does not decode) fails the
/// key alone.
fn storage_failure<S: Store>(key: &QueryKey, e: sqlx::Error) -> Result<EngineError, RoundError> {
    if S::is_transient(&e) {
        return Err(RoundError::Store(e));
    }
    if e.as_database_error().is_some() {
        return Err(RoundError::Panicked(Panicked {
            key: key.clone(),
            why: short(&e),
            panic: false,
        }));
    }
    Ok(EngineError::Storage(e))
}

/// Runs `key`'s query on the round's snapshot.
async fn run<S: Store>(
    inner: &Inner<S>,
    conn: &mut <S::Db as sqlx::Database>::Connection,
    key: &QueryKey,
) -> Result<Result<Rows, EngineError>, RoundError> {
    use futures_util::FutureExt;
    let Some(entry) = inner.registry.queries.get(key.name()) else {
        return Ok(Err(EngineError::UnknownQuery(key.name().to_owned())));
    };
    let ctx = Inner::<S>::run_ctx(key);
    let run = std::panic::AssertUnwindSafe((entry.run)(conn, &ctx, key.args_json()))
        .catch_unwind()
        .await;
    match run {
        Ok(Err(super::schema::RunError::Storage(e))) => Ok(Err(storage_failure::<S>(key, e)?)),
        Ok(rows) => Ok(rows
            .map_err(EngineError::from)
            .and_then(|r| inner.result(r))),
        Err(_) => Err(RoundError::Panicked(Panicked::panic(key))),
    }
}
