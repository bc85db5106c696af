//! The server side of queries and events, and their type-erased registry.

use crate::protocol::{Forbidden, Rejection};
use crate::row::Row;
use crate::schema::{Event, Query};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// A boxed future (how the engine stores handlers, type-erased; handlers themselves are
/// plain `async fn`s).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The connection type of database `Db`.
pub type Conn<Db> = <Db as sqlx::Database>::Connection;

/// Who is asking, as the application's own authentication says (see
/// [`EngineBuilder::identify`](super::EngineBuilder::identify)): a user id, or nobody (an
/// anonymous visitor). sssync calls the application's `identify` on every path (server
/// rendering and server functions, the WebSocket, server-sent events, event posts, the snapshot
/// GET) and hands the identity to every query and event handler.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity(pub Option<String>);

impl Identity {
    /// Nobody signed in.
    pub fn anonymous() -> Identity {
        Identity(None)
    }

    /// The user `id` (whatever stable id the application gives its users).
    pub fn user(id: impl Into<String>) -> Identity {
        Identity(Some(id.into()))
    }

    /// The user's id, `None` for an anonymous visitor.
    pub fn id(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Whether nobody is signed in.
    pub fn is_anonymous(&self) -> bool {
        self.0.is_none()
    }
}

/// The application could not tell who sent a request (its session store failed for a
/// moment): not the same as anonymous. sssync then keeps what it knew (a live connection keeps
/// its identity and asks again soon) or answers `503` (an upgrade, a post, a snapshot GET), so
/// a user is never signed out, nor a write dropped, by a failed session read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not tell who is asking: {0}")]
pub struct IdentifyError(pub String);

impl IdentifyError {
    /// Why it could not tell.
    pub fn new(why: impl std::fmt::Display) -> IdentifyError {
        IdentifyError(why.to_string())
    }
}

/// What an application's `identify` answers (see
/// [`EngineBuilder::identify`](super::EngineBuilder::identify)): an [`Identity`], or a
/// `Result` whose error says it could not tell who is asking.
pub trait Identified: Send + 'static {
    /// The identity, or why it could not be told.
    fn into_identity(self) -> Result<Identity, IdentifyError>;
}

impl Identified for Identity {
    fn into_identity(self) -> Result<Identity, IdentifyError> {
        Ok(self)
    }
}

impl<E: std::fmt::Display + Send + 'static> Identified for Result<Identity, E> {
    fn into_identity(self) -> Result<Identity, IdentifyError> {
        self.map_err(IdentifyError::new)
    }
}

/// What a query runs with besides its args.
#[derive(Clone, Debug, Default)]
pub struct QueryCtx {
    /// Who asks. In [`ServerQuery::authorize`], always the subscriber's identity; in
    /// [`ServerQuery::run`], the subscriber's identity when the query is
    /// [`Access::PerIdentity`], anonymous otherwise (a shared result must not depend on who
    /// asks).
    pub identity: Identity,
}

/// What an event handler runs with besides its args.
#[derive(Clone, Debug)]
pub struct EventCtx {
    /// The client that sent the event.
    pub client_id: String,
    /// The event's seq.
    pub seq: u64,
    /// Who sent it (authorize the event with it: a refusal is
    /// [`Rejection::forbidden`](crate::protocol::Rejection::forbidden)).
    pub identity: Identity,
}

/// Who may read a query, and whether its result depends on who reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone may subscribe; one result per key, shared by every subscriber (the default).
    Public,
    /// Each subscriber is checked by [`ServerQuery::authorize`] (when it subscribes, on every
    /// path, and again whenever a commit touches [`ServerQuery::access_dependencies`]); the
    /// result does not depend on who reads it, so the subscribers allowed share it.
    Checked,
    /// Checked like [`Access::Checked`], and the result depends on who reads it: subscribers
    /// with different identities never share a result, its deltas, or a cached snapshot.
    PerIdentity,
}

/// Why a query refused a reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// This identity may not read it (`forbidden`: HTTP 404 on the snapshot GET and in server
    /// rendering, an `error` for a `sub`; no rows are sent).
    #[error("{0}")]
    Forbidden(#[from] Forbidden),
    /// The database failed while checking.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl AccessError {
    /// A refusal, with the message the reader gets.
    pub fn forbidden(message: impl Into<String>) -> AccessError {
        AccessError::Forbidden(Forbidden::new(message))
    }
}

/// A value of a partition column, typed as the application binds it: the store encodes it the
/// way its change-log triggers record the column (SQLite: an integer or a bool as its decimal
/// text, a text as itself, a BLOB, such as a `Uuid` bound by sqlx, as `x` and its hex digits),
/// so that a dependency matches the writes to exactly those rows, whatever the column's type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PartitionValue {
    /// A text (also how a `String` or `&str` is bound).
    Text(String),
    /// An integer.
    Int(i64),
    /// A bool (stored by SQLite as 0 or 1).
    Bool(bool),
    /// Bytes (a BLOB / BYTEA).
    Bytes(Vec<u8>),
    /// A UUID as sqlx binds a `uuid::Uuid`: SQLite stores its 16 bytes as a BLOB.
    Uuid(uuid::Uuid),
}

impl From<&str> for PartitionValue {
    fn from(v: &str) -> Self {
        PartitionValue::Text(v.to_owned())
    }
}

impl From<String> for PartitionValue {
    fn from(v: String) -> Self {
        PartitionValue::Text(v)
    }
}

impl From<&String> for PartitionValue {
    fn from(v: &String) -> Self {
        PartitionValue::Text(v.clone())
    }
}

impl From<bool> for PartitionValue {
    fn from(v: bool) -> Self {
        PartitionValue::Bool(v)
    }
}

macro_rules! int_partition {
    ($($t:ty),*) => {$(
        impl From<$t> for PartitionValue {
            fn from(v: $t) -> Self {
                PartitionValue::Int(i64::from(v))
            }
        }
    )*};
}
int_partition!(i8, i16, i32, i64, u8, u16, u32);

impl From<uuid::Uuid> for PartitionValue {
    fn from(v: uuid::Uuid) -> Self {
        PartitionValue::Uuid(v)
    }
}

impl From<&uuid::Uuid> for PartitionValue {
    fn from(v: &uuid::Uuid) -> Self {
        PartitionValue::Uuid(*v)
    }
}

/// A UUID bound as its hyphenated text (`Uuid::hyphenated()`), as sqlx stores it then.
impl From<uuid::fmt::Hyphenated> for PartitionValue {
    fn from(v: uuid::fmt::Hyphenated) -> Self {
        PartitionValue::Text(v.to_string())
    }
}

impl From<Vec<u8>> for PartitionValue {
    fn from(v: Vec<u8>) -> Self {
        PartitionValue::Bytes(v)
    }
}

impl From<&[u8]> for PartitionValue {
    fn from(v: &[u8]) -> Self {
        PartitionValue::Bytes(v.to_vec())
    }
}

/// A table a query reads: the whole table, or only rows whose partition column equals a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dependency {
    /// The declared table's name.
    pub table: String,
    /// The partition value, or `None` for any row of the table.
    pub partition: Option<PartitionValue>,
}

impl Dependency {
    /// Any change to `table`.
    pub fn table(table: &str) -> Dependency {
        Dependency {
            table: table.to_owned(),
            partition: None,
        }
    }

    /// Changes to rows of `table` whose partition column is `value` (before or after the
    /// change). Build `value` from the same Rust value the application binds for that column.
    pub fn partition(table: &str, value: impl Into<PartitionValue>) -> Dependency {
        Dependency {
            table: table.to_owned(),
            partition: Some(value.into()),
        }
    }
}

/// A table a query reads, as its declaration names it before any args (`reads = [todos(list_id)]`
/// gives `TableRead::partition("todos")`): [`EngineBuilder::start`](super::EngineBuilder::start)
/// refuses a read of a table that is not declared, and a read by partition of a table declared
/// without a partition column, since either would leave the query never updating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableRead {
    /// The table's name.
    pub table: &'static str,
    /// Whether only rows of one partition are read ([`Dependency::partition`]).
    pub by_partition: bool,
}

impl TableRead {
    /// Any row of `table` ([`Dependency::table`]).
    pub const fn table(table: &'static str) -> TableRead {
        TableRead {
            table,
            by_partition: false,
        }
    }

    /// The rows of one partition of `table` ([`Dependency::partition`]).
    pub const fn partition(table: &'static str) -> TableRead {
        TableRead {
            table,
            by_partition: true,
        }
    }
}

/// A query the server can run against database `Db`.
pub trait ServerQuery<Db: sqlx::Database>: Query {
    /// `Some(table)` when the query's rows are rows of that one declared table, each keyed
    /// ([`Query::row_key`]) by the table's key column as the change log records it (its text),
    /// every dependency is on that table, and the result's order depends only on each row
    /// itself (no `LIMIT`, no order over other rows): then a client that reconnects after
    /// missing changes, to any instance, gets a delta computed from the durable log, its size
    /// following the changes. `None` (the default): such a client gets the whole result again
    /// (a snapshot marked `reset`) unless the instance remembers its version.
    const KEYED_BY: Option<&'static str> = None;

    /// Who may read it, and whether the result depends on who reads (default
    /// [`Access::Public`]: anyone, one shared result).
    const ACCESS: Access = Access::Public;

    /// The tables (and partitions) the result depends on: a write re-runs the query only when
    /// it changed one of them (invariant 10).
    fn dependencies(args: &Self::Args) -> Vec<Dependency>;

    /// The tables [`ServerQuery::dependencies`] names, whatever the args, checked against the
    /// declared tables when the engine starts. `#[sync_query]` writes it from `reads`. Default:
    /// none (nothing to check).
    const READS: &'static [TableRead] = &[];

    /// The tables [`ServerQuery::access_dependencies`] names, checked likewise. Default: none.
    const ACCESS_READS: &'static [TableRead] = &[];

    /// The tables (and partitions) [`ServerQuery::authorize`] reads: a commit that touches one
    /// of them (through any instance, or by hand) checks every live subscriber of the key
    /// again, and ends the subscriptions that no longer pass with `forbidden`. Default: none.
    fn access_dependencies(args: &Self::Args) -> Vec<Dependency> {
        let _ = args;
        Vec::new()
    }

    /// Whether `ctx.identity` may read the query with `args` (only called when
    /// [`ServerQuery::ACCESS`] is not [`Access::Public`]); it runs in a read transaction of its
    /// own or of the engine's. Default: anyone may.
    fn authorize(
        conn: &mut Conn<Db>,
        ctx: &QueryCtx,
        args: &Self::Args,
    ) -> impl Future<Output = Result<(), AccessError>> + Send {
        let _ = (conn, ctx, args);
        async { Ok(()) }
    }

    /// Runs the query: the rows in the result's order.
    fn run(
        conn: &mut Conn<Db>,
        ctx: &QueryCtx,
        args: &Self::Args,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;

    /// `Some` for a declarative query (one table, a filter on the args, an order, a limit):
    /// the engine maintains its result incrementally, a change costing in proportion to the
    /// rows it touches (see [`Shape`]). `#[sync_query(from = table, …)]` writes it, with
    /// [`ServerQuery::fetch`]. Default: `None` (re-run and diffed).
    const SHAPE: Option<Shape> = None;

    /// Runs `sql` (the engine's, written from [`ServerQuery::SHAPE`]) with the args' filter
    /// values bound in the shape's order, then `keys` (a JSON array of key texts) when given,
    /// and decodes each row, with its `__sssync_key` and `__sssync_prev` columns when `keys`
    /// is given. Only called for a query with a shape.
    fn fetch(
        conn: &mut Conn<Db>,
        sql: &str,
        args: &Self::Args,
        keys: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Fetched<Self::Row>>, sqlx::Error>> + Send {
        let _ = (conn, sql, args, keys);
        async {
            Err(sqlx::Error::Protocol(format!(
                "query {:?} has no shape: it cannot be read incrementally",
                Self::NAME
            )))
        }
    }
}

pub use super::incremental::{ColumnInfo, Order, Shape};

/// A row a declarative query's [`ServerQuery::fetch`] read.
#[derive(Clone, Debug)]
pub struct Fetched<R> {
    /// The row.
    pub row: R,
    /// Its key column's text (read incrementally only).
    pub key: Option<String>,
    /// The key of the row before it in the result's order (read incrementally only; `None`:
    /// the first).
    pub prev: Option<String>,
}

/// Why an event handler did not apply its event.
///
/// What the engine does with a [`EventError::Storage`] error depends on its kind:
/// - a broken constraint (unique, foreign key, not null, check) is the event's fault: it is
///   rejected with the constraint's code (`unique_violation`…), its seq used;
/// - a transient failure (the database busy or locked, the disk full, an I/O error, a lost
///   connection, a serialization failure) is the moment's fault: the whole batch rolls back and is
///   retried with backoff; if it still fails, the clients are told to resend later (`retry`);
/// - anything else (a row not found by `fetch_one`, a decode error, a bad statement) would fail
///   again on every resend: the event is rejected with code `internal`, its seq used, nothing
///   of it applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The application refuses the event (validation, authorization, conflict): nothing of it
    /// is applied, its seq is used, the client gets the rejection.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The database failed (see the type's docs for what follows).
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<Rejection> for EventError {
    fn from(r: Rejection) -> EventError {
        EventError::Rejected(r)
    }
}

/// An application's own kind of rejection ([`Forbidden`], or an enum with
/// `#[derive(Rejection)]`): `return Err(SayError::TooLong.into())`.
impl<K: crate::protocol::RejectionKind> From<K> for EventError {
    fn from(kind: K) -> EventError {
        EventError::Rejected(kind.into())
    }
}

/// An event the server can apply to database `Db`.
pub trait ServerEvent<Db: sqlx::Database>: Event {
    /// Applies the event inside the engine's transaction (which also records the client's
    /// seq): all or nothing.
    fn apply(
        &self,
        conn: &mut Conn<Db>,
        ctx: &EventCtx,
    ) -> impl Future<Output = Result<(), EventError>> + Send;
}

/// Why a registered query could not produce rows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The args do not decode as the query's args.
    #[error("bad args for this query: {0}")]
    BadArgs(String),
    /// A row did not serialize.
    #[error("a row did not serialize: {0}")]
    Encode(String),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

type RunFn<Db> = for<'a> fn(
    &'a mut Conn<Db>,
    &'a QueryCtx,
    &'a str,
) -> BoxFuture<'a, Result<Vec<Row>, RunError>>;
type DepsFn = fn(&str) -> Result<Vec<Dependency>, RunError>;
type AuthorizeFn<Db> =
    for<'a> fn(&'a mut Conn<Db>, &'a QueryCtx, &'a str) -> BoxFuture<'a, Result<(), AccessError>>;
type ApplyFn<Db> =
    for<'a> fn(&'a mut Conn<Db>, &'a EventCtx, &'a str) -> BoxFuture<'a, Result<(), EventError>>;

type FetchFn<Db> = for<'a> fn(
    &'a mut Conn<Db>,
    &'a str,
    &'a str,
    &'a str,
) -> BoxFuture<'a, Result<Vec<super::incremental::Found>, RunError>>;

pub(crate) struct QueryEntry<Db: sqlx::Database> {
    pub(crate) run: RunFn<Db>,
    pub(crate) shape: Option<Shape>,
    /// A declarative query's incremental read: (conn, SQL, args JSON, keys JSON).
    pub(crate) fetch: FetchFn<Db>,
    pub(crate) deps: DepsFn,
    pub(crate) access_deps: DepsFn,
    pub(crate) authorize: AuthorizeFn<Db>,
    pub(crate) access: Access,
    pub(crate) keyed_by: Option<&'static str>,
    /// [`ServerQuery::READS`] and [`ServerQuery::ACCESS_READS`].
    pub(crate) reads: &'static [TableRead],
    pub(crate) access_reads: &'static [TableRead],
}

pub(crate) struct EventEntry<Db: sqlx::Database> {
    pub(crate) apply: ApplyFn<Db>,
}

/// The registered queries and events, by name.
pub(crate) struct Registry<Db: sqlx::Database> {
    pub(crate) queries: HashMap<&'static str, QueryEntry<Db>>,
    pub(crate) events: HashMap<&'static str, EventEntry<Db>>,
}

impl<Db: sqlx::Database> Default for Registry<Db> {
    fn default() -> Self {
        Registry {
            queries: HashMap::new(),
            events: HashMap::new(),
        }
    }
}

impl<Db: sqlx::Database> Registry<Db> {
    pub(crate) fn add_query<Q: ServerQuery<Db>>(&mut self) {
        self.queries.insert(
            Q::NAME,
            QueryEntry {
                run: run_erased::<Db, Q>,
                shape: Q::SHAPE,
                fetch: fetch_erased::<Db, Q>,
                deps: deps_erased::<Db, Q>,
                access_deps: access_deps_erased::<Db, Q>,
                authorize: authorize_erased::<Db, Q>,
                access: Q::ACCESS,
                keyed_by: Q::KEYED_BY,
                reads: Q::READS,
                access_reads: Q::ACCESS_READS,
            },
        );
    }

    pub(crate) fn add_event<E: ServerEvent<Db>>(&mut self) {
        self.events.insert(
            E::NAME,
            EventEntry {
                apply: apply_erased::<Db, E>,
            },
        );
    }
}

fn run_erased<'a, Db: sqlx::Database, Q: ServerQuery<Db>>(
    conn: &'a mut Conn<Db>,
    ctx: &'a QueryCtx,
    args: &'a str,
) -> BoxFuture<'a, Result<Vec<Row>, RunError>> {
    Box::pin(async move {
        let args: Q::Args =
            serde_json::from_str(args).map_err(|e| RunError::BadArgs(e.to_string()))?;
        let rows = Q::run(conn, ctx, &args).await?;
        rows.iter()
            .map(|r| Row::from_serialize(Q::row_key(r), r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RunError::Encode(e.to_string()))
    })
}

fn fetch_erased<'a, Db: sqlx::Database, Q: ServerQuery<Db>>(
    conn: &'a mut Conn<Db>,
    sql: &'a str,
    args: &'a str,
    keys: &'a str,
) -> BoxFuture<'a, Result<Vec<super::incremental::Found>, RunError>> {
    Box::pin(async move {
        let args: Q::Args =
            serde_json::from_str(args).map_err(|e| RunError::BadArgs(e.to_string()))?;
        let rows = Q::fetch(conn, sql, &args, Some(keys)).await?;
        rows.into_iter()
            .map(|f| {
                let row = Row::from_serialize(Q::row_key(&f.row), &f.row)
                    .map_err(|e| RunError::Encode(e.to_string()))?;
                Ok(super::incremental::Found {
                    row,
                    key: f.key.unwrap_or_default(),
                    prev: f.prev.map(Into::into),
                })
            })
            .collect()
    })
}

fn deps_erased<Db: sqlx::Database, Q: ServerQuery<Db>>(
    args: &str,
) -> Result<Vec<Dependency>, RunError> {
    let args: Q::Args = serde_json::from_str(args).map_err(|e| RunError::BadArgs(e.to_string()))?;
    Ok(Q::dependencies(&args))
}

fn access_deps_erased<Db: sqlx::Database, Q: ServerQuery<Db>>(
    args: &str,
) -> Result<Vec<Dependency>, RunError> {
    let args: Q::Args = serde_json::from_str(args).map_err(|e| RunError::BadArgs(e.to_string()))?;
    Ok(Q::access_dependencies(&args))
}

fn authorize_erased<'a, Db: sqlx::Database, Q: ServerQuery<Db>>(
    conn: &'a mut Conn<Db>,
    ctx: &'a QueryCtx,
    args: &'a str,
) -> BoxFuture<'a, Result<(), AccessError>> {
    Box::pin(async move {
        if Q::ACCESS == Access::Public {
            return Ok(());
        }
        // The args were checked when the key was made.
        let args: Q::Args = serde_json::from_str(args)
            .map_err(|e| AccessError::forbidden(format!("bad args: {e}")))?;
        Q::authorize(conn, ctx, &args).await
    })
}

fn apply_erased<'a, Db: sqlx::Database, E: ServerEvent<Db>>(
    conn: &'a mut Conn<Db>,
    ctx: &'a EventCtx,
    args: &'a str,
) -> BoxFuture<'a, Result<(), EventError>> {
    Box::pin(async move {
        let event: E = serde_json::from_str(args).map_err(|e| {
            EventError::Rejected(Rejection::new(
                "bad_args",
                format!("the args of event {:?} do not fit it: {e}", E::NAME),
            ))
        })?;
        event.apply(conn, ctx).await
    })
}
