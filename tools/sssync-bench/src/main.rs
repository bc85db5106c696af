//! `sssync-bench`: measurements of sssync, over real loopback sockets and a real database.
//!
//! ```text
//! sssync-bench perf [--quick] [--check] [--pg URL] [--only fan,keys,bytes,reconnect,events,noop,idle,client,ssr,bundle,across]
//! sssync-bench instances [--pg URL] [--writes 1000] [--rows 10000] [--missed 1000]
//! ```
//!
//! `perf`: SPEC §6's targets, each beside a baseline measured in the same run, as a table with
//! the ratio (see `perf.rs`, `web.rs` and `docs/performance.md`; the `ssr` and `bundle` rows
//! measure the release build of the apps: `cargo leptos build --release` first). `--quick` is
//! the short pass CI runs;
//! `--check` fails when a guarded ratio drops below its floor; `--pg` adds the PostgreSQL rows
//! (among them `across`: a write on one instance to a subscriber of another).
//!
//! `instances`: two engines (two server instances, each with its own pool, tailer and HTTP
//! server on 127.0.0.1) on one PostgreSQL database, in a schema of their own. A client writes
//! through instance A, one write at a time; a subscriber on instance B waits for each write's
//! delta. It prints the delay from sending the event to the delta on B, and from A's
//! acknowledgement (the commit, durable and fanned out on A) to the delta on B, as p50/p99.
//! Then a subscriber of a result of `--rows` rows goes away, misses `--missed` changes, and
//! comes back to the other instance: it prints the bytes of that resume next to the bytes of the
//! whole result.

mod http;
mod perf;
mod table;
mod web;

use sssync_core::client::native::{NativeClient, Options};
use sssync_core::protocol::ServerMsg;
use sssync_core::server::{Engine, PgStore, router};
use sssync_fault::app::{self, Items, ListArgs};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match args.get(1).map(String::as_str) {
        Some("instances") => {
            let pg = arg(&args, "--pg").unwrap_or_else(|| {
                std::env::var("SSSYNC_TEST_PG")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
            });
            let writes = arg(&args, "--writes").unwrap_or(1000);
            let rows = arg(&args, "--rows").unwrap_or(10_000);
            let missed = arg(&args, "--missed").unwrap_or(1000);
            if let Err(e) = runtime.block_on(instances(&pg, writes, rows, missed)) {
                eprintln!("sssync-bench instances: {e}");
                std::process::exit(1);
            }
        }
        Some("perf") => {
            let size = if args.iter().any(|a| a == "--quick") {
                table::Size::QUICK
            } else {
                table::Size::FULL
            };
            let check = args.iter().any(|a| a == "--check");
            let only: Vec<String> = arg::<String>(&args, "--only")
                .map(|o| o.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            if let Err(e) = runtime.block_on(perf::run(size, arg(&args, "--pg"), check, &only)) {
                eprintln!("sssync-bench perf: {e}");
                std::process::exit(1);
            }
        }
        Some("serve") => {
            let db = args.get(2).cloned().unwrap_or_default();
            if let Err(e) = runtime.block_on(perf::serve(&db)) {
                eprintln!("sssync-bench serve: {e}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!(
                "usage: sssync-bench perf [--quick] [--check] [--pg URL]\n       \
                 sssync-bench instances [--pg URL] [--writes N] [--rows N] [--missed N]"
            );
            std::process::exit(2);
        }
    }
}

/// An instance: an engine on its own pool, served on 127.0.0.1.
struct Instance {
    engine: Engine<PgStore>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn start(pg: &str) -> Result<Instance, Box<dyn std::error::Error>> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(pg)
            .await?;
        sqlx::raw_sql(app::SCHEMA).execute(&pool).await?;
        let engine = app::declare(Engine::builder(PgStore::from_pool(pool).await?))
            .start()
            .await?;
        let listener = sssync_core::server::listen("127.0.0.1:0").await?;
        let url = format!("ws://{}/sssync/ws", listener.local_addr()?);
        let app = router(engine.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Instance { engine, url, task })
    }

    fn stop(self) {
        self.engine.shutdown();
        self.task.abort();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn instances(
    base: &str,
    writes: usize,
    rows: usize,
    missed: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use sqlx::Connection;
    let schema = format!("bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(base).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&mut admin)
    .await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let pg = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let a = Instance::start(&pg).await?;
    let b = Instance::start(&pg).await?;
    let wait = Duration::from_secs(30);

    // 1. A write through A, its delta on B.
    let acks: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let writer = NativeClient::connect_with(
        a.url.clone(),
        "bench-writer",
        Options {
            observer: Some({
                let acks = acks.clone();
                Arc::new(move |m: &ServerMsg| {
                    if let ServerMsg::Ack(ack) = m {
                        acks.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(ack.seq, Instant::now());
                    }
                })
            }),
            ..Options::default()
        },
    );
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watcher = NativeClient::connect_with(
        b.url.clone(),
        "bench-watcher",
        Options {
            observer: Some({
                let seen = seen.clone();
                Arc::new(move |m: &ServerMsg| {
                    if let ServerMsg::Delta(d) = m {
                        let now = Instant::now();
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        for p in &d.puts {
                            s.entry(p.row.key.to_string()).or_insert(now);
                        }
                    }
                })
            }),
            ..Options::default()
        },
    );
    let lat = ListArgs {
        list_id: "latency".into(),
    };
    watcher.subscribe::<Items>(&lat);
    watcher
        .wait_for(wait, |s| s.rows::<Items>(&lat).is_some())
        .await?;
    let mut to_delta = Vec::with_capacity(writes);
    let mut ack_to_delta = Vec::with_capacity(writes);
    for i in 0..writes {
        let id = format!("w{i}");
        let sent = Instant::now();
        let seq = writer
            .send(app::AddItem {
                uid: id.clone(),
                id: id.clone(),
                list_id: "latency".into(),
                title: format!("write {i}"),
            })
            .ok_or("refused")?;
        watcher
            .wait_for(wait, |_| {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&id)
            })
            .await?;
        writer
            .wait_for(wait, |_| {
                acks.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&seq)
            })
            .await?;
        let at_b = seen.lock().unwrap_or_else(|e| e.into_inner())[&id];
        let acked = acks.lock().unwrap_or_else(|e| e.into_inner())[&seq];
        to_delta.push(at_b - sent);
        ack_to_delta.push(at_b.saturating_duration_since(acked));
    }
    to_delta.sort();
    ack_to_delta.sort();
    println!("instances on one PostgreSQL database, {writes} writes, one at a time:");
    println!(
        "  event sent on A -> delta on B:         p50 {}, p99 {}, max {}",
        ms(percentile(&to_delta, 0.5)),
        ms(percentile(&to_delta, 0.99)),
        ms(*to_delta.last().expect("writes"))
    );
    println!(
        "  commit acknowledged on A -> delta on B: p50 {}, p99 {} (0 when B's delta came first)",
        ms(percentile(&ack_to_delta, 0.5)),
        ms(percentile(&ack_to_delta, 0.99)),
    );

    // 2. A reader of a big result misses changes and comes back to the other instance.
    let (snapshot, resume) =
        perf::miss_and_resume(&writer, a.url.clone(), b.url.clone(), rows, missed)
            .await
            .map_err(|e| e as Box<dyn std::error::Error>)?;
    println!(
        "reconnect to the other instance after {missed} missed changes to a {rows}-row result:"
    );
    println!(
        "  whole result {snapshot} bytes; resume {resume} bytes ({:.1}x fewer; {:.0} bytes per missed change)",
        snapshot as f64 / resume.max(1) as f64,
        resume as f64 / missed.max(1) as f64
    );
    a.stop();
    b.stop();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}
