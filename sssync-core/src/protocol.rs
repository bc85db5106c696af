//! The wire protocol: the JSON messages a client and a server exchange over one WebSocket (or
//! the HTTP fallback), and the limits both sides keep. `docs/protocol.md` states the same
//! contract in prose.
//!
//! Every message is one JSON object whose `t` field names it. Queries are named on the wire by
//! their name `q` and canonical args `a` (see [`crate::QueryKey`]): every subscriber of a key
//! receives byte-identical deltas, so the server serializes each delta once.

use crate::delta::{Delta, Put};
use crate::row::{Digest, Row};
use crate::version::{Epoch, Version};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The protocol's revision; a client and a server must agree.
pub const PROTOCOL: u32 = 1;

/// The bounds of SPEC 2.12. A server sends its own in [`ServerMsg::Welcome`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// The largest canonical args of a query or an event, in bytes.
    pub max_args_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Messages queued for one connection before it is cut off as a slow consumer (it then
    /// reconnects and resumes).
    pub max_queued_messages: usize,
    /// Bytes queued for one connection before it is cut off as a slow consumer (a single message
    /// is always let through to an empty queue).
    #[serde(default = "default_queued_bytes")]
    pub max_queued_bytes: usize,
    /// The largest result a query may have (the JSON of its rows), in bytes: a bigger one is
    /// refused with `too_large` for that key.
    #[serde(default = "default_result_bytes")]
    pub max_result_bytes: usize,
    /// Query keys the server keeps live at once (idle ones are evicted first); beyond that a
    /// new key is refused with `overloaded` for that key (the client retries later).
    #[serde(default = "default_groups")]
    pub max_groups: usize,
}

fn default_queued_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_result_bytes() -> usize {
    8 * 1024 * 1024
}

fn default_groups() -> usize {
    10_000
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 64 * 1024,
            max_args_bytes: crate::query::MAX_ARGS_BYTES,
            max_subscriptions: 256,
            max_queued_messages: 1024,
            max_queued_bytes: default_queued_bytes(),
            max_result_bytes: default_result_bytes(),
            max_groups: default_groups(),
        }
    }
}

/// A message from a client. On the wire: the message's fields plus `"t"`, its snake_case name.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMsg {
    /// The first message on a connection.
    Hello(Hello),
    /// Subscribe to a query key (or resume it).
    Sub(Sub),
    /// Stop receiving a query key.
    Unsub(KeyRef),
    /// The client's rows for a key do not match (digest, or a delta that did not apply): send
    /// the whole result again, marked as a reset.
    Resync(KeyRef),
    /// A write.
    Event(EventMsg),
    /// Keep-alive; answered by [`ServerMsg::Pong`].
    Ping,
}

/// `hello`: who the client is and which history its cache has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL`].
    pub protocol: u32,
    /// The client's id: 1 to 64 ASCII letters, digits, `-` or `_`, stable across reloads.
    pub client_id: String,
    /// The epoch of the client's cache, if it has one.
    #[serde(default)]
    pub epoch: Option<Epoch>,
    /// In that epoch: the highest seq of this client the server has settled (acknowledged or
    /// rejected). A server whose `last_seq` is lower has lost history (a restored backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    /// In that epoch: the highest version a server proved to the client (in a `welcome` or an
    /// `ack`), with that proof. A server whose version is lower has lost history (a restored
    /// backup); the proof keeps a client from claiming a version no server gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// The server's proof of `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// `sub`: subscribe to query `q` with args `a`; `v` is the version the client holds (resume).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sub {
    /// The query's name.
    pub q: String,
    /// Its args.
    pub a: Box<RawValue>,
    /// The version of the rows the client holds for this key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<Version>,
}

/// A query key on the wire: name `q`, args `a`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRef {
    /// The query's name.
    pub q: String,
    /// Its args.
    pub a: Box<RawValue>,
}

/// `event`: the client's `seq`-th write (1, 2, 3…): event `name` with `args`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventMsg {
    /// The client's sequence number for this event.
    pub seq: u64,
    /// The event's registered name.
    pub name: String,
    /// Its args.
    pub args: Box<RawValue>,
}

/// A message from the server. On the wire: the message's fields plus `"t"`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMsg {
    /// The answer to `hello`.
    Welcome(Welcome),
    /// A whole result at one version.
    Snapshot(Snapshot),
    /// What changed in a result between two versions.
    Delta(DeltaMsg),
    /// An event is applied, or had been.
    Ack(Ack),
    /// An event was refused.
    Reject(Reject),
    /// An event arrived out of order.
    Gap(Gap),
    /// An event could not be applied for now (the database refused the write): resend it later.
    Retry(Retry),
    /// A message could not be handled.
    Error(ProtocolError),
    /// Answer to `ping`.
    Pong(Pong),
}

/// `pong`: the answer to `ping`. Every delta up to `v` (the version the server has fanned out)
/// that this connection's subscriptions get was sent before it, so a client that saw it has
/// seen `v` (an idle tab learns how far the server is, to drop another tab's settled
/// predictions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    /// The version fanned out when the ping was answered (absent from older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<Version>,
}

/// `welcome`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server's protocol revision.
    pub protocol: u32,
    /// The database's history; a client whose cache has another one drops it.
    pub epoch: Epoch,
    /// The database's current version.
    pub version: Version,
    /// The last event seq applied for this client (0: none). Pending events with a seq up to
    /// this one are already applied.
    pub last_seq: u64,
    /// The server's bounds.
    pub limits: Limits,
    /// The server's proof of `version`, for the client's next `hello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// An opaque tag of the connection's identity (none: anonymous), the same on every
    /// instance: a client whose cache was filled under another tag drops it (rows and pending
    /// events) before it uses anything of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
}

/// `snapshot`: every row of query `q`/`a` at version `v`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// The query's name.
    pub q: String,
    /// Its canonical args.
    pub a: Box<RawValue>,
    /// The version of these rows.
    pub v: Version,
    /// Whether this replaces rows the client had (swap them in atomically).
    pub reset: bool,
    /// Every row, in order.
    pub rows: Vec<Row>,
    /// The result's digest.
    pub digest: Digest,
}

/// `delta`: what changed in query `q`/`a` from version `from` to `to`. Apply it only when
/// holding `from`; ignore it when already past it; resync on a gap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeltaMsg {
    /// The query's name.
    pub q: String,
    /// Its canonical args.
    pub a: Box<RawValue>,
    /// The version the delta applies to.
    pub from: Version,
    /// The version it produces.
    pub to: Version,
    /// Rows to put, in result order.
    pub puts: Vec<Put>,
    /// Keys of rows that left.
    pub dels: Vec<std::sync::Arc<str>>,
    /// The digest of the result at `to`.
    pub digest: Digest,
}

impl DeltaMsg {
    /// The puts and deletes as a [`Delta`].
    pub fn delta(&self) -> Delta {
        Delta {
            puts: self.puts.clone(),
            dels: self.dels.clone(),
        }
    }
}

/// `ack`: event `seq` is applied (or was already: `dup`); its effects are visible at version
/// `v`, and every delta up to `v` for this connection's subscriptions was sent before this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The event's seq.
    pub seq: u64,
    /// The version at which its effects are visible.
    pub v: Version,
    /// It had been applied before (a resend).
    #[serde(default)]
    pub dup: bool,
    /// The server's proof of `v`, for the client's next `hello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// `reject`: event `seq` was refused: nothing of it was applied, and it never will be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The event's seq.
    pub seq: u64,
    /// The version at which the refusal was recorded.
    pub v: Version,
    /// Why.
    pub error: Rejection,
}

/// `gap`: event `seq` arrived out of order; nothing was applied; resend from `expected`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The seq that arrived.
    pub seq: u64,
    /// The seq the server expects next.
    pub expected: u64,
}

/// `retry`: event `seq` was not applied and its seq is not used, because the database refused
/// the write for now (busy, full, an I/O error) after the server's own retries; resend it, and
/// every pending event after it, in `after_ms` milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// The event's seq.
    pub seq: u64,
    /// How long to wait before resending, in milliseconds.
    pub after_ms: u64,
    /// Why, for people.
    pub message: String,
}

/// `error`: a message could not be handled; the connection goes on unless the code says it
/// closes. An error about one query key (`query_failed`, `too_large`, `overloaded`,
/// `unknown_query`, `bad_args` for a `sub`) names it in `q` and `a`.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    /// What kind of error.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// The query the error is about, if it is about one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// That query's canonical args.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<Box<RawValue>>,
}

impl PartialEq for ProtocolError {
    fn eq(&self, other: &ProtocolError) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.q == other.q
            && self.a.as_ref().map(|a| a.get()) == other.a.as_ref().map(|a| a.get())
    }
}

impl Eq for ProtocolError {}

impl ProtocolError {
    /// An error not about any one key.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            q: None,
            a: None,
        }
    }

    /// An error about query key `key`.
    pub fn for_key(
        code: ErrorCode,
        message: impl Into<String>,
        key: &crate::QueryKey,
    ) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            q: Some(key.name().to_owned()),
            a: RawValue::from_string(key.args_json().to_owned()).ok(),
        }
    }

    /// The query key this error is about, if any.
    pub fn key(&self) -> Option<crate::QueryKey> {
        crate::QueryKey::from_json(self.q.as_deref()?, self.a.as_ref()?.get()).ok()
    }
}

/// A message that is not JSON or not a known message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct ParseError(pub String);

#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(borrow)]
    t: std::borrow::Cow<'a, str>,
}

fn field<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ParseError> {
    serde_json::from_str(text).map_err(|e| ParseError(e.to_string()))
}

// Parsing reads the tag first, then the message's own struct from the same text: the rows stay
// raw JSON (serde cannot keep raw values inside an internally tagged enum).
impl ClientMsg {
    /// Parses one message.
    pub fn parse(text: &str) -> Result<ClientMsg, ParseError> {
        let tag: Tag<'_> = field(text)?;
        Ok(match &*tag.t {
            "hello" => ClientMsg::Hello(field(text)?),
            "sub" => ClientMsg::Sub(field(text)?),
            "unsub" => ClientMsg::Unsub(field(text)?),
            "resync" => ClientMsg::Resync(field(text)?),
            "event" => ClientMsg::Event(field(text)?),
            "ping" => ClientMsg::Ping,
            other => return Err(ParseError(format!("unknown message type {other:?}"))),
        })
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages serialize")
    }
}

impl ServerMsg {
    /// Parses one message.
    pub fn parse(text: &str) -> Result<ServerMsg, ParseError> {
        let tag: Tag<'_> = field(text)?;
        Ok(match &*tag.t {
            "welcome" => ServerMsg::Welcome(field(text)?),
            "snapshot" => ServerMsg::Snapshot(field(text)?),
            "delta" => ServerMsg::Delta(field(text)?),
            "ack" => ServerMsg::Ack(field(text)?),
            "reject" => ServerMsg::Reject(field(text)?),
            "gap" => ServerMsg::Gap(field(text)?),
            "retry" => ServerMsg::Retry(field(text)?),
            "error" => ServerMsg::Error(field(text)?),
            "pong" => ServerMsg::Pong(field(text)?),
            other => return Err(ParseError(format!("unknown message type {other:?}"))),
        })
    }

    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages serialize")
    }

    /// The protocol error `code` with `message`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error(ProtocolError::new(code, message))
    }

    /// The protocol error `code` about query key `key`.
    pub fn key_error(
        code: ErrorCode,
        message: impl Into<String>,
        key: &crate::QueryKey,
    ) -> ServerMsg {
        ServerMsg::Error(ProtocolError::for_key(code, message, key))
    }
}

/// Whether `id` can be a client id: 1 to 64 ASCII letters, digits, `-`, `_`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A client's message as a server reads it: checked against the size limit, then parsed. The
/// error is what the server answers (`too_large`, `malformed`); nothing else happens.
pub fn decode_client(text: &str, limits: &Limits) -> Result<ClientMsg, ProtocolError> {
    if text.len() > limits.max_message_bytes {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!(
                "a message of {} bytes is over the limit of {}",
                text.len(),
                limits.max_message_bytes
            ),
        ));
    }
    ClientMsg::parse(text).map_err(|e| ProtocolError::new(ErrorCode::Malformed, e.to_string()))
}

/// The body of `POST /sssync/events` (clients without WebSocket): a client id and its events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventsBody {
    /// The client's id.
    pub client_id: String,
    /// Its events, in seq order.
    pub events: Vec<EventMsg>,
}

impl EventsBody {
    /// The body as a server reads it: within the size limit, JSON of this shape, a valid
    /// client id. The error is what the server answers (`too_large`, `malformed`).
    pub fn decode(body: &[u8], limits: &Limits) -> Result<EventsBody, ProtocolError> {
        if body.len() > limits.max_message_bytes {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "a body of {} bytes is over the limit of {}",
                    body.len(),
                    limits.max_message_bytes
                ),
            ));
        }
        let parsed: EventsBody = serde_json::from_slice(body)
            .map_err(|e| ProtocolError::new(ErrorCode::Malformed, e.to_string()))?;
        if !valid_client_id(&parsed.client_id) {
            return Err(ProtocolError::new(
                ErrorCode::Malformed,
                "client_id must be 1 to 64 ASCII letters, digits, '-' or '_'",
            ));
        }
        Ok(parsed)
    }
}

/// Why an event was refused: a code for programs and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// A stable code (`unknown_event`, `bad_args`, or one of the application's own).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

impl Rejection {
    /// A rejection with an application code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Rejection {
        Rejection {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The application refuses this identity the event (`forbidden`): it rolls back on the
    /// client like any other rejection. The same as `Rejection::from(Forbidden::new(message))`.
    pub fn forbidden(message: impl Into<String>) -> Rejection {
        Rejection::new(FORBIDDEN, message)
    }

    /// This rejection as one of the application's own kinds, when its code is one of theirs:
    /// `match r.kind::<SayError>() { Some(SayError::TooLong) => …, … }`, or
    /// `r.kind::<Forbidden>()`.
    pub fn kind<K: RejectionKind>(&self) -> Option<K> {
        K::from_rejection(self)
    }

    /// Whether the application refused this identity the event ([`Forbidden`]).
    pub fn is_forbidden(&self) -> bool {
        self.code == FORBIDDEN
    }
}

/// The code of a rejection or error that refuses an identity (see [`Forbidden`],
/// [`ErrorCode::Forbidden`]).
pub const FORBIDDEN: &str = "forbidden";

/// A kind of rejection, as an application's own type: usually an enum with
/// `#[derive(Rejection)]` (from `sssync-leptos`), one variant per reason, each with its stable
/// code (the variant's name in snake case) and its message. A handler returns it
/// (`Err(SayError::TooLong.into())`, an `EventError`); the browser gets it back from the
/// [`Rejection`] it receives with [`Rejection::kind`].
pub trait RejectionKind: Sized {
    /// The stable code (what crosses the wire, and what [`Rejection::kind`] matches).
    fn code(&self) -> &'static str;
    /// The sentence for people.
    fn message(&self) -> String;
    /// The kind a rejection is, if its code is one of this type's. Fields a code alone does
    /// not carry come back as their `Default`; the message is the rejection's.
    fn from_rejection(rejection: &Rejection) -> Option<Self>;
}

impl<K: RejectionKind> From<K> for Rejection {
    fn from(kind: K) -> Rejection {
        Rejection::new(kind.code(), kind.message())
    }
}

/// This identity may not do it: the one refusal of an identity, everywhere. A query's
/// `authorize` returns it (`Err(Forbidden::new("No such list.").into())`, an `AccessError`), an
/// event's handler too (an `EventError`: the event is rejected with code `forbidden`), and the
/// browser gets it back as `SyncError::Forbidden` from a query, or as [`Rejection::kind`] of a
/// rejected event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("forbidden: {0}")]
pub struct Forbidden(pub String);

impl Forbidden {
    /// A refusal, with the message the reader or sender gets.
    pub fn new(message: impl Into<String>) -> Forbidden {
        Forbidden(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl RejectionKind for Forbidden {
    fn code(&self) -> &'static str {
        FORBIDDEN
    }

    fn message(&self) -> String {
        self.0.clone()
    }

    fn from_rejection(rejection: &Rejection) -> Option<Forbidden> {
        rejection
            .is_forbidden()
            .then(|| Forbidden(rejection.message.clone()))
    }
}

/// The kinds of protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, or not a known message.
    Malformed,
    /// Over a size limit.
    TooLarge,
    /// `hello` must come first (and once).
    HelloFirst,
    /// The client's protocol revision differs from the server's (the connection closes).
    ProtocolMismatch,
    /// No query of that name is registered.
    UnknownQuery,
    /// The args do not fit the query.
    BadArgs,
    /// Over the limit of subscriptions per connection.
    TooManySubscriptions,
    /// The connection fell too far behind (the connection closes; reconnect and resume).
    SlowConsumer,
    /// A query failed on the server (for the key named in the error): the client keeps its
    /// rows, shows the query as failed, and subscribes again later.
    QueryFailed,
    /// The server holds as many live queries as it may: subscribe again later.
    Overloaded,
    /// The server failed (database, bug); nothing was changed.
    Internal,
    /// This identity may not do this: for a key (a `sub`, or a live subscription whose access
    /// was withdrawn), the client drops the key's rows and does not subscribe again by itself;
    /// without a key (a `hello` or an event whose client id belongs to another identity), the
    /// connection closes and the client drops what it holds and takes a new client id.
    Forbidden,
    /// The connection's identity is no longer the one it started with, as far as the request
    /// that opened it says (signed out, session expired, signed in again as someone else or as
    /// the same user under a new session): the connection closes; the client drops the rows it
    /// holds and reconnects with its current credentials, keeping its pending events; the next
    /// welcome tells whose they are (another identity's are dropped then).
    IdentityChanged,
    /// The server cannot serve this for now (it could not tell who is asking: the
    /// application's session store failed for a moment): nothing changed; try again later.
    Unavailable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_stable_json_shape() {
        let m = ClientMsg::parse(r#"{"t":"sub","q":"todos","a":{"list_id":"x"},"v":7}"#).unwrap();
        let ClientMsg::Sub(sub) = m else {
            panic!("not a sub")
        };
        assert_eq!((sub.q.as_str(), sub.v), ("todos", Some(Version(7))));
        assert_eq!(sub.a.get(), r#"{"list_id":"x"}"#);
        let ack = ServerMsg::Ack(Ack {
            seq: 3,
            v: Version(9),
            dup: false,
            proof: None,
        })
        .to_json();
        assert_eq!(ack, r#"{"t":"ack","seq":3,"v":9,"dup":false}"#);
        assert!(ClientMsg::parse(r#"{"t":"nope"}"#).is_err());
        assert!(ClientMsg::parse("not json").is_err());
        assert!(ClientMsg::parse(r#"{"t":"event","seq":"x"}"#).is_err());
    }

    #[test]
    fn server_messages_round_trip_with_raw_rows() {
        let row = Row::from_serialize("k1", &serde_json::json!({"b": 1, "a": [1.5, "x"]})).unwrap();
        let snap = ServerMsg::Snapshot(Snapshot {
            q: "todos".into(),
            a: serde_json::value::to_raw_value(&serde_json::json!({"list_id": "x"})).unwrap(),
            v: Version(4),
            reset: false,
            rows: vec![row.clone()],
            digest: Digest::of([&row]),
        });
        let text = snap.to_json();
        let ServerMsg::Snapshot(back) = ServerMsg::parse(&text).unwrap() else {
            panic!("not a snapshot")
        };
        assert_eq!(back.rows, vec![row.clone()]);
        assert_eq!(back.digest, Digest::of([&row]));
        assert_eq!(ServerMsg::parse(&text).unwrap().to_json(), text);
    }
}
