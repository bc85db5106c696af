//! One query key's group: its live result, its version and its subscribers, and how a
//! commit's changes patch or replace the result.

use super::outbox::Outbox;
use super::{DepKey, MAX_TOMBSTONES};
use crate::delta::Put;
use crate::protocol::{DeltaMsg, ServerMsg};
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::Version;
use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

pub(super) struct Group {
    pub(super) deps: Vec<DepKey>,
    /// What its query's authorization reads (a change re-checks every subscriber).
    pub(super) access: Vec<DepKey>,
    /// The canonical args, as sent on the wire.
    pub(super) args: Box<RawValue>,
    pub(super) rows: Rows,
    /// The size of `rows` as the result size limit counts it.
    pub(super) bytes: usize,
    /// The version of the last change of `rows` (deltas go from it).
    pub(super) version: Version,
    /// For each row, the version it last changed (or moved) at: resuming clients get the rows
    /// changed after their version.
    pub(super) changed_at: HashMap<Arc<str>, Version>,
    pub(super) tombstones: VecDeque<(Version, Arc<str>)>,
    /// Resumes from versions below this cannot be served (not remembered).
    pub(super) horizon: Version,
    pub(super) subs: HashMap<u64, Outbox>,
    /// Subscribers being resumed from the durable log off the tailer (see
    /// [`Hub::join`]): no delta goes to them yet, but a change of access checks them too.
    pub(super) joining: HashMap<u64, Outbox>,
    pub(super) idle_since: Option<Instant>,
    /// Removed from the hub (failed or evicted): nobody may subscribe to it any more.
    pub(super) dead: bool,
}

/// What [`Hub::patch`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Patched {
    /// Patched; the delta was queued for this many subscribers.
    Done(usize),
    /// No live group for the key.
    NoGroup,
    /// The patch cannot tell the new result: read it again in full.
    Rerun,
    /// The result would be this many bytes, over the limit: not patched.
    TooLarge(usize),
    /// The changed rows contradicted each other and the result was left partly patched: the
    /// caller fails the key (see [`Patch::Inconsistent`](super::incremental::Patch)).
    Inconsistent,
}

impl Group {
    /// The group's rows changed (they are `self.rows` now) at `version` by `puts` and `dels`:
    /// remembers what changed when (for resumes), queues the one delta for every subscriber.
    /// Returns the number of subscribers it was queued for.
    pub(super) fn changed(
        &mut self,
        key: &QueryKey,
        puts: Vec<Put>,
        dels: Vec<Arc<str>>,
        version: Version,
    ) -> usize {
        let g = self;
        for p in &puts {
            g.changed_at.insert(p.row.key.clone(), version);
        }
        for k in &dels {
            g.changed_at.remove(k);
            g.tombstones.push_back((version, k.clone()));
        }
        while g.tombstones.len() > MAX_TOMBSTONES {
            if let Some((v, _)) = g.tombstones.pop_front() {
                g.horizon = g.horizon.max(v);
            }
        }
        let msg: Utf8Bytes = ServerMsg::Delta(DeltaMsg {
            q: key.name().to_owned(),
            a: g.args.clone(),
            from: g.version,
            to: version,
            puts,
            dels,
            digest: g.rows.digest(),
        })
        .to_json()
        .into();
        g.version = version;
        let mut sent = 0;
        g.subs.retain(|_, o| {
            if o.send(msg.clone()) {
                sent += 1;
            }
            !o.is_closed()
        });
        if g.subs.is_empty() && g.joining.is_empty() && g.idle_since.is_none() {
            g.idle_since = Some(Instant::now());
        }
        sent
    }
}
