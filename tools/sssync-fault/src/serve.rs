//! The server process of a scenario (`sssync-fault serve --db FILE`, or `--db postgres://…`):
//! the fault app's engine on a SQLite file or a PostgreSQL database, on 127.0.0.1, controlled
//! by lines on its standard input:
//!
//! | line | effect | answer |
//! |---|---|---|
//! | `crash before_commit` / `crash after_commit` / `crash before_acks` | the next batch stops at that point, prints `AT <point>` and hangs there (the harness kills the process with SIGKILL) | `OK` |
//! | `full on` / `full off` | (SQLite) the database may not grow by a page (a real `SQLITE_FULL`) / may again | `OK` |
//! | `stall MS` | (SQLite) every connection of the engine's pool is held for `MS` milliseconds: the engine cannot read or write meanwhile (as with a lost database connection) | `OK` at once |
//! | `prune` | (SQLite) the change log is pruned up to the last version now (another instance's janitor with the shortest retention) | `OK` once done |
//!
//! It prints `LISTENING <address>` once it serves.

use crate::app;
use sssync_core::server::{
    Engine, EngineBuilder, FaultHook, FaultPoint, PgStore, SqliteStore, Store, WriteRetry, router,
};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs the server until the process is killed (or its standard input closes). `db`: a SQLite
/// file's path, or a `postgres://` URL.
pub async fn serve(db: &str, busy_timeout: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let pages = Arc::new(AtomicU32::new(0));
    let armed: Arc<Mutex<Option<FaultPoint>>> = Arc::new(Mutex::new(None));
    let hook: FaultHook = {
        let armed = armed.clone();
        Arc::new(move |at: FaultPoint| {
            let hit = {
                let mut a = armed.lock().unwrap_or_else(|e| e.into_inner());
                if *a == Some(at) { a.take() } else { None }
            };
            if hit.is_some() {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "AT {at:?}");
                let _ = out.flush();
                // Hang here, inside the batch, until the harness kills the process.
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        })
    };
    let (app, sqlite) = if db.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(db)
            .await?;
        sqlx::raw_sql(app::SCHEMA).execute(&pool).await?;
        let engine = build(Engine::builder(PgStore::from_pool(pool).await?), hook).await?;
        (router(engine), None)
    } else {
        let options =
            SqliteStore::connect_options(&format!("sqlite://{db}"))?.busy_timeout(busy_timeout);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .before_acquire({
                let pages = pages.clone();
                move |conn, _| {
                    let n = match pages.load(Ordering::SeqCst) {
                        0 => 1_073_741_823,
                        n => n,
                    };
                    Box::pin(async move {
                        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {n}")))
                            .execute(&mut *conn)
                            .await?;
                        Ok(true)
                    })
                }
            })
            .connect_with(options)
            .await?;
        // Another process on the file (a second instance, a writer holding the lock) may keep
        // the short busy timeout busy: the start is tried again for a while, as a supervisor
        // restarts a server.
        let mut tries = 0;
        let engine = loop {
            let started = async {
                sqlx::raw_sql(app::SCHEMA).execute(&pool).await?;
                Ok::<_, Box<dyn std::error::Error>>(
                    build(
                        Engine::builder(SqliteStore::from_pool(pool.clone())),
                        hook.clone(),
                    )
                    .await?,
                )
            }
            .await;
            match started {
                Ok(e) => break e,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("sssync-fault serve: not started yet ({e}); again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        (router(engine), Some(pool))
    };
    let listener = sssync_core::server::listen("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    println!("LISTENING {addr}");
    std::io::stdout().flush()?;
    // Commands, one per line.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let point = match line.trim() {
            "crash before_commit" => Some(FaultPoint::BeforeCommit),
            "crash after_commit" => Some(FaultPoint::AfterCommit),
            "crash before_acks" => Some(FaultPoint::BeforeAcks),
            "full on" => {
                if let Some(pool) = &sqlite {
                    // (Asked again while the other instance keeps the file busy.)
                    for tries in 1.. {
                        match sqlx::query_scalar::<_, i64>("PRAGMA page_count")
                            .fetch_one(pool)
                            .await
                        {
                            Ok(n) => {
                                pages.store(n.max(1) as u32, Ordering::SeqCst);
                                break;
                            }
                            Err(_) if tries < 100 => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => {
                                eprintln!("sssync-fault serve: the disk stays as it is ({e})");
                                break;
                            }
                        }
                    }
                }
                None
            }
            "full off" => {
                pages.store(0, Ordering::SeqCst);
                None
            }
            "prune" => {
                if let Some(pool) = &sqlite {
                    // As an operator's job would: a database busy with the other instance is
                    // asked again for a while; one that stays busy is left unpruned (the step
                    // then lags nobody), never a reason for the server to exit.
                    let store = SqliteStore::from_pool(pool.clone());
                    for tries in 1.. {
                        match store.prune(0, 1_000_000).await {
                            Ok(_) => break,
                            Err(e) if SqliteStore::is_transient(&e) && tries < 100 => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => {
                                eprintln!("sssync-fault serve: not pruned ({e})");
                                break;
                            }
                        }
                    }
                }
                None
            }
            stall if stall.starts_with("stall ") => {
                let ms: u64 = stall["stall ".len()..].trim().parse().unwrap_or(0);
                if let Some(pool) = sqlite.clone() {
                    tokio::spawn(async move {
                        let mut held = Vec::new();
                        let until = tokio::time::Instant::now() + Duration::from_millis(ms);
                        while held.len() < pool.options().get_max_connections() as usize {
                            match tokio::time::timeout_at(until, pool.acquire()).await {
                                // Taken: nothing else of the engine's reads or writes.
                                Ok(Ok(c)) => held.push(c),
                                _ => break,
                            }
                        }
                        tokio::time::sleep_until(until).await;
                        drop(held);
                    });
                }
                None
            }
            other => {
                eprintln!("unknown command {other:?}");
                None
            }
        };
        if let Some(p) = point {
            *armed.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
        }
        println!("OK");
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// The fault app's engine, with quick retries and the fault hook.
async fn build<S: Store>(
    builder: EngineBuilder<S>,
    hook: FaultHook,
) -> Result<Engine<S>, sssync_core::server::EngineError>
where
    app::Counters: sssync_core::server::ServerQuery<S::Db>,
    app::Items: sssync_core::server::ServerQuery<S::Db>,
    app::ItemsRerun: sssync_core::server::ServerQuery<S::Db>,
    app::Incr: sssync_core::server::ServerEvent<S::Db>,
    app::AddItem: sssync_core::server::ServerEvent<S::Db>,
    app::DelItem: sssync_core::server::ServerEvent<S::Db>,
    app::Poison: sssync_core::server::ServerEvent<S::Db>,
    app::Invalid: sssync_core::server::ServerEvent<S::Db>,
    app::Flaky: sssync_core::server::ServerEvent<S::Db>,
{
    app::declare(builder)
        .write_retry(WriteRetry {
            attempts: 2,
            backoff: Duration::from_millis(5),
            resend_after: Duration::from_millis(50),
        })
        .fault_hook(hook)
        .start()
        .await
}
