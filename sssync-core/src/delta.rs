//! Deltas (protocol invariant 4): the row puts and deletes that turn a result at one version
//! into the result at a later one.
//!
//! A delta carries only rows that changed: new rows, rows whose JSON changed, rows that moved,
//! and the keys of rows that left. Each put names the row it now follows (`after`, `None` for the
//! first row), so the receiver keeps the query's order without ever receiving the whole list.
//! [`diff`] keeps the rows of a longest increasing subsequence in place, so a move costs one put
//! per moved row, not one per row between.
//!
//! Applying: delete the `dels`, then place each put, in order, right after its anchor
//! ([`apply`]). Puts are listed in the new result's order, so each anchor is either a row that
//! did not move or a put already placed.

use crate::row::{Row, Rows};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::Arc;

/// A row that is new, changed or moved, and the row it now follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// The row.
    pub row: Row,
    /// The key of the row right before it in the result; `None` when it is the first.
    pub after: Option<Arc<str>>,
}

/// What turns one version of a result into another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Rows to put, in the new result's order.
    pub puts: Vec<Put>,
    /// Keys of rows that left the result.
    pub dels: Vec<Arc<str>>,
}

impl Delta {
    /// Whether the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.dels.is_empty()
    }
}

/// A delta did not fit the rows it was applied to (the receiver must resync that query).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A put's anchor is not in the result.
    #[error("delta anchor {0:?} is not in the result")]
    MissingAnchor(String),
}

/// The delta from `old` to `new`.
pub fn diff(old: &Rows, new: &Rows) -> Delta {
    let dels = old
        .rows()
        .iter()
        .filter(|r| new.get(&r.key).is_none())
        .map(|r| r.key.clone())
        .collect();
    // Unchanged rows, in new order, with their old positions: the longest run of them that is
    // still in old order stays put; every other row is sent.
    let unchanged: Vec<(usize, usize)> = new
        .rows()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let o = old.position(&r.key)?;
            old.rows()[o].same(r).then_some((i, o))
        })
        .collect();
    let stay: HashSet<usize> = longest_increasing(&unchanged);
    let puts = new
        .rows()
        .iter()
        .enumerate()
        .filter(|(i, _)| !stay.contains(i))
        .map(|(i, r)| Put {
            row: r.clone(),
            after: i.checked_sub(1).map(|p| new.rows()[p].key.clone()),
        })
        .collect();
    Delta { puts, dels }
}

/// The first components (new positions) of a longest subsequence of `pairs` whose second
/// components (old positions) increase. O(n log n).
fn longest_increasing(pairs: &[(usize, usize)]) -> HashSet<usize> {
    // tails[k]: index into `pairs` of the smallest tail of an increasing run of length k+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; pairs.len()];
    for (j, &(_, old)) in pairs.iter().enumerate() {
        let k = tails.partition_point(|&t| pairs[t].1 < old);
        prev[j] = k.checked_sub(1).map(|p| tails[p]);
        if k == tails.len() {
            tails.push(j);
        } else {
            tails[k] = j;
        }
    }
    let mut keep = HashSet::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(j) = at {
        keep.insert(pairs[j].0);
        at = prev[j];
    }
    keep
}

/// The digest `rows` would have after `delta`, or `None` when the delta cannot apply to them
/// (a put after a row that is not there, or after itself): worked out from the delta's rows
/// alone, in time proportional to the delta, without changing `rows`. When it is `Some`,
/// [`apply`] succeeds and gives rows with that digest.
pub fn digest_after(rows: &Rows, delta: &Delta) -> Option<crate::row::Digest> {
    use std::collections::HashMap;
    let mut digest = rows.digest();
    // Keys of `rows` the delta removed (and did not put again), and the rows it put so far.
    let mut gone: HashSet<&str> = HashSet::new();
    let mut put: HashMap<&str, &Row> = HashMap::new();
    for k in &delta.dels {
        if let Some(old) = rows.get(k)
            && gone.insert(k)
        {
            digest.remove(old);
        }
    }
    for p in &delta.puts {
        let key = &*p.row.key;
        let there = |k: &str| put.contains_key(k) || (rows.get(k).is_some() && !gone.contains(k));
        if let Some(after) = p.after.as_deref()
            && (after == key || !there(after))
        {
            return None;
        }
        match put.get(key) {
            Some(old) => digest.remove(old),
            None => {
                if let Some(old) = rows.get(key)
                    && gone.insert(key)
                {
                    digest.remove(old);
                }
            }
        }
        digest.add(&p.row);
        put.insert(key, &p.row);
    }
    Some(digest)
}

/// Applies `delta` to `rows`. On error `rows` may be partly changed: the caller resyncs.
pub fn apply(rows: &mut Rows, delta: &Delta) -> Result<(), ApplyError> {
    for k in &delta.dels {
        rows.remove(k);
    }
    for put in &delta.puts {
        if !rows.insert_after(put.after.as_deref(), put.row.clone()) {
            return Err(ApplyError::MissingAnchor(
                put.after.as_deref().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(())
}

// On the wire a put is `{"k": key, "r": row, "a": after-or-null}`.
impl Serialize for Put {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Put", 3)?;
        st.serialize_field("k", &*self.row.key)?;
        st.serialize_field("r", &*self.row.value)?;
        st.serialize_field("a", &self.after.as_deref())?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Put {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Put, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            k: String,
            r: Box<RawValue>,
            #[serde(default)]
            a: Option<String>,
        }
        let w = Wire::deserialize(d)?;
        Ok(Put {
            row: Row::new(w.k, w.r),
            after: w.a.map(Arc::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: &str, v: i64) -> Row {
        Row::from_serialize(k, &v).unwrap()
    }

    /// A small deterministic generator (`next(n)`: below `n`), so that the random tests are
    /// reproducible without a dependency.
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    fn rows(items: &[(&str, i64)]) -> Rows {
        Rows::new(items.iter().map(|&(k, v)| row(k, v)).collect()).unwrap()
    }

    fn check(old: &Rows, new: &Rows) -> Delta {
        let d = diff(old, new);
        let mut got = old.clone();
        apply(&mut got, &d).unwrap();
        assert_eq!(got, *new, "applying diff(old, new) to old gives new");
        assert_eq!(got.digest(), new.digest());
        // Through the wire too.
        let wire: Delta = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(wire, d);
        d
    }

    #[test]
    fn invariant_4_delta_carries_only_changed_rows() {
        let old = rows(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
        let new = rows(&[("a", 1), ("b", 20), ("d", 4), ("e", 5)]);
        let d = check(&old, &new);
        let put_keys: Vec<_> = d.puts.iter().map(|p| &*p.row.key).collect();
        assert_eq!(put_keys, ["b", "e"]);
        assert_eq!(d.dels, vec![Arc::from("c")]);
        assert!(check(&new, &new).is_empty());
    }

    #[test]
    fn invariant_4_one_change_in_a_big_result_is_one_put() {
        let old = Rows::new((0..1000).map(|i| row(&format!("k{i}"), i)).collect()).unwrap();
        let mut changed = old.rows().to_vec();
        changed[500] = row("k500", -1);
        let d = check(&old, &Rows::new(changed).unwrap());
        assert_eq!(d.puts.len(), 1);
        assert!(d.dels.is_empty());
    }

    #[test]
    fn invariant_4_order_is_kept_through_moves() {
        let old = rows(&[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]);
        // "e" moves to the front: one put, not five.
        let d = check(
            &old,
            &rows(&[("e", 5), ("a", 1), ("b", 2), ("c", 3), ("d", 4)]),
        );
        assert_eq!(d.puts.len(), 1);
        check(
            &old,
            &rows(&[("e", 5), ("d", 4), ("c", 3), ("b", 2), ("a", 1)]),
        );
        check(&old, &rows(&[("b", 2), ("x", 0), ("a", 1)]));
        check(&old, &Rows::default());
        check(&Rows::default(), &old);
    }

    #[test]
    fn digest_after_tells_without_applying_whether_and_to_what_a_delta_applies() {
        // Random deltas, most of them not diffs (puts after rows that are not there, after
        // themselves, twice; deletes of rows that are not there): `digest_after` says what
        // `apply` does, and changes nothing.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut applied, mut refused) = (0, 0);
        for _ in 0..2000 {
            let mut keys: Vec<u64> = (0..next(8)).map(|_| next(10)).collect();
            let mut seen = HashSet::new();
            keys.retain(|k| seen.insert(*k));
            let before = Rows::new(
                keys.iter()
                    .map(|k| row(&format!("k{k}"), next(3) as i64))
                    .collect(),
            )
            .unwrap();
            let key = |k: u64| Arc::<str>::from(format!("k{k}"));
            let delta = Delta {
                dels: (0..next(3)).map(|_| key(next(10))).collect(),
                puts: (0..next(4))
                    .map(|_| Put {
                        row: row(&format!("k{}", next(10)), next(3) as i64),
                        after: (next(4) > 0).then(|| key(next(10))),
                    })
                    .collect(),
            };
            let told = digest_after(&before, &delta);
            let mut got = before.clone();
            match (told, apply(&mut got, &delta)) {
                (Some(d), Ok(())) => {
                    assert_eq!(d, got.digest(), "{delta:?} on {before:?}");
                    assert_eq!(d, crate::row::Digest::of(got.rows()));
                    applied += 1;
                }
                (None, Err(_)) => refused += 1,
                (told, done) => panic!("{delta:?} on {before:?}: told {told:?}, apply {done:?}"),
            }
        }
        assert!(
            applied > 200 && refused > 200,
            "{applied} applied, {refused} refused"
        );
    }

    #[test]
    fn invariant_4_random_diffs_apply_exactly() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..500 {
            let make = |next: &mut dyn FnMut(u64) -> u64| {
                let mut keys: Vec<u64> = (0..next(12)).map(|_| next(16)).collect();
                keys.dedup();
                let mut seen = HashSet::new();
                keys.retain(|k| seen.insert(*k));
                Rows::new(
                    keys.iter()
                        .map(|k| row(&format!("k{k}"), next(3) as i64))
                        .collect(),
                )
                .unwrap()
            };
            let old = make(&mut next);
            let new = make(&mut next);
            check(&old, &new);
        }
    }

    #[test]
    fn a_missing_anchor_is_an_error() {
        let mut r = rows(&[("a", 1)]);
        let d = Delta {
            puts: vec![Put {
                row: row("b", 2),
                after: Some("zz".into()),
            }],
            dels: vec![],
        };
        assert_eq!(
            apply(&mut r, &d),
            Err(ApplyError::MissingAnchor("zz".into()))
        );
    }
}
