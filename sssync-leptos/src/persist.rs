//! What a browser keeps, in IndexedDB (database `sssync`):
//!
//! - **`queues`**: each tab's pending events (one entry per tab's client id), with a heartbeat,
//!   so that writes survive the tab. A tab that finds an entry whose tab is gone (closed: a mark
//!   in localStorage; or silent for a while) adopts it: it sends those events under their own
//!   client id and seqs, so the server's exactly-once rule holds even when two tabs adopt the
//!   same entry at once.
//! - **`rows`**: the confirmed rows of each query key, with their epoch and version (shared by
//!   the browser's tabs: confirmed rows at a version are the same for everyone), so that a
//!   client-side navigation or a client-only app's reload shows cached rows at once, offline
//!   too, and subscribes from their version (the server sends only what changed since).
//!   **`touched`** holds when each key was last written; past [`MAX_CACHED_KEYS`] the least
//!   recently written keys are dropped.
//!
//! Any storage failure (private mode, quota, disabled) leaves the tab working from memory.

use indexed_db_futures::database::Database;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::TransactionMode;
use serde::{Deserialize, Serialize};
use sssync_core::{Epoch, Row, Version};

const DB: &str = "sssync";
const STORE: &str = "queues";
const ROWS: &str = "rows";
const TOUCHED: &str = "touched";
/// How many query keys the rows cache keeps (the least recently written go first).
pub(crate) const MAX_CACHED_KEYS: u32 = 200;
/// A key whose rows take more than this (as JSON) is not cached.
pub(crate) const MAX_CACHED_BYTES: usize = 4 << 20;
/// An entry whose heartbeat is older than this belongs to a tab that is gone.
pub(crate) const ORPHAN_AFTER_MS: f64 = 20_000.0;

/// One tab's pending events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) client_id: String,
    pub(crate) epoch: Option<Epoch>,
    /// (seq, event name, args JSON), in seq order.
    pub(crate) events: Vec<(u64, String, String)>,
    /// When the tab last said it is alive (ms since the epoch).
    pub(crate) beat: f64,
    /// The tag of the identity its events were made under (`""`: anonymous; none: not known
    /// yet when they were saved).
    #[serde(default)]
    pub(crate) who: Option<String>,
}

/// A query key's confirmed rows, as the rows cache keeps them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Cached {
    pub(crate) epoch: Epoch,
    pub(crate) version: Version,
    pub(crate) rows: Vec<Row>,
}

/// Opens the database (creating the stores it lacks); `None` when storage is unavailable.
pub(crate) async fn open() -> Option<Database> {
    let db = Database::open(DB)
        .with_version(2u8)
        .with_on_upgrade_needed(|_, db| {
            let have: Vec<String> = db.object_store_names().collect();
            for name in [STORE, ROWS, TOUCHED] {
                if !have.iter().any(|h| h == name) {
                    db.create_object_store(name).build()?;
                }
            }
            Ok(())
        })
        .await;
    db.ok()
}

/// The key of a query key's entry in the rows cache.
pub(crate) fn cache_key(name: &str, args: &str) -> String {
    format!("{name}\n{args}")
}

/// The cached rows of a query key, if any.
pub(crate) async fn cached(db: &Database, key: &str) -> Option<Cached> {
    let result: Result<Option<String>, indexed_db_futures::error::Error> = async {
        let tx = db.transaction(ROWS).build()?;
        let store = tx.object_store(ROWS)?;
        store.get(key.to_owned()).await
    }
    .await;
    serde_json::from_str(&result.ok()??).ok()
}

/// Writes these keys' rows (a key whose rows are over [`MAX_CACHED_BYTES`] is forgotten
/// instead), then drops the least recently written keys past [`MAX_CACHED_KEYS`].
pub(crate) async fn cache(db: &Database, entries: Vec<(String, Cached)>, now: f64) {
    let _ = async {
        let tx = db
            .transaction([ROWS, TOUCHED])
            .with_mode(TransactionMode::Readwrite)
            .build()?;
        let rows = tx.object_store(ROWS)?;
        let touched = tx.object_store(TOUCHED)?;
        for (key, entry) in entries {
            let text = serde_json::to_string(&entry).ok();
            match text {
                Some(text) if text.len() <= MAX_CACHED_BYTES => {
                    rows.put(text).with_key(key.clone()).await?;
                    touched.put(now).with_key(key).await?;
                }
                _ => {
                    rows.delete(key.clone()).await?;
                    touched.delete(key).await?;
                }
            }
        }
        let count = touched.count().await?;
        if count > MAX_CACHED_KEYS {
            let keys: Vec<String> = touched.get_all_keys().await?.collect::<Result<_, _>>()?;
            let ats: Vec<f64> = touched.get_all().await?.collect::<Result<_, _>>()?;
            let mut by_age: Vec<(f64, String)> = ats.into_iter().zip(keys).collect();
            by_age.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, key) in by_age.into_iter().take((count - MAX_CACHED_KEYS) as usize) {
                rows.delete(key.clone()).await?;
                touched.delete(key).await?;
            }
        }
        tx.commit().await?;
        Ok::<(), indexed_db_futures::error::Error>(())
    }
    .await;
}

/// Forgets one key's cached rows (its reader may no longer read them).
pub(crate) async fn uncache(db: &Database, keys: Vec<String>) {
    let _ = async {
        let tx = db
            .transaction([ROWS, TOUCHED])
            .with_mode(TransactionMode::Readwrite)
            .build()?;
        let rows = tx.object_store(ROWS)?;
        let touched = tx.object_store(TOUCHED)?;
        for key in keys {
            rows.delete(key.clone()).await?;
            touched.delete(key).await?;
        }
        tx.commit().await?;
        Ok::<(), indexed_db_futures::error::Error>(())
    }
    .await;
}

/// The identity the browser's storage was last filled under (`sssync.who` in localStorage).
/// The identity tag the browser's storage was last filled under (`""`: anonymous).
pub(crate) fn stored_who() -> Option<String> {
    crate::local_storage::get::<String>("sssync.who")
}

/// The identity of this browser's connection is `who` (from a welcome): when the storage was
/// filled under another one (signed out, or in as someone else), forgets every cached row and
/// every other tab's pending events made under another identity, so that nothing of the old
/// identity's stays on this computer.
pub(crate) async fn forget_other_identities(db: &Database, own: &str, who: &str) {
    if stored_who().as_deref() == Some(who) {
        return;
    }
    clear_cache(db).await;
    for entry in load_all(db).await {
        if entry.client_id != own && entry.who.as_deref() != Some(who) {
            remove(db, &entry.client_id).await;
        }
    }
    crate::local_storage::set("sssync.who", who);
}

/// Forgets every cached row (the server's history changed).
pub(crate) async fn clear_cache(db: &Database) {
    let _ = async {
        let tx = db
            .transaction([ROWS, TOUCHED])
            .with_mode(TransactionMode::Readwrite)
            .build()?;
        tx.object_store(ROWS)?.clear()?.await?;
        tx.object_store(TOUCHED)?.clear()?.await?;
        tx.commit().await?;
        Ok::<(), indexed_db_futures::error::Error>(())
    }
    .await;
}

/// Writes (or replaces) a tab's entry.
pub(crate) async fn save(db: &Database, entry: &Entry) -> bool {
    let Ok(text) = serde_json::to_string(entry) else {
        return false;
    };
    let result: Result<(), indexed_db_futures::error::Error> = async {
        let tx = db
            .transaction(STORE)
            .with_mode(TransactionMode::Readwrite)
            .build()?;
        let store = tx.object_store(STORE)?;
        store.put(text).with_key(entry.client_id.clone()).await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    result.is_ok()
}

/// Removes a tab's entry.
pub(crate) async fn remove(db: &Database, client_id: &str) {
    let _ = async {
        let tx = db
            .transaction(STORE)
            .with_mode(TransactionMode::Readwrite)
            .build()?;
        let store = tx.object_store(STORE)?;
        store.delete(client_id.to_owned()).await?;
        tx.commit().await?;
        Ok::<(), indexed_db_futures::error::Error>(())
    }
    .await;
}

/// Every tab's entry.
pub(crate) async fn load_all(db: &Database) -> Vec<Entry> {
    let result: Result<Vec<Entry>, indexed_db_futures::error::Error> = async {
        let tx = db.transaction(STORE).build()?;
        let store = tx.object_store(STORE)?;
        let texts: Vec<String> = store.get_all().await?.collect::<Result<_, _>>()?;
        Ok(texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }
    .await;
    result.unwrap_or_default()
}

/// Marks a tab as gone (synchronously: it runs while the page is being hidden).
pub(crate) fn mark_gone(client_id: &str) {
    crate::local_storage::set(&gone_key(client_id), &1u8);
}

/// Whether a tab was marked gone.
pub(crate) fn is_gone(client_id: &str) -> bool {
    crate::local_storage::get::<u8>(&gone_key(client_id)).is_some()
}

/// Forgets the mark.
pub(crate) fn clear_gone(client_id: &str) {
    crate::local_storage::remove(&gone_key(client_id));
}

fn gone_key(client_id: &str) -> String {
    format!("sssync.gone.{client_id}")
}
