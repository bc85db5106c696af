//! What a tab keeps in the browser so that its writes survive the tab: its pending events, in
//! IndexedDB (database `sssync`, store `queues`, one entry per tab's client id), with a
//! heartbeat. A tab that finds an entry whose tab is gone (closed: a mark in localStorage; or
//! silent for a while) adopts it: it sends those events under their own client id and seqs, so
//! the server's exactly-once rule holds even when two tabs adopt the same entry at once.
//!
//! Any storage failure (private mode, quota, disabled) leaves the tab working from memory.

use indexed_db_futures::database::Database;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::TransactionMode;
use serde::{Deserialize, Serialize};
use sssync_core::Epoch;

const DB: &str = "sssync";
const STORE: &str = "queues";
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
}

/// Opens the database (creating the store); `None` when storage is unavailable.
pub(crate) async fn open() -> Option<Database> {
    let db = Database::open(DB)
        .with_version(1u8)
        .with_on_upgrade_needed(|_, db| {
            db.create_object_store(STORE).build()?;
            Ok(())
        })
        .await;
    db.ok()
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

/// localStorage, when the browser lets this page have it (private modes, policies and quotas
/// may not: then `None`, never a panic).
fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// Marks a tab as gone (synchronously: it runs while the page is being hidden).
pub(crate) fn mark_gone(client_id: &str) {
    if let Some(s) = local_storage() {
        let _ = s.set_item(&gone_key(client_id), "1");
    }
}

/// Whether a tab was marked gone.
pub(crate) fn is_gone(client_id: &str) -> bool {
    local_storage()
        .and_then(|s| s.get_item(&gone_key(client_id)).ok().flatten())
        .is_some()
}

/// Forgets the mark.
pub(crate) fn clear_gone(client_id: &str) {
    if let Some(s) = local_storage() {
        let _ = s.remove_item(&gone_key(client_id));
    }
}

fn gone_key(client_id: &str) -> String {
    format!("sssync.gone.{client_id}")
}
