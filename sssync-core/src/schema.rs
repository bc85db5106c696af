//! The shapes an application declares, shared by server and client: named queries (snapshot
//! functions) and named events (writes).
//!
//! The server side (running a query, applying an event) is in `server` (feature `server`); the
//! client side (predicting an event) in [`crate::client`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A named snapshot function: a name, typed args, rows with stable keys.
///
/// Implemented by a marker type (`struct Todos;`); the query's name is its identity on the wire,
/// so it must not change once clients use it.
pub trait Query: Send + Sync + 'static {
    /// The query's name: 1 to 128 ASCII letters, digits, `_`, `-`, `.`.
    const NAME: &'static str;
    /// The args (serde): the query key is the name plus their canonical JSON.
    type Args: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static;
    /// One row of the result.
    type Row: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static;
    /// The row's key, unique within a result and stable across versions.
    fn row_key(row: &Self::Row) -> String;
}

/// A named, typed event: a write. The event value is its args.
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The event's name: its identity on the wire.
    const NAME: &'static str;

    /// The optimistic effect on the client's view of the queries it touches (default: none;
    /// the change then shows when the server's delta arrives). Must be a pure function of the
    /// event and the rows it reads: it is re-run whenever the confirmed rows change (rebase).
    fn predict(&self, _view: &mut crate::client::Prediction<'_>) {}
}
