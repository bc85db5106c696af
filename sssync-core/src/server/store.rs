//! The storage layer: one trait the engine speaks, one implementation per database.
//!
//! The engine's own tables (created at start, idempotently):
//! - `sssync_meta`: one row: the epoch and the current version;
//! - `sssync_clients`: `last_seq` per client id (written in the same transaction as the
//!   events it counts: invariant 5);
//! - `sssync_changes`: the change log: for each version, which rows of which declared tables
//!   changed (table, row key, partition value), written by triggers the engine installs on
//!   every declared [`Table`](super::Table), so no write can forget to record itself.

use super::schema::PartitionValue;
use crate::version::{Epoch, Version};
use std::future::Future;

/// A storage failure (the database refused or was unreachable).
pub type StoreError = sqlx::Error;

/// What the engine needs from a database. Batch methods take the connection of the write
/// transaction the engine opened with [`Store::begin`].
pub trait Store: Send + Sync + 'static {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// The pool (queries and reads use it too).
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Creates the engine's tables if missing; returns the epoch and the current version.
    fn init(&self) -> impl Future<Output = Result<(Epoch, Version), StoreError>> + Send;

    /// Installs the change-log triggers of a declared table (idempotent).
    fn install_table(
        &self,
        table: &super::Table,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The last applied seq of a client (0 if none), outside any batch.
    fn last_seq(&self, client_id: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// What a `hello` needs, read together (one read transaction): the database's epoch, the
    /// client's last applied seq and the database's committed version.
    fn hello_state(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<(Epoch, u64, Version), StoreError>> + Send;

    /// Gives the database a new epoch, inside the engine's write transaction: its history is no
    /// longer the one clients saw (a restored backup), so every client's cache is reset.
    fn rotate_epoch(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<Epoch, StoreError>> + Send;

    /// How the change-log triggers record `value` of a partition column (the text that a
    /// [`Dependency`](super::Dependency) on it must equal).
    fn partition_text(value: &PartitionValue) -> String;

    /// Whether `err` is the moment's fault (busy, locked, full, I/O, a lost connection): the
    /// same write may succeed later. Everything else would fail again on a retry.
    fn is_transient(err: &StoreError) -> bool;

    /// Starts a write transaction (taking the write lock at once).
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
    /// Takes the next version for this batch; the change-log triggers record it.
    fn bump_version(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;
    /// The current version (inside a read or write transaction: consistent with it).
    fn version(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;
    /// A client's last applied seq, inside the batch.
    fn read_last_seq(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        client_id: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Records a client's last applied seq, inside the batch.
    fn write_last_seq(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        client_id: &str,
        seq: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The (table, partition) pairs that changed at `version`.
    fn changes_at(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
        version: Version,
    ) -> impl Future<Output = Result<Vec<(String, Option<String>)>, StoreError>> + Send;
    /// Starts a read transaction (a consistent view for a query and its version).
    fn begin_read(
        conn: &mut <Self::Db as sqlx::Database>::Connection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Drops change-log entries older than `version`.
    fn prune_changes(&self, before: Version)
    -> impl Future<Output = Result<(), StoreError>> + Send;
}
