//! What the two stores do alike, written once.
//!
//! Both databases take `$1`, `$2`… placeholders, `ON CONFLICT … DO UPDATE`, `RELEASE SAVEPOINT`
//! and `ROLLBACK TO SAVEPOINT`, so most of a store's SQL is the same text on both. That part is
//! here: [`shared_methods!`] writes those [`Store`](super::Store) methods into each driver's
//! `impl Store` (compiled and type-checked for each, like [`for_each_db!`](crate::for_each_db)),
//! and the free functions below serve both drivers' own methods. The few places where the SQL
//! differs are the macro's arguments. What truly differs per database stays in the driver's
//! file: the tables and their migrations, the triggers, `begin`/`commit`, `bump_version`, the
//! transient error codes, the partition text and the doorbell.

use super::{ClientRow, RowChange, StoreError};

/// The [`ClientRow`] of a `(last_seq, owner)` row of `sssync_clients`.
pub(super) fn client_row(row: Option<(i64, Option<String>)>) -> Option<ClientRow> {
    row.map(|(last_seq, owner)| ClientRow {
        last_seq: last_seq as u64,
        owner,
    })
}

/// A partition value as the log holds it, read as bytes (a log written by an older SQLite
/// trigger may hold text that is not UTF-8, and it must not fail the fan-out of every query).
pub(super) fn part_text(part: Option<Vec<u8>>) -> Option<String> {
    part.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The row changes of a log read grouped by (table, partition), each group's keys a JSON array
/// of texts and its entry count: `None` when the entries (the subquery's rows) are more than
/// `limit`.
pub(super) fn row_changes(
    groups: Vec<(String, Option<Vec<u8>>, String, i64)>,
    limit: usize,
) -> Result<Option<Vec<RowChange>>, StoreError> {
    let mut out = Vec::new();
    let mut entries: usize = 0;
    for (table, part, keys, n) in groups {
        entries = entries.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        if entries > limit {
            return Ok(None);
        }
        let keys: Vec<String> =
            serde_json::from_str(&keys).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let part = part_text(part);
        out.extend(keys.into_iter().map(|key| RowChange {
            table: table.clone(),
            part: part.clone(),
            key,
        }));
    }
    Ok(Some(out))
}

/// The mark of `version` among the marks a log read found.
pub(super) fn mark_of(marks: &[(i64, String)], version: u64) -> Option<String> {
    marks
        .iter()
        .find(|m| m.0 == version as i64)
        .map(|m| m.1.clone())
}

/// Writes, inside a driver's `impl SqliteStore`/`impl PgStore`, the helpers both drivers'
/// methods use: `mark` (a version's commit mark) and `init_meta` (the end of `init`).
macro_rules! shared_helpers {
    () => {
        /// Gives version `v` its commit mark (see `store::COMMIT_MARK`).
        async fn mark(
            conn: &mut <<Self as $crate::server::Store>::Db as sqlx::Database>::Connection,
            v: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO sssync_changes (version, tbl, row_key, part) \
                 VALUES ($1, $2, $3, NULL)",
            )
            .bind(v)
            .bind(super::COMMIT_MARK)
            .bind(super::new_mark())
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Writes the `sssync_meta` row a new database starts with (nothing when it exists),
        /// then its secret (made once, with the database); returns the epoch, the version and
        /// the secret: the end of `init`.
        async fn init_meta(
            conn: &mut <<Self as $crate::server::Store>::Db as sqlx::Database>::Connection,
        ) -> Result<(Epoch, Version, String), StoreError> {
            sqlx::query(
                "INSERT INTO sssync_meta (id, epoch, version) VALUES (1, $1, 0) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .execute(&mut *conn)
            .await?;
            sqlx::query("UPDATE sssync_meta SET secret = $1 WHERE id = 1 AND secret IS NULL")
                .bind(super::new_secret())
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
    };
}
pub(super) use shared_helpers;

/// Writes, inside a driver's `impl Store`, the methods that are the same SQL on both databases.
/// The arguments are the only SQL that differs:
/// - `part_bytes`: the `part` column as bytes (see [`part_text`]);
/// - `any_whole`: whether any entry of a group has no row key (a change of the whole table);
/// - `keys_json`: a group's distinct row keys as the text of a JSON array;
/// - `row_id`: the physical row id (what `prune` deletes by, a bounded number at a time).
macro_rules! shared_methods {
    (
        part_bytes: $part:literal,
        any_whole: $whole:literal,
        keys_json: $keys:literal,
        row_id: $rowid:literal $(,)?
    ) => {
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

        async fn rotate_epoch(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
            seen: &Epoch,
        ) -> Result<Epoch, StoreError> {
            sqlx::query("UPDATE sssync_meta SET epoch = $1 WHERE id = 1 AND epoch = $2")
                .bind(uuid::Uuid::new_v4().simple().to_string())
                .bind(&seen.0)
                .execute(&mut *conn)
                .await?;
            let now: String = sqlx::query_scalar("SELECT epoch FROM sssync_meta WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
            Ok(Epoch(now))
        }

        async fn rollback(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
        ) -> Result<(), StoreError> {
            conn.execute("ROLLBACK").await.map(drop)
        }

        async fn savepoint(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
        ) -> Result<(), StoreError> {
            conn.execute("SAVEPOINT sssync_event").await.map(drop)
        }

        async fn release(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
        ) -> Result<(), StoreError> {
            conn.execute("RELEASE SAVEPOINT sssync_event")
                .await
                .map(drop)
        }

        async fn rollback_to_savepoint(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
        ) -> Result<(), StoreError> {
            conn.execute("ROLLBACK TO SAVEPOINT sssync_event; RELEASE SAVEPOINT sssync_event")
                .await
                .map(drop)
        }

        async fn seal(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
        ) -> Result<Option<Version>, StoreError> {
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

        async fn version(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
        ) -> Result<Version, StoreError> {
            let v: i64 = sqlx::query_scalar("SELECT version FROM sssync_meta WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
            Ok(Version(v as u64))
        }

        async fn read_client(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
            client_id: &str,
        ) -> Result<Option<ClientRow>, StoreError> {
            let row: Option<(i64, Option<String>)> =
                sqlx::query_as("SELECT last_seq, owner FROM sssync_clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            Ok(super::shared::client_row(row))
        }

        async fn write_last_seq(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
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

        async fn read_log(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
            after: Version,
            max_versions: u64,
        ) -> Result<LogRead, StoreError> {
            let row = sqlx::query(super::READ_META).fetch_one(&mut *conn).await?;
            let unsealed: bool = row.try_get("unsealed")?;
            let epoch = Epoch(row.try_get("epoch")?);
            let now = row.try_get::<i64, _>("version")? as u64;
            let upto = now.min(after.0.saturating_add(max_versions.max(1)));
            let rows: Vec<(i64, String, Option<Vec<u8>>, bool)> = sqlx::query_as(concat!(
                "SELECT version, tbl, ",
                $part,
                ", ",
                $whole,
                " FROM sssync_changes \
                 WHERE version > $1 AND version <= $2 AND tbl <> '' \
                 GROUP BY version, tbl, part ORDER BY version"
            ))
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
                        part: super::shared::part_text(part),
                        whole,
                    })
                    .collect(),
                unsealed,
                capped: upto < now,
                horizon: Version(row.try_get::<i64, _>("horizon")?.max(0) as u64),
                mark_after: super::shared::mark_of(&marks, after.0),
                mark: super::shared::mark_of(&marks, upto),
            })
        }

        async fn read_row_changes(
            conn: &mut <Self::Db as sqlx::Database>::Connection,
            after: Version,
            upto: Version,
            limit: usize,
        ) -> Result<Option<Vec<RowChange>>, StoreError> {
            // One row per (table, partition), its keys as a JSON array: a row of the log costs
            // nothing through the driver.
            let groups: Vec<(String, Option<Vec<u8>>, String, i64)> = sqlx::query_as(concat!(
                "SELECT tbl, ",
                $part,
                ", ",
                $keys,
                ", COUNT(*) \
                 FROM (SELECT tbl, part, row_key FROM sssync_changes \
                       WHERE version > $1 AND version <= $2 AND row_key IS NOT NULL \
                       AND tbl <> '' LIMIT $3) s \
                 GROUP BY tbl, part"
            ))
            .bind(after.0 as i64)
            .bind(upto.0 as i64)
            .bind(limit.saturating_add(1).min(i64::MAX as usize) as i64)
            .fetch_all(&mut *conn)
            .await?;
            super::shared::row_changes(groups, limit)
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
                let horizon: i64 =
                    sqlx::query_scalar("SELECT horizon FROM sssync_meta WHERE id = 1")
                        .fetch_one(&mut *conn)
                        .await?;
                if (after.0 as i64) < horizon {
                    return Ok(None);
                }
                let keys: Vec<Option<String>> = sqlx::query_scalar(
                    // Unsealed entries too: a write made outside the engine is visible in the
                    // rows before its entry has a version.
                    "SELECT DISTINCT row_key FROM sssync_changes WHERE \
                     ((version > $1 AND version <= $2) OR version IS NULL) AND tbl = $3 AND \
                     (CAST($4 AS TEXT) IS NULL OR part = $4 OR row_key IS NULL) LIMIT $5",
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
            // about to go. (A plain UPDATE, not the engine's write lock: the condition keeps it
            // from moving back.)
            if target > horizon {
                sqlx::query("UPDATE sssync_meta SET horizon = $1 WHERE id = 1 AND horizon < $1")
                    .bind(target)
                    .execute(&self.pool)
                    .await?;
            }
            sqlx::query(concat!(
                "DELETE FROM sssync_changes WHERE ",
                $rowid,
                " IN (SELECT ",
                $rowid,
                " FROM sssync_changes WHERE version < $1 LIMIT $2)"
            ))
            .bind(target)
            .bind(max_rows as i64)
            .execute(&self.pool)
            .await?;
            Ok(())
        }
    };
}
pub(super) use shared_methods;

/// Whether `err` is the moment's fault on either database: the connection or the pool failed,
/// or the database answered with an error code that `transient_code` (the driver's list) names.
pub(super) fn is_transient(err: &StoreError, transient_code: impl Fn(&str) -> bool) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| transient_code(&c)),
        _ => false,
    }
}
