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

use super::Table;
use super::schema::PartitionValue;
use super::store::{Change, ClientRow, LogRead, RowChange, Store, StoreError};
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
    /// Gives version `v` its commit mark (see `store::COMMIT_MARK`).
    async fn mark(conn: &mut PgConnection, v: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sssync_changes (version, tbl, row_key, part) VALUES ($1, $2, $3, NULL)",
        )
        .bind(v)
        .bind(super::store::COMMIT_MARK)
        .bind(super::store::new_mark())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

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
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query(
            "INSERT INTO sssync_meta (id, epoch, version) VALUES (1, $1, 0) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&epoch)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sssync_meta SET secret = $1 WHERE id = 1 AND secret IS NULL")
            .bind(super::engine::new_secret())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT epoch, version, secret FROM sssync_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let out = (
            Epoch(row.try_get("epoch")?),
            Version(row.try_get::<i64, _>("version")? as u64),
            row.try_get("secret")?,
        );
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

    async fn hello_state(
        &self,
        client_id: &str,
    ) -> Result<(Epoch, Option<ClientRow>, Version), StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::begin_read(&mut conn).await?;
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

    async fn rotate_epoch(conn: &mut PgConnection, seen: &Epoch) -> Result<Epoch, StoreError> {
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query("UPDATE sssync_meta SET epoch = $1 WHERE id = 1 AND epoch = $2")
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
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // Serialization failure, deadlock, lock not available, insufficient resources
                // (disk full, out of memory, too many connections), the server going down or
                // starting, a lost connection.
                matches!(
                    &*code,
                    "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03"
                ) || code.starts_with("53")
                    || code.starts_with("08")
            }
            _ => false,
        }
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

    async fn rollback(conn: &mut PgConnection) -> Result<(), StoreError> {
        conn.execute("ROLLBACK").await.map(drop)
    }

    async fn savepoint(conn: &mut PgConnection) -> Result<(), StoreError> {
        conn.execute("SAVEPOINT sssync_event").await.map(drop)
    }

    async fn release(conn: &mut PgConnection) -> Result<(), StoreError> {
        conn.execute("RELEASE SAVEPOINT sssync_event")
            .await
            .map(drop)
    }

    async fn rollback_to_savepoint(conn: &mut PgConnection) -> Result<(), StoreError> {
        conn.execute("ROLLBACK TO SAVEPOINT sssync_event; RELEASE SAVEPOINT sssync_event")
            .await
            .map(drop)
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

    async fn seal(conn: &mut PgConnection) -> Result<Option<Version>, StoreError> {
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
        sqlx::query("UPDATE sssync_changes SET version = $1 WHERE version IS NULL")
            .bind(v)
            .execute(&mut *conn)
            .await?;
        Self::mark(conn, v).await?;
        Ok(Some(Version(v as u64)))
    }

    async fn version(conn: &mut PgConnection) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM sssync_meta WHERE id = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Version(v as u64))
    }

    async fn read_client(
        conn: &mut PgConnection,
        client_id: &str,
    ) -> Result<Option<ClientRow>, StoreError> {
        let row: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT last_seq, owner FROM sssync_clients WHERE client_id = $1")
                .bind(client_id)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(row.map(|(last_seq, owner)| ClientRow {
            last_seq: last_seq as u64,
            owner,
        }))
    }

    async fn write_last_seq(
        conn: &mut PgConnection,
        client_id: &str,
        seq: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sssync_clients (client_id, last_seq, owner) VALUES ($1, $2, $3) \
             ON CONFLICT (client_id) DO UPDATE SET last_seq = EXCLUDED.last_seq",
        )
        .bind(client_id)
        .bind(seq as i64)
        .bind(owner)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn begin_read(conn: &mut PgConnection) -> Result<(), StoreError> {
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map(drop)
    }

    async fn read_log(
        conn: &mut PgConnection,
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
        let rows: Vec<(i64, String, Option<String>, bool)> = sqlx::query_as(
            "SELECT version, tbl, part, bool_or(row_key IS NULL) FROM sssync_changes \
             WHERE version > $1 AND version <= $2 AND tbl <> '' \
             GROUP BY version, tbl, part ORDER BY version",
        )
        .bind(after.0 as i64)
        .bind(upto as i64)
        .fetch_all(&mut *conn)
        .await?;
        let marks: Vec<(i64, String)> = sqlx::query_as(
            "SELECT version, row_key FROM sssync_changes \
             WHERE tbl = '' AND version IN ($1, $2) AND row_key IS NOT NULL",
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
                    part,
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
        conn: &mut PgConnection,
        after: Version,
        upto: Version,
        limit: usize,
    ) -> Result<Option<Vec<RowChange>>, StoreError> {
        // One row per (table, partition), its keys as a JSON array.
        let groups: Vec<(String, Option<String>, String, i64)> = sqlx::query_as(
            "SELECT tbl, part, CAST(json_agg(DISTINCT row_key) AS text), COUNT(*) \
             FROM (SELECT tbl, part, row_key FROM sssync_changes \
                   WHERE version > $1 AND version <= $2 AND row_key IS NOT NULL \
                   AND tbl <> '' LIMIT $3) s \
             GROUP BY tbl, part",
        )
        .bind(after.0 as i64)
        .bind(upto.0 as i64)
        .bind(limit.saturating_add(1).min(i64::MAX as usize) as i64)
        .fetch_all(&mut *conn)
        .await?;
        super::store::row_changes(groups, limit)
    }

    async fn column_info(
        &self,
        table: &str,
        column: &str,
    ) -> Result<Option<super::ColumnInfo>, StoreError> {
        let row: Option<(String, bool)> = sqlx::query_as(
            "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a \
             WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attname = $2 \
             AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(declared_type, not_null)| super::ColumnInfo {
            declared_type,
            not_null,
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
        Self::begin_read(&mut conn).await?;
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
                 ((version > $1 AND version <= $2) OR version IS NULL) AND tbl = $3 AND \
                 ($4::text IS NULL OR part = $4 OR row_key IS NULL) LIMIT $5",
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
        // about to go. (A plain UPDATE, not the engine's row lock: GREATEST keeps it monotonic.)
        if target > horizon {
            sqlx::query("UPDATE sssync_meta SET horizon = GREATEST(horizon, $1) WHERE id = 1")
                .bind(target)
                .execute(&self.pool)
                .await?;
        }
        sqlx::query(
            "DELETE FROM sssync_changes WHERE ctid IN \
             (SELECT ctid FROM sssync_changes WHERE version < $1 LIMIT $2)",
        )
        .bind(target)
        .bind(max_rows as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
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
