//! Why the engine could not start or answer, and what a subscriber is told of it.

use super::hub::query_failed;
use super::schema::{AccessError, RunError};
use super::store::StoreError;
use crate::protocol::{ErrorCode, ServerMsg};
use crate::query::QueryKey;

/// Why the engine could not start or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The database failed.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// No query of that name is registered.
    #[error("unknown query {0:?}")]
    UnknownQuery(String),
    /// The args do not fit the query.
    #[error("bad args: {0}")]
    BadArgs(String),
    /// The query's result is over [`Limits::max_result_bytes`].
    #[error("the result is {0} bytes, over the limit of {1}")]
    TooLarge(usize, usize),
    /// The server holds as many live queries as it may.
    #[error("the server holds as many live queries as it may ({0}); try again later")]
    Overloaded(usize),
    /// This identity may not read the query.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// The declared queries and events do not make an engine (see
    /// [`EngineBuilder::declared`]).
    #[error("{0}")]
    Declaration(#[from] super::declared::DeclarationError),
}

impl From<AccessError> for EngineError {
    fn from(e: AccessError) -> EngineError {
        match e {
            AccessError::Forbidden(m) => EngineError::Forbidden(m.0),
            AccessError::Storage(e) => EngineError::Storage(e),
        }
    }
}

impl From<RunError> for EngineError {
    fn from(e: RunError) -> EngineError {
        match e {
            RunError::BadArgs(m) | RunError::Encode(m) => EngineError::BadArgs(m),
            RunError::Storage(e) => EngineError::Storage(e),
        }
    }
}

impl EngineError {
    /// The same error, for another subscriber (a storage error, which cannot be cloned, as
    /// its message).
    pub(crate) fn clone_kind(&self) -> EngineError {
        match self {
            EngineError::Storage(e) => EngineError::Storage(sqlx::Error::Protocol(e.to_string())),
            EngineError::UnknownQuery(q) => EngineError::UnknownQuery(q.clone()),
            EngineError::BadArgs(m) => EngineError::BadArgs(m.clone()),
            EngineError::TooLarge(a, b) => EngineError::TooLarge(*a, *b),
            EngineError::Overloaded(n) => EngineError::Overloaded(*n),
            EngineError::Forbidden(m) => EngineError::Forbidden(m.clone()),
            EngineError::Stopped => EngineError::Stopped,
            EngineError::Declaration(e) => EngineError::Declaration(e.clone()),
        }
    }

    /// The error a subscriber of `key` gets for this failure.
    pub(crate) fn for_key(&self, key: &QueryKey) -> ServerMsg {
        match self {
            EngineError::UnknownQuery(q) => ServerMsg::key_error(
                ErrorCode::UnknownQuery,
                format!("no query named {q:?} is registered"),
                key,
            ),
            EngineError::BadArgs(m) => ServerMsg::key_error(ErrorCode::BadArgs, m.clone(), key),
            EngineError::TooLarge(..) => {
                ServerMsg::key_error(ErrorCode::TooLarge, format!("query {key}: {self}"), key)
            }
            EngineError::Overloaded(_) => {
                ServerMsg::key_error(ErrorCode::Overloaded, self.to_string(), key)
            }
            EngineError::Storage(e) => query_failed(key, &e.to_string()),
            EngineError::Forbidden(m) => ServerMsg::key_error(ErrorCode::Forbidden, m.clone(), key),
            EngineError::Stopped | EngineError::Declaration(_) => {
                ServerMsg::key_error(ErrorCode::Internal, self.to_string(), key)
            }
        }
    }
}
