//! # sssync-core
//!
//! The engine of sssync ("simple stateless sync"): named snapshot queries, typed events and
//! versioned delta streams, shared by the server and the client (native and wasm32).
//!
//! ## Map
//!
//! | module | concept |
//! |---|---|
//! | [`query`] | the query key: a query's name plus the canonical encoding of its args (protocol invariant 1) |
//!
//! The rest of the engine (versions and epochs, events, deltas, subscriptions, the SQLite and
//! PostgreSQL stores, the transport and the client cache) is being built module by module; the
//! wire contract it keeps is stated in `docs/protocol.md` at the repository root.

pub mod query;

pub use query::{ArgsError, QueryKey};
