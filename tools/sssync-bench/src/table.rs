//! The table `perf` prints: how big a run is ([`Size`]), one row ([`Line`]), and the floors a
//! `--check` run holds each guarded row to.

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// How big a run is: the full one (the figures of `docs/performance.md`) or a short pass (CI's
/// regression guard).
#[derive(Clone, Copy)]
pub struct Size {
    /// Seconds each server render is measured for.
    pub(crate) ssr_secs: f64,
    /// Clients, keys and writes of the many-keys fan-out.
    pub(crate) many_clients: usize,
    pub(crate) many_keys: usize,
    pub(crate) many_writes: usize,
    pub(crate) subscribers: usize,
    pub(crate) fan_writes: usize,
    pub(crate) events: usize,
    pub(crate) noop_changes: usize,
    pub(crate) idle: usize,
    pub(crate) big_rows: usize,
    pub(crate) missed: usize,
    /// Writes of the across-instances row, one at a time.
    pub(crate) across_writes: usize,
    /// Rows of the client row's query, and the deltas it receives.
    pub(crate) client_rows: usize,
    pub(crate) client_deltas: usize,
    /// Clients of the resume row that resume at once, on how many lists, and the writes
    /// measured meanwhile (at least).
    pub(crate) crowd: usize,
    pub(crate) crowd_keys: usize,
    pub(crate) crowd_writes: usize,
}

impl Size {
    pub const FULL: Size = Size {
        ssr_secs: 10.0,
        many_clients: 10_000,
        many_keys: 1000,
        many_writes: 400,
        subscribers: 1000,
        fan_writes: 20,
        events: 20_000,
        noop_changes: 5000,
        idle: 1000,
        big_rows: 10_000,
        missed: 1000,
        across_writes: 1000,
        client_rows: 10_000,
        client_deltas: 500,
        crowd: 2000,
        crowd_keys: 20,
        crowd_writes: 200,
    };
    pub const QUICK: Size = Size {
        ssr_secs: 3.0,
        many_clients: 1000,
        many_keys: 100,
        many_writes: 100,
        subscribers: 200,
        fan_writes: 10,
        events: 4000,
        noop_changes: 1000,
        idle: 200,
        big_rows: 2000,
        missed: 200,
        across_writes: 200,
        client_rows: 2000,
        client_deltas: 200,
        crowd: 400,
        crowd_keys: 10,
        crowd_writes: 50,
    };
}

/// One row of the table.
pub(crate) struct Line {
    pub(crate) what: String,
    pub(crate) target: &'static str,
    pub(crate) sssync: String,
    pub(crate) baseline: String,
    /// How many times better sssync is than the baseline (> 1: better).
    pub(crate) ratio: f64,
    /// Whether the target is met, where the figure decides it.
    pub(crate) met: Option<bool>,
}

/// The lowest ratio each guarded row may show in a `--check` run: far below what the full
/// run measures (see `docs/performance.md`), so that only a real regression trips it on a
/// shared, noisy machine.
const FLOORS: &[(&str, f64)] = &[
    ("write -> 1 key's subscribers", 1.1),
    ("bytes, 1-row change", 50.0),
    ("reconnect after missed changes", 5.0),
    ("events committed and fanned out", 0.4),
    ("idle connection memory", 0.1),
    // A doorbell that no longer rings leaves the other instance to its 250 ms poll: 0.01x.
    ("write on one instance", 0.05),
    // Resumes read in the tailer, one after another, hold every fan-out behind the whole crowd
    // (400 reads of a millisecond or more, an estimate: 0.005x and below); the quick pass
    // measures 0.1-0.4x.
    ("write -> its subscriber while", 0.02),
    ("SSR of the demo page", 0.4),
    // Measured 10x and more; a kept page that is rendered again every time shows about 1x.
    ("kept page", 3.0),
    ("hydrate bundle", 0.45),
];

/// Prints the rows as a Markdown table; with `check`, fails when a guarded row is below its
/// floor ([`FLOORS`]).
pub(crate) fn print(lines: &[Line], check: bool) -> Result<()> {
    println!("| what | target | sssync | baseline | ratio | target met |");
    println!("|---|---|---|---|---|---|");
    for l in lines {
        let met = match l.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        println!(
            "| {} | {} | {} | {} | {:.1}x | {met} |",
            l.what, l.target, l.sssync, l.baseline, l.ratio
        );
    }
    if check {
        let mut failed = Vec::new();
        for (prefix, floor) in FLOORS {
            for l in lines.iter().filter(|l| l.what.starts_with(prefix)) {
                if l.ratio < *floor {
                    failed.push(format!("{}: {:.1}x, below {floor}x", l.what, l.ratio));
                }
            }
        }
        if !failed.is_empty() {
            return Err(format!("regressions: {}", failed.join("; ")).into());
        }
        println!("check: every guarded ratio is above its floor");
    }
    Ok(())
}
