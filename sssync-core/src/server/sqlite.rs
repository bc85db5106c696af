//! The embedded default: SQLite in WAL mode, `synchronous = FULL` (a commit is durable when it
//! returns, so an acknowledged event survives a power cut).

use super::Table;
use super::store::{Store, StoreError};
use crate::version::{Epoch, Version};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Executor, Row as _, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`
    /// is refused: the engine needs a file shared by its connections).
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool })
    }

    /// A store over an existing pool (its connections should be WAL with a busy timeout).
    pub fn from_pool(pool: SqlitePool) -> SqliteStore {
        SqliteStore { pool }
    }
}

const INIT: &str = "
CREATE TABLE IF NOT EXISTS sssync_meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   TEXT    NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sssync_clients (
    client_id TEXT    PRIMARY KEY NOT NULL,
    last_seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sssync_changes (
    version INTEGER NOT NULL,
    tbl     TEXT    NOT NULL,
    row_key TEXT,
    part    TEXT
);
CREATE INDEX IF NOT EXISTS sssync_changes_by_version ON sssync_changes (version);
";

impl Store for SqliteStore {
    type Db = sqlx::Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn init(&self) -> Result<(Epoch, Version), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.execute(INIT).await?;
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query("INSERT OR IGNORE INTO sssync_meta (id, epoch, version) VALUES (1, ?, 0)")
            .bind(&epoch)
            .execute(&mut *conn)
            .await?;
        let row = sqlx::query("SELECT epoch, version FROM sssync_meta WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok((
            Epoch(row.try_get("epoch")?),
            Version(row.try_get::<i64, _>("version")? as u64),
        ))
    }

    async fn install_table(&self, t: &Table) -> Result<(), StoreError> {
        // Identifiers were checked by `Table` (ASCII letters, digits, `_`): safe to splice.
        let (name, key) = (t.name(), t.key_column());
        let part = |row: &str| match t.partition_column() {
            Some(p) => format!("CAST({row}.\"{p}\" AS TEXT)"),
            None => "NULL".to_owned(),
        };
        let insert = |row: &str| {
            format!(
                "INSERT INTO sssync_changes (version, tbl, row_key, part) \
                 SELECT version, '{name}', CAST({row}.\"{key}\" AS TEXT), {} FROM sssync_meta;",
                part(row)
            )
        };
        let ddl = format!(
            "CREATE TRIGGER IF NOT EXISTS \"sssync_{name}_ins\" AFTER INSERT ON \"{name}\" BEGIN {new} END;
             CREATE TRIGGER IF NOT EXISTS \"sssync_{name}_upd\" AFTER UPDATE ON \"{name}\" BEGIN {old} {new} END;
             CREATE TRIGGER IF NOT EXISTS \"sssync_{name}_del\" AFTER DELETE ON \"{name}\" BEGIN {old} END;",
            new = insert("NEW"),
            old = insert("OLD"),
        );
        self.pool.execute(AssertSqlSafe(ddl)).await?;
        Ok(())
    }

    async fn last_seq(&self, client_id: &str) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::read_last_seq(&mut conn, client_id).await
    }

    async fn begin(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("BEGIN IMMEDIATE").await.map(drop)
    }

    async fn commit(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("COMMIT").await.map(drop)
    }

    async fn rollback(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("ROLLBACK").await.map(drop)
    }

    async fn savepoint(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("SAVEPOINT sssync_event").await.map(drop)
    }

    async fn release(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("RELEASE sssync_event").await.map(drop)
    }

    async fn rollback_to_savepoint(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("ROLLBACK TO sssync_event; RELEASE sssync_event")
            .await
            .map(drop)
    }

    async fn bump_version(conn: &mut SqliteConnection) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar(
            "UPDATE sssync_meta SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(Version(v as u64))
    }

    async fn version(conn: &mut SqliteConnection) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM sssync_meta WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Version(v as u64))
    }

    async fn read_last_seq(
        conn: &mut SqliteConnection,
        client_id: &str,
    ) -> Result<u64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM sssync_clients WHERE client_id = ?")
                .bind(client_id)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    async fn write_last_seq(
        conn: &mut SqliteConnection,
        client_id: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sssync_clients (client_id, last_seq) VALUES (?, ?) \
             ON CONFLICT (client_id) DO UPDATE SET last_seq = excluded.last_seq",
        )
        .bind(client_id)
        .bind(seq as i64)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn changes_at(
        conn: &mut SqliteConnection,
        version: Version,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        sqlx::query_as("SELECT DISTINCT tbl, part FROM sssync_changes WHERE version = ?")
            .bind(version.0 as i64)
            .fetch_all(&mut *conn)
            .await
    }

    async fn begin_read(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("BEGIN").await.map(drop)
    }

    async fn prune_changes(&self, before: Version) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sssync_changes WHERE version < ?")
            .bind(before.0 as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
