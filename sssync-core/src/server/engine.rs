//! The engine: the registry, the store, the hub, and the one task that writes.
//!
//! All writes go through one task per engine (the writer): it takes every event waiting (up to
//! a batch size), applies them in one transaction, one version for the batch, each event inside
//! a savepoint with its client's `last_seq` (invariant 5), commits, re-runs each affected query
//! once (invariant 10), queues the deltas, and only then the acknowledgements (so a client has
//! every delta up to an ack's version before the ack: invariant 6). Creating a group (the first
//! subscriber of a key) goes through the same task, so no commit can slip between a group's
//! first result and its first delta.

use super::Table;
use super::hub::{Hub, Outbox, Subscribed};
use super::schema::{
    Dependency, EventCtx, EventError, QueryCtx, Registry, RunError, ServerEvent, ServerQuery,
};
use super::store::{Store, StoreError};
use crate::protocol::{Ack, ErrorCode, Gap, Limits, Reject, Rejection, ServerMsg};
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::{Epoch, Version};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Events applied in one transaction at most.
const MAX_BATCH: usize = 512;
/// How long a group nobody subscribes to is kept (for clients that reconnect).
const IDLE_GROUP: Duration = Duration::from_secs(60);
/// Change-log versions kept.
const CHANGES_KEPT: u64 = 100_000;

/// Why the engine could not start or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The database failed.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// No query of that name is registered.
    #[error("unknown query {0:?}")]
    UnknownQuery(String),
    /// The args do not fit the query.
    #[error("bad args: {0}")]
    BadArgs(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

impl From<RunError> for EngineError {
    fn from(e: RunError) -> EngineError {
        match e {
            RunError::BadArgs(m) | RunError::Encode(m) => EngineError::BadArgs(m),
            RunError::Storage(e) => EngineError::Storage(e),
        }
    }
}

/// Where an event's outcome goes.
pub(crate) enum Reply {
    Outbox(Outbox),
    Once(oneshot::Sender<ServerMsg>),
}

impl Reply {
    /// The event was not applied and its seq not used: a connection is closed (its client
    /// reconnects and resends its pending events); an in-process caller gets an error.
    fn retry(self) {
        match self {
            Reply::Outbox(o) => o.fail(),
            Reply::Once(tx) => {
                let _ = tx.send(ServerMsg::error(
                    ErrorCode::Internal,
                    "the server could not apply the event; nothing was changed, try again",
                ));
            }
        }
    }

    fn send(self, msg: ServerMsg) {
        match self {
            Reply::Outbox(o) => {
                o.send_msg(&msg);
            }
            Reply::Once(tx) => {
                let _ = tx.send(msg);
            }
        }
    }
}

pub(crate) struct EventCmd {
    pub(crate) client_id: Arc<str>,
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) args: Box<RawValue>,
    pub(crate) reply: Reply,
    /// Refused before it reached the writer (too large): recorded as a rejection, so its seq
    /// is used and the client's later events are not stuck behind it.
    pub(crate) refused: Option<Rejection>,
}

pub(crate) enum Cmd {
    Event(EventCmd),
    Open {
        key: QueryKey,
        outbox: Outbox,
        client_v: Option<Version>,
    },
}

pub(crate) struct Inner<S: Store> {
    pub(crate) store: S,
    pub(crate) registry: Registry<S::Db>,
    pub(crate) hub: Hub,
    pub(crate) epoch: Epoch,
    pub(crate) limits: Limits,
    next_conn: AtomicU64,
    /// Set to true when the engine shuts down: connections close.
    pub(crate) stop: watch::Sender<bool>,
}

/// A running sync engine. Cheap to clone; every clone is the same engine.
pub struct Engine<S: Store> {
    pub(crate) inner: Arc<Inner<S>>,
    pub(crate) cmds: mpsc::Sender<Cmd>,
}

impl<S: Store> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
            cmds: self.cmds.clone(),
        }
    }
}

/// Declares the tables, queries and events, then starts the engine.
pub struct EngineBuilder<S: Store> {
    store: S,
    tables: Vec<Table>,
    registry: Registry<S::Db>,
    limits: Limits,
}

impl<S: Store> Engine<S> {
    /// Starts declaring an engine over `store`.
    pub fn builder(store: S) -> EngineBuilder<S> {
        EngineBuilder {
            store,
            tables: Vec::new(),
            registry: Registry::default(),
            limits: Limits::default(),
        }
    }

    /// The database's epoch.
    pub fn epoch(&self) -> &Epoch {
        &self.inner.epoch
    }

    /// The database version every live query reflects.
    pub fn current_version(&self) -> Version {
        self.inner.hub.processed()
    }

    /// The bounds this engine enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The store (its pool serves the application's own reads).
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// How many query keys are live and how many subscriptions they have.
    pub fn counts(&self) -> (usize, usize) {
        self.inner.hub.counts()
    }

    /// Closes every connection and stops the writer (events still queued are not applied and
    /// were not acknowledged; their clients resend them).
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The key of query `name` with `args_json`, checked against the registry.
    pub(crate) fn key(&self, name: &str, args_json: &str) -> Result<QueryKey, EngineError> {
        let entry = self
            .inner
            .registry
            .queries
            .get(name)
            .ok_or_else(|| EngineError::UnknownQuery(name.to_owned()))?;
        let key = QueryKey::from_json(name, args_json)
            .map_err(|e| EngineError::BadArgs(e.to_string()))?;
        (entry.deps)(key.args_json())?;
        Ok(key)
    }

    /// Subscribes a connection to `key` (creating its group through the writer if needed).
    pub(crate) async fn subscribe(
        &self,
        key: QueryKey,
        outbox: &Outbox,
        client_v: Option<Version>,
    ) -> Result<(), EngineError> {
        match self.inner.hub.subscribe(&key, outbox, client_v) {
            Subscribed::Yes => Ok(()),
            Subscribed::NoGroup => self
                .cmds
                .send(Cmd::Open {
                    key,
                    outbox: outbox.clone(),
                    client_v,
                })
                .await
                .map_err(|_| EngineError::Stopped),
        }
    }

    /// Queues an event for the writer.
    pub(crate) async fn submit(&self, cmd: EventCmd) -> Result<(), EngineError> {
        self.cmds
            .send(Cmd::Event(cmd))
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// Applies one event from in-process code (a server function, a test) and waits for its
    /// outcome: `ack`, `reject` or `gap`.
    pub async fn apply_event(
        &self,
        client_id: &str,
        seq: u64,
        name: &str,
        args_json: &str,
    ) -> Result<ServerMsg, EngineError> {
        let args = RawValue::from_string(args_json.to_owned())
            .map_err(|e| EngineError::BadArgs(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.submit(EventCmd {
            client_id: client_id.into(),
            seq,
            name: name.to_owned(),
            args,
            reply: Reply::Once(tx),
            refused: None,
        })
        .await?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Applies an event that comes from the server itself (a plain form post, a job): no client
    /// seq, so no duplicate detection; otherwise like any event (same transaction, same
    /// fan-out). Answers `ack` (seq 0) or `reject`.
    pub async fn apply_server_event(
        &self,
        name: &str,
        args_json: &str,
    ) -> Result<ServerMsg, EngineError> {
        self.apply_event("", 0, name, args_json).await
    }

    /// The rows of query `name` with `args_json` at one version: from the live group when one
    /// exists (no query runs), else read in one transaction with the version.
    pub async fn snapshot_json(
        &self,
        name: &str,
        args_json: &str,
        ctx: &QueryCtx,
    ) -> Result<(QueryKey, Version, Rows), EngineError> {
        let key = self.key(name, args_json)?;
        if let Some((v, rows)) = self.inner.hub.current(&key) {
            return Ok((key, v, rows));
        }
        let (v, rows) = self.inner.read(&key, ctx).await?;
        Ok((key, v, rows))
    }

    /// The typed rows of query `Q` with `args` and their version (for server rendering).
    pub async fn snapshot<Q: ServerQuery<S::Db>>(
        &self,
        args: &Q::Args,
        ctx: &QueryCtx,
    ) -> Result<(Version, Vec<Q::Row>), EngineError> {
        let args_json =
            serde_json::to_string(args).map_err(|e| EngineError::BadArgs(e.to_string()))?;
        let (_, v, rows) = self.snapshot_json(Q::NAME, &args_json, ctx).await?;
        let typed = rows
            .rows()
            .iter()
            .map(|r| r.decode::<Q::Row>())
            .collect::<Result<_, _>>()
            .map_err(|e| EngineError::BadArgs(e.to_string()))?;
        Ok((v, typed))
    }
}

impl<S: Store> Inner<S> {
    /// Runs a query in a read transaction together with the version it saw.
    async fn read(&self, key: &QueryKey, ctx: &QueryCtx) -> Result<(Version, Rows), EngineError> {
        let entry = self
            .registry
            .queries
            .get(key.name())
            .ok_or_else(|| EngineError::UnknownQuery(key.name().to_owned()))?;
        let mut conn = self.store.pool().acquire().await?;
        S::begin_read(&mut conn).await?;
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
        let rows = Rows::new(rows).map_err(|e| EngineError::BadArgs(e.to_string()))?;
        Ok((v, rows))
    }

    /// Re-runs a query after a commit (no transaction needed: the writer is the only writer).
    async fn rerun(&self, key: &QueryKey) -> Result<Rows, EngineError> {
        let entry = &self.registry.queries[key.name()];
        let mut conn = self.store.pool().acquire().await?;
        let rows = (entry.run)(&mut conn, &QueryCtx::default(), key.args_json()).await?;
        Rows::new(rows).map_err(|e| EngineError::BadArgs(e.to_string()))
    }
}

impl<S: Store> EngineBuilder<S> {
    /// Declares a table queries read and events write: the engine records its changes.
    pub fn table(mut self, table: Table) -> Self {
        self.tables.push(table);
        self
    }

    /// Registers a query.
    pub fn query<Q: ServerQuery<S::Db>>(mut self) -> Self {
        self.registry.add_query::<Q>();
        self
    }

    /// Registers an event.
    pub fn event<E: ServerEvent<S::Db>>(mut self) -> Self {
        self.registry.add_event::<E>();
        self
    }

    /// Replaces the default bounds.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Creates the engine's tables, installs the change triggers, starts the writer.
    pub async fn start(self) -> Result<Engine<S>, EngineError> {
        let (epoch, version) = self.store.init().await?;
        for t in &self.tables {
            self.store.install_table(t).await?;
        }
        let (stop, _) = watch::channel(false);
        let hub = Hub::default();
        hub.set_processed(version);
        let inner = Arc::new(Inner {
            store: self.store,
            registry: self.registry,
            hub,
            epoch,
            limits: self.limits,
            next_conn: AtomicU64::new(1),
            stop,
        });
        let (cmds, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer(inner.clone(), rx, version));
        Ok(Engine { inner, cmds })
    }
}

/// What happened to one event of a batch.
enum Outcome {
    Applied,
    /// Not applied, seq not used: the sender must resend it (its connection is closed).
    Retry,
    Duplicate,
    Gap(u64),
    Rejected(Rejection),
}

async fn writer<S: Store>(inner: Arc<Inner<S>>, mut rx: mpsc::Receiver<Cmd>, mut version: Version) {
    let mut stop = inner.stop.subscribe();
    let mut janitor = tokio::time::interval(Duration::from_secs(5));
    janitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batches: u64 = 0;
    loop {
        let first = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(c) => c,
                None => return,
            },
            _ = stop.changed() => return,
            _ = janitor.tick() => {
                inner.hub.evict_idle(IDLE_GROUP);
                continue;
            }
        };
        // Everything already waiting joins the batch (bursts coalesce into one commit).
        let mut events = Vec::new();
        let mut opens = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Event(e) => events.push(e),
                Cmd::Open {
                    key,
                    outbox,
                    client_v,
                } => opens.push((key, outbox, client_v)),
            }
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // Opens first: a client that subscribed before sending events gets the key's rows
        // before the acks of those events (no flicker, invariant 6).
        for (key, outbox, client_v) in opens {
            open_group(&inner, key, &outbox, client_v).await;
        }
        if !events.is_empty() {
            if let Some(v) = apply_batch(&inner, events, version).await {
                version = v;
            }
            batches += 1;
            if batches.is_multiple_of(1000) && version.0 > CHANGES_KEPT {
                let _ = inner
                    .store
                    .prune_changes(Version(version.0 - CHANGES_KEPT))
                    .await;
            }
        }
    }
}

/// Creates the group of `key` (first subscriber) and subscribes `outbox`.
async fn open_group<S: Store>(
    inner: &Inner<S>,
    key: QueryKey,
    outbox: &Outbox,
    client_v: Option<Version>,
) {
    if let Subscribed::Yes = inner.hub.subscribe(&key, outbox, client_v) {
        return; // another subscriber created it first
    }
    let deps: Vec<Dependency> = match (inner.registry.queries[key.name()].deps)(key.args_json()) {
        Ok(d) => d,
        Err(e) => {
            outbox.send_msg(&ServerMsg::error(ErrorCode::BadArgs, e.to_string()));
            return;
        }
    };
    match inner.read(&key, &QueryCtx::default()).await {
        Ok((v, rows)) => {
            inner.hub.create(&key, deps, rows, v);
            inner.hub.subscribe(&key, outbox, client_v);
        }
        Err(e) => {
            tracing::error!(%key, error = %e, "query failed");
            outbox.send_msg(&ServerMsg::error(
                ErrorCode::Internal,
                format!("query {key} failed: {e}"),
            ));
        }
    }
}

/// Applies a batch; returns the new version if it committed.
async fn apply_batch<S: Store>(
    inner: &Inner<S>,
    events: Vec<EventCmd>,
    version: Version,
) -> Option<Version> {
    match apply_in_transaction(inner, &events).await {
        Ok((outcomes, bumped)) => {
            let now = bumped.unwrap_or(version);
            if let Some(v) = bumped {
                fan_out(inner, v).await;
            }
            for (e, outcome) in events.into_iter().zip(outcomes) {
                let msg = match outcome {
                    Outcome::Retry => {
                        e.reply.retry();
                        continue;
                    }
                    Outcome::Applied => ServerMsg::Ack(Ack {
                        seq: e.seq,
                        v: now,
                        dup: false,
                    }),
                    Outcome::Duplicate => ServerMsg::Ack(Ack {
                        seq: e.seq,
                        v: now,
                        dup: true,
                    }),
                    Outcome::Gap(expected) => ServerMsg::Gap(Gap {
                        seq: e.seq,
                        expected,
                    }),
                    Outcome::Rejected(error) => ServerMsg::Reject(Reject {
                        seq: e.seq,
                        v: now,
                        error,
                    }),
                };
                e.reply.send(msg);
            }
            Some(now)
        }
        Err(err) => {
            tracing::error!(error = %err, "write batch failed; rolled back");
            for e in events {
                e.reply.send(ServerMsg::error(
                    ErrorCode::Internal,
                    format!(
                        "the server could not apply event {}: {err}; resend it",
                        e.seq
                    ),
                ));
            }
            None
        }
    }
}

/// The transaction of one batch: per event, the seq check, the handler in a savepoint, and the
/// client's `last_seq`, all committed together.
async fn apply_in_transaction<S: Store>(
    inner: &Inner<S>,
    events: &[EventCmd],
) -> Result<(Vec<Outcome>, Option<Version>), StoreError> {
    let mut conn = inner.store.pool().acquire().await?;
    S::begin(&mut conn).await?;
    let result = async {
        let mut last: HashMap<Arc<str>, u64> = HashMap::new();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut bumped: Option<Version> = None;
        for e in events {
            // Server-origin events (no client, no seq) skip the bookkeeping.
            let sequenced = !e.client_id.is_empty();
            if sequenced {
                let last_seq = match last.get(&e.client_id) {
                    Some(&s) => s,
                    None => S::read_last_seq(&mut conn, &e.client_id).await?,
                };
                last.insert(e.client_id.clone(), last_seq);
                if e.seq <= last_seq {
                    outcomes.push(Outcome::Duplicate);
                    continue;
                }
                if e.seq > last_seq + 1 {
                    outcomes.push(Outcome::Gap(last_seq + 1));
                    continue;
                }
            }
            let outcome = match inner.registry.events.get(e.name.as_str()) {
                _ if e.refused.is_some() => Outcome::Rejected(e.refused.clone().expect("checked")),
                None => Outcome::Rejected(Rejection::new(
                    "unknown_event",
                    format!("no event named {:?} is registered", e.name),
                )),
                Some(entry) => {
                    S::savepoint(&mut conn).await?;
                    let bumps_here = bumped.is_none();
                    if bumps_here {
                        bumped = Some(S::bump_version(&mut conn).await?);
                    }
                    let ctx = EventCtx {
                        client_id: e.client_id.to_string(),
                        seq: e.seq,
                    };
                    match (entry.apply)(&mut conn, &ctx, e.args.get()).await {
                        Ok(()) => {
                            S::release(&mut conn).await?;
                            Outcome::Applied
                        }
                        Err(EventError::Rejected(r)) => {
                            S::rollback_to_savepoint(&mut conn).await?;
                            if bumps_here {
                                bumped = None;
                            }
                            Outcome::Rejected(r)
                        }
                        // A constraint the event's data broke is the event's fault: refuse it
                        // like a rejection (else a resend would fail the batch forever).
                        Err(EventError::Storage(err)) => match constraint(&err) {
                            Some(rejection) => {
                                S::rollback_to_savepoint(&mut conn).await?;
                                if bumps_here {
                                    bumped = None;
                                }
                                Outcome::Rejected(rejection)
                            }
                            // Anything else: undo this event only and have it resent later;
                            // if even that fails, the whole batch rolls back.
                            None => {
                                tracing::error!(error = %err, event = %e.name, "handler failed");
                                S::rollback_to_savepoint(&mut conn).await?;
                                if bumps_here {
                                    bumped = None;
                                }
                                outcomes.push(Outcome::Retry);
                                continue;
                            }
                        },
                    }
                }
            };
            if sequenced {
                S::write_last_seq(&mut conn, &e.client_id, e.seq).await?;
                last.insert(e.client_id.clone(), e.seq);
            }
            outcomes.push(outcome);
        }
        Ok((outcomes, bumped))
    }
    .await;
    match result {
        Ok(r) => match S::commit(&mut conn).await {
            Ok(()) => Ok(r),
            Err(e) => {
                if S::rollback(&mut conn).await.is_err() {
                    conn.close_on_drop();
                }
                Err(e)
            }
        },
        Err(e) => {
            if S::rollback(&mut conn).await.is_err() {
                conn.close_on_drop();
            }
            Err(e)
        }
    }
}

/// The rejection for a database constraint violation, if `err` is one.
fn constraint(err: &sqlx::Error) -> Option<Rejection> {
    use sqlx::error::ErrorKind;
    let db = err.as_database_error()?;
    let code = match db.kind() {
        ErrorKind::UniqueViolation => "unique_violation",
        ErrorKind::ForeignKeyViolation => "foreign_key_violation",
        ErrorKind::NotNullViolation => "not_null_violation",
        ErrorKind::CheckViolation => "check_violation",
        _ => return None,
    };
    Some(Rejection::new(code, db.message().to_owned()))
}

/// After a commit at `v`: re-run each affected group once and queue its delta.
async fn fan_out<S: Store>(inner: &Inner<S>, v: Version) {
    let changes = {
        let conn = inner.store.pool().acquire().await;
        match conn {
            Ok(mut c) => S::changes_at(&mut c, v).await,
            Err(e) => Err(e),
        }
    };
    match changes {
        Ok(changes) => {
            for key in inner.hub.affected(&changes) {
                match inner.rerun(&key).await {
                    Ok(rows) => {
                        inner.hub.update(&key, rows, v);
                    }
                    Err(e) => {
                        tracing::error!(%key, error = %e, "re-run failed; dropping the query");
                        inner.hub.fail(&key);
                    }
                }
            }
        }
        Err(e) => {
            // Which queries changed is unknown: none may stay silently stale.
            tracing::error!(error = %e, "reading the change log failed; dropping every query");
            inner.hub.fail_all();
        }
    }
    inner.hub.set_processed(v);
}
