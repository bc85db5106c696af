//! The servers under measurement, in child processes of the bench (`sssync-bench serve DB`),
//! and the PostgreSQL schemas a run makes and drops.

use super::Result;
use sssync_core::server::{Engine, PgStore, SqliteStore, Store, router};
use sssync_fault::app::{self};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A server in a child process (`sssync-bench serve DB`), killed when dropped.
pub(super) struct Child {
    pub(super) process: tokio::process::Child,
    /// The child's standard output, kept open (it may print again).
    pub(super) _stdout: BufReader<tokio::process::ChildStdout>,
    pub(super) addr: String,
}

impl Child {
    pub(super) async fn start(db: &str) -> Result<Child> {
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

    pub(super) fn ws(&self) -> String {
        format!("ws://{}/sssync/ws", self.addr)
    }

    /// The server's resident memory, in bytes.
    pub(super) fn rss(&self) -> Result<u64> {
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
pub(super) async fn echo(mut socket: axum::extract::ws::WebSocket) {
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
pub(super) async fn pg_schema(
    base: &str,
) -> Result<(String, impl std::future::Future<Output = Result<()>>)> {
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
