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

use crate::table::Size;
use std::time::Duration;

// One file a row (or a family of rows), the servers and clients they share apart.
mod across;
mod child;
mod client_row;
mod clients;
mod fan;
mod memory;
mod resume;
mod throughput;

use across::across_instances;
pub use child::serve;
use child::{Child, pg_schema};
use client_row::client_delta;
use fan::{bytes_one_change, fan_out, fan_out_keys};
use memory::idle_memory;
pub(crate) use resume::miss_and_resume;
use resume::{reconnect, resume_crowd};
use throughput::{no_op_change, plain_batched_writes, plain_writes, throughput};

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
    // The bundle's budget, checked once the table is out.
    let mut over_budget = None;
    if want("ssr") || want("bundle") {
        let built = crate::web::Built::find()?;
        if want("ssr") {
            eprintln!("perf: server render of a list page");
            lines.extend(crate::web::ssr(&built, size, &dir).await?);
        }
        if want("bundle") {
            let (line, over) = crate::web::bundle(&built)?;
            lines.push(line);
            let budget = crate::web::BUNDLE_BUDGET_OVER_PLAIN_KB;
            if over > budget {
                over_budget = Some(format!(
                    "the demo's hydrate bundle is {over:.1} KB over plain Leptos, over its budget \
                     of {budget} KB (tools/sssync-bench/src/web.rs): take the weight off, or \
                     say in docs/performance.md why the budget grows"
                ));
            } else {
                eprintln!(
                    "perf: the bundle, {over:.1} KB over plain Leptos, is within its budget ({budget} KB)"
                );
            }
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

    crate::table::print(&lines, check)?;
    match over_budget {
        Some(why) if check => Err(why.into()),
        Some(why) => {
            eprintln!("perf: {why}");
            Ok(())
        }
        None => Ok(()),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
