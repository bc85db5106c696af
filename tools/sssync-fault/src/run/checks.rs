//! The end of a scenario: healing, then waiting (bounded) until every client settles and its
//! views equal the database.

use super::clients::{Client, Sent};
use super::db::connect_db;
use super::{Failure, LISTS, SETTLE, other};
use crate::app::{Counter, Counters, Item, Items, ListArgs};
use sqlx::Connection;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until every client has settled and shows the database, then checks the database.
pub(super) async fn settle(
    seed: u64,
    db: &Path,
    clients: &[Client],
    sent: &[Sent],
    may_be_lost: &HashSet<String>,
) -> Result<(), Failure> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let why = match converged(db, clients).await {
            Ok(None) => break,
            Ok(Some(w)) => w,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(Failure {
                seed,
                stuck: Some(why),
                ..Failure::default()
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = connect_db(db).await.map_err(|e| other(seed, e))?;
    let mut failure = Failure {
        seed,
        ..Failure::default()
    };
    let twice: Vec<(String, i64)> =
        sqlx::query_as("SELECT uid, COUNT(*) FROM applied GROUP BY uid HAVING COUNT(*) > 1")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| other(seed, e))?;
    failure.duplicated.extend(
        twice
            .into_iter()
            .map(|(u, n)| format!("{u} applied {n} times")),
    );
    let sums: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.name, c.n, COALESCE((SELECT SUM(amount) FROM applied a \
         WHERE a.target = c.name AND a.kind IN ('incr', 'flaky')), 0) FROM counters c",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| other(seed, e))?;
    for (name, n, sum) in sums {
        if n != sum {
            failure.duplicated.push(format!(
                "counter {name} is {n}, its applied increments sum to {sum}"
            ));
        }
    }
    let applied: HashSet<String> = sqlx::query_scalar("SELECT uid FROM applied")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| other(seed, e))?
        .into_iter()
        .collect();
    for s in sent {
        if s.applies && !applied.contains(&s.uid) && !may_be_lost.contains(&s.uid) {
            // What became of it, as its client saw it.
            let c = &clients[s.client];
            let refused = s.seq.and_then(|seq| {
                c.c.rejected()
                    .into_iter()
                    .find(|(r, _)| *r == seq)
                    .map(|(_, why)| format!("{}: {}", why.code, why.message))
            });
            failure.lost.push(format!(
                "{} (client {}, seq {:?}{})",
                s.uid,
                s.client,
                s.seq,
                refused.map_or(String::new(), |r| format!(", refused: {r}"))
            ));
        }
        if !s.applies && applied.contains(&s.uid) {
            failure
                .duplicated
                .push(format!("{} applied although it cannot be", s.uid));
        }
    }
    let _ = conn.close().await;
    if failure.lost.is_empty() && failure.duplicated.is_empty() {
        Ok(())
    } else {
        Err(failure)
    }
}

/// `None` when every client has nothing pending and shows exactly the database; otherwise why
/// not.
pub(super) async fn converged(db: &Path, clients: &[Client]) -> Result<Option<String>, String> {
    for (i, c) in clients.iter().enumerate() {
        let pending = c.c.with_state(|s| s.pending_count());
        if pending > 0 || !c.c.is_live() {
            return Ok(Some(format!(
                "client {i}: {pending} pending, live: {}",
                c.c.is_live()
            )));
        }
    }
    let mut conn = connect_db(db).await?;
    let counters: Vec<Counter> = sqlx::query_as("SELECT name, n FROM counters ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut lists: Vec<Vec<Item>> = Vec::new();
    for l in LISTS {
        lists.push(
            sqlx::query_as(
                "SELECT id, list_id, title FROM items WHERE list_id = ? ORDER BY pos, id",
            )
            .bind(l)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?,
        );
    }
    let _ = conn.close().await;
    for (i, c) in clients.iter().enumerate() {
        if c.c.rows::<Counters>(&()).as_ref() != Some(&counters) {
            return Ok(Some(format!(
                "client {i} shows counters {:?}, the database has {counters:?}",
                c.c.rows::<Counters>(&())
            )));
        }
        for (l, rows) in LISTS.iter().zip(&lists) {
            let args = ListArgs {
                list_id: (*l).to_owned(),
            };
            if c.c.rows::<Items>(&args).as_ref() != Some(rows) {
                return Ok(Some(format!(
                    "client {i} shows list {l} as {:?}, the database has {rows:?}",
                    c.c.rows::<Items>(&args)
                )));
            }
        }
    }
    Ok(None)
}
