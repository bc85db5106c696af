//! The engine's shared state ([`Inner`]) and what its parts send each other: the commands the
//! writer takes ([`Cmd`]), the subscribers the tailer opens ([`Open`]), and where an event's
//! outcome goes ([`Reply`]). A leaf of the server: the engine, the writer, the tailer and the
//! transport all use it; it uses none of them.

use super::error::EngineError;
use super::hub::{DepKey, Hub, Outbox};
use super::schema::{
    Access, BoxFuture, Dependency, IdentifyError, Identity, QueryCtx, QueryEntry, Registry,
};
use super::store::{Store, StoreError};
use crate::protocol::{Limits, Rejection, ServerMsg};
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::{Epoch, Version};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How a request becomes an [`Identity`]: the application's own authentication, over the
/// request's parts (a session cookie, a bearer token), or why it could not tell. See
/// [`EngineBuilder::identify`].
pub type Identify = Arc<
    dyn Fn(&axum::http::request::Parts) -> BoxFuture<'static, Result<Identity, IdentifyError>>
        + Send
        + Sync,
>;
/// Live connections that ask the application again who they are at once, at most (a sign-in
/// makes every connection ask: a few at a time, so the application's session reads do not take
/// the pool the writer and the tailer share).
pub(super) const REIDENTIFYING: usize = 2;
/// Log reads for resuming subscribers at once, at most (off the tailer: a crowd of clients
/// resuming on a fresh instance must leave pool connections to the writer and the tailer).
pub(super) const RESUMING: usize = 2;

/// Where the writer is in a batch: the points at which a fault-injection test can stop (or
/// kill) the process. In production nothing is installed and nothing happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultPoint {
    /// Every handler of the batch has run; the transaction is not committed yet.
    BeforeCommit,
    /// The batch is committed (durable); nothing is fanned out or acknowledged yet.
    AfterCommit,
    /// The deltas are queued; the acknowledgements are not.
    BeforeAcks,
}

/// A function the writer calls at each [`FaultPoint`] (see [`EngineBuilder::fault_hook`]).
pub type FaultHook = Arc<dyn Fn(FaultPoint) + Send + Sync>;

/// How the writer retries a batch the database refused for now (busy, full, I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRetry {
    /// Attempts of one batch, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; it quadruples for each further one.
    pub backoff: Duration,
    /// What the clients are told to wait before resending, after a batch's last attempt
    /// failed; it doubles with each batch that fails in a row (at most 30 s).
    pub resend_after: Duration,
}

impl Default for WriteRetry {
    fn default() -> Self {
        WriteRetry {
            attempts: 4,
            backoff: Duration::from_millis(25),
            resend_after: Duration::from_millis(500),
        }
    }
}

/// Where an event's outcome goes.
pub(crate) enum Reply {
    /// A connection's outbox; the event counts as in flight on it until it is answered (or
    /// dropped unanswered).
    Outbox(Outbox, super::hub::InFlight),
    Once(oneshot::Sender<ServerMsg>),
}

impl Reply {
    pub(crate) fn send(self, msg: ServerMsg) {
        match self {
            Reply::Outbox(o, in_flight) => {
                // No longer in flight before its answer is queued: the queued answer wakes the
                // connection, which then sees it is not owed any more (were it still counted,
                // a busy connection could stop reading with nothing left to wake it).
                in_flight.answered();
                o.send_answer(&msg);
            }
            Reply::Once(tx) => {
                let _ = tx.send(msg);
            }
        }
    }
}

pub(crate) struct EventCmd {
    pub(crate) client_id: Arc<str>,
    /// Who sent it; a client id is bound to the identity that first used it.
    pub(crate) identity: Identity,
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) args: Box<RawValue>,
    pub(crate) reply: Reply,
    /// Refused before it reached the writer (too large): recorded as a rejection, so its seq
    /// is used and the client's later events are not stuck behind it.
    pub(crate) refused: Option<Rejection>,
    /// Whether a rejection uses the seq (always, but for an idempotency key: a resubmitted
    /// form whose first post was refused must be refused again, not acknowledged as done).
    pub(crate) record_rejection: bool,
}

pub(crate) enum Cmd {
    Event(EventCmd),
    /// A client's hello says it settled seqs up to `to` that the database does not have (a
    /// restored backup): its `last_seq` moves up to `to`.
    FastForward {
        client_id: Arc<str>,
        /// The identity whose hello asked (only the client id's owner's moves it).
        owner: Option<String>,
        to: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The tailer saw changes written outside the engine: give them a version.
    Seal,
    /// A client proved that the database lost history it saw (a restored backup): give it a
    /// new epoch, unless that was done already (the epoch is no longer `seen`).
    NewEpoch {
        seen: Epoch,
        reply: oneshot::Sender<Result<Epoch, StoreError>>,
    },
}

pub(crate) struct Inner<S: Store> {
    pub(crate) store: S,
    pub(crate) registry: Registry<S::Db>,
    pub(crate) hub: Hub,
    /// The database's history; connections watch it and close when it is sent (a new epoch,
    /// or [`Inner::close_connections`]).
    pub(crate) epoch: watch::Sender<Epoch>,
    pub(crate) limits: Limits,
    pub(super) next_conn: AtomicU64,
    /// Set to true when the engine shuts down: connections close.
    pub(crate) stop: watch::Sender<bool>,
    /// Rings the tailer: a commit to read.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// The key of the version proofs.
    pub(super) secret: String,
    /// Subscribers for the tailer to open.
    pub(crate) opens: mpsc::Sender<Open>,
    pub(crate) group_ttl: Duration,
    pub(crate) retry: WriteRetry,
    /// Change-log versions kept (the retention horizon trails the version by this much).
    pub(crate) log_keep: u64,
    pub(super) fault: Option<FaultHook>,
    pub(super) identify: Option<Identify>,
    /// Bumped when the application says identities may have changed: every connection of
    /// this instance asks again who it is.
    pub(crate) reidentify: watch::Sender<u64>,
    pub(crate) reidentify_every: Duration,
    /// Permits to ask again who a live connection is ([`REIDENTIFYING`]).
    pub(crate) reidentifying: tokio::sync::Semaphore,
    /// Permits to read the durable log for resuming subscribers ([`RESUMING`]).
    pub(crate) resuming: tokio::sync::Semaphore,
    /// The incremental plans of the declarative queries that passed the checks, by name.
    pub(crate) plans: std::collections::HashMap<&'static str, super::incremental::Plan>,
}

/// A subscriber for a key this instance has no live result for, or that resumes from a version
/// it does not remember.
pub(crate) struct Open {
    pub(crate) key: QueryKey,
    pub(crate) outbox: Outbox,
    pub(crate) client_v: Option<Version>,
}

impl<S: Store> Inner<S> {
    /// Whether `identity` may read `key` (always, for a public query), in a read transaction
    /// of its own.
    pub(crate) async fn authorize(
        &self,
        key: &QueryKey,
        identity: &Identity,
    ) -> Result<(), EngineError> {
        let entry = self.query_entry(key)?;
        if entry.access == Access::Public {
            return Ok(());
        }
        let mut conn = self.store.pool().acquire().await?;
        super::store::begin_read::<S>(&mut conn).await?;
        let ctx = QueryCtx {
            identity: identity.clone(),
        };
        let result = (entry.authorize)(&mut conn, &ctx, key.args_json()).await;
        if S::rollback(&mut conn).await.is_err() {
            conn.close_on_drop();
        }
        result.map_err(EngineError::from)
    }

    /// The context a key's query runs with: its identity when its result depends on it,
    /// anonymous otherwise.
    pub(crate) fn run_ctx(key: &QueryKey) -> QueryCtx {
        QueryCtx {
            identity: Identity(key.scope().flatten().map(str::to_owned)),
        }
    }

    /// Closes every connection of this instance (they watch the epoch): their clients connect
    /// again and resume each query from the log, or with a reset snapshot.
    pub(crate) fn close_connections(&self) {
        self.epoch.send_modify(|_| {});
    }

    pub(crate) fn fault(&self, at: FaultPoint) {
        if let Some(hook) = &self.fault {
            hook(at);
        }
    }
}

impl<S: Store> Inner<S> {
    /// A fresh result, checked against the result size limit.
    pub(crate) fn result(&self, rows: Vec<crate::row::Row>) -> Result<Rows, EngineError> {
        let bytes: usize = rows.iter().map(super::hub::row_bytes).sum();
        if bytes > self.limits.max_result_bytes {
            return Err(EngineError::TooLarge(bytes, self.limits.max_result_bytes));
        }
        Rows::new(rows).map_err(|e| EngineError::BadArgs(e.to_string()))
    }

    /// The dependencies of `key`, as the change log records them.
    pub(crate) fn deps(&self, key: &QueryKey) -> Result<Vec<DepKey>, EngineError> {
        let entry = self.query_entry(key)?;
        Ok(Self::dep_keys((entry.deps)(key.args_json())?))
    }

    fn query_entry(&self, key: &QueryKey) -> Result<&QueryEntry<S::Db>, EngineError> {
        self.registry
            .queries
            .get(key.name())
            .ok_or_else(|| EngineError::UnknownQuery(key.name().to_owned()))
    }

    /// Dependencies as the change log records them (the partition as the triggers write it).
    fn dep_keys(deps: Vec<Dependency>) -> Vec<DepKey> {
        deps.into_iter()
            .map(|d| DepKey {
                table: d.table,
                part: d.partition.as_ref().map(S::partition_text),
            })
            .collect()
    }

    /// Whether `key`'s subscribers are checked (its query is not public).
    pub(crate) fn checked(&self, key: &QueryKey) -> bool {
        self.registry
            .queries
            .get(key.name())
            .is_some_and(|e| e.access != Access::Public)
    }

    /// The tables `key`'s authorization reads, as the change log records them.
    pub(crate) fn access_deps(&self, key: &QueryKey) -> Result<Vec<DepKey>, EngineError> {
        let entry = self.query_entry(key)?;
        if entry.access == Access::Public {
            return Ok(Vec::new());
        }
        Ok(Self::dep_keys((entry.access_deps)(key.args_json())?))
    }

    /// Runs a query in a read transaction together with the version it saw.
    pub(super) async fn read(&self, key: &QueryKey) -> Result<(Version, Rows), EngineError> {
        let ctx = &Self::run_ctx(key);
        let entry = self.query_entry(key)?;
        let mut conn = self.store.pool().acquire().await?;
        super::store::begin_read::<S>(&mut conn).await?;
        let result = async {
            let v = S::version(&mut conn).await?;
            let rows = (entry.run)(&mut conn, ctx, key.args_json()).await?;
            Ok::<_, EngineError>((v, rows))
        }
        .await;
        // A read transaction: ending it either way changes nothing.
        if S::rollback(&mut conn).await.is_err() {
            conn.close_on_drop();
        }
        let (v, rows) = result?;
        Ok((v, self.result(rows)?))
    }
}
