//! Opening subscribers in a round: authorizing them in the round's snapshot, resuming them
//! from the durable log, or refusing them (storage failing, too many live keys).

use super::{MAX_LOG_KEYS, Panicked, RoundError, storage_failure};
use crate::query::QueryKey;
use crate::server::cmd::{Inner, Open};
use crate::server::error::EngineError;
use crate::server::hub::{Outbox, Subscribed, query_failed};
use crate::server::schema::{AccessError, Identity, QueryCtx};
use crate::server::store::short;
use crate::server::store::{Store, StoreError};
use crate::version::Version;
use std::collections::HashSet;
use std::sync::Arc;

/// Whether `identity` may read `key`, in the round's snapshot (a failure to tell is handled
/// like a query's, see [`storage_failure`]).
pub(super) async fn authorize<S: Store>(
    inner: &Inner<S>,
    conn: &mut <S::Db as sqlx::Database>::Connection,
    key: &QueryKey,
    identity: &Identity,
) -> Result<Result<(), EngineError>, RoundError> {
    use futures_util::FutureExt;
    let Some(entry) = inner.registry.queries.get(key.name()) else {
        return Ok(Err(EngineError::UnknownQuery(key.name().to_owned())));
    };
    let ctx = QueryCtx {
        identity: identity.clone(),
    };
    match std::panic::AssertUnwindSafe((entry.authorize)(conn, &ctx, key.args_json()))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => Ok(Ok(())),
        Ok(Err(AccessError::Forbidden(m))) => Ok(Err(EngineError::Forbidden(m.0))),
        Ok(Err(AccessError::Storage(e))) => Ok(Err(storage_failure::<S>(key, e)?)),
        Err(_) => Err(RoundError::Panicked(Panicked::panic(key))),
    }
}

/// The opens of a round that could not read: each subscriber is told for its key (it retries).
pub(super) fn refuse(opens: &[Open], e: &StoreError) {
    for o in opens {
        o.outbox.send_msg(&query_failed(&o.key, &short(e)));
    }
}

/// The client of an open is told to subscribe again later: its group went (the hub is full of
/// busier keys).
pub(super) fn overloaded<S: Store>(inner: &Inner<S>, o: &Open) {
    o.outbox
        .send_msg(&EngineError::Overloaded(inner.limits.max_groups).for_key(&o.key));
}

/// Resumes subscribers that joined their groups from the durable log, off the tailer: one log
/// read per key and version, shared by every subscriber that resumes from it, a few at once
/// (the engine's permits), so that a crowd of clients reconnecting to a fresh instance holds up
/// no fan-out, acknowledgement or welcome. Each gets the rows the log says changed since its
/// version, with those its group changed meanwhile; or a reset when the log cannot tell.
pub(super) async fn resume<S: Store>(
    inner: Arc<Inner<S>>,
    joined: Vec<(QueryKey, Version, Version, Vec<Outbox>)>,
) {
    for (key, v, since, outboxes) in joined {
        let keys = {
            let _permit = inner.resuming.acquire().await;
            match log_keys(&inner, &key, v).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "reading the log for a resume failed");
                    None
                }
            }
        };
        for outbox in &outboxes {
            if let Subscribed::NoGroup =
                inner
                    .hub
                    .subscribe_from(&key, outbox, v, since, keys.as_ref())
            {
                outbox.send_msg(&EngineError::Overloaded(inner.limits.max_groups).for_key(&key));
            }
            // Its answers held meanwhile go now.
            outbox.end_join();
        }
    }
}

/// The keys of `key`'s rows that changed after `v`, from the durable log, when the query's
/// rows are one table's rows (`KEYED_BY`) and every dependency is on that table.
pub(super) async fn log_keys<S: Store>(
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
