//! PostgreSQL: one database shared by any number of server instances.
//!
//! - **Versions follow commit order across instances.** Every write transaction of an engine
//!   first locks the one row of `sssync_meta` (`SELECT … FOR UPDATE`) and keeps it to its
//!   commit; it takes its version by updating that row. So no transaction can take version 8
//!   before the one that took 7 has committed, and a tailer that sees 8 has seen 7.
//! - **The change log is written by triggers** (PL/pgSQL, one function per declared table, row
//!   and `TRUNCATE` triggers), for every writer: an engine's batch records its version (from the
//!   transaction-local setting `sssync.version`); any other writer (an administrator's `psql`, a
//!   cron job, a migration) records its changes without one, rings the doorbell, and the next
//!   engine to look seals them (gives them a version).
//! - **`LISTEN`/`NOTIFY` is a doorbell only** (channel `sssync_<schema>`): it wakes the tailers
//!   at once; they also poll, so a missed notification costs latency, never a change.
//! - The engine's tables live in the connection's current schema (its `search_path`), so that
//!   one PostgreSQL database can hold several apps (or tests) side by side.

use super::shared::{shared_helpers, shared_methods};
use super::{Change, ClientRow, LogRead, RowChange, Store, StoreError};
use crate::server::Table;
use crate::server::schema::PartitionValue;
use crate::version::{Epoch, Version};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, Row as _};
use std::sync::Arc;
use std::time::Duration;

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The schema the engine's tables are in (the connections' current schema).
    schema: Arc<str>,
}

/// A key for `pg_advisory_xact_lock`: several instances starting at once create the engine's
/// tables and triggers one after the other.
const INIT_LOCK: i64 = 0x5353_594e_4331;

impl PgStore {
    shared_helpers!();

    /// Connects to the database at `url` (`postgres://…`).
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        PgStore::from_pool(pool).await
    }

    /// A store over an existing pool (the engine's tables go to its connections' current
    /// schema).
    pub async fn from_pool(pool: PgPool) -> Result<PgStore, StoreError> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        Ok(PgStore {
            pool,
            schema: schema.into(),
        })
    }

    /// The channel the doorbell rings on.
    fn channel(&self) -> String {
        channel(&self.schema)
    }
}

fn channel(schema: &str) -> String {
    let clean: String = schema
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("sssync_{clean}")
}

/// `"name"`, with inner quotes doubled.
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

const INIT: &str = "
CREATE TABLE IF NOT EXISTS sssync_meta (
    id      INT    PRIMARY KEY CHECK (id = 1),
    epoch   TEXT   NOT NULL,
    version BIGINT NOT NULL,
    horizon BIGINT NOT NULL DEFAULT 0,
    secret  TEXT
);
CREATE TABLE IF NOT EXISTS sssync_clients (
    client_id TEXT   PRIMARY KEY,
    last_seq  BIGINT NOT NULL,
    owner     TEXT
);
ALTER TABLE sssync_clients ADD COLUMN IF NOT EXISTS owner TEXT;
CREATE TABLE IF NOT EXISTS sssync_changes (
    version BIGINT,
    tbl     TEXT NOT NULL,
    row_key TEXT,
    part    TEXT
);
CREATE INDEX IF NOT EXISTS sssync_changes_by_version ON sssync_changes (version);
CREATE INDEX IF NOT EXISTS sssync_changes_unsealed ON sssync_changes ((1)) WHERE version IS NULL;
";

impl Store for PgStore {
    type Db = sqlx::Postgres;

    shared_methods! {
        part_bytes: "convert_to(part, 'UTF8')",
        any_whole: "bool_or(row_key IS NULL)",
        keys_json: "CAST(json_agg(DISTINCT row_key) AS text)",
        row_id: "ctid",
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn init(&self) -> Result<(Epoch, Version, String), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INIT_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(INIT).execute(&mut *tx).await?;
        let out = Self::init_meta(&mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn install_table(&self, t: &Table) -> Result<(), StoreError> {
        // Identifiers were checked by `Table` (ASCII letters, digits, `_`); the schema is
        // quoted. The function names the change log with its schema, so that it works from any
        // session, whatever its search_path.
        let (name, key) = (t.name(), t.key_column());
        let schema = quote(&self.schema);
        let part = |row: &str| match t.partition_column() {
            Some(p) => format!("{row}.\"{p}\"::text"),
            None => "NULL".to_owned(),
        };
        let channel = self.channel();
        let ddl = format!(
            "CREATE OR REPLACE FUNCTION {schema}.\"sssync_log_{name}\"() RETURNS trigger
             LANGUAGE plpgsql AS $sssync$
             DECLARE v BIGINT := NULLIF(current_setting('sssync.version', true), '')::BIGINT;
             BEGIN
               IF TG_OP = 'TRUNCATE' THEN
                 INSERT INTO {schema}.sssync_changes (version, tbl, row_key, part)
                   VALUES (v, '{name}', NULL, NULL);
               ELSE
                 IF TG_OP IN ('UPDATE', 'DELETE') THEN
                   INSERT INTO {schema}.sssync_changes (version, tbl, row_key, part)
                     VALUES (v, '{name}', OLD.\"{key}\"::text, {old});
                 END IF;
                 IF TG_OP IN ('INSERT', 'UPDATE') THEN
                   INSERT INTO {schema}.sssync_changes (version, tbl, row_key, part)
                     VALUES (v, '{name}', NEW.\"{key}\"::text, {new});
                 END IF;
               END IF;
               IF v IS NULL THEN
                 PERFORM pg_notify('{channel}', '');
               END IF;
               RETURN NULL;
             END $sssync$;
             CREATE OR REPLACE TRIGGER \"sssync_{name}\"
               AFTER INSERT OR UPDATE OR DELETE ON \"{name}\"
               FOR EACH ROW EXECUTE FUNCTION {schema}.\"sssync_log_{name}\"();
             CREATE OR REPLACE TRIGGER \"sssync_{name}_truncate\"
               AFTER TRUNCATE ON \"{name}\"
               FOR EACH STATEMENT EXECUTE FUNCTION {schema}.\"sssync_log_{name}\"();",
            old = part("OLD"),
            new = part("NEW"),
        );
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(INIT_LOCK)
            .execute(&mut *tx)
            .await?;
        (&mut *tx).execute(AssertSqlSafe(ddl)).await?;
        tx.commit().await
    }

    fn partition_text(value: &PartitionValue) -> String {
        // As PostgreSQL casts the column to text.
        match value {
            PartitionValue::Text(t) => t.clone(),
            PartitionValue::Int(i) => i.to_string(),
            PartitionValue::Bool(b) => b.to_string(),
            PartitionValue::Bytes(b) => {
                let mut s = String::with_capacity(2 + 2 * b.len());
                s.push_str("\\x");
                for byte in b {
                    s.push_str(&format!("{byte:02x}"));
                }
                s
            }
            PartitionValue::Uuid(u) => u.hyphenated().to_string(),
        }
    }

    fn is_transient(err: &StoreError) -> bool {
        super::shared::is_transient(err, |code| {
            // Serialization failure, deadlock, lock not available, insufficient resources
            // (disk full, out of memory, too many connections), the server going down or
            // starting, a lost connection.
            matches!(
                code,
                "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03"
            ) || code.starts_with("53")
                || code.starts_with("08")
        })
    }

    async fn begin(conn: &mut PgConnection) -> Result<(), StoreError> {
        // Every engine write transaction takes the meta row first and holds it to its commit:
        // versions follow commit order, and a client's last_seq is read by one writer at a time.
        conn.execute("BEGIN").await?;
        sqlx::query("SELECT version FROM sssync_meta WHERE id = 1 FOR UPDATE")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn commit(conn: &mut PgConnection) -> Result<(), StoreError> {
        conn.execute("COMMIT").await.map(drop)
    }

    async fn bump_version(conn: &mut PgConnection) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar(
            "UPDATE sssync_meta SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *conn)
        .await?;
        // The triggers record this version for the batch's writes; the doorbell (of the
        // schema's channel) rings at the commit: a notification is delivered then, and only then.
        sqlx::query(
            "SELECT set_config('sssync.version', $1, true), \
             pg_notify('sssync_' || regexp_replace(current_schema(), '[^A-Za-z0-9]', '_', 'g'), '')",
        )
        .bind(v.to_string())
        .execute(&mut *conn)
        .await?;
        Self::mark(conn, v).await?;
        Ok(Version(v as u64))
    }

    async fn begin_read(conn: &mut PgConnection) -> Result<(), StoreError> {
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map(drop)
    }

    async fn column_info(
        &self,
        table: &str,
        column: &str,
    ) -> Result<Option<crate::server::ColumnInfo>, StoreError> {
        let row: Option<(String, bool)> = sqlx::query_as(
            "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a \
             WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attname = $2 \
             AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(declared_type, not_null)| crate::server::ColumnInfo {
                declared_type,
                not_null,
            }),
        )
    }

    fn doorbell(&self, bell: Arc<tokio::sync::Notify>) -> Option<tokio::task::JoinHandle<()>> {
        let pool = self.pool.clone();
        let channel = self.channel();
        Some(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let listener = async {
                    let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    l.listen(&channel).await?;
                    Ok::<_, sqlx::Error>(l)
                }
                .await;
                match listener {
                    Ok(mut l) => {
                        backoff = Duration::from_millis(100);
                        // A listener that lost its connection reconnects by itself; the tailer
                        // polls meanwhile.
                        while l.recv().await.is_ok() {
                            bell.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "LISTEN failed; the tailer polls meanwhile");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }))
    }
}
