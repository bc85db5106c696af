//! The HTTP side: one WebSocket per client for everything live, and a GET snapshot endpoint.
//!
//! - `GET {base}/ws`: the WebSocket. The client's first message is `hello`; then any of `sub`,
//!   `unsub`, `resync`, `event`, `ping`, in any order, multiplexed (invariant 11). The server
//!   pings every 20 s and closes a connection it has not heard from for 60 s.
//! - `GET {base}/snapshot/{query}?a={args JSON}`: one result, as a `snapshot` message; the ETag
//!   is the result's digest, so an unchanged result costs a `304`.
//! - The plain-HTTP path, for clients without WebSocket: `GET {base}/sse?hello=…&subs=…` streams
//!   the same server messages as server-sent events for a fixed set of subscriptions (reopen it
//!   to change them; it resumes from the versions given), and `POST {base}/events` applies
//!   events and answers their outcomes. Both are stateless: any instance serves either.

use super::Engine;
use super::cmd::{EventCmd, Reply};
use super::schema::{IdentifyError, Identity};
use super::store::Store;
pub use crate::protocol::valid_client_id;
use crate::protocol::{ErrorCode, EventMsg, Hello, PROTOCOL, ProtocolError};
use axum::Router;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

mod plain;
mod reidentify;
mod snapshot;
mod ws;

use plain::{events_handler, sse_handler};
use snapshot::snapshot_handler;
use ws::ws_handler;

impl EventCmd {
    /// An event as it came over the wire. One whose args are over the limit goes to the writer
    /// as a refusal: its seq is used, so the client's later events are not stuck behind it.
    fn from_wire(
        client_id: std::sync::Arc<str>,
        identity: &Identity,
        e: EventMsg,
        limits: &crate::protocol::Limits,
        reply: Reply,
    ) -> EventCmd {
        let len = e.args.get().len();
        let refused = (len > limits.max_args_bytes).then(|| {
            crate::protocol::Rejection::new(
                "too_large",
                format!(
                    "the event's args are {len} bytes, over the limit of {}",
                    limits.max_args_bytes
                ),
            )
        });
        EventCmd {
            client_id,
            identity: identity.clone(),
            seq: e.seq,
            name: e.name,
            args: if refused.is_some() {
                serde_json::value::RawValue::from_string("null".into()).expect("JSON")
            } else {
                e.args
            },
            reply,
            refused,
            record_rejection: true,
        }
    }
}

/// The engine's routes, to merge into an application's router (they carry their own state).
pub fn router<S: Store>(engine: Engine<S>) -> Router {
    Router::new()
        .route("/sssync/ws", get(ws_handler::<S>))
        .route("/sssync/snapshot/{query}", get(snapshot_handler::<S>))
        .route("/sssync/sse", get(sse_handler::<S>))
        .route("/sssync/events", axum::routing::post(events_handler::<S>))
        .with_state(engine)
}

/// Binds `addr` for `axum::serve`, with `TCP_NODELAY` on every connection it accepts. A
/// server's messages are small frames written back to back (an ack, then deltas); with
/// Nagle's algorithm on (axum's default), a frame written while the previous one is
/// unacknowledged waits for the peer's delayed ACK, up to 40 ms.
pub async fn listen(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<NoDelayListener> {
    Ok(NoDelayListener(tokio::net::TcpListener::bind(addr).await?))
}

/// A TCP listener whose connections have `TCP_NODELAY` on (see [`listen`]).
#[derive(Debug)]
pub struct NoDelayListener(tokio::net::TcpListener);

impl NoDelayListener {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        // A socket that refuses the option still works, only slower.
        let _ = io.set_nodelay(true);
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The request's parts, kept for the connection's life (to ask again who it is), in buffers of
/// their own: hyper parses a request's URI and header values as slices of its read buffer (8 to
/// 16 KiB), and so is axum's copy of the URI (`OriginalUri`, in the extensions); kept as they
/// are, they would keep that buffer alive as long as the connection lives (most of an idle
/// connection's memory).
fn detached(mut parts: Parts) -> Parts {
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), copy);
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse() {
        parts.uri = uri;
    }
    // So does axum's copy of the URI in the extensions.
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get()
        && let Ok(copy) = uri.to_string().parse()
    {
        parts.extensions.insert(axum::extract::OriginalUri(copy));
    }
    parts
}

/// The answer to a request whose sender could not be told (see [`IdentifyError`]): `503`,
/// try again in a second.
fn unavailable(e: &IdentifyError) -> Response {
    tracing::warn!(error = %e, "a request is answered 503: its identity could not be told");
    let mut r = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        format!("{e}; nothing changed, try again later"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn json_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&ProtocolError::new(code, message)).expect("serializes"),
    )
        .into_response()
}

/// A `hello` this server accepts: its protocol, a valid client id.
fn check_hello(hello: Hello) -> Result<Hello, ProtocolError> {
    let bad = |code, message: String| ProtocolError::new(code, message);
    if hello.protocol != PROTOCOL {
        return Err(bad(
            ErrorCode::ProtocolMismatch,
            format!(
                "this server speaks protocol {PROTOCOL}, not {}",
                hello.protocol
            ),
        ));
    }
    if !valid_client_id(&hello.client_id) {
        return Err(bad(
            ErrorCode::Malformed,
            "client_id must be 1 to 64 ASCII letters, digits, '-' or '_'".into(),
        ));
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_copy_of_the_request_does_not_hold_the_connections_read_buffer() {
        use axum::body::Bytes;
        // hyper parses the URI and the header values as slices of its read buffer.
        let mut read = b"/sssync/ws session=abc".to_vec();
        read.resize(16 * 1024, b' ');
        let buffer = Bytes::from(read);
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts.uri = axum::http::Uri::from_maybe_shared(buffer.slice(0..10)).unwrap();
        parts.headers.insert(
            header::COOKIE,
            HeaderValue::from_maybe_shared(buffer.slice(11..22)).unwrap(),
        );
        parts
            .extensions
            .insert(axum::extract::OriginalUri(parts.uri.clone()));
        let kept = detached(parts);
        assert!(
            buffer.is_unique(),
            "the kept parts still point into the read buffer"
        );
        assert_eq!(kept.uri, "/sssync/ws");
        assert_eq!(kept.headers[header::COOKIE], "session=abc");
        let axum::extract::OriginalUri(original) = kept.extensions.get().unwrap();
        assert_eq!(original, "/sssync/ws");
    }

    #[tokio::test]
    async fn connections_accepted_by_listen_send_without_nagles_delay() {
        let mut listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, client) = tokio::join!(
            axum::serve::Listener::accept(&mut listener),
            tokio::net::TcpStream::connect(addr)
        );
        client.unwrap();
        let (io, _) = accepted;
        assert!(
            io.nodelay().unwrap(),
            "TCP_NODELAY is off on an accepted connection"
        );
    }
}
