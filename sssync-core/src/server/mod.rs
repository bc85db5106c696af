//! The server (feature `server`): an engine over a store (SQLite or PostgreSQL), and its axum
//! routes.
//!
//! ```text
//! Engine::builder(SqliteStore::open(url).await?)      // or PgStore::open("postgres://…")
//!     .table(Table::new("todos", "id")?.partition("list_id")?)
//!     .query::<Todos>()
//!     .event::<AddTodo>()
//!     .start().await?
//! ```
//! then `sssync_core::server::router(engine)` merged into the application's router.

mod apply;
mod check;
mod cmd;
pub mod declared;
mod engine;
mod error;
mod hub;
mod incremental;
mod schema;
mod store;
mod tailer;
mod transport;
mod welcome;
mod writer;

pub use apply::{Apply, Outcome};
/// The parts of an HTTP request (what [`EngineBuilder::identify`] reads).
pub use axum::http::request::Parts;
pub use cmd::WriteRetry;
#[cfg(feature = "testing")]
pub use cmd::{FaultHook, FaultPoint};
pub use engine::{Engine, EngineBuilder};
pub use error::EngineError;
pub use hub::{ChangeWatch, Counts};
pub use schema::{
    Access, AccessError, BoxFuture, ColumnInfo, Conn, Dependency, EventCtx, EventError, Fetched,
    Identified, IdentifyError, Identity, Order, PartitionValue, QueryCtx, RunError, ServerEvent,
    ServerQuery, Shape, TableRead,
};
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "sssync-core's `server` needs a database: enable its feature `sqlite` or `postgres`, or both"
);

/// The databases sssync runs on (sqlx's types), for [`for_each_db!`](crate::for_each_db).
#[cfg(feature = "postgres")]
pub use sqlx::Postgres;
#[cfg(feature = "sqlite")]
pub use sqlx::Sqlite;
#[cfg(feature = "postgres")]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{Change, LogRead, RowChange, Store, StoreError};
pub use transport::{NoDelayListener, listen, router, valid_client_id};

/// Writes the items it is given once for each database sssync runs on (SQLite and PostgreSQL),
/// with `Db` naming the database: query and event handlers written once, compiled (and
/// type-checked) for each. The SQL must suit both; both take `$1`, `$2`… placeholders.
///
/// ```ignore
/// sssync_core::for_each_db! {
///     impl ServerQuery<Db> for Todos {
///         fn dependencies(args: &ListArgs) -> Vec<Dependency> {
///             vec![Dependency::partition("todos", &args.list_id)]
///         }
///         async fn run(conn: &mut Conn<Db>, _: &QueryCtx, args: &ListArgs)
///             -> Result<Vec<Todo>, sqlx::Error> {
///             sqlx::query_as("SELECT … WHERE list_id = $1").bind(&args.list_id)
///                 .fetch_all(conn).await
///         }
///     }
/// }
/// ```
#[macro_export]
macro_rules! for_each_db {
    ($($item:item)*) => {
        $crate::__sqlite! { items
            const _: () = {
                #[allow(dead_code)]
                type Db = $crate::server::Sqlite;
                $($item)*
            };
        }
        $crate::__postgres! { items
            const _: () = {
                #[allow(dead_code)]
                type Db = $crate::server::Postgres;
                $($item)*
            };
        }
    };
}

// What is compiled for a database only with its feature. A macro decides, not a `#[cfg]` in
// the expansion: that would read the features of the crate the code expands in, not this one's.
// `items …`: the items, or nothing; `option expr`: `Some(expr)`, or `None`.

/// Keeps its tokens when SQLite is compiled in (feature `sqlite`).
#[cfg(feature = "sqlite")]
#[macro_export]
#[doc(hidden)]
macro_rules! __sqlite {
    (items $($t:tt)*) => { $($t)* };
    (option $e:expr) => { ::core::option::Option::Some($e) };
}

/// Keeps its tokens when SQLite is compiled in (feature `sqlite`).
#[cfg(not(feature = "sqlite"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __sqlite {
    (items $($t:tt)*) => {};
    (option $e:expr) => {
        ::core::option::Option::None
    };
}

/// Keeps its tokens when PostgreSQL is compiled in (feature `postgres`).
#[cfg(feature = "postgres")]
#[macro_export]
#[doc(hidden)]
macro_rules! __postgres {
    (items $($t:tt)*) => { $($t)* };
    (option $e:expr) => { ::core::option::Option::Some($e) };
}

/// Keeps its tokens when PostgreSQL is compiled in (feature `postgres`).
#[cfg(not(feature = "postgres"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __postgres {
    (items $($t:tt)*) => {};
    (option $e:expr) => {
        ::core::option::Option::None
    };
}

/// A table the engine watches: its changes are recorded (by triggers) so that writes re-run
/// only the queries that depend on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    name: String,
    key: String,
    partition: Option<String>,
}

/// A table or column name that is not a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a plain identifier (ASCII letters, digits, '_'; 1 to 63 characters)")]
pub struct BadIdentifier(pub String);

fn ident(s: &str) -> Result<String, BadIdentifier> {
    let ok = !s.is_empty()
        && s.len() < 64
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(BadIdentifier(s.to_owned()))
    }
}

impl Table {
    /// Table `name` whose rows are keyed by column `key`.
    pub fn new(name: &str, key: &str) -> Result<Table, BadIdentifier> {
        Ok(Table {
            name: ident(name)?,
            key: ident(key)?,
            partition: None,
        })
    }

    /// Queries depend on the rows with one value of `column` (see
    /// [`Dependency::partition`]).
    pub fn partition(mut self, column: &str) -> Result<Table, BadIdentifier> {
        self.partition = Some(ident(column)?);
        Ok(self)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key column.
    pub fn key_column(&self) -> &str {
        &self.key
    }

    /// The partition column, if any.
    pub fn partition_column(&self) -> Option<&str> {
        self.partition.as_deref()
    }
}
