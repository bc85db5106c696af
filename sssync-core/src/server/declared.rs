//! Queries and events declared with the macros (`#[sync_query]`, `#[sync_event]`,
//! `#[sync_apply]` in `sssync-leptos`): each declaration registers itself here at link time
//! (through `inventory`), and [`EngineBuilder::declared`](super::EngineBuilder::declared)
//! registers them all, so nothing is listed twice.

use super::schema::{Registry, ServerEvent, ServerQuery};
#[cfg(feature = "postgres")]
use sqlx::Postgres;
#[cfg(feature = "sqlite")]
use sqlx::Sqlite;

#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use sqlx;

/// The registry of one database, as a declaration fills it.
#[doc(hidden)]
pub struct Registrar<'a, Db: sqlx::Database>(pub(crate) &'a mut Registry<Db>);

impl<Db: sqlx::Database> Registrar<'_, Db> {
    /// Registers a query.
    pub fn query<Q: ServerQuery<Db>>(&mut self) {
        self.0.add_query::<Q>();
    }

    /// Registers an event's handler.
    pub fn event<E: ServerEvent<Db>>(&mut self) {
        self.0.add_event::<E>();
    }
}

/// One declaration: a query, an event, or an event's handler, with how it registers on each
/// database it was compiled for.
#[doc(hidden)]
pub struct Declared {
    /// What it is.
    pub kind: DeclaredKind,
    /// The query's or event's name.
    pub name: &'static str,
    /// Where it was declared (for error messages).
    pub at: &'static str,
    /// Registers it on SQLite, if compiled for it.
    pub sqlite: Option<RegisterSqlite>,
    /// Registers it on PostgreSQL, if compiled for it.
    pub postgres: Option<RegisterPostgres>,
}

/// How a declaration registers on SQLite.
#[cfg(feature = "sqlite")]
#[doc(hidden)]
pub type RegisterSqlite = fn(&mut Registrar<'_, Sqlite>);
/// SQLite is not compiled in: nothing registers on it.
#[cfg(not(feature = "sqlite"))]
#[doc(hidden)]
pub type RegisterSqlite = NotCompiled;

/// How a declaration registers on PostgreSQL.
#[cfg(feature = "postgres")]
#[doc(hidden)]
pub type RegisterPostgres = fn(&mut Registrar<'_, Postgres>);
/// PostgreSQL is not compiled in: nothing registers on it.
#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
pub type RegisterPostgres = NotCompiled;

/// A database whose feature is off (no value exists).
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum NotCompiled {}

/// What a [`Declared`] is.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeclaredKind {
    /// A query, with its handler.
    Query,
    /// An event (its handler is declared apart).
    Event,
    /// An event's server handler.
    Handler,
}

inventory::collect!(Declared);

/// The databases declarations register on.
#[doc(hidden)]
pub trait DeclaredDb: sqlx::Database {
    /// This database's registration of `d`, if it was compiled for it.
    fn registration(d: &Declared) -> Option<fn(&mut Registrar<'_, Self>)>;
    /// The database's name, for messages.
    const LABEL: &'static str;
}

#[cfg(feature = "sqlite")]
impl DeclaredDb for Sqlite {
    fn registration(d: &Declared) -> Option<fn(&mut Registrar<'_, Self>)> {
        d.sqlite
    }
    const LABEL: &'static str = "SQLite";
}

#[cfg(feature = "postgres")]
impl DeclaredDb for Postgres {
    fn registration(d: &Declared) -> Option<fn(&mut Registrar<'_, Self>)> {
        d.postgres
    }
    const LABEL: &'static str = "PostgreSQL";
}

/// Why the declarations do not make an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeclarationError {
    /// Two declarations use one name.
    #[error(
        "two {kind}s are named {name:?} ({first} and {second}): a name is an identity on the wire"
    )]
    Duplicate {
        /// `query` or `event`.
        kind: &'static str,
        /// The name.
        name: &'static str,
        /// Where the first was declared.
        first: &'static str,
        /// Where the second was declared.
        second: &'static str,
    },
    /// A declaration was not compiled for the engine's database.
    #[error(
        "{kind} {name:?} ({at}) has no handler for {db}: compile it for both databases, or start the engine on the other"
    )]
    NotForThisDatabase {
        /// `query` or `event`.
        kind: &'static str,
        /// The name.
        name: &'static str,
        /// Where it was declared.
        at: &'static str,
        /// The engine's database.
        db: &'static str,
    },
    /// A query reads a table that is not declared: its changes are not recorded, so the query
    /// would never update.
    #[error(
        "query {query:?} names table {table:?} in `{list}`, but no table {table:?} is declared, so          its changes are not recorded and the query would never update: {}",
        match did_you_mean {
            Some(name) => format!("did you mean {name:?}? Fix the name in `{list}`, or declare the table"),
            None => "declare it with `.table(Table::new(name, key_column)?)` on the engine builder, or fix the name".to_owned(),
        }
    )]
    UndeclaredTable {
        /// The query.
        query: &'static str,
        /// `reads` or `access_reads`.
        list: &'static str,
        /// The table it names.
        table: &'static str,
        /// The declared table whose name is nearest, when one is near.
        did_you_mean: Option<String>,
    },
    /// A query reads one partition of a table declared without a partition column: no change
    /// would ever match the partition, so the query would never update.
    #[error(
        "query {query:?} reads one partition of table {table:?} (`{list} = [{table}(…)]`), but          the table is declared without a partition column, so no change would match and the          query would never update: declare it with `.partition(column)` (the column the value          is compared to), or read the whole table (`{list} = [{table}]`)"
    )]
    NoPartition {
        /// The query.
        query: &'static str,
        /// `reads` or `access_reads`.
        list: &'static str,
        /// The table.
        table: &'static str,
    },
    /// A declared table's key or partition column is not in the database.
    #[error(
        "table {table:?} is declared with {role} column {column:?}, but the database has no          column {column:?} in a table {table:?}: create the table before the engine starts          (its migrations first), or fix the declaration (`Table::new`, `.partition`)"
    )]
    NoSuchColumn {
        /// The table.
        table: String,
        /// `key` or `partition`.
        role: &'static str,
        /// The column.
        column: String,
    },
}

/// Registers every declaration into `registry`.
pub(crate) fn register_all<Db: DeclaredDb>(
    registry: &mut Registry<Db>,
) -> Result<(), DeclarationError> {
    let mut seen: std::collections::HashMap<(DeclaredKind, &str), &'static str> =
        std::collections::HashMap::new();
    let all: Vec<&Declared> = inventory::iter::<Declared>.into_iter().collect();
    for d in &all {
        if let Some(first) = seen.insert((d.kind, d.name), d.at) {
            return Err(DeclarationError::Duplicate {
                kind: label(d.kind),
                name: d.name,
                first,
                second: d.at,
            });
        }
    }
    for d in &all {
        match (d.kind, Db::registration(d)) {
            (DeclaredKind::Event, _) => {
                // Its handler is another declaration (the compiler checks that there is one).
                if !seen.contains_key(&(DeclaredKind::Handler, d.name)) {
                    return Err(DeclarationError::NotForThisDatabase {
                        kind: "event",
                        name: d.name,
                        at: d.at,
                        db: Db::LABEL,
                    });
                }
            }
            (_, Some(register)) => register(&mut Registrar(registry)),
            (kind, None) => {
                return Err(DeclarationError::NotForThisDatabase {
                    kind: label(kind),
                    name: d.name,
                    at: d.at,
                    db: Db::LABEL,
                });
            }
        }
    }
    Ok(())
}

fn label(kind: DeclaredKind) -> &'static str {
    match kind {
        DeclaredKind::Query => "query",
        DeclaredKind::Event | DeclaredKind::Handler => "event",
    }
}

/// An event that has a server handler (the `apply` of its `#[sync_event] impl`, or a
/// `#[sync_apply] impl`, implements it): `#[sync_event]` requires it, so that an event without
/// a handler does not compile.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "event `{Self}` has no server handler",
    label = "declared with #[sync_event], but nothing applies it on the server",
    note = "write `async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {{ … }}` in the event's `#[sync_event] impl {Self}` block (or in a `#[sync_apply] impl {Self}` in the server code)"
)]
pub trait HasHandler {}

/// A query's body written in the server code, apart from its declaration (`#[sync_run] impl
/// MyQuery { async fn run(…) }`): what the `ServerQuery::run` of a `#[sync_query]` declared
/// without a body nor a table calls. The shared model then names no server code.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "query `{Self}` has no server body",
    label = "declared with #[sync_query] without a body (nor `from = table`), but nothing runs it on the server",
    note = "write `#[sync_run] impl {Self} {{ async fn run(conn: &mut Conn<Db>, ctx: &QueryCtx, args: &…Args) -> Result<Vec<Row>, sqlx::Error> {{ … }} }}` in the server code"
)]
pub trait RunQuery<Db: sqlx::Database>: crate::Query {
    /// Runs the query: the rows in the result's order.
    fn run(
        conn: &mut super::Conn<Db>,
        ctx: &super::QueryCtx,
        args: &Self::Args,
    ) -> impl std::future::Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
}

/// A query's `authorize` written in the server code (`#[sync_run] impl MyQuery { async fn
/// authorize(…) }`): what a `#[sync_query(authorize, …)]` calls.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "query `{Self}` has no server check",
    label = "declared with #[sync_query(authorize, …)], but nothing authorizes its readers on the server",
    note = "write `#[sync_run] impl {Self} {{ async fn authorize(conn: &mut Conn<Db>, ctx: &QueryCtx, args: &…Args) -> Result<(), AccessError> {{ … }} }}` in the server code"
)]
pub trait AuthorizeQuery<Db: sqlx::Database>: crate::Query {
    /// Whether `ctx.identity` may read the query with `args`.
    fn authorize(
        conn: &mut super::Conn<Db>,
        ctx: &super::QueryCtx,
        args: &Self::Args,
    ) -> impl std::future::Future<Output = Result<(), super::AccessError>> + Send;
}

/// The database of a connection type (how a `#[sync_sql]` helper, generic over the database,
/// learns it from the connection it is called with).
#[doc(hidden)]
pub trait ConnOf {
    /// The database.
    type Db: sqlx::Database<Connection = Self>;
}

#[cfg(feature = "sqlite")]
impl ConnOf for sqlx::SqliteConnection {
    type Db = Sqlite;
}

#[cfg(feature = "postgres")]
impl ConnOf for sqlx::PgConnection {
    type Db = Postgres;
}
