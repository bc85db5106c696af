//! # sssync-core
//!
//! The engine of sssync ("simple stateless sync"): named snapshot queries, typed events and
//! versioned delta streams, shared by the server and the client (native and wasm32).
//!
//! ## Map
//!
//! | module | concept |
//! |---|---|
//! | [`query`] | the query key: a query's name plus the canonical encoding of its args (invariant 1) |
//! | [`version`] | versions and epochs (invariant 2) |
//! | [`row`] | rows with keys, ordered results, order-independent digests (invariant 8) |
//! | [`delta`] | deltas: diff by row key with order anchors, and their application (invariant 4) |
//! | [`protocol`] | the wire messages and limits (invariants 5, 6, 11, 12) |
//! | [`schema`] | what an application declares: [`Query`] and [`Event`] |
//! | [`client`] | the client state machine: confirmed rows, pending events, views (invariant 7) |
//! | `server` | the engine (writer, tailer), stores (SQLite, PostgreSQL), subscriptions hub and transport (feature `server`) |
//!
//! The wire contract is stated in `docs/protocol.md` at the repository root.
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | (none) | the protocol, the schema traits and the client state machine; native and wasm32 |
//! | `server` | the engine on axum + sqlx, with one database at least: |
//! | `sqlite` | (with `server`) `SqliteStore`, sqlx's SQLite driver |
//! | `postgres` | (with `server`) `PgStore`, sqlx's PostgreSQL driver |
//! | `native-client` | a tokio WebSocket transport for the client |
#![warn(missing_docs)] // a library: everything public is documented

pub mod client;
pub mod delta;
pub mod protocol;
pub mod query;
pub mod row;
pub mod schema;
#[cfg(feature = "server")]
pub mod server;
pub mod version;

pub use delta::{Delta, Put};
pub use protocol::{
    ClientMsg, ErrorCode, Forbidden, Limits, ProtocolError, Rejection, RejectionKind, ServerMsg,
};
pub use query::{ArgsError, QueryKey};
pub use row::{Digest, Row, Rows};
pub use schema::{Event, Query, Request};
pub use version::{Epoch, Version};
