//! The one builder of an app's sync server ([`SyncBuilder`]): its tables, how a request's
//! identity is known, the pages it keeps, and the database it opens ([`DbPool`]).

use super::{DynEngine, SyncServer};
use sssync_core::server::{
    BoxFuture, Engine, EngineError, Identified, IdentifyError, Identity, Parts, Store,
};
use std::sync::Arc;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "sssync-leptos's `ssr` needs a database: enable its feature `sqlite` (the default) or \
     `postgres`, or both"
);

/// A connection pool on one of the databases sssync runs on (those of the crate's features).
#[derive(Clone, Debug)]
pub enum DbPool {
    /// An embedded SQLite file (the default; feature `sqlite`).
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL: any number of server instances may share it (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Why a database did not open, or the engine did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL names no database sssync runs on.
    #[error(
        "unsupported database URL {0:?}: use sqlite://file.db (created if missing) or \
         postgres://user@host/database"
    )]
    Unsupported(String),
    /// The URL names a database this build left out (the feature of `sssync-leptos` it
    /// needs: `sqlite` or `postgres`).
    #[error("this server was built without {0} (sssync-leptos's feature `{1}`)")]
    NotCompiled(&'static str, &'static str),
    /// The database refused.
    #[error("the database refused: {0}")]
    Database(#[from] sqlx::Error),
    /// The engine did not start (its tables, the declarations).
    #[error("the sync engine did not start: {0}")]
    Engine(#[from] EngineError),
}

impl DbPool {
    /// Opens the database at `url`: `sqlite://file.db` (created if missing, with the settings
    /// the engine relies on: WAL, durable commits) or `postgres://…`.
    pub async fn open(url: &str) -> Result<DbPool, OpenError> {
        use sssync_core::server::Store;
        if url.starts_with("sqlite:") {
            #[cfg(feature = "sqlite")]
            return Ok(DbPool::Sqlite(
                sssync_core::server::SqliteStore::open(url)
                    .await?
                    .pool()
                    .clone(),
            ));
            #[cfg(not(feature = "sqlite"))]
            return Err(OpenError::NotCompiled("SQLite", "sqlite"));
        }
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            #[cfg(feature = "postgres")]
            return Ok(DbPool::Postgres(
                sssync_core::server::PgStore::open(url)
                    .await?
                    .pool()
                    .clone(),
            ));
            #[cfg(not(feature = "postgres"))]
            return Err(OpenError::NotCompiled("PostgreSQL", "postgres"));
        }
        Err(OpenError::Unsupported(url.to_owned()))
    }

    /// Runs an SQL script (several statements) on it.
    pub async fn execute_script(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => p.close().await,
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => p.close().await,
        }
    }
}

type Identify =
    Arc<dyn Fn(&Parts) -> BoxFuture<'static, Result<Identity, IdentifyError>> + Send + Sync>;

/// Declares an app's sync server (see [`SyncServer::builder`]).
#[must_use]
#[derive(Default)]
pub struct SyncBuilder {
    tables: Vec<sssync_core::server::Table>,
    identify: Option<Identify>,
    schema: Vec<&'static str>,
    keep: Option<usize>,
}

impl SyncBuilder {
    /// Keeps the server renders of public pages (an anonymous visitor's), within `max_bytes`,
    /// and answers them again at static-file speed while everything they read is unchanged
    /// (see [`SyncServer::with_kept_pages`]; `SyncServer::app_router` does it). This says that
    /// every page of the app is made of its URL and its sync queries alone: a render that
    /// reads anything else (the time, a server function's own data) calls
    /// [`dont_keep`](crate::server::dont_keep). A kept page is never stale (a commit touching
    /// what it read turns it before the commit's writes are acknowledged), never answered to a
    /// signed-in visitor, and makes its forms' idempotency keys again for every answer.
    pub fn keep_public_pages(mut self, max_bytes: usize) -> Self {
        self.keep = Some(max_bytes);
        self
    }

    /// A table the queries read (its changes are recorded, so that a write re-runs only the
    /// queries that depend on it).
    pub fn table(mut self, table: sssync_core::server::Table) -> Self {
        self.tables.push(table);
        self
    }

    /// How a request's identity is known: an `Identity`, or a `Result<Identity, E>` whose
    /// error says the app could not tell (see `EngineBuilder::identify`; default: everyone is
    /// anonymous).
    pub fn identify<F, R>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> BoxFuture<'static, R> + Send + Sync + 'static,
        R: Identified,
    {
        self.identify = Some(Arc::new(move |parts| {
            let asked = f(parts);
            Box::pin(async move { asked.await.into_identity() })
        }));
        self
    }

    /// How a request's identity is known, by an axum extractor the app already has (its
    /// session user, say): `X` is extracted from (a copy of) the request's parts on every path
    /// sssync serves and converted into the identity (`X: Identified`: it gives an
    /// `Identity`, or a `Result<Identity, E>`). An extractor that rejects the request means
    /// the app could not tell who sent it (the request is refused, not made anonymous).
    ///
    /// ```ignore
    /// struct Reader(Identity);
    /// impl<S: Send + Sync> FromRequestParts<S> for Reader { /* the session's user */ }
    /// impl Identified for Reader { fn into_identity(self) -> Result<Identity, IdentifyError> { Ok(self.0) } }
    /// SyncServer::builder().identify_with::<Reader>()
    /// ```
    pub fn identify_with<X>(self) -> Self
    where
        X: axum::extract::FromRequestParts<()> + Identified,
        X::Rejection: std::fmt::Display + Send,
    {
        self.identify(
            |parts: &Parts| -> BoxFuture<'static, Result<Identity, IdentifyError>> {
                let mut parts = parts.clone();
                Box::pin(async move {
                    match X::from_request_parts(&mut parts, &()).await {
                        Ok(x) => x.into_identity(),
                        Err(rejected) => Err(IdentifyError::new(rejected)),
                    }
                })
            },
        )
    }

    /// An SQL script run before the engine starts (the app's tables, `CREATE TABLE IF NOT
    /// EXISTS …`, in SQL both databases take), for apps without migrations of their own.
    pub fn schema(mut self, sql: &'static str) -> Self {
        self.schema.push(sql);
        self
    }

    /// Opens the database at `url` ([`DbPool::open`]) and starts the engine on it.
    pub async fn open(self, url: &str) -> Result<SyncServer, OpenError> {
        let pool = DbPool::open(url).await?;
        self.start(pool).await
    }

    /// Starts the engine on an open pool (the app's own, migrated).
    pub async fn start(self, pool: DbPool) -> Result<SyncServer, OpenError> {
        for sql in &self.schema {
            pool.execute_script(sql).await?;
        }
        let server: Arc<dyn DynEngine> = match &pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => Arc::new(
                self.declare(Engine::builder(
                    sssync_core::server::SqliteStore::from_pool(p.clone()),
                ))
                .start()
                .await?,
            ),
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => Arc::new(
                self.declare(Engine::builder(
                    sssync_core::server::PgStore::from_pool(p.clone()).await?,
                ))
                .start()
                .await?,
            ),
        };
        Ok(SyncServer {
            engine: server,
            pool: Some(pool),
            kept: self.keep.map(super::kept::KeptPages::new),
        })
    }

    fn declare<S: Store>(
        &self,
        mut builder: sssync_core::server::EngineBuilder<S>,
    ) -> sssync_core::server::EngineBuilder<S>
    where
        S::Db: sssync_core::server::declared::DeclaredDb,
    {
        for t in &self.tables {
            builder = builder.table(t.clone());
        }
        if let Some(f) = self.identify.clone() {
            builder = builder.identify(move |parts| f(parts));
        }
        builder.declared()
    }
}
