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
            let options = Options {
                event_types: app::event_types(),
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
            let c = NativeClient::connect_with(proxy.url(), format!("s{seed:x}-c{i}"), options);
            c.subscribe::<Counters>(&());
            for l in LISTS {
                c.subscribe::<Items>(&ListArgs {
                    list_id: l.to_owned(),
                });
            }
            Client {
                index: i,
                c,
                frames,
                online: true,
            }
        })
        .collect();
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
            Step::Restore => {
                let Some(before) = at_backup.clone() else {
                    continue;
                };
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
