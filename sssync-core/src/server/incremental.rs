//! The incremental path (invariant 10's fast path, IVM) for declarative queries: one table, a
//! filter of equalities on the args, an order, an optional limit. Such a query is written as a
//! [`Shape`] (`#[sync_query(from = table, …)]` makes one) and the engine writes its SQL.
//!
//! Every query can be re-run and diffed; a declarative one need not be. When a commit changes
//! rows of its table, the tailer reads the changed rows' keys from the change log and fetches,
//! in the round's snapshot, only those rows that are in the result now, each with the key of
//! the row right before it in the result's order (a correlated sub-query the table's index
//! answers). The group's result is then patched in place: rows that left are deleted, the
//! others put right after their predecessor. A change costs in proportion to the rows it
//! touches, not to the result. A limited result whose window loses a row to an unchanged row
//! beyond it is read again in full (the patch cannot see past the window).
//!
//! The engine checks at start that the path is sound for the table as the database declares
//! it: every order column and the key `NOT NULL` (a NULL compares as unknown), and a key whose
//! text in the change log is the row's key (SQLite: a text or integer key; a BLOB key is logged
//! as hex). A query that fails a check, or whose rows' keys turn out not to be the key column's
//! text, is re-run and diffed like any other.

use crate::row::{Row, Rows};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One column of a declarative query's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Ascending.
    Asc(&'static str),
    /// Descending.
    Desc(&'static str),
}

impl Order {
    fn column(self) -> &'static str {
        match self {
            Order::Asc(c) | Order::Desc(c) => c,
        }
    }

    fn desc(self) -> bool {
        matches!(self, Order::Desc(_))
    }
}

/// A declarative query: the rows of `table` whose `filter` columns equal the args (bound in
/// that order), ordered by `order` then by the key, at most `limit` of them. Identifiers are
/// plain (ASCII letters, digits, `_`); the macro checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The table (declared with [`Table`](super::Table), whose key column is `key`).
    pub table: &'static str,
    /// The key column: the rows' keys are its values as text.
    pub key: &'static str,
    /// The columns the row is read from (empty: every column).
    pub columns: &'static [&'static str],
    /// Columns that equal the args, in bind order (`$1`, `$2`…).
    pub filter: &'static [&'static str],
    /// The order; the key comes last when it is not named.
    pub order: &'static [Order],
    /// At most this many rows (the first ones in the order).
    pub limit: Option<u32>,
}

fn q(ident: &str) -> String {
    format!("\"{ident}\"")
}

impl Shape {
    /// The order with the key as the last tie-breaker (a total order: every row has one
    /// predecessor).
    fn full_order(&self) -> Vec<Order> {
        let mut order: Vec<Order> = self.order.to_vec();
        if !order.iter().any(|o| o.column() == self.key) {
            order.push(Order::Asc(self.key));
        }
        order
    }

    fn columns_of(&self, alias: &str) -> String {
        if self.columns.is_empty() {
            format!("{alias}.*")
        } else {
            self.columns
                .iter()
                .map(|c| format!("{alias}.{}", q(c)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    fn filter_of(&self, alias: &str) -> Vec<String> {
        self.filter
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{alias}.{} = ${}", q(c), i + 1))
            .collect()
    }

    /// The query itself (the same SQL for SQLite and PostgreSQL): the rows in order.
    pub fn select_sql(&self) -> String {
        let mut sql = format!(
            "SELECT {} FROM {} AS t",
            self.columns_of("t"),
            q(self.table)
        );
        let filter = self.filter_of("t");
        if !filter.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&filter.join(" AND "));
        }
        sql.push_str(" ORDER BY ");
        sql.push_str(
            &self
                .full_order()
                .iter()
                .map(|o| format!("t.{}{}", q(o.column()), if o.desc() { " DESC" } else { "" }))
                .collect::<Vec<_>>()
                .join(", "),
        );
        if let Some(n) = self.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        sql
    }

    /// The incremental read: the rows among the keys bound last (a JSON array of the key
    /// column's texts) that are in the result, each with its key as text (`__sssync_key`) and
    /// the key of the row right before it in the result's order (`__sssync_prev`, NULL for the
    /// first).
    pub(crate) fn changed_sql(&self, dialect: &Dialect) -> String {
        let keys_param = format!("${}", self.filter.len() + 1);
        let order = self.full_order();
        // p comes before c: lexicographically on the order, built from the last column up.
        let mut before = String::new();
        for (i, o) in order.iter().enumerate().rev() {
            let col = q(o.column());
            let lt = if o.desc() { ">" } else { "<" };
            before = if i == order.len() - 1 {
                format!("p.{col} {lt} c.{col}")
            } else {
                format!("(p.{col} {lt} c.{col} OR (p.{col} = c.{col} AND {before}))")
            };
        }
        // The first column's bound alone lets the index seek to c's place.
        let first = order[0];
        let seek = format!(
            "p.{col} {} c.{col}",
            if first.desc() { ">=" } else { "<=" },
            col = q(first.column())
        );
        let mut prev_where = self.filter_of("p");
        prev_where.push(seek);
        prev_where.push(before);
        let reversed = order
            .iter()
            .map(|o| format!("p.{}{}", q(o.column()), if o.desc() { "" } else { " DESC" }))
            .collect::<Vec<_>>()
            .join(", ");
        // The changed rows are found by their key (the primary key's index), not by the filter
        // (a scan of the partition). SQLite: the keys are the outer loop (`CROSS JOIN` keeps
        // that order), each looked up by the key; the filter stays a comparison with the
        // column (not `+c.col`, which drops it), so that its affinity applies as in the full
        // read (`'5'` equals an INTEGER 5). A BLOB key (which a TEXT column can hold) is
        // logged as `x` and its hex: it is found too, and the engine then sees that its key
        // text is not the row's key (the query is re-run from then on) rather than missing the
        // row. PostgreSQL sees an array of keys.
        let key = q(self.key);
        let mut outer_where: Vec<String> = match dialect {
            // `coalesce(…, 0)` keeps the comparison (and the column's affinity) but no index
            // can answer it: with statistics (`ANALYZE`), SQLite would otherwise seek the
            // filter's index and scan a big partition once per changed key.
            Dialect::Sqlite => self
                .filter_of("c")
                .into_iter()
                .map(|f| format!("coalesce({f}, 0)"))
                .collect(),
            Dialect::Postgres { .. } => self.filter_of("c"),
        };
        let from = match dialect {
            Dialect::Sqlite => {
                outer_where.push(format!("c.{key} IN (k.value, unhex(substr(k.value, 2)))"));
                format!(
                    "json_each({keys_param}) AS k CROSS JOIN {} AS c",
                    q(self.table)
                )
            }
            Dialect::Postgres { key_type } => {
                outer_where.push(format!(
                    "c.{key} = ANY(ARRAY(SELECT CAST(x AS {key_type}) FROM \
                     jsonb_array_elements_text(CAST({keys_param} AS jsonb)) AS x))"
                ));
                format!("{} AS c", q(self.table))
            }
        };
        format!(
            "SELECT {cols}, {ckey} AS __sssync_key, \
             (SELECT {pkey} FROM {table} AS p WHERE {prev_where} ORDER BY {reversed} LIMIT 1) \
             AS __sssync_prev \
             FROM {from} WHERE {outer_where}",
            cols = self.columns_of("c"),
            ckey = dialect.key_text("c", self.key),
            pkey = dialect.key_text("p", self.key),
            table = q(self.table),
            prev_where = prev_where.join(" AND "),
            outer_where = outer_where.join(" AND "),
        )
    }

    /// Every column the incremental path orders by (the key included).
    pub(crate) fn order_columns(&self) -> Vec<&'static str> {
        self.full_order().iter().map(|o| o.column()).collect()
    }
}

/// The database the SQL is written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    /// The key column's type (to read the keys' texts as it).
    Postgres {
        key_type: String,
    },
}

impl Dialect {
    /// The key column's text, as the change log's triggers write it.
    fn key_text(&self, alias: &str, key: &str) -> String {
        let col = format!("{alias}.{}", q(key));
        match self {
            Dialect::Sqlite => format!(
                "CASE typeof({col}) WHEN 'blob' THEN 'x' || hex({col}) ELSE CAST({col} AS TEXT) END"
            ),
            Dialect::Postgres { .. } => format!("CAST({col} AS text)"),
        }
    }
}

/// What the database says of a column (for the checks at start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Its declared type (SQLite: as written; PostgreSQL: `format_type`).
    pub declared_type: String,
    /// Whether it may not be NULL (SQLite: `NOT NULL`, or an `INTEGER PRIMARY KEY`).
    pub not_null: bool,
}

/// A declarative query's incremental plan, made at start once the checks pass.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) table: &'static str,
    pub(crate) changed_sql: String,
    pub(crate) limit: Option<usize>,
    /// Turned off when a row's key turns out not to be the key column's text.
    pub(crate) sound: std::sync::atomic::AtomicBool,
}

impl Plan {
    pub(crate) fn new(shape: &Shape, dialect: &Dialect) -> Plan {
        Plan {
            table: shape.table,
            changed_sql: shape.changed_sql(dialect),
            limit: shape.limit.map(|n| n as usize),
            sound: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub(crate) fn is_sound(&self) -> bool {
        self.sound.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A row the incremental read found in the result: the row (keyed by the query's `row_key`),
/// its key column's text (the tailer checks they agree), and the key of the row before it.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub(crate) row: Row,
    pub(crate) key: String,
    pub(crate) prev: Option<Arc<str>>,
}

/// The outcome of patching a result with the changed rows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Patch {
    /// The result was patched: the rows put (in the new result's order: a put's anchor is a
    /// row the receiver has or a put before it) and the keys that left.
    Done {
        puts: Vec<crate::delta::Put>,
        dels: Vec<Arc<str>>,
    },
    /// The patch cannot tell the new result (a limited window that lost rows, or rows whose
    /// predecessor it does not hold): the query must be read again in full. Nothing changed.
    Rerun,
    /// The changed rows contradict each other (their predecessors make a cycle: the read was
    /// not one snapshot). The result was partly patched and is no longer known: the caller
    /// drops it (a diff against it would be wrong).
    Inconsistent,
}

/// Patches `rows` (a result) with the rows the incremental read `found` among the `changed`
/// keys: `changed` rows not found left the result; the found ones go right after their
/// predecessor. With a `limit`, the rows past it leave; a window that was full and would be
/// short is not patched (`Rerun`: unchanged rows beyond the window would move in).
pub(crate) fn patch(
    rows: &mut Rows,
    changed: &HashSet<Arc<str>>,
    found: Vec<Found>,
    limit: Option<usize>,
) -> Patch {
    // The window was full: rows beyond it may exist, which the patch cannot see. Work on a
    // copy and keep it only if the window stays full.
    if let Some(n) = limit
        && rows.len() >= n
    {
        let mut copy = rows.clone();
        return match patch_in(&mut copy, changed, found, limit, true) {
            out @ Patch::Done { .. } => {
                *rows = copy;
                out
            }
            // The copy goes: `rows` is untouched.
            Patch::Rerun | Patch::Inconsistent => Patch::Rerun,
        };
    }
    patch_in(rows, changed, found, limit, false)
}

fn patch_in(
    rows: &mut Rows,
    changed: &HashSet<Arc<str>>,
    found: Vec<Found>,
    limit: Option<usize>,
    beyond_may_exist: bool,
) -> Patch {
    let found_keys: HashSet<Arc<str>> = found.iter().map(|f| f.row.key.clone()).collect();
    if found_keys.len() != found.len() || found_keys.iter().any(|k| !changed.contains(k)) {
        return Patch::Rerun;
    }
    // A found row that keeps its place (its predecessor is the same unchanged row, or it stays
    // first) is replaced where it is.
    let predecessor = |rows: &Rows, key: &str| -> Option<Option<Arc<str>>> {
        let i = rows.position(key)?;
        Some(i.checked_sub(1).map(|p| rows.rows()[p].key.clone()))
    };
    let stays = |rows: &Rows, f: &Found| -> bool {
        predecessor(rows, &f.row.key).is_some_and(|p| {
            p.as_deref() == f.prev.as_deref()
                && f.prev.as_ref().is_none_or(|k| !changed.contains(k))
        })
    };
    // Before anything changes, every found row's predecessor must be one the patch will have:
    // none (first), a row that stays (unchanged, or found in place), or another found row.
    // Otherwise (only possible past a full window) it lies beyond the window.
    let in_place: HashSet<Arc<str>> = found
        .iter()
        .filter(|f| stays(rows, f))
        .map(|f| f.row.key.clone())
        .collect();
    let resolvable = |k: &Arc<str>| {
        found_keys.contains(k)
            || (rows.get(k).is_some() && (!changed.contains(k) || in_place.contains(k)))
    };
    let unresolved = found
        .iter()
        .any(|f| f.prev.as_ref().is_some_and(|p| !resolvable(p)));
    if unresolved && !beyond_may_exist {
        return Patch::Rerun;
    }
    let old_len = rows.len();
    // The changed rows the receiver has now.
    let was_there: HashSet<Arc<str>> = changed
        .iter()
        .filter(|k| rows.get(k).is_some())
        .cloned()
        .collect();
    let mut left: Vec<Arc<str>> = Vec::new();
    let mut rewritten: HashSet<Arc<str>> = HashSet::new();
    // 1. In place.
    let mut moving = Vec::with_capacity(found.len());
    for f in found {
        if in_place.contains(&f.row.key) {
            if rows.get(&f.row.key).is_some_and(|old| !old.same(&f.row)) {
                rewritten.insert(f.row.key.clone());
                rows.replace(f.row);
            }
        } else {
            moving.push(f);
        }
    }
    // 2. The other changed rows go (those found come back below).
    for k in changed {
        if in_place.contains(k) {
            continue;
        }
        if let Some(old) = rows.remove(k)
            && !found_keys.contains(k)
        {
            left.push(old.key);
        }
    }
    // 3. Each found row after its predecessor, following the chains from rows already there.
    let mut after: HashMap<Option<Arc<str>>, Found> = HashMap::with_capacity(moving.len());
    for f in moving {
        after.insert(f.prev.clone(), f);
    }
    let mut placed: Vec<Arc<str>> = Vec::new();
    let mut ready: Vec<Option<Arc<str>>> = after
        .keys()
        .filter(|p| p.as_ref().is_none_or(|k| rows.get(k).is_some()))
        .cloned()
        .collect();
    while let Some(p) = ready.pop() {
        let Some(f) = after.remove(&p) else { continue };
        let key = f.row.key.clone();
        if !rows.insert_after(p.as_deref(), f.row) {
            return Patch::Inconsistent; // cannot happen: the anchor was checked
        }
        placed.push(key.clone());
        if after.contains_key(&Some(key.clone())) {
            ready.push(Some(key));
        }
    }
    // What is left lies beyond a full window (checked above when it cannot: only rows whose
    // predecessors make a cycle are left here then); those the receiver had leave.
    if !after.is_empty() && !beyond_may_exist {
        return Patch::Inconsistent;
    }
    for f in after.into_values() {
        if was_there.contains(&f.row.key) {
            left.push(f.row.key);
        }
    }
    // 4. The window.
    if let Some(n) = limit {
        if rows.len() < n && old_len >= n && beyond_may_exist {
            return Patch::Rerun;
        }
        while rows.len() > n {
            let last = rows.rows()[rows.len() - 1].key.clone();
            rows.remove(&last);
            placed.retain(|k| *k != last);
            rewritten.remove(&last);
            if !changed.contains(&last) || was_there.contains(&last) {
                left.push(last);
            }
        }
    }
    // 5. The delta: the rows put, in their new order; the keys that left.
    let mut puts: Vec<(usize, Arc<str>)> = placed
        .into_iter()
        .chain(rewritten)
        .filter_map(|k| Some((rows.position(&k)?, k)))
        .collect();
    puts.sort();
    let puts = puts
        .into_iter()
        .map(|(i, _)| crate::delta::Put {
            row: rows.rows()[i].clone(),
            after: i.checked_sub(1).map(|p| rows.rows()[p].key.clone()),
        })
        .collect();
    left.sort();
    left.dedup();
    Patch::Done { puts, dels: left }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta;

    fn row(k: &str, v: i64) -> Row {
        Row::from_serialize(k, &v).unwrap()
    }

    /// A table of (key, order value) rows; the result is those in `keep`, ordered by value
    /// then key, at most `limit`.
    fn result(table: &[(&str, i64)], limit: Option<usize>) -> Rows {
        let mut t: Vec<(i64, &str)> = table.iter().map(|(k, v)| (*v, *k)).collect();
        t.sort();
        let mut rows: Vec<Row> = t.into_iter().map(|(v, k)| row(k, v)).collect();
        if let Some(n) = limit {
            rows.truncate(n);
        }
        Rows::new(rows).unwrap()
    }

    /// What the incremental read answers for `changed` keys against the table.
    fn read(table: &[(&str, i64)], changed: &[&str]) -> Vec<Found> {
        let mut t: Vec<(i64, &str)> = table.iter().map(|(k, v)| (*v, *k)).collect();
        t.sort();
        t.iter()
            .enumerate()
            .filter(|(_, (_, k))| changed.contains(k))
            .map(|(i, (v, k))| Found {
                row: row(k, *v),
                key: k.to_string(),
                prev: i.checked_sub(1).map(|p| Arc::from(t[p].1)),
            })
            .collect()
    }

    /// Patches the result of `before` into that of `after`, checks it equals the result read
    /// in full, and that the delta takes a client from the old result to the new one.
    fn check(before: &[(&str, i64)], after: &[(&str, i64)], limit: Option<usize>) -> Patch {
        let mut keys: Vec<&str> = before
            .iter()
            .chain(after)
            .map(|(k, _)| *k)
            .filter(|k| before.iter().find(|r| r.0 == *k) != after.iter().find(|r| r.0 == *k))
            .collect();
        keys.sort();
        keys.dedup();
        let old = result(before, limit);
        let mut rows = old.clone();
        let changed: HashSet<Arc<str>> = keys.iter().map(|k| Arc::from(*k)).collect();
        let out = patch(&mut rows, &changed, read(after, &keys), limit);
        match &out {
            Patch::Done { puts, dels } => {
                let want = result(after, limit);
                assert_eq!(rows, want, "patched {before:?} -> {after:?}");
                assert_eq!(rows.digest(), want.digest());
                let mut client = old.clone();
                delta::apply(
                    &mut client,
                    &delta::Delta {
                        puts: puts.clone(),
                        dels: dels.clone(),
                    },
                )
                .unwrap();
                assert_eq!(client, want, "the delta of {before:?} -> {after:?}");
            }
            Patch::Rerun => assert_eq!(rows, old, "a rerun changes nothing"),
            Patch::Inconsistent => panic!("one snapshot's rows are never inconsistent"),
        }
        out
    }

    #[test]
    fn a_change_is_patched_in_place_and_only_its_rows_are_put() {
        let before = [("a", 1), ("b", 2), ("c", 3), ("d", 4)];
        // Appended at the end.
        let out = check(
            &before,
            &[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)],
            None,
        );
        assert!(
            matches!(out, Patch::Done { ref puts, ref dels } if puts.len() == 1 && dels.is_empty())
        );
        // Changed where it is (a toggle): one put, anchored where it was.
        let out = check(&before, &[("a", 1), ("b", 2), ("c", 3), ("d", 4)], None);
        assert_eq!(
            out,
            Patch::Done {
                puts: vec![],
                dels: vec![]
            }
        );
        // Moved, deleted, inserted in the middle, several at once.
        check(&before, &[("b", 2), ("c", 3), ("d", 4), ("a", 5)], None);
        check(&before, &[("a", 1), ("c", 3), ("d", 4)], None);
        check(
            &before,
            &[("a", 1), ("x", 2), ("y", 2), ("b", 2), ("c", 3), ("d", 4)],
            None,
        );
        check(&before, &[("d", 0), ("c", 1), ("b", 7), ("a", 9)], None);
        check(&before, &[], None);
        check(&[], &[("a", 1), ("b", 2)], None);
    }

    #[test]
    fn a_limited_window_is_patched_or_read_again_when_it_cannot_tell() {
        let before = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)];
        // A new first row pushes the last one out of the window.
        let out = check(
            &before,
            &[("z", 0), ("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)],
            Some(3),
        );
        assert!(matches!(out, Patch::Done { ref dels, .. } if dels == &[Arc::<str>::from("c")]));
        // A row beyond the window changes: nothing to do.
        check(
            &before,
            &[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 9)],
            Some(3),
        );
        // A row of the window leaves: d would move in, which the patch cannot see.
        assert_eq!(
            check(&before, &[("a", 1), ("c", 3), ("d", 4), ("e", 5)], Some(3)),
            Patch::Rerun
        );
        // A row moves from the window to beyond it: the same.
        assert_eq!(
            check(
                &before,
                &[("a", 9), ("b", 2), ("c", 3), ("d", 4), ("e", 5)],
                Some(3)
            ),
            Patch::Rerun
        );
        // The window was not full: no row beyond it, every change is patched.
        check(&[("a", 1), ("b", 2)], &[("b", 2)], Some(3));
        check(
            &[("a", 1), ("b", 2)],
            &[("a", 1), ("b", 2), ("c", 0), ("d", 7)],
            Some(3),
        );
    }

    #[test]
    fn random_changes_patch_to_the_result_read_in_full() {
        // A small deterministic generator: many random tables and changes.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        for _ in 0..3000 {
            let table = |next: &mut dyn FnMut(u64) -> u64| -> Vec<(&str, i64)> {
                let mut t = Vec::new();
                for k in &names {
                    if next(3) > 0 {
                        t.push((k.as_str(), next(6) as i64));
                    }
                }
                t
            };
            let before = table(&mut next);
            let mut after = before.clone();
            for _ in 0..(1 + next(4)) {
                let k = names[next(12) as usize].as_str();
                after.retain(|(x, _)| *x != k);
                if next(4) > 0 {
                    after.push((k, next(6) as i64));
                }
            }
            let limit = if next(2) == 0 {
                None
            } else {
                Some(1 + next(6) as usize)
            };
            check(&before, &after, limit);
        }
    }

    #[test]
    fn the_sql_binds_the_filter_then_the_keys_and_orders_by_the_key_last() {
        let shape = Shape {
            table: "todos",
            key: "id",
            columns: &["id", "title"],
            filter: &["list_id"],
            order: &[Order::Asc("position")],
            limit: None,
        };
        assert_eq!(
            shape.select_sql(),
            "SELECT t.\"id\", t.\"title\" FROM \"todos\" AS t WHERE t.\"list_id\" = $1 \
             ORDER BY t.\"position\", t.\"id\""
        );
        let sql = shape.changed_sql(&Dialect::Sqlite);
        assert!(sql.contains("json_each($2)"), "{sql}");
        assert!(
            sql.contains("coalesce(c.\"list_id\" = $1, 0) AND c.\"id\" IN (k.value"),
            "{sql}"
        );
        assert!(
            sql.contains("json_each($2) AS k CROSS JOIN \"todos\" AS c"),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY p.\"position\" DESC, p.\"id\" DESC LIMIT 1"),
            "{sql}"
        );
        let sql = shape.changed_sql(&Dialect::Postgres {
            key_type: "uuid".into(),
        });
        assert!(sql.contains("CAST(x AS uuid)"), "{sql}");
    }

    #[tokio::test]
    async fn on_sqlite_the_incremental_read_compares_the_filter_as_the_full_read_does() {
        // An INTEGER column filtered by a text arg: SQLite's column affinity makes '5' equal 5
        // in the full read; the incremental read must find the same rows, or a change to one
        // of them deletes it from the result.
        use sqlx::{Connection, Row as _};
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE grouped (id TEXT PRIMARY KEY NOT NULL, grp INTEGER NOT NULL, \
             pos INTEGER NOT NULL); \
             INSERT INTO grouped VALUES ('a', 5, 2), ('b', 5, 1), ('c', 6, 0), ('d', 5, 3);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let shape = Shape {
            table: "grouped",
            key: "id",
            columns: &["id"],
            filter: &["grp"],
            order: &[Order::Asc("pos")],
            limit: None,
        };
        let full: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(shape.select_sql()))
            .bind("5")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(full, ["b", "a", "d"]);
        let found: Vec<(String, Option<String>)> =
            sqlx::query(sqlx::AssertSqlSafe(shape.changed_sql(&Dialect::Sqlite)))
                .bind("5")
                .bind(r#"["a","c","d","gone"]"#)
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get("__sssync_key"), r.get("__sssync_prev")))
                .collect();
        let mut found = found;
        found.sort();
        assert_eq!(
            found,
            [
                ("a".into(), Some("b".into())),
                ("d".into(), Some("a".into()))
            ]
        );
        // A BLOB in the TEXT key column: logged as x and its hex, found by it.
        sqlx::raw_sql("INSERT INTO grouped VALUES (x'ABCD', 5, 9)")
            .execute(&mut conn)
            .await
            .unwrap();
        let keys: Vec<String> =
            sqlx::query(sqlx::AssertSqlSafe(shape.changed_sql(&Dialect::Sqlite)))
                .bind(5)
                .bind(r#"["xABCD"]"#)
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.get("__sssync_key"))
                .collect();
        assert_eq!(keys, ["xABCD"]);
        // With statistics that make the filter's index look selective (many one-row groups),
        // the changed rows are still found by their key, not by a seek on the filter.
        sqlx::raw_sql(
            "CREATE INDEX grouped_grp ON grouped (grp, pos); \
             WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
             INSERT INTO grouped SELECT 'r' || i, i, i FROM n; ANALYZE;",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            shape.changed_sql(&Dialect::Sqlite)
        )))
        .bind(5)
        .bind(r#"["a"]"#)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get("detail"))
        .collect();
        assert!(
            plan.iter()
                .any(|d| d.starts_with("SEARCH c USING INDEX sqlite_autoindex_grouped_1")),
            "{plan:#?}"
        );
    }
}
