//! `sssync-fault`: the fault harness's commands.
//!
//! ```text
//! sssync-fault soak [--scenarios N] [--from SEED] [--jobs J]   N scenarios (default 10,000)
//! sssync-fault run --seed SEED                                  one scenario, step by step
//! sssync-fault serve --db FILE|URL [--busy-ms MS]               the server process of a scenario
//! ```

use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn usage() -> ! {
    eprintln!(
        "usage: sssync-fault soak [--scenarios N] [--from SEED] [--jobs J]\n\
         \x20      sssync-fault run --seed SEED\n\
         \x20      sssync-fault serve --db FILE|postgres://… [--busy-ms MS]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let exe = std::env::current_exe().expect("this program's path");
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let db: String = arg(&args, "--db").unwrap_or_else(|| usage());
            let busy = Duration::from_millis(arg(&args, "--busy-ms").unwrap_or(10_000));
            if let Err(e) = runtime.block_on(sssync_fault::serve::serve(&db, busy)) {
                eprintln!("sssync-fault serve: {e}");
                std::process::exit(1);
            }
        }
        Some("run") => {
            let seed: u64 = arg(&args, "--seed").unwrap_or_else(|| usage());
            match runtime.block_on(sssync_fault::run(seed, &exe, true)) {
                Ok(r) => println!("scenario {seed} passed: {r:?}"),
                Err(f) => {
                    println!("{f}");
                    std::process::exit(1);
                }
            }
        }
        Some("soak") => {
            let count: u64 = arg(&args, "--scenarios").unwrap_or(10_000);
            let from: u64 = arg(&args, "--from").unwrap_or(0);
            let jobs: usize = arg(&args, "--jobs").unwrap_or(4);
            let started = Instant::now();
            let mut done = 0u64;
            let (reports, failures) =
                runtime.block_on(sssync_fault::soak(&exe, from, count, jobs, |_, r| {
                    done += 1;
                    if let Err(f) = r {
                        println!("{f}");
                    }
                    if done.is_multiple_of(500) {
                        println!(
                            "… {done} of {count} scenarios in {:.0} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }));
            let kills: usize = reports.iter().map(|r| r.kills).sum();
            let restores: usize = reports.iter().map(|r| r.restores).sum();
            let events: usize = reports.iter().map(|r| r.events).sum();
            let faults: u64 = reports.iter().map(|r| r.faults).sum();
            println!(
                "{events} events, {kills} server processes killed (SIGKILL), {restores} backups \
                 restored, {faults} frames damaged, in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            println!("{}", sssync_fault::summary(&reports, &failures));
            if !failures.is_empty() {
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}
