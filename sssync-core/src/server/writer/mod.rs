//! The writer: the one task per engine that writes. It takes every event waiting (up to a
//! batch size), applies them in one transaction, one version for the batch, each event inside
//! a savepoint with its client's `last_seq` (invariant 5), commits, and hands the version to the
//! tailer. It does not wait for the fan-out: the acker (a task of its own) answers each batch's
//! events once the tailer has fanned its version out (so that a client has every delta up to an
//! ack's version before the ack: invariant 6), in commit order, while the writer commits the next
//! batches. It also gives the database a new epoch when asked (a restored backup), and seals the
//! changes written outside the engine.

use super::cmd::{Cmd, EventCmd, FaultPoint, Inner, Reply};
use super::store::short;
use super::store::{Store, StoreError};
use crate::protocol::{Ack, ErrorCode, Gap, Reject, Rejection, Retry, ServerMsg};
use crate::version::{Epoch, Version};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

mod transaction;

use transaction::apply_in_transaction;

/// Events applied in one transaction at most.
pub(crate) const MAX_BATCH: usize = 512;
/// How many times an event may be set aside (its handler failing transiently while the
/// others commit) before it is refused.
const MAX_DEFERRALS: u32 = 10;
/// How long the acknowledgements of a batch wait for its fan-out at most (the tailer reads the
/// log; if the database does not answer it, the acks go anyway rather than never).
const FAN_OUT_WAIT: Duration = Duration::from_secs(10);

/// What happened to one event of a batch.
enum Outcome {
    Applied,
    Duplicate,
    Gap(u64),
    Rejected(Rejection),
    /// The client id belongs to another identity: nothing applied, nothing recorded.
    NotYours,
}

/// Why a batch did not commit (it rolled back as a whole: nothing of it applied).
struct BatchFailed {
    err: StoreError,
    /// The event whose handler failed (transiently, or by panicking), if it was one's.
    culprit: Option<usize>,
    panicked: bool,
    /// Applied without savepoints, an event was refused: the batch goes again with them.
    needs_savepoints: bool,
}

impl From<StoreError> for BatchFailed {
    fn from(err: StoreError) -> BatchFailed {
        BatchFailed {
            err,
            culprit: None,
            panicked: false,
            needs_savepoints: false,
        }
    }
}

/// Batches whose acknowledgements wait for their fan-out at most, while the writer commits the
/// next ones (then the writer waits: the pipeline is bounded).
const ACKS_IN_FLIGHT: usize = 8;

/// The answers of one committed batch, sent once the tailer has fanned out `v`.
struct Answers {
    /// The version its outcomes are visible at.
    v: Version,
    msgs: Vec<(Reply, ServerMsg)>,
}

/// Sends each batch's answers once its fan-out is done, in commit order, so that the writer
/// never waits for a fan-out: it commits the next batch while the tailer re-runs the queries
/// of the last ones (and one tailer round covers every commit it finds).
async fn acker<S: Store>(inner: Arc<Inner<S>>, mut rx: mpsc::Receiver<Answers>) {
    while let Some(batch) = rx.recv().await {
        if !inner.hub.wait_processed(batch.v, FAN_OUT_WAIT).await {
            tracing::warn!(version = %batch.v, "the fan-out of a batch is late; acknowledging anyway");
        }
        inner.fault(FaultPoint::BeforeAcks);
        for (reply, msg) in batch.msgs {
            reply.send(msg);
        }
    }
}

pub(crate) async fn writer<S: Store>(inner: Arc<Inner<S>>, mut rx: mpsc::Receiver<Cmd>) {
    let (answers, answers_rx) = mpsc::channel(ACKS_IN_FLIGHT);
    tokio::spawn(acker(inner.clone(), answers_rx));
    let mut stop = inner.stop.subscribe();
    // Batches that failed in a row: the resend delay clients are told grows with it.
    let mut failing: u32 = 0;
    // Events set aside while others committed (their handler fails transiently), by (client,
    // seq): how many times.
    let mut deferrals: HashMap<(Arc<str>, u64), u32> = HashMap::new();
    loop {
        let first = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(c) => c,
                None => return,
            },
            _ = stop.changed() => return,
        };
        // Everything already waiting joins the batch (bursts coalesce into one commit).
        let mut events = Vec::new();
        let mut epochs = Vec::new();
        let mut forwards = Vec::new();
        let mut seal = false;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Event(e) => events.push(e),
                Cmd::NewEpoch { seen, reply } => epochs.push((seen, reply)),
                Cmd::FastForward {
                    client_id,
                    owner,
                    to,
                    reply,
                } => forwards.push((client_id, owner, to, reply)),
                Cmd::Seal => seal = true,
            }
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        for (seen, reply) in epochs {
            let _ = reply.send(new_epoch(&inner, seen).await);
        }
        for (client_id, owner, to, reply) in forwards {
            let _ = reply.send(fast_forward(&inner, &client_id, owner.as_deref(), to).await);
        }
        if seal {
            match seal_outside_writes(&inner).await {
                Ok(Some(_)) => inner.wake.notify_one(),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sealing the changes written outside the engine failed; retried at the next poll")
                }
            }
        }
        if !events.is_empty() {
            // An event set aside too many times while the database took the others' writes
            // can never apply: it is refused (its seq used) instead of resent forever.
            for e in &mut events {
                if counts_deferrals(e)
                    && deferrals
                        .get(&(e.client_id.clone(), e.seq))
                        .is_some_and(|n| *n >= MAX_DEFERRALS)
                {
                    e.refused = Some(Rejection::new(
                        "internal",
                        format!(
                            "the server could not apply event {:?} after {MAX_DEFERRALS} attempts; \
                             nothing of it was applied",
                            e.name
                        ),
                    ));
                }
            }
            match apply_batch(&inner, events, failing, &mut deferrals, &answers).await {
                Ok(()) => failing = 0,
                Err(()) => failing = failing.saturating_add(1),
            }
        }
    }
}

/// Whether an event set aside is counted towards its refusal: one with a client's seq is (its
/// client resends the same event), a server-origin one is not (each call is a write of its own;
/// they all share client id `""` and seq 0, and the caller is told to retry).
fn counts_deferrals(e: &EventCmd) -> bool {
    e.seq != 0
}

/// Moves a client's `last_seq` up to `to` (never down), in a transaction of the writer's own.
async fn fast_forward<S: Store>(
    inner: &Inner<S>,
    client_id: &str,
    owner: Option<&str>,
    to: u64,
) -> Result<(), StoreError> {
    let mut conn = inner.store.pool().acquire().await?;
    S::begin(&mut conn).await?;
    let result = async {
        let row = S::read_client(&mut conn, client_id).await?;
        // Only the owner's hello moves it (the hello checked it; a race is refused here).
        let mine = row.as_ref().is_none_or(|r| r.owner.as_deref() == owner);
        if mine && row.as_ref().map_or(0, |r| r.last_seq) < to {
            S::write_last_seq(&mut conn, client_id, to, owner).await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    let result = match result {
        Ok(()) => S::commit(&mut conn).await,
        Err(e) => Err(e),
    };
    if result.is_err() && S::rollback(&mut conn).await.is_err() {
        conn.close_on_drop();
    }
    result
}

/// Gives the changes written outside the engine their version, in a transaction of the
/// writer's own.
async fn seal_outside_writes<S: Store>(inner: &Inner<S>) -> Result<Option<Version>, StoreError> {
    let mut conn = inner.store.pool().acquire().await?;
    S::begin(&mut conn).await?;
    let sealed = match S::seal(&mut conn).await {
        Ok(v) => v,
        Err(e) => {
            if S::rollback(&mut conn).await.is_err() {
                conn.close_on_drop();
            }
            return Err(e);
        }
    };
    if let Err(e) = S::commit(&mut conn).await {
        if S::rollback(&mut conn).await.is_err() {
            conn.close_on_drop();
        }
        return Err(e);
    }
    Ok(sealed)
}

/// Gives the database a new epoch (once: not when it already moved on from `seen`), drops
/// every live result, and closes every connection (they reconnect into the new history).
pub(crate) async fn new_epoch<S: Store>(
    inner: &Inner<S>,
    seen: Epoch,
) -> Result<Epoch, StoreError> {
    let current = inner.epoch.borrow().clone();
    if current != seen {
        return Ok(current);
    }
    let mut conn = inner.store.pool().acquire().await?;
    S::begin(&mut conn).await?;
    let epoch = match S::rotate_epoch(&mut conn, &seen).await {
        Ok(e) => e,
        Err(e) => {
            if S::rollback(&mut conn).await.is_err() {
                conn.close_on_drop();
            }
            return Err(e);
        }
    };
    if let Err(e) = S::commit(&mut conn).await {
        if S::rollback(&mut conn).await.is_err() {
            conn.close_on_drop();
        }
        return Err(e);
    }
    inner.hub.clear();
    inner.epoch.send_replace(epoch.clone());
    tracing::warn!(%epoch, "new epoch: every client resets its cache");
    Ok(epoch)
}

/// Applies a batch, retrying it (with backoff, a bounded number of times) while the database
/// refuses it for now. When the failure is one event's handler's, that event is set aside
/// (told to resend later) and the others go on without it. When every attempt failed, each
/// event's sender is told to resend later (`retry`): nothing was applied, no seq was used.
async fn apply_batch<S: Store>(
    inner: &Inner<S>,
    mut events: Vec<EventCmd>,
    failing: u32,
    deferrals: &mut HashMap<(Arc<str>, u64), u32>,
    answers: &mpsc::Sender<Answers>,
) -> Result<(), ()> {
    let retry_msg = |e: &EventCmd, err: &str, failing: u32| {
        let after = inner
            .retry
            .resend_after
            .saturating_mul(1 << failing.min(6))
            .min(Duration::from_secs(30));
        ServerMsg::Retry(Retry {
            seq: e.seq,
            after_ms: after.as_millis() as u64,
            message: format!(
                "the server could not save this write for now ({err}); nothing was applied; \
                 resend it"
            ),
        })
    };
    // Events set aside: the error, and whether it points at the event's handler.
    let mut set_aside: Vec<(EventCmd, String, bool)> = Vec::new();
    let mut attempt = 0;
    // Savepoints cost two statements per event; a batch first goes without them, and again
    // with them when one of its events is refused.
    let mut careful = false;
    let (outcomes, bumped, now) = loop {
        if events.is_empty() {
            break (Vec::new(), None, Version(0));
        }
        attempt += 1;
        match apply_in_transaction(inner, &events, careful).await {
            Ok(r) => break r,
            // An event of the batch was refused: it is applied again with a savepoint per
            // event (so that the refusal undoes only its own writes). Not a failure.
            Err(BatchFailed {
                needs_savepoints: true,
                ..
            }) => {
                careful = true;
                attempt -= 1;
                continue;
            }
            Err(BatchFailed {
                err,
                culprit,
                panicked,
                ..
            }) => {
                tracing::warn!(error = %err, attempt, events = events.len(), "write batch failed; rolled back");
                match culprit {
                    // A handler that panics is a bug: its event is refused, the batch goes on.
                    Some(i) if panicked => {
                        events[i].refused = Some(Rejection::new(
                            "internal",
                            format!(
                                "the server failed while applying event {:?}; nothing of it was \
                                 applied",
                                events[i].name
                            ),
                        ));
                        continue;
                    }
                    // One handler failing for now, every attempt: set it aside, and let the
                    // others through (one event must not hold everyone's writes).
                    Some(i) if attempt >= inner.retry.attempts.max(1) => {
                        let e = events.remove(i);
                        set_aside.push((e, short(&err), S::is_handler_fault(&err)));
                        attempt = inner.retry.attempts.max(1) - 1;
                        continue;
                    }
                    _ => {}
                }
                if attempt >= inner.retry.attempts.max(1) {
                    for (e, why, _) in set_aside {
                        let msg = retry_msg(&e, &why, failing);
                        e.reply.send(msg);
                    }
                    for e in events {
                        let msg = retry_msg(&e, &short(&err), failing);
                        e.reply.send(msg);
                    }
                    return Err(());
                }
                let wait = inner
                    .retry
                    .backoff
                    .saturating_mul(1 << (2 * (attempt - 1)).min(16));
                tokio::time::sleep(wait).await;
            }
        }
    };
    // The events set aside. One whose handler is at fault is counted, so that it is refused
    // in the end instead of resent forever; one that failed with the database (a full disk) is
    // resent until it applies.
    if deferrals.len() > 10_000 {
        deferrals.clear();
    }
    let nothing_committed = events.is_empty();
    for (e, why, handler_fault) in set_aside {
        let n = if handler_fault && counts_deferrals(&e) {
            let n = deferrals.entry((e.client_id.clone(), e.seq)).or_insert(0);
            *n += 1;
            *n
        } else {
            failing
        };
        let msg = retry_msg(&e, &why, n.min(6));
        e.reply.send(msg);
    }
    if nothing_committed {
        return Err(());
    }
    // Those that went through are forgotten (their seqs are used: never set aside again).
    if !deferrals.is_empty() {
        for e in &events {
            deferrals.remove(&(e.client_id.clone(), e.seq));
        }
    }
    inner.fault(FaultPoint::AfterCommit);
    // `now`, the version the outcomes are visible at: the batch's, or (nothing applied) the
    // one its transaction saw (not what this instance has fanned out: an earlier batch's
    // commit, or another instance's, may not be yet). The answers go once it is fanned out.
    if bumped.is_some() {
        // The tailer fans the commit out (it reads it from the log, like any other commit);
        // the acker answers once it has.
        inner.wake.notify_one();
    }
    let proof = inner.proof(&inner.epoch.borrow(), now);
    let msgs = events
        .into_iter()
        .zip(outcomes)
        .map(|(e, outcome)| {
            let msg = match outcome {
                Outcome::Applied => ServerMsg::Ack(Ack {
                    seq: e.seq,
                    v: now,
                    dup: false,
                    proof: Some(proof.clone()),
                }),
                Outcome::Duplicate => ServerMsg::Ack(Ack {
                    seq: e.seq,
                    v: now,
                    dup: true,
                    proof: Some(proof.clone()),
                }),
                Outcome::Gap(expected) => ServerMsg::Gap(Gap {
                    seq: e.seq,
                    expected,
                }),
                Outcome::Rejected(error) => ServerMsg::Reject(Reject {
                    seq: e.seq,
                    v: now,
                    error,
                }),
                Outcome::NotYours => ServerMsg::error(
                    ErrorCode::Forbidden,
                    format!(
                        "client id {:?} belongs to another identity: event {} was not applied; \
                         use a client id of your own",
                        e.client_id, e.seq
                    ),
                ),
            };
            (e.reply, msg)
        })
        .collect();
    // Bounded: when the fan-out falls behind by ACKS_IN_FLIGHT batches, the writer waits.
    let _ = answers.send(Answers { v: now, msgs }).await;
    Ok(())
}
