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

    /// This query with `args` (`#[sync_query] fn todos(…)` also gives `todos(…)`, which reads
    /// better: `Todos::request(TodosArgs { … })` is the same).
    fn request(args: Self::Args) -> Request<Self>
    where
        Self: Sized,
    {
        Request::new(args)
    }
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

/// One query with its args: what reading, predicting into and checking a query take. A
/// `#[sync_query] fn todos(list_id: String)` gives `todos(list_id)`, so that a query is named
/// once: `use_sync_query(move || todos(list_id.get()))`, `view.update(todos(&self.list_id), …)`.
pub struct Request<Q: Query> {
    args: Q::Args,
}

impl<Q: Query> Request<Q> {
    /// Query `Q` with `args`.
    pub fn new(args: Q::Args) -> Self {
        Request { args }
    }

    /// The args.
    pub fn args(&self) -> &Q::Args {
        &self.args
    }

    /// The args, taken.
    pub fn into_args(self) -> Q::Args {
        self.args
    }

    /// The query key (name plus canonical args).
    pub fn key(&self) -> Result<crate::QueryKey, crate::ArgsError> {
        crate::QueryKey::new(Q::NAME, &self.args)
    }
}

impl<Q: Query> Clone for Request<Q> {
    fn clone(&self) -> Self {
        Request {
            args: self.args.clone(),
        }
    }
}

impl<Q: Query> PartialEq for Request<Q> {
    fn eq(&self, other: &Self) -> bool {
        self.args == other.args
    }
}

impl<Q: Query> std::fmt::Debug for Request<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let args = serde_json::to_string(&self.args).unwrap_or_else(|e| e.to_string());
        write!(f, "{}({args})", Q::NAME)
    }
}
