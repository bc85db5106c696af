//! The demo's storage: an embedded SQLite file (WAL, durable commits) by default, or PostgreSQL
//! when `DATABASE_URL` is a `postgres://` URL; migrations applied at start (one folder per
//! database: `migrations/sqlite`, `migrations/postgres`).

/// The connection pool (shared with the sync engine), on either database.
#[derive(Clone, Debug)]
pub enum Pool {
    /// The embedded default.
    Sqlite(sqlx::SqlitePool),
    /// One database for any number of server instances.
    Postgres(sqlx::PgPool),
}

impl Pool {
    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

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
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens the database at `url` (creating a SQLite file if missing) and applies the migrations.
pub async fn open(url: &str) -> Result<Pool, OpenError> {
    if url.starts_with("sqlite:") {
        // WAL, durable commits (an acknowledged write must survive a crash), a busy timeout,
        // recursive triggers (the change log sees the rows an INSERT OR REPLACE deletes).
        let options = sssync_core::server::SqliteStore::connect_options(url)?;
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Pool::Sqlite(pool))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Pool::Postgres(pool))
    } else {
        Err(OpenError::Unsupported(url.to_owned()))
    }
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
