//! The scenario's clients: native clients behind the fault proxy, and what each sent.

use super::LISTS;
use crate::app::{self, Counters, Items, ListArgs};
use sssync_core::client::MemoryStore;
use sssync_core::client::native::{NativeClient, Options};
use sssync_core::protocol::ServerMsg;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One event sent, and what must become of it.
pub(super) struct Sent {
    pub(super) uid: String,
    /// It can apply (not a poison or invalid one).
    pub(super) applies: bool,
    /// Which client sent it, with which seq (for the diagnosis of a failure).
    pub(super) client: usize,
    pub(super) seq: Option<u64>,
}

pub(super) struct Client {
    pub(super) index: usize,
    pub(super) c: NativeClient,
    pub(super) frames: Arc<AtomicU64>,
    pub(super) online: bool,
    /// Its client id and what it keeps (its rows, its pending events): a tab opened again
    /// (after a close or a crash) starts from them.
    pub(super) id: String,
    pub(super) store: Arc<MemoryStore>,
    /// It is connected to the second server process (see [`Step::Lag`]).
    pub(super) on_second: bool,
}

/// A client (a tab) as client id `id`, from what `store` kept, connected to `url`, subscribed to
/// every query of the scenario; its frames counted in `frames`.
pub(super) fn open_client(
    url: String,
    id: &str,
    store: &Arc<MemoryStore>,
    frames: &Arc<AtomicU64>,
) -> NativeClient {
    let options = Options {
        event_types: app::event_types(),
        store: Some(store.clone()),
        observer: Some({
            let frames = frames.clone();
            Arc::new(move |_: &ServerMsg| {
                frames.fetch_add(1, Ordering::Relaxed);
            })
        }),
        ack_timeout: Some(Duration::from_millis(300)),
        max_backoff: Some(Duration::from_millis(200)),
        ..Options::default()
    };
    let c = NativeClient::connect_with(url, id, options);
    c.subscribe::<Counters>(&());
    for l in LISTS {
        c.subscribe::<Items>(&ListArgs {
            list_id: l.to_owned(),
        });
    }
    c
}

impl Client {
    /// The ids of the events it has not settled yet.
    pub(super) fn pending_uids(&self) -> HashSet<String> {
        self.c.with_state(|s| {
            s.pending_events()
                .into_iter()
                .filter_map(|(_, _, args)| {
                    serde_json::from_str::<serde_json::Value>(&args)
                        .ok()?
                        .get("uid")?
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        })
    }
}
