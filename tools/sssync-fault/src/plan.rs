//! A scenario's plan: a pure function of its seed (the same seed gives the same clients, the
//! same events and the same faults in the same order), so that a failing run can be replayed.

/// A small, fast, seedable generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Where a crash happens (see `sssync_core::server::FaultPoint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAt {
    /// Mid-batch: the handlers ran, the commit did not happen.
    BeforeCommit,
    /// Between the commit and the fan-out and acknowledgements.
    AfterCommit,
    /// Deltas queued, acknowledgements not.
    BeforeAcks,
    /// Wherever the server happens to be.
    Anywhere,
}

/// An event a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Adds to a counter (not idempotent).
    Incr {
        /// Which counter (of three).
        counter: u8,
        /// How much.
        by: i64,
    },
    /// Adds an item to a list.
    AddItem {
        /// Which list (of two).
        list: u8,
    },
    /// Deletes an item added earlier (the `n`-th one, modulo how many there are).
    DelItem {
        /// Which.
        nth: u64,
    },
    /// Fails transiently this many times, then adds to a counter.
    Flaky {
        /// Transient failures.
        fails: u32,
    },
    /// Cannot succeed (rejected `internal`).
    Poison,
    /// Refused by the application.
    Invalid,
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A client sends an event.
    Send {
        /// Which client.
        client: usize,
        /// What.
        event: EventKind,
    },
    /// A client goes offline.
    Offline {
        /// Which.
        client: usize,
    },
    /// A client comes back.
    Online {
        /// Which.
        client: usize,
    },
    /// The proxy damages this many frames in 1,000 from now on.
    Storm {
        /// Per mille.
        rate: u32,
    },
    /// The server process is killed with SIGKILL (at a point of a batch), then restarted on the
    /// same file.
    Crash {
        /// Where.
        at: CrashAt,
    },
    /// The disk fills up (the database may not grow) or has room again.
    DiskFull {
        /// Full or not.
        on: bool,
    },
    /// Another connection holds the database's write lock for a while (`SQLITE_BUSY`).
    Busy {
        /// For how long, in milliseconds.
        ms: u64,
    },
    /// A copy of the database is taken (`VACUUM INTO`).
    Backup,
    /// The server is killed, the last copy restored over the file, the server restarted.
    Restore,
    /// The last copy is restored into the running database (its tables copied over, in one
    /// transaction): the same epoch, an older version, while the server runs.
    RestoreLive,
    /// A client (a tab) goes offline and is closed; a new one opens at once from what it stored
    /// (its pending events, under its client id), offline too.
    CloseTab {
        /// Which.
        client: usize,
    },
    /// A client (a tab) dies while online, in flight or not; a new one opens at once from what
    /// it stored.
    CrashTab {
        /// Which.
        client: usize,
    },
    /// A client moves to a second server process on the same file, which then cannot read the
    /// database for `ms` while the first one commits and prunes its change log past it.
    Lag {
        /// Which client.
        client: usize,
        /// How long the second instance stalls.
        ms: u64,
    },
    /// Time passes (under whatever faults are on).
    Pause {
        /// Milliseconds.
        ms: u64,
    },
}

/// A whole scenario.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Its seed.
    pub seed: u64,
    /// How many clients.
    pub clients: usize,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// The plan of `seed`.
    pub fn new(seed: u64) -> Plan {
        let mut r = Rng::new(seed);
        let clients = 2 + r.below(3) as usize;
        let n = 20 + r.below(41) as usize;
        let mut steps = Vec::with_capacity(n);
        let mut backed_up = false;
        for _ in 0..n {
            let client = r.below(clients as u64) as usize;
            let roll = r.below(1000);
            let step = match roll {
                0..=519 => Step::Send {
                    client,
                    event: event(&mut r),
                },
                520..=574 => Step::Offline { client },
                575..=639 => Step::Online { client },
                640..=699 => Step::Storm {
                    rate: [0, 0, 20, 50, 120][r.below(5) as usize],
                },
                700..=789 => Step::Pause {
                    ms: 1 + r.below(25),
                },
                790..=829 => Step::Crash {
                    at: [
                        CrashAt::BeforeCommit,
                        CrashAt::AfterCommit,
                        CrashAt::BeforeAcks,
                        CrashAt::Anywhere,
                    ][r.below(4) as usize],
                },
                830..=864 => Step::DiskFull { on: r.chance(600) },
                865..=889 => Step::Busy {
                    ms: 20 + r.below(150),
                },
                890..=909 => Step::CloseTab { client },
                910..=929 => Step::CrashTab { client },
                930..=949 => Step::Lag {
                    client,
                    ms: 200 + r.below(400),
                },
                950..=969 => {
                    backed_up = true;
                    Step::Backup
                }
                970..=984 if backed_up => Step::RestoreLive,
                _ if backed_up => Step::Restore,
                _ => Step::Backup,
            };
            if step == Step::Backup {
                backed_up = true;
            }
            steps.push(step);
        }
        Plan {
            seed,
            clients,
            steps,
        }
    }
}

fn event(r: &mut Rng) -> EventKind {
    match r.below(100) {
        0..=39 => EventKind::Incr {
            counter: r.below(3) as u8,
            by: 1 + r.below(9) as i64,
        },
        40..=64 => EventKind::AddItem {
            list: r.below(2) as u8,
        },
        65..=76 => EventKind::DelItem { nth: r.next_u64() },
        77..=86 => EventKind::Flaky {
            fails: 1 + r.below(4) as u32,
        },
        87..=92 => EventKind::Poison,
        _ => EventKind::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_a_function_of_its_seed() {
        let a = Plan::new(42);
        let b = Plan::new(42);
        assert_eq!((a.clients, &a.steps), (b.clients, &b.steps));
        assert_ne!(Plan::new(43).steps, a.steps);
    }

    #[test]
    fn plans_cover_every_fault() {
        let mut seen = [false; 12];
        for seed in 0..200 {
            for s in Plan::new(seed).steps {
                let i = match s {
                    Step::Crash {
                        at: CrashAt::BeforeCommit,
                    } => 0,
                    Step::Crash {
                        at: CrashAt::AfterCommit,
                    } => 1,
                    Step::Crash { .. } => 2,
                    Step::DiskFull { on: true } => 3,
                    Step::Busy { .. } => 4,
                    Step::Restore => 5,
                    Step::Storm { rate } if rate > 0 => 6,
                    Step::Send {
                        event: EventKind::Flaky { .. },
                        ..
                    } => 7,
                    Step::RestoreLive => 8,
                    Step::CloseTab { .. } => 9,
                    Step::CrashTab { .. } => 10,
                    Step::Lag { .. } => 11,
                    _ => continue,
                };
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }
}
