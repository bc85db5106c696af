//! The client: confirmed rows per query key, the queue of pending events, and the view the UI
//! shows (invariant 7: view = confirmed rows + pending events' predictions, in seq order,
//! recomputed whenever either changes).
//!
//! [`ClientState`] is the protocol state machine, free of I/O: feed it the server's messages,
//! send what it returns. It compiles for native and wasm32; the transports drive it
//! (`native` with the `native-client` feature; the browser one lives in `sssync-leptos`).

mod persist;
mod prediction;
mod state;

pub use persist::{ClientStore, EventTypes, MemoryStore, Persist, Persisted};
pub use prediction::Prediction;
pub use state::{ClientState, Update};

#[cfg(feature = "native-client")]
pub mod native;
