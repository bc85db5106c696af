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

use super::shared::{shared_helpers, shared_methods};
use super::{Change, ClientRow, LogRead, RowChange, Store, StoreError};
use crate::server::Table;
use crate::server::schema::PartitionValue;
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
    shared_helpers!();

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

    shared_methods! {
        part_bytes: "CAST(part AS BLOB)",
        any_whole: "MAX(row_key IS NULL)",
        keys_json: "json_group_array(DISTINCT row_key)",
        row_id: "rowid",
    }

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn init(&self) -> Result<(Epoch, Version, String), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.execute(INIT).await?;
        Self::migrate(&mut conn).await?;
        Self::init_meta(&mut conn).await
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
        super::shared::is_transient(err, |code| {
            // The primary result code (the low byte of the extended one): BUSY, LOCKED, NOMEM,
            // IOERR, FULL, CANTOPEN, PROTOCOL.
            let primary = code.parse::<i32>().unwrap_or(0) & 0xff;
            matches!(primary, 5 | 6 | 7 | 10 | 13 | 14 | 15)
        })
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

    async fn begin_read(conn: &mut SqliteConnection) -> Result<(), StoreError> {
        conn.execute("BEGIN").await.map(drop)
    }

    async fn column_info(
        &self,
        table: &str,
        column: &str,
    ) -> Result<Option<crate::server::ColumnInfo>, StoreError> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT type, \"notnull\", pk FROM pragma_table_info(?1) WHERE name = ?2",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(declared_type, not_null, pk)| crate::server::ColumnInfo {
                // An INTEGER PRIMARY KEY is the rowid: never NULL.
                not_null: not_null != 0
                    || (pk > 0 && declared_type.eq_ignore_ascii_case("INTEGER")),
                declared_type,
            }),
        )
    }
}
