//! Asking the application again who a live connection is (after `identities_changed`, and every
//! `reidentify_every`), a few connections at a time, with a backoff while it cannot tell.

use super::detached;
use crate::protocol::{ErrorCode, ServerMsg};
use crate::server::Engine;
use crate::server::schema::Identity;
use crate::server::store::Store;
use axum::http::request::Parts;
use std::time::Duration;

/// How long a live connection waits to ask again who it is after the application could not
/// tell, at first (it doubles, up to [`REIDENTIFY_RETRY_MAX`]).
pub(super) const REIDENTIFY_RETRY: Duration = Duration::from_secs(1);

pub(super) const REIDENTIFY_RETRY_MAX: Duration = Duration::from_secs(60);

/// Asks the application again who a live connection is: at once when it says identities
/// changed, and periodically (a session that expired, or was signed out on another instance).
/// When the application cannot tell (its session store failed for a moment), the connection
/// keeps its identity and asks again soon.
pub(super) struct Reidentify {
    parts: Parts,
    identity: Identity,
    signal: tokio::sync::watch::Receiver<u64>,
    every: tokio::time::Interval,
    /// When to ask again after a failure to tell, and how many failures in a row.
    retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    failures: u32,
}

impl Reidentify {
    pub(super) fn new<S: Store>(
        engine: &Engine<S>,
        parts: Parts,
        identity: Identity,
    ) -> Reidentify {
        let every = engine.inner.reidentify_every;
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Reidentify {
            parts: detached(parts),
            identity,
            signal: engine.inner.reidentify.subscribe(),
            every,
            retry: None,
            failures: 0,
        }
    }

    /// Waits for the next time to ask.
    pub(super) async fn due(&mut self) {
        let retry = &mut self.retry;
        let retry = async move {
            match retry {
                Some(at) => at.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.signal.changed() => {
                if r.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ = self.every.tick() => {}
            () = retry => {}
        }
    }

    /// Whether the connection is still who it was (else the message to end it with). A few
    /// connections ask at once (the engine's permits); one the application cannot tell about
    /// stays who it was and asks again later.
    pub(super) async fn check<S: Store>(&mut self, engine: &Engine<S>) -> Result<(), ServerMsg> {
        self.retry = None;
        let asked = {
            let _permit = engine.inner.reidentifying.acquire().await;
            engine.identify(&self.parts).await
        };
        let now = match asked {
            Ok(now) => {
                self.failures = 0;
                now
            }
            Err(e) => {
                let wait = REIDENTIFY_RETRY
                    .saturating_mul(1 << self.failures.min(6))
                    .min(REIDENTIFY_RETRY_MAX);
                self.failures = self.failures.saturating_add(1);
                tracing::warn!(error = %e, ?wait, "a connection's identity could not be told; it stays as it was and asks again");
                self.retry = Some(Box::pin(tokio::time::sleep(wait)));
                return Ok(());
            }
        };
        if now == self.identity {
            return Ok(());
        }
        tracing::info!("a connection's identity changed; it closes");
        Err(ServerMsg::error(
            ErrorCode::IdentityChanged,
            "this connection's identity is no longer valid (signed out, or the session \
             expired): drop what it held and reconnect",
        ))
    }
}
