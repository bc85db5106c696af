//! # sssync-fault
//!
//! The fault harness of sssync, in the spirit of deterministic simulation testing: each
//! scenario is a seeded plan (several clients, random events, among them a non-idempotent
//! counter increment, events whose handlers fail permanently or transiently) run against a real
//! server process on a real SQLite file, through a proxy that drops, duplicates, reorders,
//! delays and cuts WebSocket frames and connections, while the database refuses writes (a full
//! disk, another connection's write lock), the server process is killed with SIGKILL (mid-batch,
//! between commit and acknowledgement, anywhere) and restarted on the same file, and the file is
//! restored from an earlier copy. Every run must end with every client's view equal to the
//! database, every event that can apply applied exactly once (except those acknowledged between
//! a backup and its restore), nothing applied twice, and no client stuck (bounded time, bounded
//! frames).
//!
//! | module | what |
//! |---|---|
//! | [`app`] | the application the scenarios run |
//! | [`serve`] | the server process (`sssync-fault serve`), controlled on its standard input |
//! | [`proxy`] | the fault proxy between clients and server |
//! | [`plan`] | a scenario's plan: a pure function of its seed |
//! | [`run`] | running a scenario and checking its end |
//!
//! The binary: `sssync-fault soak --scenarios 10000` (prints `N scenarios: 0 lost, 0
//! duplicated, 0 stuck`), `sssync-fault run --seed N` (replays one, step by step).

pub mod app;
pub mod plan;
pub mod proxy;
pub mod run;
pub mod serve;

pub use run::{Failure, Report, Server, run};

/// Runs scenarios `from..from + count`, `jobs` at a time, with `exe` as the server program;
/// calls `progress` after each. Returns the reports and the failures.
pub async fn soak(
    exe: &std::path::Path,
    from: u64,
    count: u64,
    jobs: usize,
    mut progress: impl FnMut(u64, &Result<Report, Failure>),
) -> (Vec<Report>, Vec<Failure>) {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut out = (Vec::new(), Vec::new());
    for seed in from..from + count {
        let permit = limit.clone().acquire_owned().await.expect("never closed");
        let exe = exe.to_owned();
        set.spawn(async move {
            let r = run(seed, &exe, false).await;
            drop(permit);
            (seed, r)
        });
        // Collect what finished meanwhile (the set stays small).
        while let Some(Ok((seed, r))) = set.try_join_next() {
            progress(seed, &r);
            collect(r, &mut out);
        }
    }
    while let Some(done) = set.join_next().await {
        if let Ok((seed, r)) = done {
            progress(seed, &r);
            collect(r, &mut out);
        }
    }
    out
}

fn collect(r: Result<Report, Failure>, out: &mut (Vec<Report>, Vec<Failure>)) {
    match r {
        Ok(rep) => out.0.push(rep),
        Err(f) => out.1.push(f),
    }
}

/// The summary line of a soak: `N scenarios: L lost, D duplicated, S stuck`.
pub fn summary(reports: &[Report], failures: &[Failure]) -> String {
    let lost: usize = failures.iter().map(|f| f.lost.len()).sum();
    let duplicated: usize = failures.iter().map(|f| f.duplicated.len()).sum();
    let stuck = failures.iter().filter(|f| f.stuck.is_some()).count();
    let errors = failures.iter().filter(|f| f.other.is_some()).count();
    let mut line = format!(
        "{} scenarios: {lost} lost, {duplicated} duplicated, {stuck} stuck",
        reports.len() + failures.len()
    );
    if errors > 0 {
        line.push_str(&format!(", {errors} failed to run"));
    }
    line
}
