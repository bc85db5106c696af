//! Running one scenario: a real server process on a fresh SQLite file, a fault proxy, a few
//! native clients, the plan's steps in order, then healing (no more faults, the disk free, every
//! client online) and the checks:
//!
//! - **stuck**: every client settles (nothing pending) and its view of every query equals the
//!   database, within a bounded time and a bounded number of frames;
//! - **duplicated**: no event is applied twice (one `applied` row per event id at most, and
//!   every counter equals the sum of the increments applied to it);
//! - **lost**: every event that can apply was applied, except those acknowledged between a
//!   backup and the restore of that backup (the operator threw them away).

use crate::app::{self};
use crate::plan::{CrashAt, EventKind, Plan, Step};
use crate::proxy::Proxy;
use sqlx::{Connection, Executor};
use sssync_core::client::MemoryStore;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod checks;
mod clients;
mod db;
mod server;

use checks::settle;
use clients::{Client, Sent, open_client};
use db::{connect_db, db_epoch, restore_into};
pub use server::Server;

const LISTS: [&str; 2] = ["l0", "l1"];
const COUNTERS: [&str; 3] = ["c0", "c1", "c2"];
/// How long healing may take before a client counts as stuck.
const SETTLE: Duration = Duration::from_secs(30);

/// What a passing scenario did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Events sent.
    pub events: usize,
    /// Server processes killed with SIGKILL.
    pub kills: usize,
    /// Backups restored.
    pub restores: usize,
    /// Frames the proxy damaged.
    pub faults: u64,
    /// Frames the clients received.
    pub frames: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// What a failing scenario broke.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    /// The scenario's seed.
    pub seed: u64,
    /// Events that should have been applied and were not.
    pub lost: Vec<String>,
    /// Events applied more than once (or effects that do not add up).
    pub duplicated: Vec<String>,
    /// Why some client did not settle, if one did not.
    pub stuck: Option<String>,
    /// Anything else that went wrong (the harness itself, the server not starting).
    pub other: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario {} failed:", self.seed)?;
        if !self.lost.is_empty() {
            writeln!(f, "  lost: {:?}", self.lost)?;
        }
        if !self.duplicated.is_empty() {
            writeln!(f, "  duplicated: {:?}", self.duplicated)?;
        }
        if let Some(s) = &self.stuck {
            writeln!(f, "  stuck: {s}")?;
        }
        if let Some(o) = &self.other {
            writeln!(f, "  error: {o}")?;
        }
        write!(
            f,
            "  replay: cargo run --release -p sssync-fault -- run --seed {}",
            self.seed
        )
    }
}

/// Runs scenario `seed`, with `exe` as the server program (`exe serve …`). With `log`, prints
/// each step as it goes.
pub async fn run(seed: u64, exe: &Path, log: bool) -> Result<Report, Failure> {
    let dir = std::env::temp_dir().join(format!("sssync-fault-{seed}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| other(seed, e))?;
    let result = scenario(seed, exe, &dir, log).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn other(seed: u64, e: impl fmt::Display) -> Failure {
    Failure {
        seed,
        other: Some(e.to_string()),
        ..Failure::default()
    }
}

async fn scenario(seed: u64, exe: &Path, dir: &Path, log: bool) -> Result<Report, Failure> {
    let started = Instant::now();
    let plan = Plan::new(seed);
    let db: PathBuf = dir.join("app.db");
    let backup = dir.join("backup.db");
    let mut server = Some(Server::start(exe, &db).await.map_err(|e| other(seed, e))?);
    let proxy = Proxy::start(server.as_ref().expect("started").addr, seed)
        .await
        .map_err(|e| other(seed, e))?;
    let mut clients: Vec<Client> = (0..plan.clients)
        .map(|i| {
            let frames = Arc::new(AtomicU64::new(0));
            let id = format!("s{seed:x}-c{i}");
            let store = Arc::new(MemoryStore::default());
            let c = open_client(proxy.url(), &id, &store, &frames);
            Client {
                index: i,
                c,
                frames,
                online: true,
                id,
                store,
                on_second: false,
            }
        })
        .collect();
    // The second server process on the same file (started by the first `Lag` step).
    let mut second: Option<Server> = None;
    let mut sent: Vec<Sent> = Vec::new();
    let mut items: Vec<(String, &str)> = Vec::new();
    let mut report = Report::default();
    let mut disk_full = false;
    // Events settled when the last backup was taken; events that may be lost by a restore.
    let mut at_backup: Option<HashSet<String>> = None;
    let mut may_be_lost: HashSet<String> = HashSet::new();
    let settled = |clients: &[Client], sent: &[Sent]| -> HashSet<String> {
        let pending: HashSet<String> = clients.iter().flat_map(|c| c.pending_uids()).collect();
        sent.iter()
            .map(|s| s.uid.clone())
            .filter(|u| !pending.contains(u))
            .collect()
    };
    let mut send = |client: &Client, kind: &EventKind, sent: &mut Vec<Sent>, n: usize| {
        let uid = format!("{seed:x}-{n}");
        let applies = !matches!(kind, EventKind::Poison | EventKind::Invalid);
        let seq = match kind {
            EventKind::Incr { counter, by } => client.c.send(app::Incr {
                uid: uid.clone(),
                counter: COUNTERS[*counter as usize].to_owned(),
                by: *by,
            }),
            EventKind::AddItem { list } => {
                let list = LISTS[*list as usize];
                items.push((uid.clone(), list));
                client.c.send(app::AddItem {
                    uid: uid.clone(),
                    id: uid.clone(),
                    list_id: list.to_owned(),
                    title: format!("item {n}"),
                })
            }
            EventKind::DelItem { nth } => {
                let (id, list) = if items.is_empty() {
                    ("none".to_owned(), LISTS[0])
                } else {
                    items[(*nth % items.len() as u64) as usize].clone()
                };
                client.c.send(app::DelItem {
                    uid: uid.clone(),
                    id,
                    list_id: list.to_owned(),
                })
            }
            EventKind::Flaky { fails } => client.c.send(app::Flaky {
                uid: uid.clone(),
                counter: COUNTERS[n % COUNTERS.len()].to_owned(),
                by: 1,
                fails: *fails,
            }),
            EventKind::Poison => client.c.send(app::Poison { uid: uid.clone() }),
            EventKind::Invalid => client.c.send(app::Invalid {
                uid: uid.clone(),
                counter: COUNTERS[n % COUNTERS.len()].to_owned(),
            }),
        };
        sent.push(Sent {
            uid,
            applies,
            client: client.index,
            seq,
        });
    };

    for (i, step) in plan.steps.iter().enumerate() {
        if log {
            println!("step {i}: {step:?}");
        }
        match step {
            Step::Send { client, event } => {
                let n = sent.len();
                send(&clients[*client], event, &mut sent, n);
            }
            Step::Offline { client } => {
                clients[*client].online = false;
                clients[*client].c.set_online(false);
            }
            Step::Online { client } => {
                clients[*client].online = true;
                clients[*client].c.set_online(true);
            }
            Step::Storm { rate } => proxy.set_rate(*rate),
            Step::Pause { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Step::Crash { at } => {
                let mut s = server.take().expect("a server runs between steps");
                if *at != CrashAt::Anywhere {
                    let cmd = match at {
                        CrashAt::BeforeCommit => "crash before_commit",
                        CrashAt::AfterCommit => "crash after_commit",
                        _ => "crash before_acks",
                    };
                    s.command(cmd).await.map_err(|e| other(seed, e))?;
                    // A write to reach that point: from an online client (one comes online).
                    let c = match clients.iter().position(|c| c.online) {
                        Some(c) => c,
                        None => {
                            clients[0].online = true;
                            clients[0].c.set_online(true);
                            0
                        }
                    };
                    let n = sent.len();
                    send(
                        &clients[c],
                        &EventKind::Incr { counter: 0, by: 1 },
                        &mut sent,
                        n,
                    );
                    let hit = s.reached(Duration::from_secs(2)).await;
                    if log {
                        println!("  reached {at:?}: {hit}");
                    }
                }
                s.kill().await;
                report.kills += 1;
                disk_full = false;
                let s = Server::start(exe, &db).await.map_err(|e| other(seed, e))?;
                proxy.set_upstream(s.addr);
                server = Some(s);
            }
            Step::DiskFull { on } => {
                let s = server.as_mut().expect("a server runs");
                s.command(if *on { "full on" } else { "full off" })
                    .await
                    .map_err(|e| other(seed, e))?;
                disk_full = *on;
            }
            Step::Busy { ms } => {
                let mut conn = connect_db(&db).await.map_err(|e| other(seed, e))?;
                if conn.execute("BEGIN IMMEDIATE").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                    let _ = conn.execute("ROLLBACK").await;
                }
                let _ = conn.close().await;
            }
            Step::Backup => {
                let _ = std::fs::remove_file(&backup);
                let mut conn = connect_db(&db).await.map_err(|e| other(seed, e))?;
                // Settled before the copy starts: then their commits are in it.
                let before = settled(&clients, &sent);
                match sqlx::query("VACUUM INTO ?")
                    .bind(backup.display().to_string())
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => at_backup = Some(before),
                    Err(e) => {
                        if log {
                            println!("  backup failed: {e}");
                        }
                    }
                }
                let _ = conn.close().await;
            }
            Step::CloseTab { client } | Step::CrashTab { client } => {
                let crash = matches!(step, Step::CrashTab { .. });
                let c = &mut clients[*client];
                if !crash {
                    // Closed offline: its connection goes first.
                    c.c.set_online(false);
                }
                let url = match (&second, c.on_second) {
                    (Some(b), true) => b.ws_url(),
                    _ => proxy.url(),
                };
                // Gone: its task with it, whatever it was doing. A new tab opens from what it
                // kept (its rows, its pending events) under its client id.
                c.c = open_client(url, &c.id, &c.store, &c.frames);
                c.online = crash;
                if !crash {
                    c.c.set_online(false);
                }
            }
            Step::Lag { client, ms } => {
                // The client moves to the second instance (started on the same file).
                if second.is_none() {
                    second = Some(Server::start(exe, &db).await.map_err(|e| other(seed, e))?);
                }
                let b = second.as_mut().expect("started");
                let c = &mut clients[*client];
                c.on_second = true;
                c.online = true;
                c.c.set_url(b.ws_url());
                c.c.set_online(false);
                c.c.set_online(true);
                let live = Instant::now() + Duration::from_secs(5);
                while !c.c.is_live() && Instant::now() < live {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // It cannot read the database for a while; meanwhile the first instance
                // commits and prunes its log past what the second one processed.
                b.command(&format!("stall {ms}"))
                    .await
                    .map_err(|e| other(seed, e))?;
                // Two commits (the log keeps the last one: the other is what the second instance
                // misses), rows of a list it follows (a patched query: a miss shows).
                if let Some(w) = clients.iter().position(|c| c.online && !c.on_second) {
                    let done = Instant::now() + Duration::from_millis(*ms);
                    for _ in 0..2 {
                        let n = sent.len();
                        send(&clients[w], &EventKind::AddItem { list: 0 }, &mut sent, n);
                        while !clients[w].pending_uids().is_empty() && Instant::now() < done {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                let a = server.as_mut().expect("a server runs");
                a.command("prune").await.map_err(|e| other(seed, e))?;
            }
            Step::RestoreLive => {
                let Some(before) = at_backup.clone() else {
                    continue;
                };
                let restored = restore_into(&db, &backup).await;
                if log {
                    println!("  restored into the running database: {restored:?}");
                }
                let Ok((from, to)) = restored else {
                    continue;
                };
                report.restores += 1;
                // The server finds the database went back (when it did) and gives it a new
                // epoch: every connection closes, every client online comes back into it.
                // Until then, an acknowledgement may still come for a commit the restore took
                // away.
                let moved = Instant::now() + Duration::from_secs(10);
                if to < from {
                    let restored_epoch = db_epoch(&db).await.map_err(|e| other(seed, e))?;
                    loop {
                        let now = db_epoch(&db).await.map_err(|e| other(seed, e))?;
                        let arrived = now != restored_epoch
                            && clients.iter().all(|c| {
                                !c.online
                                    || c.c.with_state(|s| {
                                        s.epoch().map(|e| e.0.as_str()) == Some(now.as_str())
                                    })
                            });
                        if arrived || Instant::now() > moved {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                // Acknowledged since the copy was taken: they may have gone with the restore.
                let now = settled(&clients, &sent);
                may_be_lost.extend(now.difference(&before).cloned());
            }
            Step::Restore => {
                let Some(before) = at_backup.clone() else {
                    continue;
                };
                // The second instance goes too (the file is replaced under it); its clients
                // come back to the first.
                if let Some(b) = second.take() {
                    b.kill().await;
                    report.kills += 1;
                    for c in clients.iter_mut().filter(|c| c.on_second) {
                        c.on_second = false;
                        c.c.set_url(proxy.url());
                    }
                }
                let s = server.take().expect("a server runs");
                s.kill().await;
                report.kills += 1;
                report.restores += 1;
                disk_full = false;
                // Frames the dead server sent may still be on their way (a delay in the
                // proxy): every connection ends only after its last frame arrived.
                let gone = Instant::now() + Duration::from_secs(5);
                while clients.iter().any(|c| c.c.is_live()) && Instant::now() < gone {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // What was acknowledged since the copy was taken goes with the restore.
                let now = settled(&clients, &sent);
                may_be_lost.extend(now.difference(&before).cloned());
                for ext in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
                }
                std::fs::copy(&backup, &db).map_err(|e| other(seed, e))?;
                let s = Server::start(exe, &db).await.map_err(|e| other(seed, e))?;
                proxy.set_upstream(s.addr);
                server = Some(s);
            }
        }
    }

    // Heal: no more faults, room on the disk, every client online.
    proxy.set_rate(0);
    if disk_full {
        let s = server.as_mut().expect("a server runs");
        s.command("full off").await.map_err(|e| other(seed, e))?;
    }
    for c in &mut clients {
        c.online = true;
        c.c.set_online(true);
    }
    report.events = sent.len();
    let verdict = settle(seed, &db, &clients, &sent, &may_be_lost).await;
    report.faults = proxy.faults.load(Ordering::Relaxed);
    report.frames = clients
        .iter()
        .map(|c| c.frames.load(Ordering::Relaxed))
        .sum();
    report.elapsed = started.elapsed();
    if let Some(s) = server.take() {
        s.kill().await;
    }
    if let Some(s) = second.take() {
        s.kill().await;
    }
    drop(clients);
    drop(proxy);
    let mut failure = verdict.err().unwrap_or_default();
    // No loop: a bounded number of frames for what happened.
    let bound = 2_000 + 150 * plan.steps.len() as u64;
    if failure.stuck.is_none() && report.frames > bound {
        failure.stuck = Some(format!(
            "{} frames received, over the bound of {bound}",
            report.frames
        ));
    }
    failure.seed = seed;
    if failure.lost.is_empty()
        && failure.duplicated.is_empty()
        && failure.stuck.is_none()
        && failure.other.is_none()
    {
        Ok(report)
    } else {
        Err(failure)
    }
}
