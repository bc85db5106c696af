//! The demo's storage: an embedded SQLite file (WAL, durable commits) by default, or PostgreSQL
//! when `DATABASE_URL` is a `postgres://` URL; migrations applied at start (one folder per
//! database: `migrations/sqlite`, `migrations/postgres`).

/// The connection pool (shared with the sync engine), on either database.
pub use sssync_leptos::server::DbPool as Pool;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL names no database the demo runs on.
    #[error(
        "unsupported database URL {0:?}: the demo runs on SQLite (sqlite://sssync-demo.db) or \
         PostgreSQL (postgres://user@host/database)"
    )]
    Unsupported(String),
    /// The database refused to open.
    #[error("cannot open the database: {0}")]
    Open(sssync_leptos::server::OpenError),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens the database at `url` (creating a SQLite file if missing) and applies the migrations.
pub async fn open(url: &str) -> Result<Pool, OpenError> {
    let pool = Pool::open(url).await.map_err(|e| match e {
        sssync_leptos::server::OpenError::Unsupported(u) => OpenError::Unsupported(u),
        other => OpenError::Open(other),
    })?;
    match &pool {
        Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
        Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_url_is_refused_with_a_clear_error() {
        let err = open("mysql://127.0.0.1/test").await.unwrap_err();
        assert!(matches!(err, OpenError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
    }
}
