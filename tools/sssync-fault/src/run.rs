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

use crate::app::{self, Counter, Counters, Item, Items, ListArgs};
use crate::plan::{CrashAt, EventKind, Plan, Step};
use crate::proxy::Proxy;
use sqlx::{Connection, Executor};
use sssync_core::client::MemoryStore;
use sssync_core::client::native::{NativeClient, Options};
use sssync_core::protocol::ServerMsg;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

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

/// A running server process (`exe serve --db …`), killed when dropped.
pub struct Server {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `exe serve --db db` (a SQLite file's path or a `postgres://` URL); waits until it
    /// listens.
    pub async fn start(exe: &Path, db: impl AsRef<std::ffi::OsStr>) -> Result<Server, String> {
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--db")
            .arg(db)
            .arg("--busy-ms")
            .arg("40")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .map_err(|_| "the server did not start within 20 s".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("the server exited before listening")?;
        let addr = line
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        Ok(Server {
            child,
            stdin,
            out,
            addr,
        })
    }

    /// Sends a command; waits for its `OK`.
    async fn command(&mut self, cmd: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.out.next_line())
                .await
                .map_err(|_| format!("no answer to {cmd:?}"))?
                .map_err(|e| e.to_string())?
                .ok_or("the server exited")?;
            if line == "OK" {
                return Ok(());
            }
        }
    }

    /// Waits (at most `limit`) for the server to reach the armed fault point.
    async fn reached(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.out.next_line()).await {
                Ok(Ok(Some(l))) if l.starts_with("AT ") => return true,
                Ok(Ok(Some(_))) => {}
                _ => return false,
            }
        }
    }

    /// The WebSocket URL of its sync endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/sssync/ws", self.addr)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// One event sent, and what must become of it.
struct Sent {
    uid: String,
    /// It can apply (not a poison or invalid one).
    applies: bool,
    /// Which client sent it, with which seq (for the diagnosis of a failure).
    client: usize,
    seq: Option<u64>,
}

struct Client {
    index: usize,
    c: NativeClient,
    frames: Arc<AtomicU64>,
    online: bool,
    /// Its client id and what it keeps (its rows, its pending events): a tab opened again
    /// (after a close or a crash) starts from them.
    id: String,
    store: Arc<MemoryStore>,
    /// It is connected to the second server process (see [`Step::Lag`]).
    on_second: bool,
}

/// A client (a tab) as client id `id`, from what `store` kept, connected to `url`, subscribed to
/// every query of the scenario; its frames counted in `frames`.
fn open_client(
    url: String,
    id: &str,
    store: &Arc<MemoryStore>,
    frames: &Arc<AtomicU64>,
) -> NativeClient {
    let options = Options {
        event_types: app::event_types(),
        store: Some(store.clone()),
        observer: Some({
            let frames = frames.clone();
            Arc::new(move |_: &ServerMsg| {
                frames.fetch_add(1, Ordering::Relaxed);
            })
        }),
        ack_timeout: Some(Duration::from_millis(300)),
        max_backoff: Some(Duration::from_millis(200)),
        ..Options::default()
    };
    let c = NativeClient::connect_with(url, id, options);
    c.subscribe::<Counters>(&());
    for l in LISTS {
        c.subscribe::<Items>(&ListArgs {
            list_id: l.to_owned(),
        });
    }
    c
}

impl Client {
    /// The ids of the events it has not settled yet.
    fn pending_uids(&self) -> HashSet<String> {
        self.c.with_state(|s| {
            s.pending_events()
                .into_iter()
                .filter_map(|(_, _, args)| {
                    serde_json::from_str::<serde_json::Value>(&args)
                        .ok()?
                        .get("uid")?
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        })
    }
}

/// Restores the copy `backup` into the running database `db`: every table of the copy replaces
/// the database's, in one transaction, while its server runs (the same epoch, an older version:
/// the engine must find the database went back in history). Answers the database's version
/// before and after.
async fn restore_into(db: &Path, backup: &Path) -> Result<(i64, i64), String> {
    let mut conn = connect_db(db).await?;
    let result = async {
        sqlx::query("ATTACH DATABASE ? AS copy")
            .bind(backup.display().to_string())
            .execute(&mut conn)
            .await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM copy.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await?;
        conn.execute("BEGIN IMMEDIATE").await?;
        let from: i64 = sqlx::query_scalar("SELECT version FROM main.sssync_meta WHERE id = 1")
            .fetch_one(&mut conn)
            .await?;
        for t in &tables {
            let t = t.replace('"', "\"\"");
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DELETE FROM main.\"{t}\"; INSERT INTO main.\"{t}\" SELECT * FROM copy.\"{t}\";"
            )))
            .await?;
        }
        // What the triggers logged of the copy itself is no change of the restored history.
        conn.execute("DELETE FROM main.sssync_changes WHERE version IS NULL")
            .await?;
        let to: i64 = sqlx::query_scalar("SELECT version FROM main.sssync_meta WHERE id = 1")
            .fetch_one(&mut conn)
            .await?;
        conn.execute("COMMIT").await?;
        Ok::<(i64, i64), sqlx::Error>((from, to))
    }
    .await;
    if result.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    let _ = conn.execute("DETACH DATABASE copy").await;
    let _ = conn.close().await;
    result.map_err(|e| e.to_string())
}

/// The database's epoch now.
async fn db_epoch(db: &Path) -> Result<String, String> {
    let mut conn = connect_db(db).await?;
    let epoch = sqlx::query_scalar("SELECT epoch FROM sssync_meta WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string());
    let _ = conn.close().await;
    epoch
}

async fn connect_db(db: &Path) -> Result<sqlx::SqliteConnection, String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(5));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())
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

/// Waits until every client has settled and shows the database, then checks the database.
async fn settle(
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
async fn converged(db: &Path, clients: &[Client]) -> Result<Option<String>, String> {
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
