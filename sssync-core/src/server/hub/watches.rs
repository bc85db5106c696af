//! Watches: what was derived from query results outside the hub (a kept server render) learns
//! when a commit may have changed them. A watch is told the dependencies of each key it reads
//! (before reading it) and is marked changed, once and for good, by the first round of the
//! tailer that fans out a commit touching one of them: before that round's writes are
//! acknowledged.

use super::{DepKey, lock};
use crate::server::store::Change;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Whether something derived from query results is still current (see [`Engine::watch`]).
///
/// [`Engine::watch`]: crate::server::Engine::watch
#[derive(Clone, Debug, Default)]
pub struct ChangeWatch {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    changed: AtomicBool,
}

impl ChangeWatch {
    /// False once a commit touched a dependency it was told of (or the database's history
    /// changed): what it guards must be made again.
    pub fn is_current(&self) -> bool {
        !self.state.changed.load(Ordering::Acquire)
    }

    /// Marks it changed (what it guards failed, or must not be reused).
    pub fn set_changed(&self) {
        self.state.changed.store(true, Ordering::Release);
    }
}

/// The watches of one engine, by dependency. Bounded by the watches alive: a changed watch
/// leaves every list at once, a dropped one at the next sweep.
#[derive(Default)]
pub(crate) struct Watches {
    inner: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    by_dep: HashMap<DepKey, Vec<Weak<State>>>,
    /// Entries in `by_dep`, and how many there may be before the next sweep.
    entries: usize,
    sweep_at: usize,
}

/// The fewest entries a sweep waits for.
const FIRST_SWEEP: usize = 1024;

impl Watches {
    /// Tells `watch` that what it guards depends on `deps`.
    pub(crate) fn add(&self, watch: &ChangeWatch, deps: Vec<DepKey>) {
        let mut lists = lock(&self.inner);
        for d in deps {
            lists
                .by_dep
                .entry(d)
                .or_default()
                .push(Arc::downgrade(&watch.state));
            lists.entries += 1;
        }
        if lists.entries > lists.sweep_at.max(FIRST_SWEEP) {
            lists.by_dep.retain(|_, ws| {
                ws.retain(|w| w.strong_count() > 0);
                !ws.is_empty()
            });
            lists.entries = lists.by_dep.values().map(Vec::len).sum();
            lists.sweep_at = lists.entries * 2;
        }
    }

    /// Marks changed every watch some changes touch (as the hub's `touched` finds keys).
    pub(crate) fn touched(&self, changes: &[Change]) {
        let mut lists = lock(&self.inner);
        let mut hit: Vec<DepKey> = Vec::new();
        for c in changes {
            if c.whole {
                hit.extend(lists.by_dep.keys().filter(|d| d.table == c.table).cloned());
                continue;
            }
            hit.push(DepKey {
                table: c.table.clone(),
                part: None,
            });
            if c.part.is_some() {
                hit.push(DepKey {
                    table: c.table.clone(),
                    part: c.part.clone(),
                });
            }
        }
        for d in hit {
            if let Some(ws) = lists.by_dep.remove(&d) {
                lists.entries -= ws.len();
                for w in ws.iter().filter_map(Weak::upgrade) {
                    w.changed.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Marks every watch changed (the database's history changed under this instance).
    pub(crate) fn change_all(&self) {
        let mut lists = lock(&self.inner);
        for w in lists.by_dep.values().flatten().filter_map(Weak::upgrade) {
            w.changed.store(true, Ordering::Release);
        }
        lists.by_dep.clear();
        lists.entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Version;

    fn dep(table: &str, part: Option<&str>) -> DepKey {
        DepKey {
            table: table.into(),
            part: part.map(Into::into),
        }
    }

    fn change(table: &str, part: Option<&str>, whole: bool) -> Change {
        Change {
            version: Version(1),
            table: table.into(),
            part: part.map(Into::into),
            whole,
        }
    }

    #[test]
    fn a_watch_changes_with_a_commit_to_what_it_reads_and_only_then() {
        let watches = Watches::default();
        let (list_a, list_b, any) = (
            ChangeWatch::default(),
            ChangeWatch::default(),
            ChangeWatch::default(),
        );
        watches.add(&list_a, vec![dep("todos", Some("a"))]);
        watches.add(
            &list_b,
            vec![dep("todos", Some("b")), dep("lists", Some("b"))],
        );
        watches.add(&any, vec![dep("todos", None)]);
        watches.touched(&[change("todos", Some("a"), false)]);
        assert!(!list_a.is_current());
        assert!(list_b.is_current(), "another partition");
        assert!(!any.is_current(), "any row of the table");
        watches.touched(&[change("lists", Some("b"), false)]);
        assert!(!list_b.is_current());
    }

    #[test]
    fn a_whole_table_change_or_a_new_history_changes_every_watch_on_it() {
        let watches = Watches::default();
        let (a, b, other) = (
            ChangeWatch::default(),
            ChangeWatch::default(),
            ChangeWatch::default(),
        );
        watches.add(&a, vec![dep("todos", Some("a"))]);
        watches.add(&b, vec![dep("todos", Some("b"))]);
        watches.add(&other, vec![dep("users", None)]);
        watches.touched(&[change("todos", None, true)]);
        assert!(!a.is_current() && !b.is_current());
        assert!(other.is_current());
        watches.change_all();
        assert!(!other.is_current());
    }

    #[test]
    fn dropped_watches_leave_the_lists() {
        let watches = Watches::default();
        let kept = ChangeWatch::default();
        watches.add(&kept, vec![dep("t", Some("kept"))]);
        for i in 0..10 * FIRST_SWEEP {
            watches.add(
                &ChangeWatch::default(),
                vec![dep("t", Some(&i.to_string()))],
            );
        }
        let entries = lock(&watches.inner).entries;
        assert!(
            entries <= 2 * FIRST_SWEEP,
            "{entries} entries kept for dropped watches"
        );
        watches.touched(&[change("t", Some("kept"), false)]);
        assert!(!kept.is_current());
    }
}
