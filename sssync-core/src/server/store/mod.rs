//! The storage layer: one trait the engine speaks, one implementation per database.
//!
//! The engine's own tables (created at start, idempotently):
//! - `sssync_meta`: one row: the epoch, the current version, the change log's retention
//!   horizon, the secret of the version proofs;
//! - `sssync_clients`: `last_seq` per client id (written in the same transaction as the
//!   events it counts: invariant 5);
//! - `sssync_changes`: the change log: for each version, which rows of which declared tables
//!   changed (table, row key, partition value), written by triggers the engine installs on
//!   every declared [`Table`](super::Table), so no write can forget to record itself, whoever
//!   makes it (the engine, another server instance, an administrator's SQL statement).
//!
//! **Versions follow commit order.** A write transaction of the engine takes the next version
//! by updating `sssync_meta` (a row lock in PostgreSQL, the write lock in SQLite, held to the
//! commit), so no transaction can take a higher version before it commits: once version `v` is
//! visible, every version below it is too. A write made outside the engine logs its changes
//! without a version; the engine *seals* them (gives them the next version) in a transaction of
//! its own. Every instance *tails* the log in version order ([`Store::read_log`]), so it sees
//! every commit, its own and everyone else's.

#[cfg(feature = "postgres")]
mod postgres;
mod shared;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use super::schema::PartitionValue;
use crate::version::{Epoch, Version};
use std::future::Future;

/// A storage failure (the database refused or was unreachable).
pub type StoreError = sqlx::Error;

/// One entry of the change log as the tailer reads it: at `version`, rows of `table` with
/// partition value `part` changed (`whole`: the whole table, e.g. a `TRUNCATE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The version of the commit.
    pub version: Version,
    /// The declared table.
    pub table: String,
    /// The partition value's text (`None`: the table has no partition column, or the row had
    /// none).
    pub part: Option<String>,
    /// Every row of the table may have changed.
    pub whole: bool,
}

/// What the tailer reads in one snapshot of the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRead {
    /// The database's epoch.
    pub epoch: Epoch,
    /// The database's version: every commit up to it is in `changes` (or had no changes).
    pub version: Version,
    /// The changes after the version asked for, up to `version`, in version order.
    pub changes: Vec<Change>,
    /// Changes written outside the engine wait for a version (the writer seals them).
    pub unsealed: bool,
    /// The database is past `version` (the round read a bounded number of versions): its rows
    /// already show commits the round's changes do not.
    pub capped: bool,
    /// The log's retention horizon: the entries of versions below it are pruned (a read after
    /// a version below `horizon - 1` misses commits).
    pub horizon: Version,
    /// The mark of the commit that took the version asked after, and of the one that took
    /// `version` (see [`COMMIT_MARK`]), when the log still has them.
    pub mark_after: Option<String>,
    /// See `mark_after`.
    pub mark: Option<String>,
}

/// Every version the engine gives (a batch, a seal) has one entry of its own in the change log:
/// table `''` (no declared table can be named so), a random key. A tailer remembers the mark of
/// the last version it fanned out; the same version with another mark later means the database
/// went back and took other commits since (a copy restored while the instances ran, caught up
/// again before the tailer looked): the versions alone cannot tell.
pub(crate) const COMMIT_MARK: &str = "";

/// A new commit mark.
pub(crate) fn new_mark() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl LogRead {
    /// Whether commits after `after` were pruned before this read could see them (the reader
    /// fell behind the log's retention).
    pub fn misses_after(&self, after: Version) -> bool {
        after.0.saturating_add(1) < self.horizon.0
    }
}

/// The epoch, the version and whether changes written outside the engine wait for a version,
/// in one statement (the same SQL on both databases): the start of [`Store::read_log`].
pub(crate) const READ_META: &str = "SELECT epoch, version, horizon, \
     EXISTS (SELECT 1 FROM sssync_changes WHERE version IS NULL) AS unsealed \
     FROM sssync_meta WHERE id = 1";

/// One row's entry in the change log: a row of `table` (partition value `part`) keyed `key`
/// changed (what the incremental path reads back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChange {
    /// The declared table.
    pub table: String,
    /// The partition value's text, as in [`Change::part`].
    pub part: Option<String>,
    /// The key column's text.
    pub key: String,
}

/// A client id's row in `sssync_clients`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRow {
    /// The last event seq applied (or refused) for it.
    pub last_seq: u64,
    /// The identity that first used it (`None`: anonymous); only that identity may use it.
    pub owner: Option<String>,
}

/// What the engine needs from a database. Batch methods take the connection of the write
/// transaction the engine opened with [`Store::begin`].
pub trait Store: Send + Sync + 'static {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// The pool (queries and reads use it too).
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Creates the engine's tables if missing; returns the epoch, the current version, and the
    /// database's secret (made once, with the database: the key of the version proofs the
    /// engine gives clients, so that a client cannot claim a version no server gave it).
    fn init(&self) -> impl Future<Output = Result<(Epoch, Version, String), StoreError>> + Send;

    /// Installs the change-log triggers of a declared table (idempotent).
    fn install_table(
        &self,
        table: &super::Table,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What a `hello` needs, read together (one read transaction): the database's epoch, the
    /// client's row and the database's committed version.
    fn hello_state(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<(Epoch, Option<ClientRow>, Version), StoreError>> + Send;

    /// Gives the database a new epoch, inside the engine's write transaction, unless its epoch
    /// is no longer `seen` (another instance gave it one already): its history is no longer the
    /// one clients saw (a restored backup), so every client's cache is reset. Returns the
    /// database's epoch after it.
    fn rotate_epoch(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        seen: &Epoch,
    ) -> impl Future<Output = Result<Epoch, StoreError>> + Send;

    /// How the change-log triggers record `value` of a partition column (the text that a
    /// [`Dependency`](super::Dependency) on it must equal).
    fn partition_text(value: &PartitionValue) -> String;

    /// Whether `err` is the moment's fault (busy, locked, full, I/O, a lost connection, a
    /// serialization failure): the same write may succeed later. Everything else would fail
    /// again on a retry.
    fn is_transient(err: &StoreError) -> bool;

    /// Whether a transient `err` raised inside a handler, while the engine holds its write
    /// transaction, points at the handler rather than at the database: e.g. SQLite's
    /// `SQLITE_BUSY`, which the engine's own connection cannot get (the handler used another
    /// one). Such an event, set aside again and again while the others commit, is refused in
    /// the end; one that fails with the database (a full disk) is resent until it applies.
    fn is_handler_fault(err: &StoreError) -> bool {
        let _ = err;
        false
    }

    /// Starts a write transaction (taking the write lock at once where the database has one).
    fn begin(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Commits it (durably: the engine acknowledges only after this returns).
    fn commit(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Rolls it back.
    fn rollback(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Marks the start of one event inside the batch.
    fn savepoint(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Keeps the event's changes.
    fn release(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Undoes the event's changes (a rejected event).
    fn rollback_to_savepoint(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Takes the next version for this batch (held to the commit, so versions follow commit
    /// order); the change-log triggers record it for the batch's writes.
    fn bump_version(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;
    /// Gives the changes written outside the engine (no version yet) the next version, inside
    /// a write transaction; `None` when there were none.
    fn seal(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<Option<Version>, StoreError>> + Send;
    /// A client's row, inside the batch: `None` when the client id was never used, else its
    /// last applied seq and its owner (the identity that first used it; `None`: anonymous).
    fn read_client(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<ClientRow>, StoreError>> + Send;
    /// Records a client's last applied seq, inside the batch; a new client's row gets `owner`
    /// (an existing row keeps its own).
    fn write_last_seq(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        client_id: &str,
        seq: u64,
        owner: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Starts a read transaction: one consistent snapshot (for a query and its version, or a
    /// tailer's round).
    fn begin_read(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The current version (inside a read or write transaction: consistent with it).
    fn version(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;
    /// Inside a read transaction: the epoch, the version, and the changes after `after` up to
    /// that version (at most `max_versions` versions' worth; `version` is then the last one
    /// read).
    fn read_log(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        after: Version,
        max_versions: u64,
    ) -> impl Future<Output = Result<LogRead, StoreError>> + Send;
    /// Inside a read transaction: every row entry of the log after `after` up to `upto` (a
    /// change of a whole table has none; [`Change::whole`] says so), or `None` when there are
    /// more than `limit`.
    fn read_row_changes(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        after: Version,
        upto: Version,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<RowChange>>, StoreError>> + Send;

    /// What the database declares of `table`'s `column` (`None`: no such column), for the
    /// checks of the incremental path.
    fn column_info(
        &self,
        table: &str,
        column: &str,
    ) -> impl Future<Output = Result<Option<super::ColumnInfo>, StoreError>> + Send;

    /// The keys of the rows of `table` (with partition value `part`, or any) that changed
    /// after `after` up to `upto`: what a client that holds a result at `after` missed.
    /// `None` when that cannot be told: the log no longer reaches back to `after` (its
    /// retention horizon is past it), a change of the whole table is in the range, or there
    /// are more than `limit` keys.
    fn changed_keys(
        &self,
        table: &str,
        part: Option<&str>,
        after: Version,
        upto: Version,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<String>>, StoreError>> + Send;
    /// Drops change-log entries more than `keep` versions old, at most `max_rows` of them in
    /// this call (bounded work; call again later), and records the retention horizon (the
    /// oldest version from which the log can still tell what changed).
    fn prune(
        &self,
        keep: u64,
        max_rows: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Rings `bell` whenever the database reports a commit (PostgreSQL: `LISTEN`/`NOTIFY`), so
    /// that the tailer reads the log at once instead of at its next poll. Only a doorbell: a
    /// missed ring costs latency, never a change. `None`: the database has none (the tailer
    /// polls).
    fn doorbell(
        &self,
        bell: std::sync::Arc<tokio::sync::Notify>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let _ = bell;
        None
    }
}

/// A new random secret (the key of the version proofs), made once per database.
pub(crate) fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A storage error in a few words, for clients (the details stay in the server's log).
pub(crate) fn short(err: &StoreError) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(e) => format!("I/O error: {e}"),
        sqlx::Error::PoolTimedOut => "the database did not answer in time".to_owned(),
        other => other.to_string(),
    }
}

/// Begins a read transaction on a pool connection. One whose `BEGIN` fails (left inside a
/// transaction by code sharing the pool, or its server restarted) is rolled back, or closed
/// when that fails too, before the error is returned: never handed back to the pool as it was.
pub(crate) async fn begin_read<S: Store>(
    conn: &mut sqlx::pool::PoolConnection<S::Db>,
) -> Result<(), StoreError> {
    if let Err(e) = S::begin_read(&mut **conn).await {
        if S::rollback(&mut **conn).await.is_err() {
            conn.close_on_drop();
        }
        return Err(e);
    }
    Ok(())
}
