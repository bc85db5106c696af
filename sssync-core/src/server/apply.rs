//! Events applied from in-process code (a server function, a form post, a job, a test):
//! [`Engine::apply`] makes an [`Apply`], which says on whose behalf and at most once per what;
//! awaiting it applies the event through the writer, like a client's, and gives its [`Outcome`].

use super::cmd::{EventCmd, Reply};
use super::engine::Engine;
use super::error::EngineError;
use super::schema::{BoxFuture, Identity};
use super::store::Store;
use crate::protocol::{ErrorCode, Rejection, ServerMsg};
use crate::version::Version;
use serde_json::value::RawValue;
use std::future::IntoFuture;
use std::time::Duration;
use tokio::sync::oneshot;

/// What became of an event applied from in-process code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// It applied, in one transaction with its record; its effects are visible from `version`.
    Applied {
        /// The version its commit made.
        version: Version,
    },
    /// It had applied before (the same idempotency key, or the same client seq): not again.
    AlreadyApplied {
        /// A version at which its effects are visible.
        version: Version,
    },
    /// Its handler refused it: nothing changed. Its key (or seq) is used only for a client's
    /// seq, so a resubmitted form whose first post was refused is refused again.
    Rejected {
        /// The version at which the refusal was recorded.
        version: Version,
        /// Why.
        rejection: Rejection,
    },
    /// The database refused the write for now (full, locked, failing over): nothing changed;
    /// the same call may succeed after `after`.
    RetryLater {
        /// How long to wait first.
        after: Duration,
        /// Why, for people.
        message: String,
    },
    /// A client seq arrived out of order ([`Apply::from_client`]): nothing changed; the server
    /// expects `expected` next.
    OutOfOrder {
        /// The seq the server expects next for this client id.
        expected: u64,
    },
}

impl Outcome {
    /// Whether the event's effects are in the database (now, or from an earlier call).
    pub fn is_applied(&self) -> bool {
        matches!(
            self,
            Outcome::Applied { .. } | Outcome::AlreadyApplied { .. }
        )
    }

    /// The writer's answer, as the in-process caller sees it. An answer that only a connection
    /// can get (another identity's client id) is an error.
    fn from_answer(msg: ServerMsg) -> Result<Outcome, EngineError> {
        match msg {
            ServerMsg::Ack(a) if a.dup => Ok(Outcome::AlreadyApplied { version: a.v }),
            ServerMsg::Ack(a) => Ok(Outcome::Applied { version: a.v }),
            ServerMsg::Reject(r) => Ok(Outcome::Rejected {
                version: r.v,
                rejection: r.error,
            }),
            ServerMsg::Retry(r) => Ok(Outcome::RetryLater {
                after: Duration::from_millis(r.after_ms),
                message: r.message,
            }),
            ServerMsg::Gap(g) => Ok(Outcome::OutOfOrder {
                expected: g.expected,
            }),
            ServerMsg::Error(e) if e.code == ErrorCode::Forbidden => {
                Err(EngineError::Forbidden(e.message))
            }
            ServerMsg::Error(e) => Err(EngineError::BadArgs(e.message)),
            other => unreachable!(
                "the writer answers an event with ack, reject, gap, retry or error, not {other:?}"
            ),
        }
    }
}

/// How many times an [`Apply`] may apply its event.
enum Once<'a> {
    /// Every call is a write of its own (a job that is not retried).
    Each,
    /// At most once per key (a form's idempotency key, a retried job's id).
    Key(&'a str),
    /// At most once per client seq, in order (what a client's connection does).
    Client { id: &'a str, seq: u64 },
}

/// One event to apply from in-process code: made by [`Engine::apply`], finished by `.await`.
///
/// ```ignore
/// let outcome = engine.apply("add_todo", &args).by(&identity).once(&form_key).await?;
/// ```
#[must_use = "an Apply does nothing until it is awaited"]
pub struct Apply<'a, S: Store> {
    engine: &'a Engine<S>,
    name: &'a str,
    args_json: &'a str,
    identity: Option<&'a Identity>,
    once: Once<'a>,
}

impl<S: Store> Engine<S> {
    /// Applies event `name` with `args_json` (its arguments as JSON) from in-process code, on
    /// behalf of nobody (anonymous) and as a write of its own, unless the returned [`Apply`]
    /// says otherwise (`.by(identity)`, `.once(key)`, `.from_client(id, seq)`). Awaiting it
    /// waits for the outcome; the event's handler authorizes it like a client's.
    pub fn apply<'a>(&'a self, name: &'a str, args_json: &'a str) -> Apply<'a, S> {
        Apply {
            engine: self,
            name,
            args_json,
            identity: None,
            once: Once::Each,
        }
    }
}

impl<'a, S: Store> Apply<'a, S> {
    /// On behalf of `identity` (its handler authorizes it): a signed-in user's form post.
    pub fn by(mut self, identity: &'a Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// At most once per `idempotency_key`: a second call with the same key (a resubmitted
    /// form, a retried job) is [`Outcome::AlreadyApplied`], not applied again. The key is
    /// recorded like a client's seq (client id `k-{128-bit hash of the key and the identity}`,
    /// seq 1) in the event's transaction, when the event applies; a refused one is not
    /// recorded, so its resubmission is refused again (not acknowledged as done). The key is
    /// the identity's own: another identity's same key is another write.
    pub fn once(mut self, idempotency_key: &'a str) -> Self {
        self.once = Once::Key(idempotency_key);
        self
    }

    /// As seq `seq` of client `client_id` (which must be the identity's own), exactly as if the
    /// client had sent it: applied once, in seq order.
    pub fn from_client(mut self, client_id: &'a str, seq: u64) -> Self {
        self.once = Once::Client { id: client_id, seq };
        self
    }

    async fn run(self) -> Result<Outcome, EngineError> {
        let identity = self.identity.cloned().unwrap_or_else(Identity::anonymous);
        let (client_id, seq, record_rejection) = match self.once {
            Once::Each => (String::new(), 0, true),
            Once::Client { id, seq } => (id.to_owned(), seq, true),
            Once::Key(key) => (key_client_id(key, &identity)?, 1, false),
        };
        let args = RawValue::from_string(self.args_json.to_owned())
            .map_err(|e| EngineError::BadArgs(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.engine
            .submit(EventCmd {
                client_id: client_id.into(),
                identity,
                seq,
                name: self.name.to_owned(),
                args,
                reply: Reply::Once(tx),
                refused: None,
                record_rejection,
            })
            .await?;
        Outcome::from_answer(rx.await.map_err(|_| EngineError::Stopped)?)
    }
}

impl<'a, S: Store> IntoFuture for Apply<'a, S> {
    type Output = Result<Outcome, EngineError>;
    type IntoFuture = BoxFuture<'a, Result<Outcome, EngineError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The client id an idempotency key is recorded under: `k-` and two 64-bit FNV-1a hashes (with
/// different offsets) of the key and the identity, 128 bits, no collision in practice.
fn key_client_id(key: &str, identity: &Identity) -> Result<String, EngineError> {
    if key.is_empty() {
        return Err(EngineError::BadArgs(
            "an idempotency key is not empty".into(),
        ));
    }
    let scoped = identity
        .id()
        .map_or_else(|| key.to_owned(), |id| format!("{key}\u{0}{id}"));
    let fnv = |offset: u64| {
        scoped.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    Ok(format!(
        "k-{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    ))
}
