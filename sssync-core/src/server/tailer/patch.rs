//! The incremental path of a round: the keys of declarative queries a commit changed, patched
//! with the rows it touched instead of read again.

use super::{Panicked, RoundError, storage_failure};
use crate::query::QueryKey;
use crate::server::cmd::Inner;
use crate::server::error::EngineError;
use crate::server::hub::{Patched, query_failed};
use crate::server::incremental::Found;
use crate::server::store::Store;
use crate::version::Version;
use std::collections::HashSet;
use std::sync::Arc;

/// Row entries of the log one round reads at most for the incremental path (beyond, its
/// queries are re-run).
pub(super) const MAX_ROW_CHANGES: usize = 50_000;

/// Changed rows one key is patched with at most (beyond, re-running it is as cheap).
pub(super) const MAX_PATCH_ROWS: usize = 2_000;

/// Patches the affected keys of declarative queries with the rows the round's commits changed,
/// read in the round's snapshot, and queues their deltas; returns the keys to re-run instead
/// (every other query, and the changes a patch cannot tell).
pub(super) async fn incremental<S: Store>(
    inner: &Inner<S>,
    conn: &mut <S::Db as sqlx::Database>::Connection,
    log: &crate::server::store::LogRead,
    processed: Version,
    affected: Vec<QueryKey>,
) -> Result<Vec<QueryKey>, RoundError> {
    let (mut patchable, mut rerun): (Vec<QueryKey>, Vec<QueryKey>) =
        affected.into_iter().partition(|k| {
            inner
                .plans
                .get(k.name())
                .is_some_and(crate::server::incremental::Plan::is_sound)
        });
    if patchable.is_empty() {
        return Ok(rerun);
    }
    // The snapshot's rows show writes the round's changes do not name (written outside the
    // engine and not sealed yet, or past the versions this round reads): a patch would mix
    // them into a window it cannot place them in. A re-run shows all of them consistently.
    if log.unsealed || log.capped {
        rerun.append(&mut patchable);
        return Ok(rerun);
    }
    let Some(row_changes) =
        S::read_row_changes(conn, processed, log.version, MAX_ROW_CHANGES).await?
    else {
        rerun.append(&mut patchable);
        return Ok(rerun);
    };
    let v = log.version;
    for key in patchable {
        let plan = &inner.plans[key.name()];
        let Ok(deps) = inner.deps(&key) else {
            rerun.push(key);
            continue;
        };
        let touches = |table: &str, part: Option<&str>| {
            deps.iter()
                .any(|d| d.table == table && (d.part.is_none() || d.part.as_deref() == part))
        };
        // Only changes of rows of the query's own table can be patched: a query that also
        // depends on another table, or a change logged without its rows (a whole table), is
        // re-run.
        let whole = log.changes.iter().any(|c| c.whole && c.table == plan.table);
        if whole || deps.iter().any(|d| d.table != plan.table) {
            rerun.push(key);
            continue;
        }
        let changed: HashSet<Arc<str>> = row_changes
            .iter()
            .filter(|c| c.table == plan.table && touches(&c.table, c.part.as_deref()))
            .map(|c| Arc::from(c.key.as_str()))
            .collect();
        if changed.is_empty() {
            continue;
        }
        if changed.len() > MAX_PATCH_ROWS {
            rerun.push(key);
            continue;
        }
        let mut keys: Vec<&str> = changed.iter().map(|k| &**k).collect();
        keys.sort_unstable();
        let keys_json = serde_json::to_string(&keys).expect("strings serialize");
        let found = match fetch_changed(inner, conn, &key, &plan.changed_sql, &keys_json).await? {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(%key, error = %e, "the incremental read failed; dropping the query");
                inner.hub.fail(&key, &e.for_key(&key));
                continue;
            }
        };
        // The rows' keys must be the key column's text, or the log's keys mean nothing here.
        if let Some(bad) = found.iter().find(|f| *f.row.key != *f.key) {
            tracing::warn!(
                query = key.name(),
                row_key = %bad.row.key,
                column_text = %bad.key,
                "a row's key is not its key column's text: the query is re-run from now on"
            );
            plan.sound
                .store(false, std::sync::atomic::Ordering::Relaxed);
            rerun.push(key);
            continue;
        }
        let patched = inner.hub.patch(
            &key,
            &changed,
            found,
            v,
            plan.limit,
            inner.limits.max_result_bytes,
        );
        match patched {
            Patched::Done(_) | Patched::NoGroup => {}
            Patched::Rerun => rerun.push(key),
            Patched::Inconsistent => {
                tracing::error!(%key, "the changed rows contradict each other; dropping the query");
                inner.hub.fail(
                    &key,
                    &query_failed(&key, "its incremental read was inconsistent"),
                );
            }
            Patched::TooLarge(bytes) => {
                let e = EngineError::TooLarge(bytes, inner.limits.max_result_bytes);
                inner.hub.fail(&key, &e.for_key(&key));
            }
        }
    }
    Ok(rerun)
}

/// Reads the rows among `keys_json` of `key`'s declarative query, in the round's snapshot
/// (failures as in [`run`]).
pub(super) async fn fetch_changed<S: Store>(
    inner: &Inner<S>,
    conn: &mut <S::Db as sqlx::Database>::Connection,
    key: &QueryKey,
    sql: &str,
    keys_json: &str,
) -> Result<Result<Vec<Found>, EngineError>, RoundError> {
    use futures_util::FutureExt;
    let Some(entry) = inner.registry.queries.get(key.name()) else {
        return Ok(Err(EngineError::UnknownQuery(key.name().to_owned())));
    };
    let fetched =
        std::panic::AssertUnwindSafe((entry.fetch)(conn, sql, key.args_json(), keys_json))
            .catch_unwind()
            .await;
    match fetched {
        Ok(Err(crate::server::schema::RunError::Storage(e))) => {
            Ok(Err(storage_failure::<S>(key, e)?))
        }
        Ok(found) => Ok(found.map_err(EngineError::from)),
        Err(_) => Err(RoundError::Panicked(Panicked::panic(key))),
    }
}
