//! The transaction of one batch: per event the seq check, the handler and the client's
//! `last_seq`, all committed together (invariant 5).

use super::{BatchFailed, Outcome};
use crate::protocol::Rejection;
use crate::server::cmd::{EventCmd, FaultPoint, Inner};
use crate::server::schema::EventCtx;
use crate::server::schema::EventError;
use crate::server::store::Store;
use crate::version::Version;
use std::collections::HashMap;
use std::sync::Arc;

/// The transaction of one batch: per event, the seq check, the handler, and the client's
/// `last_seq` (written once per client, after its last event of the batch), all committed
/// together. A handler's permanent failure rejects its event (`internal`); a transient one
/// fails the batch (it is retried as a whole).
///
/// `careful`: each handler runs inside a savepoint, so that a refused event's writes are undone
/// alone. Without (the common case: two statements less per event), the first refusal fails the
/// batch with `needs_savepoints`, and the caller applies it again carefully.
pub(super) async fn apply_in_transaction<S: Store>(
    inner: &Inner<S>,
    events: &[EventCmd],
    careful: bool,
) -> Result<(Vec<Outcome>, Option<Version>, Version), BatchFailed> {
    use futures_util::FutureExt;
    let mut conn = inner.store.pool().acquire().await?;
    S::begin(&mut conn).await?;
    let result = async {
        // Per client id of the batch: its last seq, and its owner once it has a row.
        let mut last: HashMap<Arc<str>, (u64, Option<Option<String>>)> = HashMap::new();
        // The seqs to record, per client: the last one of the batch, and its owner.
        let mut record_seqs: Vec<(Arc<str>, u64, Option<String>)> = Vec::new();
        let mut record_at: HashMap<Arc<str>, usize> = HashMap::new();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut bumped: Option<Version> = None;
        for (i, e) in events.iter().enumerate() {
            // Server-origin events (no client, no seq) skip the bookkeeping.
            let sequenced = !e.client_id.is_empty();
            if sequenced {
                let (last_seq, owner) = match last.get(&e.client_id) {
                    Some(s) => s.clone(),
                    None => match S::read_client(&mut conn, &e.client_id).await? {
                        Some(row) => (row.last_seq, Some(row.owner)),
                        None => (0, None),
                    },
                };
                last.insert(e.client_id.clone(), (last_seq, owner.clone()));
                // A client id belongs to the identity that first used it.
                if owner.is_some_and(|o| o.as_deref() != e.identity.id()) {
                    outcomes.push(Outcome::NotYours);
                    continue;
                }
                if e.seq <= last_seq {
                    outcomes.push(Outcome::Duplicate);
                    continue;
                }
                if e.seq > last_seq + 1 {
                    outcomes.push(Outcome::Gap(last_seq + 1));
                    continue;
                }
            }
            let outcome = match inner.registry.events.get(e.name.as_str()) {
                _ if e.refused.is_some() => Outcome::Rejected(e.refused.clone().expect("checked")),
                None => Outcome::Rejected(Rejection::new(
                    "unknown_event",
                    format!("no event named {:?} is registered", e.name),
                )),
                Some(entry) => {
                    if careful {
                        S::savepoint(&mut conn).await?;
                    }
                    let bumps_here = bumped.is_none();
                    if bumps_here {
                        bumped = Some(S::bump_version(&mut conn).await?);
                    }
                    let ctx = EventCtx {
                        client_id: e.client_id.to_string(),
                        seq: e.seq,
                        identity: e.identity.clone(),
                    };
                    // A handler that panics must not take the writer down with it.
                    let applied = std::panic::AssertUnwindSafe((entry.apply)(
                        &mut conn,
                        &ctx,
                        e.args.get(),
                    ))
                    .catch_unwind()
                    .await;
                    let applied = match applied {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::error!(event = %e.name, client = %e.client_id, seq = e.seq, "handler panicked; the event is refused");
                            return Err(BatchFailed {
                                err: sqlx::Error::Protocol("an event handler panicked".into()),
                                culprit: Some(i),
                                panicked: true,
                                needs_savepoints: false,
                            });
                        }
                    };
                    let refused = match applied {
                        Ok(()) => None,
                        Err(EventError::Rejected(r)) => Some(r),
                        Err(EventError::Storage(err)) => match constraint(&err) {
                            // A constraint the event's data broke is the event's fault.
                            Some(rejection) => Some(rejection),
                            // The moment's fault: the batch is retried (without this event,
                            // if it keeps failing).
                            None if S::is_transient(&err) => {
                                return Err(BatchFailed {
                                    err,
                                    culprit: Some(i),
                                    panicked: false,
                                    needs_savepoints: false,
                                });
                            }
                            // It would fail again on every resend (a row not found, a decode
                            // error, a bug): refuse it, so the client's later writes go on.
                            None => {
                                tracing::error!(error = %err, event = %e.name, client = %e.client_id, seq = e.seq, "handler failed; the event is rejected");
                                Some(Rejection::new(
                                    "internal",
                                    format!(
                                        "the server could not apply event {:?} and will not \
                                         retry it; nothing of it was applied",
                                        e.name
                                    ),
                                ))
                            }
                        },
                    };
                    match refused {
                        None => {
                            if careful {
                                S::release(&mut conn).await?;
                            }
                            Outcome::Applied
                        }
                        // Its writes (if any) are mixed with the others': all go again, each
                        // in a savepoint.
                        Some(_) if !careful => {
                            return Err(BatchFailed {
                                err: sqlx::Error::Protocol("an event was refused".into()),
                                culprit: Some(i),
                                panicked: false,
                                needs_savepoints: true,
                            });
                        }
                        Some(r) => {
                            S::rollback_to_savepoint(&mut conn).await?;
                            if bumps_here {
                                bumped = None;
                            }
                            Outcome::Rejected(r)
                        }
                    }
                }
            };
            let record = matches!(outcome, Outcome::Applied) || e.record_rejection;
            if sequenced && record {
                let owner = e.identity.id().map(str::to_owned);
                match record_at.get(&e.client_id) {
                    Some(&at) => record_seqs[at].1 = e.seq,
                    None => {
                        record_at.insert(e.client_id.clone(), record_seqs.len());
                        record_seqs.push((e.client_id.clone(), e.seq, owner.clone()));
                    }
                }
                // A new row takes this owner; an existing one keeps its own (the same).
                last.insert(e.client_id.clone(), (e.seq, Some(owner)));
            }
            outcomes.push(outcome);
        }
        for (client_id, seq, owner) in &record_seqs {
            S::write_last_seq(&mut conn, client_id, *seq, owner.as_deref()).await?;
        }
        // Nothing applied: the outcomes (a duplicate's rows, say) are visible at the version
        // this transaction sees, which may be past what this instance has fanned out yet.
        let visible = match bumped {
            Some(v) => v,
            None => S::version(&mut conn).await?,
        };
        inner.fault(FaultPoint::BeforeCommit);
        Ok::<_, BatchFailed>((outcomes, bumped, visible))
    }
    .await;
    let result = match result {
        Ok(r) => S::commit(&mut conn)
            .await
            .map(|()| r)
            .map_err(BatchFailed::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => Ok(r),
        Err(failed) => {
            // After a panic the connection's state is unknown: it is not reused.
            if failed.panicked || S::rollback(&mut conn).await.is_err() {
                conn.close_on_drop();
            }
            Err(failed)
        }
    }
}

/// The rejection for a database constraint violation, if `err` is one.
pub(super) fn constraint(err: &sqlx::Error) -> Option<Rejection> {
    use sqlx::error::ErrorKind;
    let db = err.as_database_error()?;
    let code = match db.kind() {
        ErrorKind::UniqueViolation => "unique_violation",
        ErrorKind::ForeignKeyViolation => "foreign_key_violation",
        ErrorKind::NotNullViolation => "not_null_violation",
        ErrorKind::CheckViolation => "check_violation",
        _ => return None,
    };
    Some(Rejection::new(code, db.message().to_owned()))
}
