//! The handshake: a client's `hello` answered with a `welcome`, and the version proofs that let
//! a client show that the database lost history it saw (a restored backup).

use super::Engine;
use super::cmd::{Cmd, Inner};
use super::error::EngineError;
use super::schema::Identity;
use super::store::Store;
use crate::protocol::{Hello, PROTOCOL, Welcome};
use crate::version::{Epoch, Version};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a `hello` waits for the fan-out of the commits it reports.
const HELLO_WAIT: Duration = Duration::from_secs(10);
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl<S: Store> Inner<S> {
    fn mac(&self, epoch: &Epoch, v: Version) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(epoch.0.as_bytes());
        mac.update(b":");
        mac.update(v.0.to_string().as_bytes());
        mac
    }

    /// The proof that this database gave version `v` in `epoch` (half an HMAC-SHA256, in hex):
    /// what a client shows in its hello to prove the database lost history.
    pub(crate) fn proof(&self, epoch: &Epoch, v: Version) -> String {
        use hmac::Mac;
        self.mac(epoch, v).finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The opaque tag of an identity that clients see in their welcome (none: anonymous):
    /// the same on every instance, and telling nothing of the identity.
    pub(crate) fn identity_tag(&self, identity: &Identity) -> Option<String> {
        use hmac::Mac;
        let id = identity.id()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"who:");
        mac.update(id.as_bytes());
        Some(
            mac.finalize().into_bytes()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }
}

impl<S: Store> Engine<S> {
    /// Answers a client's `hello`: the welcome, and whether the client's cache belongs to this
    /// history. Reads the client's `last_seq` and the database's version together, and waits
    /// until the commits they reflect are fanned out, so that the subscriptions that follow are
    /// answered with their effects (an event applied before a reconnect never flickers out:
    /// invariant 6). A client that saw more than this database holds (a seq settled beyond its
    /// `last_seq`, a version beyond its own) proves the database lost history: it gets a new
    /// epoch, and so does every other client (their caches are reset; their pending events are
    /// renumbered and sent once).
    pub(crate) async fn welcome(
        &self,
        hello: &Hello,
        identity: &Identity,
    ) -> Result<(Welcome, bool), EngineError> {
        let (mut epoch, row, mut v_db) = self.inner.store.hello_state(&hello.client_id).await?;
        // A client id belongs to the identity that first used it.
        if let Some(r) = &row
            && r.owner.as_deref() != identity.id()
        {
            return Err(EngineError::Forbidden(format!(
                "client id {:?} belongs to another identity; use a client id of your own",
                hello.client_id
            )));
        }
        let mut last_seq = row.map_or(0, |r| r.last_seq);
        // A version this database gave the client (the proof says so) that it no longer has:
        // the database went back in history. A new epoch resets every client's cache.
        let proven_ahead = match (&hello.version, &hello.proof) {
            (Some(v), Some(p)) => {
                *v > v_db && hello.epoch.as_ref() == Some(&epoch) && self.verify(&epoch, *v, p)
            }
            _ => false,
        };
        if proven_ahead {
            tracing::warn!(
                client = %hello.client_id,
                client_version = ?hello.version,
                version = %v_db,
                "a client saw a version this database no longer has (restored from a backup?): \
                 starting a new epoch"
            );
            let (tx, rx) = oneshot::channel();
            self.cmds
                .send(Cmd::NewEpoch {
                    seen: epoch.clone(),
                    reply: tx,
                })
                .await
                .map_err(|_| EngineError::Stopped)?;
            rx.await.map_err(|_| EngineError::Stopped)??;
            let row;
            (epoch, row, v_db) = self.inner.store.hello_state(&hello.client_id).await?;
            last_seq = row.map_or(0, |r| r.last_seq);
        }
        // Seqs this client had settled that the database no longer has (gone with a restore):
        // its last_seq moves up to them, so its pending events keep their seqs and apply once.
        // (A client can only skip seqs of its own.)
        if let Some(acked) = hello.acked.filter(|a| *a > last_seq) {
            let (tx, rx) = oneshot::channel();
            self.cmds
                .send(Cmd::FastForward {
                    client_id: hello.client_id.as_str().into(),
                    owner: identity.id().map(str::to_owned),
                    to: acked,
                    reply: tx,
                })
                .await
                .map_err(|_| EngineError::Stopped)?;
            rx.await.map_err(|_| EngineError::Stopped)??;
            let row;
            (epoch, row, v_db) = self.inner.store.hello_state(&hello.client_id).await?;
            last_seq = row.map_or(0, |r| r.last_seq);
        }
        if !self.inner.hub.wait_processed(v_db, HELLO_WAIT).await {
            return Err(EngineError::Stopped);
        }
        let same_history = hello.epoch.as_ref() == Some(&epoch);
        let version = self.current_version();
        Ok((
            Welcome {
                protocol: PROTOCOL,
                proof: Some(self.inner.proof(&epoch, version)),
                epoch,
                version,
                last_seq,
                limits: self.inner.limits.clone(),
                who: self.inner.identity_tag(identity),
            },
            same_history,
        ))
    }

    fn verify(&self, epoch: &Epoch, v: Version, proof: &str) -> bool {
        use hmac::Mac;
        // The whole proof (16 bytes), compared in constant time: a shorter one proves nothing.
        match unhex(proof) {
            Some(bytes) if bytes.len() == 16 => self
                .inner
                .mac(epoch, v)
                .verify_truncated_left(&bytes)
                .is_ok(),
            _ => false,
        }
    }
}
