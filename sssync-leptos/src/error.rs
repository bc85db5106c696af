//! Why a query or an event failed ([`SyncError`]), typed across the wire.

use serde::{Deserialize, Serialize};
use sssync_core::{Forbidden, Rejection};

/// Why a query or an event failed; crosses the wire typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The server refused the event.
    #[error("{0}")]
    Rejected(Rejection),
    /// No query or event of that name is registered, or its args do not fit.
    #[error("{0}")]
    BadRequest(String),
    /// The server failed; nothing was changed.
    #[error("the server failed: {0}")]
    Internal(String),
    /// The request did not get through (network, encoding).
    #[error("the request failed: {0}")]
    Request(String),
    /// This identity may not read the query (render a 404, or a sign-in prompt): the
    /// [`Forbidden`] its `authorize` returned.
    #[error("{0}")]
    Forbidden(Forbidden),
}

impl leptos::server_fn::error::FromServerFnError for SyncError {
    type Encoder = leptos::server_fn::codec::JsonEncoding;

    /// Keeps the kind of a server function's own failure: the request did not get through,
    /// it did not fit the function, or the server failed.
    fn from_server_fn_error(value: leptos::server_fn::error::ServerFnErrorErr) -> Self {
        use leptos::server_fn::error::ServerFnErrorErr as E;
        match value {
            E::Request(m) | E::Response(m) => SyncError::Request(m),
            E::Args(m)
            | E::MissingArg(m)
            | E::Deserialization(m)
            | E::Serialization(m)
            | E::UnsupportedRequestMethod(m)
            | E::Registration(m) => SyncError::BadRequest(m),
            E::ServerError(m) | E::MiddlewareError(m) => SyncError::Internal(m),
        }
    }
}

/// The last event the server (or the client, for args over the limit) refused.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "browser"), allow(dead_code))] // made by the browser runtime only
pub(crate) struct Refused {
    /// The event's name.
    pub(crate) event: String,
    /// Why.
    pub(crate) why: Rejection,
}
