//! The server side of queries and events, and their type-erased registry.

use crate::protocol::Rejection;
use crate::row::Row;
use crate::schema::{Event, Query};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, as query and event implementations return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The connection type of database `Db`.
pub type Conn<Db> = <Db as sqlx::Database>::Connection;

/// Who is asking: the request's identity (empty for now: anyone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity(pub Option<String>);

/// What a query runs with besides its args.
#[derive(Clone, Debug, Default)]
pub struct QueryCtx {
    /// The identity of the request (for authorization).
    pub identity: Identity,
}

/// What an event handler runs with besides its args.
#[derive(Clone, Debug)]
pub struct EventCtx {
    /// The client that sent the event.
    pub client_id: String,
    /// The event's seq.
    pub seq: u64,
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

    /// The tables (and partitions) the result depends on: a write re-runs the query only when
    /// it changed one of them (invariant 10).
    fn dependencies(args: &Self::Args) -> Vec<Dependency>;

    /// Runs the query: the rows in the result's order.
    fn run<'a>(
        conn: &'a mut Conn<Db>,
        ctx: &'a QueryCtx,
        args: &'a Self::Args,
    ) -> BoxFuture<'a, Result<Vec<Self::Row>, sqlx::Error>>;
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

/// An event the server can apply to database `Db`.
pub trait ServerEvent<Db: sqlx::Database>: Event {
    /// Applies the event inside the engine's transaction (which also records the client's
    /// seq): all or nothing.
    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<Db>,
        ctx: &'a EventCtx,
    ) -> BoxFuture<'a, Result<(), EventError>>;
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
type ApplyFn<Db> =
    for<'a> fn(&'a mut Conn<Db>, &'a EventCtx, &'a str) -> BoxFuture<'a, Result<(), EventError>>;

pub(crate) struct QueryEntry<Db: sqlx::Database> {
    pub(crate) run: RunFn<Db>,
    pub(crate) deps: DepsFn,
    pub(crate) keyed_by: Option<&'static str>,
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
                deps: deps_erased::<Db, Q>,
                keyed_by: Q::KEYED_BY,
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

fn deps_erased<Db: sqlx::Database, Q: ServerQuery<Db>>(
    args: &str,
) -> Result<Vec<Dependency>, RunError> {
    let args: Q::Args = serde_json::from_str(args).map_err(|e| RunError::BadArgs(e.to_string()))?;
    Ok(Q::dependencies(&args))
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
