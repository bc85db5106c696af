//! The client's cost: a delta applied to a big query's rows, against a refetch.

use super::Result;
use super::clients::list;
use crate::table::{Line, Size};
use sssync_core::protocol::ServerMsg;
use sssync_fault::app::{self};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The client's CPU for one delta of one put into a query of many rows: a client state (what
/// a browser tab and the native client keep) that holds the query's snapshot takes deltas
/// that each add a row at the end, against the same deltas applied to the rows alone
/// (`delta::apply`). Not a SPEC §6 target: it shows what a client pays per change, which
/// grows with the query's rows (see docs/performance.md).
pub(super) fn client_delta(size: Size) -> Result<Line> {
    use sssync_core::client::ClientState;
    use sssync_core::protocol::{DeltaMsg, Snapshot, Welcome};
    use sssync_core::{Digest, Put, QueryKey, Row, Rows, Version};
    let (n, deltas) = (size.client_rows, size.client_deltas);
    let args = list("big");
    let key = QueryKey::new("items", &args)?;
    let a = || serde_json::value::to_raw_value(&args);
    let row = |k: String| {
        let value =
            serde_json::json!({ "id": k, "list_id": "big", "title": "a row of reasonable length" });
        Row::from_serialize(k, &value)
    };
    let rows: Vec<Row> = (0..n)
        .map(|i| row(format!("r{i:06}")))
        .collect::<std::result::Result<_, _>>()?;
    let mut digest = Digest::of(&rows);
    let mut state = ClientState::new("perf-client");
    state.subscribe(key.clone());
    state.on_message(ServerMsg::Welcome(Welcome {
        protocol: sssync_core::protocol::PROTOCOL,
        epoch: sssync_core::Epoch("perf".into()),
        version: Version(1),
        last_seq: 0,
        limits: sssync_core::Limits::default(),
        proof: None,
        who: None,
    }));
    state.on_message(ServerMsg::Snapshot(Snapshot {
        q: "items".into(),
        a: a()?,
        v: Version(1),
        reset: false,
        digest,
        rows: rows.clone(),
    }));
    let mut alone = Rows::new(rows)?;
    let mut last: Arc<str> = format!("r{:06}", n - 1).into();
    // The first `deltas` with nothing pending, the rest with events of the client's own
    // pending (each predicting a row into the query).
    const PENDING: usize = 10;
    let with_pending = (deltas / 10).max(10);
    let mut msgs = Vec::with_capacity(deltas + with_pending);
    for d in 0..deltas + with_pending {
        let k = format!("x{d:06}");
        let put = row(k.clone())?;
        digest.add(&put);
        msgs.push(DeltaMsg {
            q: "items".into(),
            a: a()?,
            from: Version(1 + d as u64),
            to: Version(2 + d as u64),
            puts: vec![Put {
                row: put,
                after: Some(last.clone()),
            }],
            dels: vec![],
            digest,
        });
        last = k.into();
    }
    let plain: Vec<sssync_core::Delta> = msgs[..deltas].iter().map(DeltaMsg::delta).collect();
    state.drain_persist();
    let take = |state: &mut ClientState, msgs: Vec<DeltaMsg>| -> Result<Duration> {
        let (t, n) = (Instant::now(), msgs.len() as u32);
        for m in msgs {
            if !state.on_message(ServerMsg::Delta(m)).send.is_empty() {
                return Err("the client state asked for a resync".into());
            }
            // What both runtimes do after every message: hand the changes to their store.
            drop(state.drain_persist());
        }
        Ok(t.elapsed() / n)
    };
    let later = msgs.split_off(deltas);
    let ours = take(&mut state, msgs)?;
    for i in 0..PENDING {
        state
            .push(app::AddItem {
                uid: format!("p{i}"),
                id: format!("p{i}"),
                list_id: "big".into(),
                title: "pending".into(),
            })
            .map_err(|r| format!("the client refused an event: {r:?}"))?;
    }
    let pending = take(&mut state, later)?;
    let t = Instant::now();
    for d in &plain {
        sssync_core::delta::apply(&mut alone, d)?;
    }
    let theirs = t.elapsed() / deltas as u32;
    let shown = n + deltas + with_pending + PENDING;
    if state.view(&key).map(Rows::len) != Some(shown) || alone.len() != n + deltas {
        return Err("the deltas did not all apply".into());
    }
    Ok(Line {
        what: format!("client: one delta into a {n}-row query (client state)"),
        target: "- (no SPEC §6 target)",
        sssync: format!(
            "{:.1} µs CPU per delta ({:.0}x the rows alone); with {PENDING} events of its own \
             pending, each predicting a row into the query: {:.1} µs",
            us(ours),
            ours.as_secs_f64() / theirs.as_secs_f64().max(1e-9),
            us(pending)
        ),
        baseline: format!(
            "{:.2} µs (the same delta applied to the rows alone)",
            us(theirs)
        ),
        ratio: theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9),
        met: None,
    })
}

pub(super) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
