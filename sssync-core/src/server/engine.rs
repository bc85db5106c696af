//! The engine: the registry, the store, the hub, and two tasks: the writer (`writer/`), which
//! applies events in batches, and the tailer (`tailer/`), which follows the durable change
//! log and fans every commit out, whoever made it.

use super::Table;
use super::cmd::{
    Cmd, EventCmd, FaultHook, Identify, Inner, Open, REIDENTIFYING, RESUMING, WriteRetry,
};
use super::error::EngineError;
use super::hub::{ChangeWatch, Counts, Hub, Outbox, Subscribed};
use super::schema::{
    Access, BoxFuture, Identified, IdentifyError, Identity, QueryCtx, Registry, ServerEvent,
    ServerQuery,
};
use super::store::{Store, StoreError};
use crate::protocol::Limits;
use crate::query::QueryKey;
use crate::row::Rows;
use crate::version::{Epoch, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a group nobody subscribes to is kept (for clients that reconnect), by default.
const IDLE_GROUP: Duration = Duration::from_secs(60);
/// How often a live connection asks the application again who it is, by default.
const REIDENTIFY_EVERY: Duration = Duration::from_secs(60);

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
    group_ttl: Duration,
    retry: WriteRetry,
    log_keep: u64,
    fault: Option<FaultHook>,
    identify: Option<Identify>,
    reidentify_every: Duration,
    /// Why the declarations did not register (reported by `start`).
    declared_error: Option<super::declared::DeclarationError>,
}

impl<S: Store> Engine<S> {
    /// Starts declaring an engine over `store`.
    pub fn builder(store: S) -> EngineBuilder<S> {
        EngineBuilder {
            store,
            tables: Vec::new(),
            registry: Registry::default(),
            limits: Limits::default(),
            group_ttl: IDLE_GROUP,
            retry: WriteRetry::default(),
            log_keep: super::tailer::CHANGES_KEPT,
            fault: None,
            identify: None,
            reidentify_every: REIDENTIFY_EVERY,
            declared_error: None,
        }
    }

    /// Who sent a request, as the application's [`EngineBuilder::identify`] says (anonymous
    /// when none is installed), or why it could not tell. sssync calls it on every path;
    /// server functions and pages
    /// use it through `sssync-leptos`.
    pub async fn identify(
        &self,
        parts: &axum::http::request::Parts,
    ) -> Result<Identity, IdentifyError> {
        match &self.inner.identify {
            Some(f) => f(parts).await,
            None => Ok(Identity::anonymous()),
        }
    }

    /// Tells every connection of this instance to ask the application again who it is (call
    /// it after a sign-out, or anything else that changes what a session's cookie means): a
    /// connection whose identity changed gets `identity_changed` and closes, and its client
    /// drops what it held of the old identity. Connections on other instances ask again at
    /// their next periodic check ([`EngineBuilder::reidentify_every`]).
    pub fn identities_changed(&self) {
        self.inner
            .reidentify
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The opaque tag of `identity` that clients see in their welcome (and a page can embed):
    /// `None` for anonymous.
    pub fn identity_tag(&self, identity: &Identity) -> Option<String> {
        self.inner.identity_tag(identity)
    }

    /// The database's epoch (its history; it changes when the engine finds the database was
    /// restored from an earlier copy).
    pub fn epoch(&self) -> Epoch {
        self.inner.epoch.borrow().clone()
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

    /// Whether the declarative query `name` is maintained incrementally (its changes patch its
    /// results), rather than re-run and diffed: false for a query with its own SQL, and for a
    /// declarative one whose table failed the checks at start (the log says why) or whose rows'
    /// keys turned out not to be its key column's text.
    pub fn is_incremental(&self, name: &str) -> bool {
        self.inner
            .plans
            .get(name)
            .is_some_and(super::incremental::Plan::is_sound)
    }

    /// How many query keys are live and how many subscriptions they have.
    pub fn counts(&self) -> Counts {
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

    /// The key of query `name` with `args_json` as `identity` reads it, checked against the
    /// registry (scoped to the identity when the query's result depends on it).
    pub(crate) fn key(
        &self,
        name: &str,
        args_json: &str,
        identity: &Identity,
    ) -> Result<QueryKey, EngineError> {
        let entry = self
            .inner
            .registry
            .queries
            .get(name)
            .ok_or_else(|| EngineError::UnknownQuery(name.to_owned()))?;
        let key = QueryKey::from_json(name, args_json)
            .map_err(|e| EngineError::BadArgs(e.to_string()))?;
        (entry.deps)(key.args_json())?;
        (entry.access_deps)(key.args_json())?;
        Ok(match entry.access {
            Access::PerIdentity => key.scoped(identity.id()),
            Access::Public | Access::Checked => key,
        })
    }

    /// Subscribes a connection to `key` (creating its group through the writer if needed).
    pub(crate) async fn subscribe(
        &self,
        key: QueryKey,
        outbox: &Outbox,
        client_v: Option<Version>,
    ) -> Result<(), EngineError> {
        outbox.want(&key);
        // A checked key's subscriber is authorized by the tailer, in the same snapshot as the
        // commits it fans out: no change of access can slip between the check and the rows.
        let found = if self.inner.checked(&key) {
            Subscribed::NoGroup
        } else {
            self.inner.hub.subscribe(&key, outbox, client_v)
        };
        match found {
            Subscribed::Yes => Ok(()),
            // The tailer opens the group, or resumes the client from the log.
            Subscribed::NoGroup | Subscribed::Behind(_) => self
                .inner
                .opens
                .send(Open {
                    key,
                    outbox: outbox.clone(),
                    client_v,
                })
                .await
                .map_err(|_| EngineError::Stopped),
        }
    }

    /// Ends a connection's subscription to `key` (also one whose group is still being made).
    pub(crate) fn unsubscribe(&self, key: &QueryKey, outbox: &Outbox) {
        outbox.unwant(key);
        self.inner.hub.unsubscribe(key, outbox.id);
    }

    /// Queues an event for the writer.
    pub(crate) async fn submit(&self, cmd: EventCmd) -> Result<(), EngineError> {
        self.cmds
            .send(Cmd::Event(cmd))
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// Whether `identity` may read query `name` with `args_json`, checked as a subscription is
    /// (the query's `authorize`), without running the query: [`EngineError::Forbidden`] when it
    /// may not. For a page to answer 404 before it renders.
    pub async fn may_read(
        &self,
        name: &str,
        args_json: &str,
        identity: &Identity,
    ) -> Result<(), EngineError> {
        let key = self.key(name, args_json, identity)?;
        self.inner.authorize(&key, identity).await
    }

    /// The rows of query `name` with `args_json` at one version, as `ctx.identity` may read
    /// them (or [`EngineError::Forbidden`]): from the live group when one exists (no query
    /// runs), else read in one transaction with the version.
    pub async fn snapshot_json(
        &self,
        name: &str,
        args_json: &str,
        ctx: &QueryCtx,
    ) -> Result<(QueryKey, Version, Rows), EngineError> {
        let key = self.key(name, args_json, &ctx.identity)?;
        self.inner.authorize(&key, &ctx.identity).await?;
        if let Some((v, rows)) = self.inner.hub.current(&key) {
            return Ok((key, v, rows));
        }
        let (v, rows) = self.inner.read(&key).await?;
        Ok((key, v, rows))
    }

    /// A watch for something derived from query results outside the engine (a kept server
    /// render): current until a commit touches what it reads ([`Engine::watch_key`] for each key,
    /// before reading it). It turns before the commit's writes are acknowledged by this
    /// instance; other instances turn theirs as their tailers fan the commit out.
    pub fn watch(&self) -> ChangeWatch {
        ChangeWatch::default()
    }

    /// Tells `watch` that what it guards reads `key`: the tables and partitions the key's
    /// result depends on and, for a checked query, what its `authorize` reads. Call it before
    /// reading the key, so that no commit falls between the read and the watch.
    pub fn watch_key(&self, watch: &ChangeWatch, key: &QueryKey) -> Result<(), EngineError> {
        let mut deps = self.inner.deps(key)?;
        if self.inner.checked(key) {
            deps.extend(self.inner.access_deps(key)?);
        }
        self.inner.hub.watches.add(watch, deps);
        Ok(())
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

    /// Registers every query and event the program declares with the macros
    /// (`#[sync_query]`, `#[sync_event]` and `#[sync_apply]`), whatever crate declares them.
    /// [`EngineBuilder::start`] fails with [`EngineError::Declaration`] when two declarations
    /// share a name or one was not compiled for this database.
    pub fn declared(mut self) -> Self
    where
        S::Db: super::declared::DeclaredDb,
    {
        if let Err(e) = super::declared::register_all(&mut self.registry) {
            self.declared_error.get_or_insert(e);
        }
        self
    }

    /// Replaces the default bounds.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a query key nobody subscribes to stays live (default 60 s), so that clients
    /// that reconnect resume it with a delta.
    pub fn group_ttl(mut self, ttl: Duration) -> Self {
        self.group_ttl = ttl;
        self
    }

    /// How many versions the durable change log keeps (default 100,000): a client that
    /// reconnects with an older version gets the whole result again (a snapshot marked
    /// `reset`) instead of a delta. Pruning runs every few seconds and deletes at most 10,000
    /// entries each time.
    pub fn log_retention(mut self, versions: u64) -> Self {
        self.log_keep = versions;
        self
    }

    /// How a batch the database refuses for now is retried (see [`WriteRetry`]).
    pub fn write_retry(mut self, retry: WriteRetry) -> Self {
        self.retry = retry;
        self
    }

    /// How a request becomes an [`Identity`]: `f` reads the request's parts (a session
    /// cookie, a bearer token; the extensions a session layer put there) and answers who it
    /// is: an [`Identity`], or a `Result<Identity, E>` whose error says it could not tell (the
    /// session store failed for a moment; see [`IdentifyError`]). sssync calls it on every
    /// path: server rendering and server functions, the WebSocket upgrade, server-sent events,
    /// event posts and the snapshot GET. Without it, everyone is anonymous.
    ///
    /// ```ignore
    /// .identify(|parts| {
    ///     let session = parts.extensions.get::<tower_sessions::Session>().cloned();
    ///     Box::pin(async move {
    ///         match session {
    ///             // A store that fails is not an anonymous visitor: say so.
    ///             Some(s) => s.get::<String>("user").await.map(Identity),
    ///             None => Ok(Identity::anonymous()),
    ///         }
    ///     })
    /// })
    /// ```
    pub fn identify<F, R>(mut self, f: F) -> Self
    where
        F: Fn(&axum::http::request::Parts) -> BoxFuture<'static, R> + Send + Sync + 'static,
        R: Identified,
    {
        self.identify = Some(Arc::new(move |parts| {
            let asked = f(parts);
            Box::pin(async move { asked.await.into_identity() })
        }));
        self
    }

    /// How often a live connection asks the application again who it is (default 60 s): a
    /// session that expired or was signed out on another instance ends its connections
    /// within this time (on this instance, at once after [`Engine::identities_changed`]).
    pub fn reidentify_every(mut self, every: Duration) -> Self {
        self.reidentify_every = every.max(Duration::from_millis(100));
        self
    }

    /// Calls `hook` at each [`FaultPoint`] of every batch: for fault-injection tests that stop
    /// or kill the process at a precise point. Only with the crate's `testing` feature: never
    /// needed in production.
    #[cfg(feature = "testing")]
    pub fn fault_hook(mut self, hook: FaultHook) -> Self {
        self.fault = Some(hook);
        self
    }

    /// Creates the engine's tables, installs the change triggers, starts the writer. Fails
    /// with [`EngineError::Declaration`] when the declarations do not agree (two share a name;
    /// a query reads a table not declared, or by partition one declared without; a declared
    /// column is not in the database), naming what and the fix.
    pub async fn start(self) -> Result<Engine<S>, EngineError> {
        if let Some(e) = self.declared_error {
            return Err(e.into());
        }
        super::check::reads(&self.registry, &self.tables)?;
        let (epoch, version, secret) = self.store.init().await?;
        for t in &self.tables {
            super::check::columns(&self.store, t).await??;
            self.store.install_table(t).await?;
        }
        let mut plans = std::collections::HashMap::new();
        for (name, entry) in &self.registry.queries {
            let Some(shape) = entry.shape else { continue };
            match plan_for(&self.store, &self.tables, &shape).await? {
                Ok(plan) => {
                    plans.insert(*name, plan);
                }
                Err(why) => tracing::warn!(
                    query = name,
                    "the query is re-run and diffed on each change, not maintained \
                     incrementally: {why}"
                ),
            }
        }
        let (stop, _) = watch::channel(false);
        let hub = Hub::new(self.limits.max_groups);
        hub.set_processed(version);
        let (opens, opens_rx) = mpsc::channel(4 * super::writer::MAX_BATCH);
        let inner = Arc::new(Inner {
            store: self.store,
            registry: self.registry,
            hub,
            epoch: watch::channel(epoch).0,
            limits: self.limits,
            next_conn: AtomicU64::new(1),
            stop,
            wake: Arc::new(tokio::sync::Notify::new()),
            secret,
            opens,
            group_ttl: self.group_ttl,
            retry: self.retry,
            log_keep: self.log_keep,
            fault: self.fault,
            identify: self.identify,
            reidentify: watch::channel(0).0,
            reidentify_every: self.reidentify_every,
            reidentifying: tokio::sync::Semaphore::new(REIDENTIFYING),
            resuming: tokio::sync::Semaphore::new(RESUMING),
            plans,
        });
        let (cmds, rx) = mpsc::channel(4 * super::writer::MAX_BATCH);
        tokio::spawn(super::writer::writer(inner.clone(), rx));
        tokio::spawn(super::tailer::tailer(inner.clone(), opens_rx, cmds.clone()));
        Ok(Engine { inner, cmds })
    }
}

/// The incremental plan of a declarative query, or why it cannot have one (see
/// [`incremental`](super::incremental): the checks against what the database declares).
async fn plan_for<S: Store>(
    store: &S,
    tables: &[Table],
    shape: &super::incremental::Shape,
) -> Result<Result<super::incremental::Plan, String>, StoreError> {
    use super::incremental::{Dialect, Plan};
    let Some(table) = tables.iter().find(|t| t.name() == shape.table) else {
        return Ok(Err(format!(
            "its table {:?} is not declared (EngineBuilder::table): its changes are not logged",
            shape.table
        )));
    };
    if table.key_column() != shape.key {
        return Ok(Err(format!(
            "its key {:?} is not the key column the change log records for {:?} ({:?})",
            shape.key,
            shape.table,
            table.key_column()
        )));
    }
    #[cfg(feature = "sqlite")]
    let sqlite = std::any::TypeId::of::<S::Db>() == std::any::TypeId::of::<sqlx::Sqlite>();
    #[cfg(not(feature = "sqlite"))]
    let sqlite = false;
    let mut key_type = String::new();
    let mut columns: Vec<&str> = shape.order_columns();
    columns.extend(shape.filter.iter().copied());
    for column in columns {
        let Some(info) = store.column_info(shape.table, column).await? else {
            return Ok(Err(format!(
                "the table {:?} has no column {column:?}",
                shape.table
            )));
        };
        let ordered = shape.order_columns().contains(&column);
        if ordered && !info.not_null {
            return Ok(Err(format!(
                "its order column {column:?} may be NULL (declare it NOT NULL)"
            )));
        }
        if column == shape.key {
            key_type = info.declared_type.clone();
            // SQLite logs a BLOB key as hex: only a text or integer key is its own text.
            let t = info.declared_type.to_ascii_uppercase();
            let text_or_int =
                t.contains("INT") || t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT");
            if sqlite && !text_or_int {
                return Ok(Err(format!(
                    "its key column {column:?} is declared {:?}: on SQLite the incremental \
                     path needs a TEXT or INTEGER key",
                    info.declared_type
                )));
            }
        }
    }
    let dialect = if sqlite {
        Dialect::Sqlite
    } else {
        Dialect::Postgres { key_type }
    };
    Ok(Ok(Plan::new(shape, &dialect)))
}
