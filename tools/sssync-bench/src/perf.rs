//! `perf`: SPEC §6's targets, each measured beside a baseline in the same run, printed as one
//! table with the ratio. The servers run in child processes of this one (`sssync-bench serve`),
//! so that the clients' memory and CPU are not theirs; clients speak the wire protocol over
//! loopback sockets (the native client: the engine's own client state, as a browser tab keeps).
//!
//! Baselines: for fan-out and bytes, refetch-on-invalidate (every subscriber fetches the
//! query's snapshot again after each change, over a kept-alive HTTP connection: what an app
//! without a sync engine does); for throughput and CPU, the same writes through sqlx alone, one
//! transaction each (what a plain POST handler does); for memory, a plain axum WebSocket
//! server holding the same number of idle connections.

use crate::http::Http;
use crate::percentile;
use crate::table::{Line, Size};
use futures_util::future::try_join_all;
use sssync_core::client::native::NativeClient;
use sssync_core::protocol::ServerMsg;
use sssync_core::server::{Engine, PgStore, SqliteStore, Store, router};
use sssync_fault::app::{self, AddItem, Items, ListArgs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// Runs the rows named in `only` (all when it is empty: `fan`, `resume`, `keys`, `bytes`,
/// `reconnect`, `events`, `noop`, `idle`, `client`, `ssr`, `bundle`, and with `pg` `across`)
/// and prints the table.
pub async fn run(size: Size, pg: Option<String>, check: bool, only: &[String]) -> Result<()> {
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let dir = std::env::temp_dir().join(format!("sssync-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = |name: &str| format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    let mut lines = Vec::new();

    if want("fan") || want("bytes") || want("reconnect") {
        eprintln!("perf: fan-out and bytes, SQLite");
        let server = Child::start(&sqlite("fan")).await?;
        if want("fan") {
            lines.push(fan_out(&server, size, "SQLite").await?);
        }
        if want("bytes") {
            lines.push(bytes_one_change(&server, "SQLite").await?);
        }
        if want("reconnect") {
            lines.push(reconnect(&server, size, "SQLite").await?);
        }
    }
    if want("resume") {
        eprintln!("perf: a write's delta while a crowd resumes on a fresh instance, SQLite");
        let dbs = (sqlite("crowd-quiet"), sqlite("crowd-busy"));
        lines.push(resume_crowd(&dbs, size, "SQLite").await?);
    }
    if want("keys") {
        eprintln!("perf: many clients on many keys, SQLite");
        let server = Child::start(&sqlite("keys")).await?;
        lines.push(fan_out_keys(&server, size, "SQLite").await?);
    }
    if want("events") {
        eprintln!("perf: throughput, SQLite");
        let server = Child::start(&sqlite("events")).await?;
        let plain = plain_writes(&sqlite("plain"), size.events / 4).await?;
        let (floor, _) =
            plain_batched_writes(&sqlite("batched"), size.events, |_| "batched".into()).await?;
        lines.push(throughput(&server, size, (plain, floor), "SQLite", 20_000.0).await?);
    }
    if want("noop") {
        eprintln!("perf: a change no subscribed query reads, SQLite");
        lines.push(no_op_change(&sqlite("noop"), &sqlite("noop-plain"), size).await?);
    }
    if want("idle") {
        eprintln!("perf: idle connections");
        lines.push(idle_memory(&sqlite("idle"), size).await?);
    }
    if want("client") {
        eprintln!("perf: a delta into a big query, the client's cost");
        lines.push(client_delta(size)?);
    }
    if want("ssr") || want("bundle") {
        let built = crate::web::Built::find()?;
        if want("ssr") {
            eprintln!("perf: server render of a list page");
            lines.push(crate::web::ssr(&built, size, &dir).await?);
        }
        if want("bundle") {
            lines.push(crate::web::bundle(&built)?);
        }
    }

    if let Some(pg) = pg {
        let (schema_url, drop_schema) = pg_schema(&pg).await?;
        eprintln!("perf: fan-out, across instances and throughput, PostgreSQL");
        let result = async {
            if want("fan") {
                let server = Child::start(&schema_url).await?;
                lines.push(fan_out(&server, size, "PostgreSQL").await?);
            }
            if want("across") {
                // Schemas of their own: the rows' ids are the fan-out row's.
                let (across_url, drop_across) = pg_schema(&pg).await?;
                let (plain_url, drop_plain) = pg_schema(&pg).await?;
                let line = across_instances(&across_url, &plain_url, size).await;
                drop_plain.await?;
                drop_across.await?;
                lines.push(line?);
            }
            if want("events") {
                let server = Child::start(&schema_url).await?;
                // The plain writes in a schema of their own: no engine triggers, no NOTIFY.
                let (plain_url, drop_plain) = pg_schema(&pg).await?;
                let plain = plain_writes(&plain_url, size.events / 4).await;
                drop_plain.await?;
                let (floor_url, drop_floor) = pg_schema(&pg).await?;
                let floor =
                    plain_batched_writes(&floor_url, size.events, |_| "batched".into()).await;
                drop_floor.await?;
                lines.push(
                    throughput(&server, size, (plain?, floor?.0), "PostgreSQL", 5000.0).await?,
                );
            }
            Ok::<_, Error>(())
        }
        .await;
        drop_schema.await?;
        result?;
    }
    let _ = std::fs::remove_dir_all(&dir);

    crate::table::print(&lines, check)
}

/// A server in a child process (`sssync-bench serve DB`), killed when dropped.
struct Child {
    process: tokio::process::Child,
    /// The child's standard output, kept open (it may print again).
    _stdout: BufReader<tokio::process::ChildStdout>,
    addr: String,
}

impl Child {
    async fn start(db: &str) -> Result<Child> {
        // `SSSYNC_BENCH_WRAP=heaptrack` runs the servers under a profiler.
        let exe = std::env::current_exe()?;
        let mut command = match std::env::var("SSSYNC_BENCH_WRAP") {
            Ok(wrapper) => {
                let mut c = tokio::process::Command::new(wrapper);
                c.arg(&exe);
                c
            }
            Err(_) => tokio::process::Command::new(&exe),
        };
        let mut process = command
            .args(["serve", db])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdout = BufReader::new(process.stdout.take().ok_or("no stdout")?);
        // Its first line saying where it listens (a profiler may print before).
        let mut line = String::new();
        while !line.starts_with("listening ") {
            line.clear();
            let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
                .await
                .map_err(|_| "the server did not start within 30 s")??;
            if read == 0 {
                return Err("the server exited before listening".into());
            }
        }
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("the server said {line:?}"))?
            .to_owned();
        Ok(Child {
            process,
            _stdout: stdout,
            addr,
        })
    }

    fn ws(&self) -> String {
        format!("ws://{}/sssync/ws", self.addr)
    }

    /// The server's resident memory, in bytes.
    fn rss(&self) -> Result<u64> {
        let pid = self.process.id().ok_or("the server exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or("no VmRSS")?;
        Ok(kb * 1024)
    }
}

/// Echoes each text message: the plain WebSocket endpoints' session.
async fn echo(mut socket: axum::extract::ws::WebSocket) {
    use axum::extract::ws::Message;
    while let Some(Ok(m)) = socket.recv().await {
        if let Message::Text(t) = m
            && socket.send(Message::Text(t)).await.is_err()
        {
            break;
        }
    }
}

/// `sssync-bench serve DB`: the engine (the fault harness's app) on `DB` and plain WebSocket
/// endpoints that echo (`/plain/ws` with sssync's 4 KiB read buffer, `/plain-default/ws` with
/// axum's defaults: the memory baselines), on 127.0.0.1; prints `listening ADDR`; exits when
/// its standard input closes (its parent went away).
pub async fn serve(db: &str) -> Result<()> {
    use axum::extract::ws::WebSocketUpgrade;
    let sync = if db.starts_with("postgres") {
        let store = PgStore::open(db).await?;
        sqlx::raw_sql(app::SCHEMA).execute(store.pool()).await?;
        router(app::declare(Engine::builder(store)).start().await?)
    } else {
        let store = SqliteStore::open(db).await?;
        sqlx::raw_sql(app::SCHEMA).execute(store.pool()).await?;
        router(app::declare(Engine::builder(store)).start().await?)
    };
    let plain = axum::Router::new()
        .route(
            "/plain/ws",
            axum::routing::get(|ws: WebSocketUpgrade| async move {
                ws.read_buffer_size(4 * 1024).on_upgrade(echo)
            }),
        )
        .route(
            "/plain-default/ws",
            axum::routing::get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }),
        );
    let listener = sssync_core::server::listen("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    tokio::spawn(async {
        let mut buf = [0u8; 64];
        while matches!(tokio::io::stdin().read(&mut buf).await, Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    axum::serve(listener, sync.merge(plain)).await?;
    Ok(())
}

/// A schema of its own on PostgreSQL: the URL that uses it, and the future that drops it.
async fn pg_schema(base: &str) -> Result<(String, impl std::future::Future<Output = Result<()>>)> {
    use sqlx::Connection;
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let schema = format!(
        "perf_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(base).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&mut admin)
    .await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let drop = async move {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    };
    Ok((url, drop))
}

fn add(list: &str, id: String, title: String) -> AddItem {
    AddItem {
        uid: id.clone(),
        id,
        list_id: list.to_owned(),
        title,
    }
}

fn list(id: &str) -> ListArgs {
    ListArgs {
        list_id: id.to_owned(),
    }
}

const WAIT: Duration = Duration::from_secs(120);

/// `n` clients of `ws`, the `i`-th subscribed to the list `{prefix}-{i}`, once each has its
/// rows.
async fn subscribers(ws: &str, prefix: &str, n: usize) -> Result<Vec<NativeClient>> {
    let lists: Vec<ListArgs> = (0..n).map(|i| list(&format!("{prefix}-{i}"))).collect();
    let clients: Vec<NativeClient> = lists
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let c = NativeClient::connect(ws.to_owned(), format!("{prefix}-{i}"));
            c.subscribe::<Items>(l);
            c
        })
        .collect();
    for (c, l) in clients.iter().zip(&lists) {
        c.wait_for(WAIT, |s| s.rows::<Items>(l).is_some()).await?;
    }
    Ok(clients)
}

/// Fills `list` with `n` rows through `writer`, `window` events in flight at most.
async fn fill(writer: &NativeClient, list: &str, n: usize, prefix: &str) -> Result<()> {
    // A window of 256 events in flight, refilled as they are acknowledged.
    const WINDOW: usize = 256;
    for i in 0..n {
        if writer.with_state(|s| s.pending_count()) >= WINDOW {
            writer
                .wait_for(WAIT, |s| s.pending_count() <= WINDOW / 2)
                .await?;
        }
        writer
            .send(add(
                list,
                format!("{prefix}{i:06}"),
                format!("a row of reasonable length, number {i}"),
            ))
            .ok_or("the client refused an event")?;
    }
    writer.wait_for(WAIT, |s| s.pending_count() == 0).await?;
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsRead = futures_util::stream::SplitStream<Ws>;
type WsWrite = futures_util::stream::SplitSink<Ws, tokio_tungstenite::tungstenite::Message>;

/// A raw connection that said hello as `client_id` (a new client: its welcome has no seq).
async fn raw_connect(ws: &str, client_id: &str) -> Result<(WsWrite, WsRead)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(ws))
        .await
        .map_err(|_| "connecting timed out")??;
    socket.get_ref().get_ref().set_nodelay(true)?;
    let (mut tx, mut rx) = socket.split();
    let hello = serde_json::json!({"t": "hello", "protocol": 1, "client_id": client_id});
    tx.send(Message::text(hello.to_string())).await?;
    match next(&mut rx).await? {
        ServerMsg::Welcome(w) if w.last_seq == 0 => Ok((tx, rx)),
        other => Err(format!("expected a fresh welcome, got {other:?}").into()),
    }
}

/// The next server message on a raw connection.
async fn next(rx: &mut WsRead) -> Result<ServerMsg> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(ServerMsg::parse(&t)?),
            Ok(Some(Ok(_))) => {}
            _ => return Err("the connection ended".into()),
        }
    }
}

/// Fills `list` with `n` rows over a connection of its own that speaks the wire protocol
/// directly, a window of events in flight: the lightest load generator (no client state, no
/// predictions), so that the server, not the client, is what is measured.
async fn raw_fill(ws: &str, client_id: &str, list: &str, n: usize, prefix: &str) -> Result<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    const WINDOW: usize = 1024;
    let (mut tx, mut rx) = raw_connect(ws, client_id).await?;
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < n {
        while sent < n && sent - acked < WINDOW {
            let i = sent;
            sent += 1;
            let event = serde_json::json!({
                "t": "event", "seq": sent, "name": "add_item",
                "args": add(list, format!("{prefix}{i:06}"),
                            format!("a row of reasonable length, number {i}")),
            });
            tx.feed(Message::text(event.to_string())).await?;
        }
        tx.flush().await?;
        match next(&mut rx).await? {
            ServerMsg::Ack(a) if a.seq as usize == acked + 1 => acked += 1,
            other => return Err(format!("expected the ack of {}, got {other:?}", acked + 1).into()),
        }
    }
    Ok(())
}

fn snapshot_path(list_id: &str) -> String {
    let args = serde_json::json!({ "list_id": list_id }).to_string();
    let encoded: String = args
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/sssync/snapshot/items?a={encoded}")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What the subscribers of the fan-out saw: for each write, when each subscriber had it.
struct Fan {
    arrivals: Vec<std::sync::Mutex<Vec<Instant>>>,
    counts: Vec<AtomicUsize>,
    done: tokio::sync::Notify,
    refetch: AtomicBool,
    refetched_bytes: AtomicU64,
    delta_bytes: AtomicU64,
    subscribers: usize,
}

impl Fan {
    /// For `writes` writes, each to reach `subscribers` subscribers.
    fn new(writes: usize, subscribers: usize) -> Arc<Fan> {
        Arc::new(Fan {
            arrivals: (0..writes).map(|_| Default::default()).collect(),
            counts: (0..writes).map(|_| AtomicUsize::new(0)).collect(),
            done: tokio::sync::Notify::new(),
            refetch: AtomicBool::new(false),
            refetched_bytes: AtomicU64::new(0),
            delta_bytes: AtomicU64::new(0),
            subscribers,
        })
    }

    /// The latencies of the writes of `range` (sent at `sent`), every subscriber's, sorted.
    fn latencies(&self, sent: &[Instant], range: std::ops::Range<usize>) -> Vec<Duration> {
        let mut all: Vec<Duration> = range
            .flat_map(|w| {
                let at = sent[w];
                self.arrivals[w]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|t| *t - at)
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }

    fn arrive(&self, w: usize) {
        if let Some(a) = self.arrivals.get(w) {
            a.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Instant::now());
            if self.counts[w].fetch_add(1, Ordering::SeqCst) + 1 == self.subscribers {
                self.done.notify_one();
            }
        }
    }
}

/// The light subscribers' WebSocket settings: a 4 KiB read buffer (tungstenite's default, 128
/// KiB, is zeroed on every read: most of the load generator's CPU with a thousand sockets).
fn light_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// A light raw connection (see [`light_config`]) that said hello as `client_id` and subscribed
/// to the items of `list`, once the list's snapshot has arrived.
async fn subscribed(ws: &str, client_id: &str, list: &str) -> Result<Ws> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_with_config(ws, Some(light_config()), true),
    )
    .await
    .map_err(|_| "connecting timed out")??;
    let hello = serde_json::json!({
        "t": "hello", "protocol": sssync_core::protocol::PROTOCOL, "client_id": client_id,
    });
    socket.send(Message::text(hello.to_string())).await?;
    let sub = serde_json::json!({ "t": "sub", "q": "items", "a": { "list_id": list } });
    socket.send(Message::text(sub.to_string())).await?;
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""t":"snapshot""#) => return Ok(socket),
            Ok(Some(Ok(_))) => {}
            _ => return Err(format!("{client_id} got no snapshot").into()),
        }
    }
}

/// A subscriber of `list` (as client `client_id`) that only notes when each write's delta
/// arrives (write `w` adds the row `fan-{w}`), or, refetching, asks `refetch` to GET the
/// snapshot: a raw WebSocket speaking the protocol, so that a thousand of them cost the load
/// generator little. Answers once the list's snapshot has arrived; the task reads on.
async fn light_subscriber(
    ws: &str,
    (client_id, list): (&str, &str),
    fan: Arc<Fan>,
    refetch: tokio::sync::mpsc::Sender<usize>,
) -> Result<tokio::task::JoinHandle<()>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = subscribed(ws, client_id, list).await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            let Message::Text(t) = frame else { continue };
            if !t.contains(r#""t":"delta""#) {
                continue;
            }
            fan.delta_bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
            for part in t.split(r#""k":"fan-"#).skip(1) {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(w) = digits.parse::<usize>() {
                    if fan.refetch.load(Ordering::SeqCst) {
                        let _ = refetch.try_send(w);
                    } else {
                        fan.arrive(w);
                    }
                }
            }
        }
    }))
}

/// Write -> its subscriber while a crowd of clients resumes on a fresh instance (the one they
/// were on restarted: its groups remember nothing, so each resume is read from the durable
/// log): `crowd` raw clients on `crowd_keys` lists reconnect at once with a version, while one
/// write at a time goes to another list. Baseline: the same writes on a fresh instance with no
/// crowd. (Resumes read in the tailer, one after another, held every fan-out behind them.)
async fn resume_crowd(
    (quiet_url, busy_url): &(String, String),
    size: Size,
    db: &str,
) -> Result<Line> {
    let (crowd, keys, writes) = (size.crowd, size.crowd_keys, size.crowd_writes);
    let quiet = writes_while_resuming(quiet_url, writes, 0, keys).await?;
    let busy = writes_while_resuming(busy_url, writes, crowd, keys).await?;
    let (q99, b99) = (percentile(&quiet, 0.99), percentile(&busy, 0.99));
    Ok(Line {
        what: format!("write -> its subscriber while {crowd} clients resume on {keys} keys ({db})"),
        target: "p99 < 50 ms",
        sssync: format!(
            "p50 {} / p99 {} ({} writes)",
            ms(percentile(&busy, 0.5)),
            ms(b99),
            busy.len()
        ),
        baseline: format!(
            "p50 {} / p99 {} (no crowd)",
            ms(percentile(&quiet, 0.5)),
            ms(q99)
        ),
        ratio: q99.as_secs_f64() / b99.as_secs_f64().max(1e-9),
        met: Some(b99 < Duration::from_millis(50)),
    })
}

/// On `db_url`, `keys` lists of 20 rows; then, on a fresh instance: `crowd` clients (on those
/// lists, each resuming from version 1) connect at once while writes go one at a time, every
/// 5 ms, to a list of their own; the latencies of that list's subscriber, for writes until every
/// client of the crowd has its resume (at least `writes` of them).
async fn writes_while_resuming(
    db_url: &str,
    writes: usize,
    crowd: usize,
    keys: usize,
) -> Result<Vec<Duration>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    const MAX_WRITES: usize = 20_000;
    {
        // The lists the crowd reads; then the instance goes.
        let server = Child::start(db_url).await?;
        for k in 0..keys {
            let (id, list) = (format!("crowd-fill-{k}"), format!("crowd-{k}"));
            raw_fill(&server.ws(), &id, &list, 20, &format!("c{k}-")).await?;
        }
    }
    let tag = if crowd == 0 { "quiet" } else { "busy" };
    let server = Child::start(db_url).await?;
    let list = format!("alone-{tag}");
    let fan = Fan::new(MAX_WRITES, 1);
    let (refetch, _unused) = tokio::sync::mpsc::channel(1);
    let watcher = light_subscriber(
        &server.ws(),
        (&format!("alone-sub-{tag}"), &list),
        fan.clone(),
        refetch,
    )
    .await?;
    let (mut tx, mut rx) = raw_connect(&server.ws(), &format!("alone-writer-{tag}")).await?;
    let resumed = Arc::new(AtomicUsize::new(0));
    let crowd_tasks: Vec<_> = (0..crowd)
        .map(|i| {
            let (ws, resumed) = (server.ws(), resumed.clone());
            let list = format!("crowd-{}", i % keys.max(1));
            tokio::spawn(async move {
                let Ok(Ok((mut socket, _))) = tokio::time::timeout(
                    WAIT,
                    tokio_tungstenite::connect_async_with_config(ws, Some(light_config()), true),
                )
                .await
                else {
                    return;
                };
                let hello = serde_json::json!({
                    "t": "hello", "protocol": sssync_core::protocol::PROTOCOL,
                    "client_id": format!("crowd-{i}"),
                });
                let sub = serde_json::json!({
                    "t": "sub", "q": "items", "a": { "list_id": list }, "v": 1,
                });
                for m in [hello, sub] {
                    if socket.send(Message::text(m.to_string())).await.is_err() {
                        return;
                    }
                }
                let mut counted = false;
                while let Some(Ok(frame)) = socket.next().await {
                    if let Message::Text(t) = frame
                        && !counted
                        && (t.contains(r#""t":"delta""#) || t.contains(r#""t":"snapshot""#))
                    {
                        counted = true;
                        resumed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while sent.len() < MAX_WRITES && (sent.len() < writes || resumed.load(Ordering::SeqCst) < crowd)
    {
        tick.tick().await;
        let w = sent.len();
        let event = serde_json::json!({
            "t": "event", "seq": w + 1, "name": "add_item",
            "args": add(&list, format!("fan-{w}"), format!("write {w}")),
        });
        sent.push(Instant::now());
        tx.send(Message::text(event.to_string())).await?;
        match next(&mut rx).await? {
            ServerMsg::Ack(a) if a.seq as usize == w + 1 => {}
            other => return Err(format!("expected the ack of {}, got {other:?}", w + 1).into()),
        }
        // The delta comes before the ack on its own connection, not on the watcher's: wait.
        let deadline = tokio::time::Instant::now() + WAIT;
        while fan.counts[w].load(Ordering::SeqCst) == 0 {
            if tokio::time::timeout_at(deadline, fan.done.notified())
                .await
                .is_err()
            {
                return Err(format!("write {w} never reached its subscriber").into());
            }
        }
    }
    for t in &crowd_tasks {
        t.abort();
    }
    watcher.abort();
    if resumed.load(Ordering::SeqCst) < crowd {
        return Err(format!(
            "only {} of {crowd} clients resumed within {MAX_WRITES} writes",
            resumed.load(Ordering::SeqCst)
        )
        .into());
    }
    Ok(fan.latencies(&sent, 0..sent.len()))
}

/// Write -> every subscriber of one key: sssync's deltas, then refetch-on-invalidate (the
/// delta only says "changed"; each subscriber then GETs the snapshot).
async fn fan_out(server: &Child, size: Size, db: &str) -> Result<Line> {
    let (n, writes) = (size.subscribers, size.fan_writes);
    let fan = Fan::new(2 * writes, n);
    let writer = NativeClient::connect(server.ws(), "fan-writer");
    // The list the subscribers read: 100 rows, a TodoMVC list's worth.
    fill(&writer, "fan", 100, "pre-").await?;
    let mut subscribers = Vec::with_capacity(n);
    let mut refetchers = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(64);
        subscribers.push(
            light_subscriber(&server.ws(), (&format!("fan-{i}"), "fan"), fan.clone(), tx).await?,
        );
        let mut http = Http::connect(&server.addr).await?;
        let fan = fan.clone();
        refetchers.push(tokio::spawn(async move {
            let path = snapshot_path("fan");
            while let Some(w) = rx.recv().await {
                match http.get(&path).await {
                    Ok(body) => {
                        fan.refetched_bytes
                            .fetch_add(body.len() as u64, Ordering::Relaxed);
                        fan.arrive(w);
                    }
                    Err(e) => eprintln!("refetch: {e}"),
                }
            }
        }));
    }
    let bytes_before = fan.delta_bytes.load(Ordering::SeqCst);
    let mut sent = Vec::with_capacity(2 * writes);
    let mut bytes_sssync = 0;
    for w in 0..2 * writes {
        if w == writes {
            bytes_sssync = fan.delta_bytes.load(Ordering::SeqCst) - bytes_before;
            fan.refetch.store(true, Ordering::SeqCst);
        }
        sent.push(Instant::now());
        writer
            .send(add(
                "fan",
                format!("fan-{w}"),
                format!("fanned out, write {w}"),
            ))
            .ok_or("the client refused an event")?;
        wait_all(&fan, w..w + 1, n).await?;
    }
    let (ours, theirs) = (
        fan.latencies(&sent, 0..writes),
        fan.latencies(&sent, writes..2 * writes),
    );
    for task in refetchers.into_iter().chain(subscribers) {
        task.abort();
    }
    let per = (n * writes) as f64;
    let (p99, base_p99) = (percentile(&ours, 0.99), percentile(&theirs, 0.99));
    Ok(Line {
        what: format!("write -> 1 key's subscribers ({n}, {db})"),
        target: "p99 < 10 ms",
        sssync: format!(
            "p50 {} / p99 {}; {:.0} B each",
            ms(percentile(&ours, 0.5)),
            ms(p99),
            bytes_sssync as f64 / per
        ),
        baseline: format!(
            "p50 {} / p99 {}; {:.0} B each",
            ms(percentile(&theirs, 0.5)),
            ms(base_p99),
            fan.refetched_bytes.load(Ordering::Relaxed) as f64 / per
        ),
        ratio: base_p99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
        met: (n >= 1000).then_some(p99 < Duration::from_millis(10)),
    })
}

/// A write through one instance -> its delta on a subscriber of another: two servers (two
/// processes, each with its own pool and tailer) on one PostgreSQL schema, a writer on the
/// first, a subscriber of the same 100-row list on the second, one write at a time. Against
/// PostgreSQL's own floor for the same hop without an engine: the write and a `NOTIFY`
/// committed through sqlx, a `LISTEN` connection that hears it and reads the list again.
async fn across_instances(schema_url: &str, plain_url: &str, size: Size) -> Result<Line> {
    let writes = size.across_writes;
    let (a, b) = (
        Child::start(schema_url).await?,
        Child::start(schema_url).await?,
    );
    let fan = Fan::new(writes, 1);
    let writer = NativeClient::connect(a.ws(), "across-writer");
    fill(&writer, "across", 100, "pre-").await?;
    let (tx, _refetches) = tokio::sync::mpsc::channel::<usize>(1);
    let subscriber = light_subscriber(&b.ws(), ("across-0", "across"), fan.clone(), tx).await?;
    let mut sent = Vec::with_capacity(writes);
    for w in 0..writes {
        sent.push(Instant::now());
        writer
            .send(add(
                "across",
                format!("fan-{w}"),
                format!("across instances, write {w}"),
            ))
            .ok_or("the client refused an event")?;
        wait_all(&fan, w..w + 1, 1).await?;
    }
    subscriber.abort();
    let ours = fan.latencies(&sent, 0..writes);
    let theirs = notify_and_reread(plain_url, writes).await?;
    let (p99, base_p99) = (percentile(&ours, 0.99), percentile(&theirs, 0.99));
    Ok(Line {
        what: "write on one instance -> delta on another's subscriber (PostgreSQL)".into(),
        target: "p99 < 50 ms",
        sssync: format!("p50 {} / p99 {}", ms(percentile(&ours, 0.5)), ms(p99)),
        baseline: format!(
            "p50 {} / p99 {} (PostgreSQL alone: the write and a NOTIFY through sqlx, heard by a \
             LISTEN connection that reads the list again)",
            ms(percentile(&theirs, 0.5)),
            ms(base_p99)
        ),
        ratio: base_p99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
        met: Some(p99 < Duration::from_millis(50)),
    })
}

/// The baseline of [`across_instances`], in a schema without the engine: `writes` times, one
/// at a time, an item and a `NOTIFY` committed in one transaction on one connection, then,
/// once a `LISTEN` connection has the notification, the list read again there (100 rows). The
/// time from the write's start to the list read, with the new item in it.
async fn notify_and_reread(url: &str, writes: usize) -> Result<Vec<Duration>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await?;
    sqlx::raw_sql(app::SCHEMA).execute(&pool).await?;
    let channel = format!("perf_across_{}", std::process::id());
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen(&channel).await?;
    let insert = |id: String| {
        sqlx::query(PLAIN_INSERT)
            .bind(id)
            .bind("across")
            .bind("a plain write")
    };
    for i in 0..100 {
        insert(format!("pre-{i}")).execute(&pool).await?;
    }
    let mut took = Vec::with_capacity(writes);
    for w in 0..writes {
        let id = format!("plain-{w}");
        let t = Instant::now();
        let mut tx = pool.begin().await?;
        insert(id.clone()).execute(&mut *tx).await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tokio::time::timeout(WAIT, listener.recv())
            .await
            .map_err(|_| "the notification never came")??;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM items WHERE list_id = 'across' ORDER BY pos, id")
                .fetch_all(&mut listener)
                .await?;
        if !ids.contains(&id) {
            return Err(format!("the list read after {id}'s notification lacks it").into());
        }
        took.push(t.elapsed());
    }
    took.sort();
    // The listener holds one of the pool's connections: closing the pool waits for it.
    drop(listener);
    pool.close().await;
    Ok(took)
}

/// One client of the many-keys row: subscribes to `list`, then notes when each write's delta
/// arrives (`k-{w}` in its puts), or, refetching (the baseline), asks for the whole result
/// again over its own connection (`resync`) and notes when that snapshot arrives.
async fn key_subscriber(
    ws: &str,
    client_id: String,
    list: String,
    fan: Arc<Fan>,
) -> Result<tokio::task::JoinHandle<()>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = subscribed(ws, &client_id, &list).await?;
    let resync =
        serde_json::json!({ "t": "resync", "q": "items", "a": { "list_id": list } }).to_string();
    Ok(tokio::spawn(async move {
        // Writes whose refetch is under way, in order.
        let mut waiting: std::collections::VecDeque<usize> = Default::default();
        while let Some(Ok(frame)) = socket.next().await {
            let Message::Text(t) = frame else { continue };
            if t.contains(r#""t":"snapshot""#) {
                if let Some(w) = waiting.pop_front() {
                    fan.refetched_bytes
                        .fetch_add(t.len() as u64, Ordering::Relaxed);
                    fan.arrive(w);
                }
                continue;
            }
            if !t.contains(r#""t":"delta""#) {
                continue;
            }
            fan.delta_bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
            for part in t.split(r#""k":"k-"#).skip(1) {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(w) = digits.parse::<usize>() {
                    if fan.refetch.load(Ordering::SeqCst) {
                        waiting.push_back(w);
                        if socket.send(Message::text(resync.clone())).await.is_err() {
                            return;
                        }
                    } else {
                        fan.arrive(w);
                    }
                }
            }
        }
    }))
}

/// Write -> its key's subscribers, with many clients on many keys connected: `clients` clients,
/// `keys` lists (each read by `clients / keys` of them, 20 items each), writes to one list after
/// another at a steady rate (1,000 a second); the latency from sending a write to each
/// subscriber of its list having it. Baseline: the same, each subscriber refetching the whole
/// list (over its own connection: `resync`, a snapshot) when told of the change.
async fn fan_out_keys(server: &Child, size: Size, db: &str) -> Result<Line> {
    use futures_util::{StreamExt, TryStreamExt};
    let (clients, keys, writes) = (size.many_clients, size.many_keys, size.many_writes);
    let per_key = clients / keys;
    let fan = Fan::new(2 * writes, per_key);
    let ws = server.ws();
    // The lists' items, from 4 writers.
    futures_util::future::try_join_all((0..4).map(|c| {
        let ws = ws.clone();
        async move {
            let mut conn = RawWriter::connect(&ws, &format!("mk-fill-{c}")).await?;
            for k in (c..keys).step_by(4) {
                for i in 0..20 {
                    conn.send(&format!("k{k}"), format!("pre-{k}-{i}"), "an item".into())
                        .await?;
                }
            }
            conn.settle().await
        }
    }))
    .await?;
    let subscribers: Vec<tokio::task::JoinHandle<()>> = futures_util::stream::iter(0..clients)
        .map(|i| {
            key_subscriber(
                &ws,
                format!("mk-{i}"),
                format!("k{}", i % keys),
                fan.clone(),
            )
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let mut writer = RawWriter::connect(&ws, "mk-writer").await?;
    let mut sent = Vec::with_capacity(2 * writes);
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for w in 0..2 * writes {
        if w == writes {
            // Every write of the first half has reached its subscribers.
            wait_all(&fan, 0..writes, per_key).await?;
            fan.refetch.store(true, Ordering::SeqCst);
        }
        pace.tick().await;
        sent.push(Instant::now());
        writer
            .send(
                &format!("k{}", w % keys),
                format!("k-{w}"),
                format!("write {w}"),
            )
            .await?;
    }
    wait_all(&fan, writes..2 * writes, per_key).await?;
    writer.settle().await?;
    let (ours, theirs) = (
        fan.latencies(&sent, 0..writes),
        fan.latencies(&sent, writes..2 * writes),
    );
    for task in subscribers {
        task.abort();
    }
    let (p99, base_p99) = (percentile(&ours, 0.99), percentile(&theirs, 0.99));
    let per = (per_key * writes) as f64;
    Ok(Line {
        what: format!("write -> its key's subscribers ({clients} clients on {keys} keys, {db})"),
        target: "p99 < 50 ms",
        sssync: format!(
            "p50 {} / p99 {}; {:.0} B each",
            ms(percentile(&ours, 0.5)),
            ms(p99),
            fan.delta_bytes.load(Ordering::Relaxed) as f64 / (2.0 * per)
        ),
        baseline: format!(
            "p50 {} / p99 {}; {:.0} B each (refetch on invalidate, over the same connection)",
            ms(percentile(&theirs, 0.5)),
            ms(base_p99),
            fan.refetched_bytes.load(Ordering::Relaxed) as f64 / per
        ),
        ratio: base_p99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
        met: (clients >= 10_000).then_some(p99 < Duration::from_millis(50)),
    })
}

/// Waits until each write of `range` has reached `each` subscribers.
async fn wait_all(fan: &Fan, range: std::ops::Range<usize>, each: usize) -> Result<()> {
    for w in range {
        while fan.counts[w].load(Ordering::SeqCst) < each {
            tokio::time::timeout(WAIT, fan.done.notified())
                .await
                .map_err(|_| format!("write {w} did not reach its subscribers"))?;
        }
    }
    Ok(())
}

/// A connection that sends `add_item` events (seq 1, 2, 3…) and, in a task of its own, reads
/// their acknowledgements.
struct RawWriter {
    tx: WsWrite,
    seq: u64,
    acked: tokio::sync::watch::Receiver<u64>,
    reader: tokio::task::JoinHandle<()>,
}

impl RawWriter {
    async fn connect(ws: &str, client_id: &str) -> Result<RawWriter> {
        let (tx, mut rx) = raw_connect(ws, client_id).await?;
        let (acks, acked) = tokio::sync::watch::channel(0u64);
        let reader = tokio::spawn(async move {
            while let Ok(msg) = next(&mut rx).await {
                if let ServerMsg::Ack(a) = msg {
                    acks.send_replace(a.seq);
                }
            }
        });
        Ok(RawWriter {
            tx,
            seq: 0,
            acked,
            reader,
        })
    }

    /// Sends one event (at most 256 unacknowledged).
    async fn send(&mut self, list: &str, id: String, title: String) -> Result<()> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let floor = self.seq.saturating_sub(256);
        tokio::time::timeout(WAIT, self.acked.wait_for(|a| *a >= floor))
            .await
            .map_err(|_| "events are not acknowledged")??;
        self.seq += 1;
        let event = serde_json::json!({
            "t": "event", "seq": self.seq, "name": "add_item", "args": add(list, id, title),
        });
        self.tx.send(Message::text(event.to_string())).await?;
        Ok(())
    }

    /// Waits until every event sent is acknowledged.
    async fn settle(mut self) -> Result<()> {
        let seq = self.seq;
        tokio::time::timeout(WAIT, self.acked.wait_for(|a| *a >= seq))
            .await
            .map_err(|_| "events are not acknowledged")??;
        self.reader.abort();
        Ok(())
    }
}

/// The bytes a subscriber of a 1,000-row result receives for a 1-row change, against the
/// bytes of refetching the result.
async fn bytes_one_change(server: &Child, db: &str) -> Result<Line> {
    let writer = NativeClient::connect(server.ws(), "bytes-writer");
    fill(&writer, "bytes", 1000, "b").await?;
    let reader = NativeClient::connect(server.ws(), "bytes-reader");
    reader.subscribe::<Items>(&list("bytes"));
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("bytes"))
                .is_some_and(|r| r.len() == 1000)
        })
        .await?;
    let before = reader.bytes_received();
    writer
        .send(add("bytes", "b-new".into(), "the one change".into()))
        .ok_or("refused")?;
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("bytes"))
                .is_some_and(|r| r.len() == 1001)
        })
        .await?;
    let delta = reader.bytes_received() - before;
    let snapshot = Http::connect(&server.addr)
        .await?
        .get(&snapshot_path("bytes"))
        .await?
        .len();
    let ratio = snapshot as f64 / delta.max(1) as f64;
    Ok(Line {
        what: format!("bytes, 1-row change in a 1,000-row query ({db})"),
        target: ">= 100x fewer than a refetch",
        sssync: format!("{delta} B"),
        baseline: format!("{snapshot} B"),
        ratio,
        met: Some(ratio >= 100.0),
    })
}

/// `writer` fills the list `big` with `rows` rows; a reader connected to `reader_url` loads
/// it, goes offline, misses `missed` changes (half deletes, half adds), and comes back through
/// `back_url` (another instance, or the same server). Answers the bytes of the reader's first
/// load and of its resume.
pub(crate) async fn miss_and_resume(
    writer: &NativeClient,
    reader_url: String,
    back_url: String,
    rows: usize,
    missed: usize,
) -> Result<(u64, u64)> {
    fill(writer, "big", rows, "g").await?;
    let reader = NativeClient::connect(reader_url, "big-reader");
    reader.subscribe::<Items>(&list("big"));
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("big"))
                .is_some_and(|r| r.len() == rows)
        })
        .await?;
    let whole = reader.bytes_received();
    reader.set_online(false);
    reader.wait_for(WAIT, |_| !reader.is_live()).await?;
    for i in 0..missed / 2 {
        writer.send(app::DelItem {
            uid: format!("d{i}"),
            id: format!("g{:06}", i * 3),
            list_id: "big".into(),
        });
        writer.send(add("big", format!("n{i:06}"), "added while away".into()));
    }
    writer.wait_for(WAIT, |s| s.pending_count() == 0).await?;
    let before = reader.bytes_received();
    reader.set_url(back_url);
    reader.set_online(true);
    let last = format!("n{:06}", missed / 2 - 1);
    reader
        .wait_for(WAIT, |s| {
            s.rows::<Items>(&list("big"))
                .is_some_and(|r| r.len() == rows && r.iter().any(|i| i.id == last))
        })
        .await?;
    Ok((whole, reader.bytes_received() - before))
}

/// A subscriber of a big result goes away, misses changes, comes back: the resume's bytes
/// against the whole result's.
async fn reconnect(server: &Child, size: Size, db: &str) -> Result<Line> {
    let (rows, missed) = (size.big_rows, size.missed);
    let writer = NativeClient::connect(server.ws(), "big-writer");
    let (whole, resume) = miss_and_resume(&writer, server.ws(), server.ws(), rows, missed).await?;
    let refetch = Http::connect(&server.addr)
        .await?
        .get(&snapshot_path("big"))
        .await?
        .len();
    Ok(Line {
        what: format!("reconnect after missed changes ({missed} to a {rows}-row query, {db})"),
        target: "payload ∝ changed rows",
        sssync: format!(
            "{resume} B ({:.0} B per change)",
            resume as f64 / missed as f64
        ),
        baseline: format!("{refetch} B (the first load, on the socket: {whole} B)"),
        ratio: refetch as f64 / resume.max(1) as f64,
        met: None,
    })
}

const PLAIN_INSERT: &str = "INSERT INTO items (id, list_id, title, pos) VALUES ($1, $2, $3, \
                            COALESCE((SELECT MAX(pos) FROM items WHERE list_id = $2), 0) + 1)";
const PLAIN_LOG: &str =
    "INSERT INTO applied (uid, kind, target, amount) VALUES ($1, 'add_item', $1, 1)";

/// `AddItem`'s writes through sqlx alone on either database, `per_tx` to a transaction, one
/// transaction at a time: the item `i` goes to the list `list(i)`. Answers the rate and this
/// process's CPU per write. One to a transaction is the plain baseline; 512 (the engine's
/// batch) is what the driver itself does at most, the floor under any engine built on it.
async fn sqlx_writes(
    url: &str,
    n: usize,
    per_tx: usize,
    list: impl Fn(usize) -> String,
) -> Result<(f64, Duration)> {
    macro_rules! writes {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::raw_sql(app::SCHEMA).execute(&pool).await?;
            let (t, c0) = (Instant::now(), cpu()?);
            for chunk in (0..n).collect::<Vec<_>>().chunks(per_tx) {
                let mut tx = pool.begin().await?;
                for &i in chunk {
                    let id = format!("plain-{i}");
                    sqlx::query(PLAIN_INSERT)
                        .bind(&id)
                        .bind(list(i))
                        .bind("a plain write")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(PLAIN_LOG).bind(&id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            let took = (t.elapsed(), cpu()? - c0);
            pool.close().await;
            took
        }};
    }
    let (took, cpu) = if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        writes!(pool)
    } else {
        writes!(SqliteStore::open(url).await?.pool().clone())
    };
    Ok((n as f64 / took.as_secs_f64(), cpu / n as u32))
}

/// The plain baseline's rate: one transaction per write, events per second.
async fn plain_writes(url: &str, n: usize) -> Result<f64> {
    Ok(sqlx_writes(url, n, 1, |_| "plain".into()).await?.0)
}

/// The driver's floor: the same writes, 512 to a transaction (rate, CPU per write).
async fn plain_batched_writes(
    url: &str,
    n: usize,
    list: impl Fn(usize) -> String,
) -> Result<(f64, Duration)> {
    sqlx_writes(url, n, 512, list).await
}

/// Events committed and fanned out: 4 writers, each adding items to a list of its own, 256
/// events in flight each, and a subscriber of each list (a client of its own: a writer that
/// subscribed would re-apply its pending predictions on every delta, the client's cost, not
/// the server's).
async fn throughput(
    server: &Child,
    size: Size,
    (plain, floor): (f64, f64),
    db: &str,
    target: f64,
) -> Result<Line> {
    const CLIENTS: usize = 4;
    let per = size.events / CLIENTS;
    let lists: Vec<ListArgs> = (0..CLIENTS).map(|c| list(&format!("tp-{c}"))).collect();
    let watchers = subscribers(&server.ws(), "tp", CLIENTS).await?;
    let t = Instant::now();
    try_join_all(
        watchers
            .iter()
            .zip(&lists)
            .enumerate()
            .map(|(c, (watcher, l))| async move {
                raw_fill(
                    &server.ws(),
                    &format!("tp-writer-{c}"),
                    &l.list_id,
                    per,
                    &format!("tp{c}-"),
                )
                .await?;
                let last = format!("tp{c}-{:06}", per - 1);
                let key = sssync_core::QueryKey::new("items", l)?;
                watcher
                    .wait_for(WAIT, |s| {
                        s.view(&key)
                            .is_some_and(|rows| rows.rows().iter().any(|r| *r.key == *last))
                    })
                    .await?;
                Ok::<_, Error>(())
            }),
    )
    .await?;
    let rate = (per * CLIENTS) as f64 / t.elapsed().as_secs_f64();
    Ok(Line {
        what: format!("events committed and fanned out ({db})"),
        target: if target >= 20_000.0 {
            ">= 20,000/s"
        } else {
            ">= 5,000/s"
        },
        sssync: format!("{rate:.0}/s"),
        baseline: format!(
            "{plain:.0}/s (one transaction per write; the driver's floor, the same writes 512 to \
             a transaction through sqlx alone: {floor:.0}/s)"
        ),
        ratio: rate / plain,
        met: Some(rate >= target),
    })
}

/// This process's CPU time (user + system), from `CLOCK_PROCESS_CPUTIME_ID` (nanoseconds).
fn cpu() -> Result<Duration> {
    Ok(cpu_time::ProcessTime::try_now()?.as_duration())
}

/// The server CPU of a change no subscribed query reads (200 other keys subscribed), in an
/// engine in this process, 256 changes in flight (as under load: committed in batches),
/// against the same writes through sqlx alone, batched the same.
async fn no_op_change(url: &str, plain_url: &str, size: Size) -> Result<Line> {
    let n = size.noop_changes;
    let store = SqliteStore::open(url).await?;
    sqlx::raw_sql(app::SCHEMA).execute(store.pool()).await?;
    let engine = app::declare(Engine::builder(store)).start().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ws = format!("ws://{}/sssync/ws", listener.local_addr()?);
    let app = router(engine.clone());
    let serve = tokio::spawn(async move { axum::serve(listener, app).await });
    let watchers = subscribers(&ws, "watched", 200).await?;
    let received: u64 = watchers.iter().map(NativeClient::bytes_received).sum();
    let run = |i: usize| {
        serde_json::json!({
            "uid": format!("u{i}"), "id": format!("x{i}"),
            "list_id": format!("nobody-{}", i % 50), "title": "read by no query"
        })
        .to_string()
    };
    // As the engine runs under load: 256 changes in flight, committed in batches.
    use futures_util::{StreamExt, TryStreamExt};
    let c0 = cpu()?;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (engine, args) = (engine.clone(), run(i));
            async move {
                match engine.apply_server_event("add_item", &args).await? {
                    ServerMsg::Ack(_) => Ok::<_, Error>(()),
                    r => Err(format!("not applied: {r:?}").into()),
                }
            }
        })
        .buffer_unordered(256)
        .try_collect::<()>()
        .await?;
    let ours = (cpu()? - c0) / n as u32;
    let untouched = watchers
        .iter()
        .map(NativeClient::bytes_received)
        .sum::<u64>()
        == received;
    drop(watchers);
    engine.shutdown();
    serve.abort();

    let (_, plain) = plain_batched_writes(plain_url, n, |i| format!("nobody-{}", i % 50)).await?;
    let over = ours.saturating_sub(plain);
    if !untouched {
        return Err("a change no query reads reached a subscriber".into());
    }
    Ok(Line {
        what: "a change no subscribed query reads (SQLite)".into(),
        target: "< 20 µs server CPU",
        sssync: format!(
            "{:.0} µs CPU ({:.0} µs over the write itself)",
            us(ours),
            us(over)
        ),
        baseline: format!(
            "{:.0} µs CPU (the same writes through sqlx alone, 512 to a transaction)",
            us(plain)
        ),
        ratio: plain.as_secs_f64() / ours.as_secs_f64().max(1e-9),
        met: Some(over < Duration::from_micros(20)),
    })
}

/// The client's CPU for one delta of one put into a query of many rows: a client state (what
/// a browser tab and the native client keep) that holds the query's snapshot takes deltas
/// that each add a row at the end, against the same deltas applied to the rows alone
/// (`delta::apply`). Not a SPEC §6 target: it shows what a client pays per change, which
/// grows with the query's rows (see docs/performance.md).
fn client_delta(size: Size) -> Result<Line> {
    use sssync_core::client::ClientState;
    use sssync_core::protocol::{DeltaMsg, Snapshot, Welcome};
    use sssync_core::{Digest, Put, QueryKey, Row, Rows, Version};
    let (n, deltas) = (size.client_rows, size.client_deltas);
    let args = list("big");
    let key = QueryKey::new("items", &args)?;
    let a = || serde_json::value::to_raw_value(&args);
    let row = |k: String| {
        let value =
            serde_json::json!({ "id": k, "list_id": "big", "title": "a row of reasonable length" });
        Row::from_serialize(k, &value)
    };
    let rows: Vec<Row> = (0..n)
        .map(|i| row(format!("r{i:06}")))
        .collect::<std::result::Result<_, _>>()?;
    let mut digest = Digest::of(&rows);
    let mut state = ClientState::new("perf-client");
    state.subscribe(key.clone());
    state.on_message(ServerMsg::Welcome(Welcome {
        protocol: sssync_core::protocol::PROTOCOL,
        epoch: sssync_core::Epoch("perf".into()),
        version: Version(1),
        last_seq: 0,
        limits: sssync_core::Limits::default(),
        proof: None,
        who: None,
    }));
    state.on_message(ServerMsg::Snapshot(Snapshot {
        q: "items".into(),
        a: a()?,
        v: Version(1),
        reset: false,
        digest,
        rows: rows.clone(),
    }));
    let mut alone = Rows::new(rows)?;
    let mut last: Arc<str> = format!("r{:06}", n - 1).into();
    // The first `deltas` with nothing pending, the rest with events of the client's own
    // pending (each predicting a row into the query).
    const PENDING: usize = 10;
    let with_pending = (deltas / 10).max(10);
    let mut msgs = Vec::with_capacity(deltas + with_pending);
    for d in 0..deltas + with_pending {
        let k = format!("x{d:06}");
        let put = row(k.clone())?;
        digest.add(&put);
        msgs.push(DeltaMsg {
            q: "items".into(),
            a: a()?,
            from: Version(1 + d as u64),
            to: Version(2 + d as u64),
            puts: vec![Put {
                row: put,
                after: Some(last.clone()),
            }],
            dels: vec![],
            digest,
        });
        last = k.into();
    }
    let plain: Vec<sssync_core::Delta> = msgs[..deltas].iter().map(DeltaMsg::delta).collect();
    state.drain_persist();
    let take = |state: &mut ClientState, msgs: Vec<DeltaMsg>| -> Result<Duration> {
        let (t, n) = (Instant::now(), msgs.len() as u32);
        for m in msgs {
            if !state.on_message(ServerMsg::Delta(m)).send.is_empty() {
                return Err("the client state asked for a resync".into());
            }
            // What both runtimes do after every message: hand the changes to their store.
            drop(state.drain_persist());
        }
        Ok(t.elapsed() / n)
    };
    let later = msgs.split_off(deltas);
    let ours = take(&mut state, msgs)?;
    for i in 0..PENDING {
        state
            .push(app::AddItem {
                uid: format!("p{i}"),
                id: format!("p{i}"),
                list_id: "big".into(),
                title: "pending".into(),
            })
            .map_err(|r| format!("the client refused an event: {r:?}"))?;
    }
    let pending = take(&mut state, later)?;
    let t = Instant::now();
    for d in &plain {
        sssync_core::delta::apply(&mut alone, d)?;
    }
    let theirs = t.elapsed() / deltas as u32;
    let shown = n + deltas + with_pending + PENDING;
    if state.view(&key).map(Rows::len) != Some(shown) || alone.len() != n + deltas {
        return Err("the deltas did not all apply".into());
    }
    Ok(Line {
        what: format!("client: one delta into a {n}-row query (client state)"),
        target: "- (no SPEC §6 target)",
        sssync: format!(
            "{:.1} µs CPU per delta ({:.0}x the rows alone); with {PENDING} events of its own \
             pending, each predicting a row into the query: {:.1} µs",
            us(ours),
            ours.as_secs_f64() / theirs.as_secs_f64().max(1e-9),
            us(pending)
        ),
        baseline: format!(
            "{:.2} µs (the same delta applied to the rows alone)",
            us(theirs)
        ),
        ratio: theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9),
        met: None,
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Idle connections (each subscribed to a small query of its own) on an sssync server,
/// against idle connections on a plain axum WebSocket endpoint: server memory per connection.
async fn idle_memory(url: &str, size: Size) -> Result<Line> {
    let n = size.idle;
    // sssync: a hello, a subscription, then nothing.
    let server = Child::start(url).await?;
    let warm = NativeClient::connect(server.ws(), "warm");
    warm.subscribe::<Items>(&list("warm"));
    warm.wait_for(WAIT, |s| s.rows::<Items>(&list("warm")).is_some())
        .await?;
    let before = server.rss()?;
    // One after the other, as the baseline's: the steady state of idle connections, not the
    // peak of a storm of handshakes (freed memory stays in the allocator's arenas).
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let l = list(&format!("idle-{i}"));
        let c = NativeClient::connect(server.ws(), format!("idle-{i}"));
        c.subscribe::<Items>(&l);
        c.wait_for(WAIT, |s| s.rows::<Items>(&l).is_some()).await?;
        clients.push(c);
    }
    let ours = server.rss()?.saturating_sub(before) / n as u64;
    drop(clients);
    drop(server);

    // Plain: the same number of WebSocket connections to an endpoint that echoes, with the
    // same read buffer (the floor of a WebSocket connection), then with axum's defaults.
    let plain = plain_sockets(url, "/plain/ws", n).await?;
    let default = plain_sockets(url, "/plain-default/ws", n).await?;
    Ok(Line {
        what: format!("idle connection memory ({n} connections)"),
        target: "<= 20 KB per connection",
        sssync: format!("{:.1} KB", ours as f64 / 1024.0),
        baseline: format!(
            "{:.1} KB (a plain axum WebSocket, the same 4 KiB read buffer; {:.1} KB with axum's defaults)",
            plain as f64 / 1024.0,
            default as f64 / 1024.0
        ),
        ratio: plain.max(1) as f64 / ours.max(1) as f64,
        met: Some(ours <= 20 * 1024),
    })
}

/// Server memory per connection of `n` WebSockets to the plain endpoint `path` of a fresh
/// server, each having had one message echoed (so its server task has read).
async fn plain_sockets(url: &str, path: &str, n: usize) -> Result<u64> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = Child::start(url).await?;
    let connect = || async {
        let ws = format!("ws://{}{path}", server.addr);
        let (mut s, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(ws))
            .await
            .map_err(|_| "connecting timed out")??;
        s.send(Message::text("hello")).await?;
        match tokio::time::timeout(WAIT, s.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => Ok::<_, Error>(s),
            _ => Err("no echo".into()),
        }
    };
    let warm = connect().await?;
    let before = server.rss()?;
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(connect().await?);
    }
    let per = server.rss()?.saturating_sub(before) / n as u64;
    drop((warm, sockets));
    Ok(per)
}
