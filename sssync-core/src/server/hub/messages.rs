//! The messages the hub builds once and queues for every subscriber of a key: snapshots,
//! resumes (from memory or from the durable log), and the errors of a key.

use super::Group;
use crate::delta::Put;
use crate::protocol::{DeltaMsg, ErrorCode, ServerMsg, Snapshot};
use crate::query::QueryKey;
use crate::version::Version;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashSet;
use std::sync::Arc;

/// A row's share of a result's size (as [`Limits::max_result_bytes`] counts it).
///
/// [`Limits::max_result_bytes`]: crate::protocol::Limits::max_result_bytes
pub(crate) fn row_bytes(r: &crate::row::Row) -> usize {
    r.key.len() + r.value.get().len() + 16
}

pub(super) fn snapshot_msg(key: &QueryKey, g: &Group, reset: bool) -> Utf8Bytes {
    ServerMsg::Snapshot(Snapshot {
        q: key.name().to_owned(),
        a: g.args.clone(),
        v: g.version,
        reset,
        rows: g.rows.rows().to_vec(),
        digest: g.rows.digest(),
    })
    .to_json()
    .into()
}

/// The rows changed after `v` (the client holds the result at `v`), as a delta to the group's
/// version.
pub(super) fn resume_msg(key: &QueryKey, g: &Group, v: Version) -> Utf8Bytes {
    let rows = g.rows.rows();
    let puts: Vec<Put> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| g.changed_at.get(&r.key).is_some_and(|&c| c > v))
        .map(|(i, r)| Put {
            row: r.clone(),
            after: i.checked_sub(1).map(|p| rows[p].key.clone()),
        })
        .collect();
    let mut dels: Vec<Arc<str>> = g
        .tombstones
        .iter()
        .filter(|(at, k)| *at > v && g.rows.get(k).is_none())
        .map(|(_, k)| k.clone())
        .collect();
    dels.sort();
    dels.dedup();
    ServerMsg::Delta(DeltaMsg {
        q: key.name().to_owned(),
        a: g.args.clone(),
        from: v,
        to: g.version,
        puts,
        dels,
        digest: g.rows.digest(),
    })
    .to_json()
    .into()
}

/// The rows whose keys are in `changed` (those still in the result as puts, the others as
/// deletes), as a delta from `v` (the client's version) to the group's: a resume computed from
/// the durable log, its size following the changes.
pub(super) fn log_resume_msg(
    key: &QueryKey,
    g: &Group,
    v: Version,
    changed: &HashSet<String>,
) -> Utf8Bytes {
    let rows = g.rows.rows();
    let puts: Vec<Put> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| changed.contains(&*r.key))
        .map(|(i, r)| Put {
            row: r.clone(),
            after: i.checked_sub(1).map(|p| rows[p].key.clone()),
        })
        .collect();
    let mut dels: Vec<Arc<str>> = changed
        .iter()
        .filter(|k| g.rows.get(k).is_none())
        .map(|k| Arc::from(k.as_str()))
        .collect();
    dels.sort();
    ServerMsg::Delta(DeltaMsg {
        q: key.name().to_owned(),
        a: g.args.clone(),
        from: v,
        to: g.version,
        puts,
        dels,
        digest: g.rows.digest(),
    })
    .to_json()
    .into()
}

/// The error the subscribers of `key` get when its query failed.
pub(crate) fn query_failed(key: &QueryKey, why: &str) -> ServerMsg {
    ServerMsg::key_error(
        ErrorCode::QueryFailed,
        format!("query {key} failed on the server ({why}); it is retried when you subscribe again"),
        key,
    )
}

/// The error message a slow connection gets before it is closed.
pub(crate) fn slow_consumer() -> ServerMsg {
    ServerMsg::error(
        ErrorCode::SlowConsumer,
        "this connection fell too far behind; reconnect and resume",
    )
}
