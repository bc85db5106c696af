//! # sssync-leptos
//!
//! Leptos bindings for sssync: read named queries with [`use_sync_query`], write typed events
//! with [`use_sync_event`], show the connection with [`use_sync_status`].
//!
//! - **On the server** (`ssr`) a query runs in-process on the engine (no HTTP round trip) and
//!   its rows ride Leptos's own hydration channel (a `Resource`): the page is rendered with real
//!   data, for any visitor, with or without JavaScript.
//! - **In the browser** (`hydrate`) the hydration render uses exactly those rows (no request);
//!   afterwards, outside any render, the client opens one WebSocket per tab, seeds its cache with
//!   the server's rows and version, subscribes from that version, and applies deltas as they
//!   come. Events apply at once (the event's `predict`), are sent exactly once, and roll back
//!   when the server rejects them.
//!
//! Browser objects (the WebSocket, timers) are created only after hydration, in effects and
//! event handlers: never during the server render or the hydration render.
//!
//! | feature | role |
//! |---|---|
//! | `ssr` | server rendering (with `sssync-core/server`) |
//! | `sqlite` (default) | the server runs on SQLite (its store, sqlx's driver) |
//! | `postgres` | the server runs on PostgreSQL; with `sqlite` too, chosen at start by the URL |
//! | `hydrate` | the browser, after server rendering |
//! | `csr` | client-only apps |
//! | `browser` | internal: what `hydrate` and `csr` share (not for apps to name) |
//!
//! An app imports one prelude on both builds: `use sssync_leptos::prelude::*;`.
#![warn(missing_docs)] // a library: everything public is documented

pub use action::{FORM_NEXT_FIELD, SyncAction};
pub use sssync_core::client::Prediction;
pub use sssync_core::{Event, Forbidden, Query, Rejection, RejectionKind, Request};
pub use sssync_macros::{Rejection, sync_apply, sync_event, sync_query, sync_run, sync_sql};

/// In a server build an event declared with [`macro@sync_event`] but applied by no
/// [`macro@sync_apply`] handler is a compile error ("event `AddNote` has no server handler"),
/// not a runtime one.
#[cfg_attr(
    feature = "ssr",
    doc = r#"
```compile_fail,E0277
#[sssync_leptos::sync_event]
pub struct AddNote { pub board: String, pub text: String }
```
"#
)]
pub mod missing_handler {}

/// What the macros expand to (not an API).
#[doc(hidden)]
pub mod __private {
    pub use leptos::server_fn;
    pub use serde;
    pub use sssync_core as core;
    #[cfg(feature = "ssr")]
    pub use sssync_core::server::declared::{inventory, sqlx};

    /// Keeps its items in a server build (`ssr`), drops them otherwise.
    #[cfg(feature = "ssr")]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __if_server {
        ($($item:item)*) => { $($item)* };
    }

    /// Keeps its items in a server build (`ssr`), drops them otherwise.
    #[cfg(not(feature = "ssr"))]
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __if_server {
        ($($item:item)*) => {};
    }
    pub use crate::__if_server;

    pub use crate::__server_action;
    pub use crate::action::{
        ActionClient, ActionProtocol, ActionRequest, ActionResponse, ActionServer, run_body,
        run_on_client, run_on_server,
    };
    pub use crate::entry::document;
    #[cfg(feature = "hydrate")]
    pub use crate::entry::hydrate;
    pub use crate::event::predicts::{Predict, Predicted, Probe, Unpredicted};
    pub use leptos::config::LeptosOptions;
    pub use leptos::prelude::IntoView;
    #[cfg(feature = "browser")]
    pub use wasm_bindgen::{self, prelude::wasm_bindgen as wasm_bindgen_attr};
}

// The map: one concept a module.
mod action; //   events as server actions (the ServerFn impl the macros make)
mod client; //   the sync client a page provides (SyncProvider)
mod entry; //    an app's shell and hydrate (entry_points!)
mod error; //    SyncError, typed across the wire
mod event; //    use_sync_event, use_sync_sender, new_id
mod form; //     plain forms: FormKey, the rejection a redirect brings back
pub mod local_storage; // small JSON values in localStorage
#[cfg(feature = "browser")]
mod persist; //  IndexedDB: pending events and the rows cache
mod query; //    use_sync_query, SyncQuery, Loaded
#[cfg(feature = "browser")]
mod runtime; //  the tab's runtime: socket, tabs, cache, loads
#[cfg(feature = "ssr")]
pub mod server; // SyncServer: the engine behind the components
mod status; //   use_sync_status, use_hydrated
mod triggers; // a trigger per query key: a hook re-reads its rows when its key changed

pub use client::{SyncClient, SyncProvider, SyncProviderProps, provide_sync_client};
pub use error::SyncError;
pub use event::{EventSender, new_id, use_sync_event, use_sync_sender};
pub use form::{FORM_KEY_FIELD, FormKey, SyncForm, SyncFormProps};
pub use query::{Loaded, QueryStatus, SyncQuery, use_sync_query};
pub use status::{SyncStatus, use_hydrated, use_sync_status};

/// The README's example, compiled as a doctest (its server half too, with `ssr`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExample;

/// What an app names, in one import on both builds: `use sssync_leptos::prelude::*;` (the
/// declaration macros, the hooks and components, `Prediction`, `Rejection` (the type and its
/// derive), `RejectionKind`, `Forbidden`, `Request`). In a
/// server build (`ssr`) it also holds what server code names: `Conn` (`Conn<Db>` inside the
/// macros), `EventCtx`, `EventError`, `QueryCtx`, `AccessError`, `Identity`, `SyncServer`,
/// `Table` and `listen`; in a browser build those are absent, and the macros drop the server
/// code that names them.
pub mod prelude {
    pub use crate::{
        FormKey, QueryStatus, SyncError, SyncForm, SyncProvider, SyncQuery, new_id, use_hydrated,
        use_sync_event, use_sync_query, use_sync_sender, use_sync_status,
    };
    pub use crate::{Rejection, sync_apply, sync_event, sync_query, sync_run, sync_sql};
    pub use sssync_core::client::Prediction;
    pub use sssync_core::{Event, Forbidden, Query, RejectionKind, Request};

    #[cfg(feature = "ssr")]
    pub use crate::server::{SyncServer, prelude::*};
    #[cfg(feature = "ssr")]
    pub use sssync_core::server::{Table, listen};
}

#[cfg(test)]
mod tests {
    use super::*;
    use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};

    #[test]
    fn errors_keep_their_kinds_across_the_wire() {
        let rejected = SyncError::Rejected(Rejection::new("title_too_long", "Too long."));
        let forbidden = SyncError::Forbidden(Forbidden::new("no such list"));
        for e in [rejected, forbidden, SyncError::Internal("disk".into())] {
            assert_eq!(SyncError::de(e.ser()), e);
        }
        let bad = SyncError::from_server_fn_error(ServerFnErrorErr::Args("no list_id".into()));
        assert_eq!(bad, SyncError::BadRequest("no list_id".into()));
        let lost = SyncError::from_server_fn_error(ServerFnErrorErr::Request("offline".into()));
        assert_eq!(lost, SyncError::Request("offline".into()));
        let failed = SyncError::from_server_fn_error(ServerFnErrorErr::ServerError("x".into()));
        assert_eq!(failed, SyncError::Internal("x".into()));
    }
}
