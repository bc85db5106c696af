//! The embedded default: SQLite in WAL mode, `synchronous = FULL` (a commit is durable when it
//! returns, so an acknowledged event survives a power cut).
//!
//! SQLite has one writer at a time, so versions follow commit order by themselves. The engine's
//! write transactions raise `sssync_meta.writing` while they run (and lower it before they
//! commit, so nobody else ever sees it raised): the change-log triggers then record the
//! batch's version; any other writer (another server process on the same file, the `sqlite3`
//! shell, the application's own pool) records its changes without one, and the engine seals
//! them. So every write to a declared table reaches every subscriber, and several server
//! processes can share one file.

use super::Table;
use super::schema::PartitionValue;
use super::store::{Change, ClientRow, LogRead, RowChange, Store, StoreError};
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
    /// Opens (creating if missing) the database at `url` (`sqlite://path`; the engine needs a
    /// file shared by its connections), with [`SqliteStore::connect_options`].
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(Self::connect_options(url)?)
            .await?;
        Ok(SqliteStore { pool })
    }

    /// The connection settings the engine relies on, for an application that builds its own
    /// pool: WAL, `synchronous = FULL` (a commit is durable when it returns), a busy timeout,
    /// foreign keys, and `recursive_triggers` (without it SQLite fires no delete trigger for the
    /// rows an `INSERT OR REPLACE` deletes, and the change log would miss them).
    pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
        Ok(SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("recursive_triggers", "ON"))
    }

    /// A store over an existing pool (its connections should have the settings of
    /// [`SqliteStore::connect_options`]; the engine's own write transactions turn
    /// `recursive_triggers` on in any case).
    pub fn from_pool(pool: SqlitePool) -> SqliteStore {
        SqliteStore { pool }
    }
}

const INIT: &str = "
CREATE TABLE IF NOT EXISTS sssync_meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   TEXT    NOT NULL,
    version INTEGER NOT NULL,
    writing INTEGER NOT NULL DEFAULT 0,
    horizon INTEGER NOT NULL DEFAULT 0,
    secret  TEXT
);
CREATE TABLE IF NOT EXISTS sssync_clients (
    client_id TEXT    PRIMARY KEY NOT NULL,
    last_seq  INTEGER NOT NULL,
    owner     TEXT
);
CREATE TABLE IF NOT EXISTS sssync_changes (
    version INTEGER,
    tbl     TEXT    NOT NULL,
    row_key TEXT,
    part    TEXT
);
CREATE INDEX IF NOT EXISTS sssync_changes_by_version ON sssync_changes (version);
";

/// The version the change-log triggers record: the engine's batch's, or none (to be sealed).
const TRIGGER_VERSION: &str =
    "(SELECT CASE WHEN writing = 1 THEN version END FROM sssync_meta WHERE id = 1)";

impl SqliteStore {
    /// Gives version `v` its commit mark (see `store::COMMIT_MARK`).
    async fn mark(conn: &mut SqliteConnection, v: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sssync_changes (version, tbl, row_key, part) VALUES (?, ?, ?, NULL)",
        )
        .bind(v)
        .bind(super::store::COMMIT_MARK)
        .bind(super::store::new_mark())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Brings the engine's tables of a database made by an older sssync up to date.
    async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        let cols: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, \"notnull\" FROM pragma_table_info('sssync_meta')")
                .fetch_all(&mut *conn)
                .await?;
        for (col, decl) in [
            ("writing", "INTEGER NOT NULL DEFAULT 0"),
            ("horizon", "INTEGER NOT NULL DEFAULT 0"),
            ("secret", "TEXT"),
        ] {
            if !cols.iter().any(|(n, _)| n == col) {
                conn.execute(AssertSqlSafe(format!(
                    "ALTER TABLE sssync_meta ADD COLUMN {col} {decl}"
                )))
                .await?;
            }
        }
        let client_cols: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('sssync_clients')")
                .fetch_all(&mut *conn)
                .await?;
        if !client_cols.iter().any(|c| c == "owner") {
            conn.execute("ALTER TABLE sssync_clients ADD COLUMN owner TEXT")
                .await?;
        }
        let version_not_null: Option<i64> = sqlx::query_scalar(
            "SELECT \"notnull\" FROM pragma_table_info('sssync_changes') WHERE name = 'version'",
        )
        .fetch_optional(&mut *conn)
        .await?;
        if version_not_null == Some(1) {
            // Entries written outside the engine have no version until sealed.
            conn.execute(
                "BEGIN IMMEDIATE;
                 CREATE TABLE sssync_changes_new (version INTEGER, tbl TEXT NOT NULL, row_key TEXT, part TEXT);
                 INSERT INTO sssync_changes_new SELECT version, tbl, row_key, part FROM sssync_changes;
                 DROP TABLE sssync_changes;
                 ALTER TABLE sssync_changes_new RENAME TO sssync_changes;
                 CREATE INDEX IF NOT EXISTS sssync_changes_by_version ON sssync_changes (version);
                 COMMIT;",
            )
            .await?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    type Db = sqlx::Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn init(&self) -> Result<(Epoch, Version, String), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.execute(INIT).await?;
        Self::migrate(&mut conn).await?;
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query("INSERT OR IGNORE INTO sssync_meta (id, epoch, version) VALUES (1, ?, 0)")
            .bind(&epoch)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE sssync_meta SET secret = ? WHERE id = 1 AND secret IS NULL")
            .bind(super::engine::new_secret())
            .execute(&mut *conn)
            .await?;
        let row = sqlx::query("SELECT epoch, version, secret FROM sssync_meta WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok((
            Epoch(row.try_get("epoch")?),
            Version(row.try_get::<i64, _>("version")? as u64),
            row.try_get("secret")?,
        ))
    }

    async fn install_table(&self, t: &Table) -> Result<(), StoreError> {
        // Identifiers were checked by `Table` (ASCII letters, digits, `_`): safe to splice.
        let (name, key) = (t.name(), t.key_column());
        // A column's value as text, whatever its storage class: a BLOB (a `Uuid` bound by sqlx,
        // bytes) as `x` and its hex digits, so that the log is always valid UTF-8 and matches
        // `partition_text`.
        let text = |row: &str, col: &str| {
            format!(
                "CASE typeof({row}.\"{col}\") WHEN 'blob' THEN 'x' || hex({row}.\"{col}\") \
                 ELSE CAST({row}.\"{col}\" AS TEXT) END"
            )
        };
        let part = |row: &str| match t.partition_column() {
            Some(p) => text(row, p),
            None => "NULL".to_owned(),
        };
        let insert = |row: &str| {
            format!(
                "INSERT INTO sssync_changes (version, tbl, row_key, part) \
                 VALUES ({TRIGGER_VERSION}, '{name}', {}, {});",
                text(row, key),
                part(row)
            )
        };
        let mut conn = self.pool.acquire().await?;
        // A REPLACE deletes the rows its new row conflicts with (same key, or same value of any
        // unique index) without firing their delete triggers, unless the connection turned
        // `recursive_triggers` on (the engine's do; an outside writer, the sqlite3 shell, may
        // not). For such a connection, BEFORE triggers log every row the new values conflict
        // with: a row that then stays (a plain INSERT refused, an OR IGNORE) costs one re-read.
        let mut uniques: Vec<Vec<String>> = vec![vec![key.to_owned()]];
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM pragma_index_list(?) WHERE \"unique\" = 1 ORDER BY name",
        )
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
        for index in indexes {
            let cols: Vec<(Option<String>, i64)> =
                sqlx::query_as("SELECT name, cid FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(&mut *conn)
                    .await?;
            // An index on an expression cannot be matched here (documented).
            let named: Option<Vec<String>> = cols
                .into_iter()
                .map(|(n, cid)| n.filter(|_| cid >= 0))
                .collect();
            if let Some(named) = named.filter(|n| !n.is_empty())
                && !uniques.contains(&named)
            {
                uniques.push(named);
            }
        }
        let conflicts = uniques
            .iter()
            .map(|cols| {
                let each: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        format!(
                            "r.\"{}\" = NEW.\"{}\"",
                            c.replace('"', "\"\""),
                            c.replace('"', "\"\"")
                        )
                    })
                    .collect();
                format!("({})", each.join(" AND "))
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let unique_columns = {
            let mut all: Vec<&String> = uniques.iter().flatten().collect();
            all.sort();
            all.dedup();
            all.iter()
                .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let replaced = |also: &str| {
            format!(
                "INSERT INTO sssync_changes (version, tbl, row_key, part) \
                 SELECT {TRIGGER_VERSION}, '{name}', {}, {} FROM \"{name}\" AS r \
                 WHERE ({conflicts}){also};",
                text("r", key),
                part("r")
            )
        };
        let plain = "(SELECT recursive_triggers FROM pragma_recursive_triggers) = 0";
        // Replaced, not kept: a trigger from an older declaration (or an older sssync) must not
        // stay behind.
        let ddl = format!(
            "BEGIN IMMEDIATE;
             DROP TRIGGER IF EXISTS \"sssync_{name}_ins\";
             DROP TRIGGER IF EXISTS \"sssync_{name}_upd\";
             DROP TRIGGER IF EXISTS \"sssync_{name}_del\";
             DROP TRIGGER IF EXISTS \"sssync_{name}_rep\";
             DROP TRIGGER IF EXISTS \"sssync_{name}_repu\";
             CREATE TRIGGER \"sssync_{name}_ins\" AFTER INSERT ON \"{name}\" BEGIN {new} END;
             CREATE TRIGGER \"sssync_{name}_upd\" AFTER UPDATE ON \"{name}\" BEGIN {old} {new} END;
             CREATE TRIGGER \"sssync_{name}_del\" AFTER DELETE ON \"{name}\" BEGIN {old} END;
             CREATE TRIGGER \"sssync_{name}_rep\" BEFORE INSERT ON \"{name}\" WHEN {plain}
                 BEGIN {rep} END;
             CREATE TRIGGER \"sssync_{name}_repu\" BEFORE UPDATE OF {unique_columns} ON \"{name}\"
                 WHEN {plain} BEGIN {repu} END;
             COMMIT;",
            new = insert("NEW"),
            old = insert("OLD"),
            rep = replaced(""),
            repu = replaced(&format!(" AND NOT (r.\"{key}\" IS OLD.\"{key}\")")),
        );
        if let Err(e) = conn.execute(AssertSqlSafe(ddl)).await {
            let _ = conn.execute("ROLLBACK").await;
            return Err(e);
        }
        Ok(())
    }

    async fn hello_state(
        &self,
        client_id: &str,
    ) -> Result<(Epoch, Option<ClientRow>, Version), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.execute("BEGIN").await?;
        let result = async {
            let row = sqlx::query("SELECT epoch, version FROM sssync_meta WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
            let last = Self::read_client(&mut conn, client_id).await?;
            Ok::<_, StoreError>((
                Epoch(row.try_get("epoch")?),
                last,
                Version(row.try_get::<i64, _>("version")? as u64),
            ))
        }
        .await;
        if conn.execute("ROLLBACK").await.is_err() {
            conn.close_on_drop();
        }
        result
    }

    async fn rotate_epoch(conn: &mut SqliteConnection, seen: &Epoch) -> Result<Epoch, StoreError> {
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query("UPDATE sssync_meta SET epoch = ? WHERE id = 1 AND epoch = ?")
            .bind(&epoch)
            .bind(&seen.0)
            .execute(&mut *conn)
            .await?;
        let now: String = sqlx::query_scalar("SELECT epoch FROM sssync_meta WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Epoch(now))
    }

    fn partition_text(value: &PartitionValue) -> String {
        fn hex(bytes: &[u8]) -> String {
            let mut s = String::with_capacity(1 + 2 * bytes.len());
            s.push('x');
            for b in bytes {
                s.push_str(&format!("{b:02X}"));
            }
            s
        }
        match value {
            PartitionValue::Text(t) => t.clone(),
            PartitionValue::Int(i) => i.to_string(),
            PartitionValue::Bool(b) => u8::from(*b).to_string(),
            PartitionValue::Bytes(b) => hex(b),
            PartitionValue::Uuid(u) => hex(u.as_bytes()),
        }
    }

    fn is_transient(err: &StoreError) -> bool {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                // The primary result code (the low byte of the extended one).
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
                // BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL.
                matches!(code, 5 | 6 | 7 | 10 | 13 | 14 | 15)
            }
            _ => false,
        }
    }

    fn is_handler_fault(err: &StoreError) -> bool {
        // BUSY or LOCKED: the engine's connection holds the write lock, so the handler used
        // another connection (or a shared cache).
        err.as_database_error()
            .and_then(|db| db.code())
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6))
    }

    async fn begin(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        // The delete triggers must fire for the rows an INSERT OR REPLACE removes.
        conn.execute("PRAGMA recursive_triggers = ON; BEGIN IMMEDIATE")
            .await
            .map(drop)
    }

    async fn commit(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        // Lowered inside the transaction: no other connection ever sees it raised.
        conn.execute("UPDATE sssync_meta SET writing = 0 WHERE id = 1 AND writing = 1; COMMIT")
            .await
            .map(drop)
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
            "UPDATE sssync_meta SET version = version + 1, writing = 1 WHERE id = 1 \
             RETURNING version",
        )
        .fetch_one(&mut *conn)
        .await?;
        Self::mark(conn, v).await?;
        Ok(Version(v as u64))
    }

    async fn seal(conn: &mut SqliteConnection) -> Result<Option<Version>, StoreError> {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sssync_changes WHERE version IS NULL)",
        )
        .fetch_one(&mut *conn)
        .await?;
        if !waiting {
            return Ok(None);
        }
        let v: i64 = sqlx::query_scalar(
            "UPDATE sssync_meta SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query("UPDATE sssync_changes SET version = ? WHERE version IS NULL")
            .bind(v)
            .execute(&mut *conn)
            .await?;
        Self::mark(conn, v).await?;
        Ok(Some(Version(v as u64)))
    }

    async fn version(conn: &mut SqliteConnection) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM sssync_meta WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Version(v as u64))
    }

    async fn read_client(
        conn: &mut SqliteConnection,
        client_id: &str,
    ) -> Result<Option<ClientRow>, StoreError> {
        let row: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT last_seq, owner FROM sssync_clients WHERE client_id = ?")
                .bind(client_id)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(row.map(|(last_seq, owner)| ClientRow {
            last_seq: last_seq as u64,
            owner,
        }))
    }

    async fn write_last_seq(
        conn: &mut SqliteConnection,
        client_id: &str,
        seq: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sssync_clients (client_id, last_seq, owner) VALUES (?, ?, ?) \
             ON CONFLICT (client_id) DO UPDATE SET last_seq = excluded.last_seq",
        )
        .bind(client_id)
        .bind(seq as i64)
        .bind(owner)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn begin_read(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("BEGIN").await.map(drop)
    }

    async fn read_log(
        conn: &mut SqliteConnection,
        after: Version,
        max_versions: u64,
    ) -> Result<LogRead, StoreError> {
        let row = sqlx::query(super::store::READ_META)
            .fetch_one(&mut *conn)
            .await?;
        let unsealed: bool = row.try_get("unsealed")?;
        let epoch = Epoch(row.try_get("epoch")?);
        let now = row.try_get::<i64, _>("version")? as u64;
        let upto = now.min(after.0.saturating_add(max_versions.max(1)));
        // Read as bytes: a log written by an older trigger may hold text that is not UTF-8, and
        // it must not fail the fan-out of every query.
        let rows: Vec<(i64, String, Option<Vec<u8>>, bool)> = sqlx::query_as(
            "SELECT version, tbl, CAST(part AS BLOB), MAX(row_key IS NULL) FROM sssync_changes \
             WHERE version > ? AND version <= ? AND tbl <> '' \
             GROUP BY version, tbl, part ORDER BY version",
        )
        .bind(after.0 as i64)
        .bind(upto as i64)
        .fetch_all(&mut *conn)
        .await?;
        let marks: Vec<(i64, String)> = sqlx::query_as(
            "SELECT version, row_key FROM sssync_changes \
             WHERE tbl = '' AND version IN (?, ?) AND row_key IS NOT NULL",
        )
        .bind(after.0 as i64)
        .bind(upto as i64)
        .fetch_all(&mut *conn)
        .await?;
        Ok(LogRead {
            epoch,
            version: Version(upto),
            changes: rows
                .into_iter()
                .map(|(v, table, part, whole)| Change {
                    version: Version(v as u64),
                    table,
                    part: part.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    whole,
                })
                .collect(),
            unsealed,
            capped: upto < now,
            horizon: Version(row.try_get::<i64, _>("horizon")?.max(0) as u64),
            mark_after: marks
                .iter()
                .find(|m| m.0 == after.0 as i64)
                .map(|m| m.1.clone()),
            mark: marks
                .iter()
                .find(|m| m.0 == upto as i64)
                .map(|m| m.1.clone()),
        })
    }

    async fn read_row_changes(
        conn: &mut SqliteConnection,
        after: Version,
        upto: Version,
        limit: usize,
    ) -> Result<Option<Vec<RowChange>>, StoreError> {
        // One row per (table, partition), its keys as a JSON array: a row of the log costs
        // nothing through the driver.
        let groups: Vec<(String, Option<Vec<u8>>, String, i64)> = sqlx::query_as(
            "SELECT tbl, CAST(part AS BLOB), json_group_array(DISTINCT row_key), COUNT(*) \
             FROM (SELECT tbl, part, row_key FROM sssync_changes \
                   WHERE version > ? AND version <= ? AND row_key IS NOT NULL \
                   AND tbl <> '' LIMIT ?) \
             GROUP BY tbl, part",
        )
        .bind(after.0 as i64)
        .bind(upto.0 as i64)
        .bind(limit.saturating_add(1).min(i64::MAX as usize) as i64)
        .fetch_all(&mut *conn)
        .await?;
        super::store::row_changes(
            groups
                .into_iter()
                .map(|(t, p, k, n)| (t, p.map(|b| String::from_utf8_lossy(&b).into_owned()), k, n)),
            limit,
        )
    }

    async fn column_info(
        &self,
        table: &str,
        column: &str,
    ) -> Result<Option<super::ColumnInfo>, StoreError> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT type, \"notnull\", pk FROM pragma_table_info(?1) WHERE name = ?2",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(declared_type, not_null, pk)| super::ColumnInfo {
            // An INTEGER PRIMARY KEY is the rowid: never NULL.
            not_null: not_null != 0 || (pk > 0 && declared_type.eq_ignore_ascii_case("INTEGER")),
            declared_type,
        }))
    }

    async fn changed_keys(
        &self,
        table: &str,
        part: Option<&str>,
        after: Version,
        upto: Version,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.execute("BEGIN").await?;
        let result = async {
            let horizon: i64 = sqlx::query_scalar("SELECT horizon FROM sssync_meta WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
            if (after.0 as i64) < horizon {
                return Ok(None);
            }
            let keys: Vec<Option<String>> = sqlx::query_scalar(
                // Unsealed entries too: a write made outside the engine is visible in the rows
                // before its entry has a version.
                "SELECT DISTINCT row_key FROM sssync_changes WHERE \
                 ((version > ?1 AND version <= ?2) OR version IS NULL) AND tbl = ?3 AND \
                 (?4 IS NULL OR part = ?4 OR row_key IS NULL) LIMIT ?5",
            )
            .bind(after.0 as i64)
            .bind(upto.0 as i64)
            .bind(table)
            .bind(part)
            .bind(limit as i64 + 1)
            .fetch_all(&mut *conn)
            .await?;
            if keys.len() > limit || keys.iter().any(Option::is_none) {
                return Ok(None);
            }
            Ok::<_, StoreError>(Some(keys.into_iter().flatten().collect()))
        }
        .await;
        if conn.execute("ROLLBACK").await.is_err() {
            conn.close_on_drop();
        }
        result
    }

    async fn prune(&self, keep: u64, max_rows: u64) -> Result<(), StoreError> {
        let (now, horizon): (i64, i64) =
            sqlx::query_as("SELECT version, horizon FROM sssync_meta WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let target = now - keep as i64;
        if target <= 0 {
            return Ok(());
        }
        // The horizon moves first: a resume that reads the log meanwhile refuses what is
        // about to go.
        if target > horizon {
            sqlx::query("UPDATE sssync_meta SET horizon = ? WHERE id = 1 AND horizon < ?")
                .bind(target)
                .bind(target)
                .execute(&self.pool)
                .await?;
        }
        sqlx::query(
            "DELETE FROM sssync_changes WHERE rowid IN \
             (SELECT rowid FROM sssync_changes WHERE version < ? LIMIT ?)",
        )
        .bind(target)
        .bind(max_rows as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
