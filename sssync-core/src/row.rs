//! Rows, results and their digests.
//!
//! A query's result is an ordered list of rows, each with a stable key. On the wire and in
//! memory a row is its key plus its JSON text, kept as received: the server serializes a row
//! once and shares it between every subscriber; a client never re-serializes, so both sides hash
//! the same bytes.
//!
//! A result's [`Digest`] is order-independent (a wrapping sum of one hash per row), so a client
//! can check after any delta that it holds exactly the rows the server has (invariant 8).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One row of a result: a stable key and the row's JSON.
#[derive(Clone, Debug)]
pub struct Row {
    /// The row's key, unique within its result.
    pub key: Arc<str>,
    /// The row, as JSON text.
    pub value: Arc<RawValue>,
}

impl Row {
    /// A row from its key and an already-serialized JSON value.
    pub fn new(key: impl Into<Arc<str>>, value: Box<RawValue>) -> Row {
        Row {
            key: key.into(),
            value: Arc::from(value),
        }
    }

    /// A row from its key and any serializable value.
    pub fn from_serialize(
        key: impl Into<Arc<str>>,
        value: &impl Serialize,
    ) -> Result<Row, serde_json::Error> {
        Ok(Row::new(key, serde_json::value::to_raw_value(value)?))
    }

    /// Whether the two rows have the same key and the same JSON text.
    pub fn same(&self, other: &Row) -> bool {
        self.key == other.key && self.value.get() == other.value.get()
    }

    /// This row's contribution to its result's digest.
    pub fn hash(&self) -> u64 {
        row_hash(&self.key, self.value.get())
    }

    /// The row decoded as `T`.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.value.get())
    }
}

impl PartialEq for Row {
    fn eq(&self, other: &Row) -> bool {
        self.same(other)
    }
}

impl Eq for Row {}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Row", 2)?;
        st.serialize_field("k", &*self.key)?;
        st.serialize_field("r", &*self.value)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Row, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            k: String,
            r: Box<RawValue>,
        }
        let w = Wire::deserialize(d)?;
        Ok(Row::new(w.k, w.r))
    }
}

/// FNV-1a over the key, a separator and the JSON, then a 64-bit finalizer (splitmix64) so that
/// summing hashes does not cancel structure. The same on every platform (native, wasm32).
fn row_hash(key: &str, json: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0xffu8))
        .chain(json.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// An order-independent digest of a result: the wrapping sum of its rows' hashes and the count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digest {
    sum: u64,
    count: u64,
}

impl Digest {
    /// Adds a row.
    pub fn add(&mut self, row: &Row) {
        self.sum = self.sum.wrapping_add(row.hash());
        self.count += 1;
    }

    /// Removes a row (that was added).
    pub fn remove(&mut self, row: &Row) {
        self.sum = self.sum.wrapping_sub(row.hash());
        self.count -= 1;
    }

    /// The digest of `rows`, in any order.
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Digest {
        let mut d = Digest::default();
        for r in rows {
            d.add(r);
        }
        d
    }

    /// How many rows.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// On the wire: `"<16 hex digits>:<count>"` (a JSON number cannot carry 64 bits to JavaScript).
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{}", self.sum, self.count)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("invalid digest {s:?}"));
        let (sum, count) = s.split_once(':').ok_or_else(bad)?;
        Ok(Digest {
            sum: u64::from_str_radix(sum, 16).map_err(|_| bad())?,
            count: count.parse().map_err(|_| bad())?,
        })
    }
}

/// An ordered result with an index by key: what both sides keep per query key. Its rows are
/// shared ([`Rows::shared`]): handing them to a store costs no copy, and a change copies them
/// only while someone else still holds them.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    rows: Arc<Vec<Row>>,
    index: HashMap<Arc<str>, usize>,
    digest: Digest,
}

/// Two rows of one result had the same key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two rows have the key {0:?}: a result's keys must be unique")]
pub struct DuplicateKey(pub String);

impl Rows {
    /// A result from rows in order; their keys must be unique.
    pub fn new(rows: Vec<Row>) -> Result<Rows, DuplicateKey> {
        let mut index = HashMap::with_capacity(rows.len());
        let mut digest = Digest::default();
        for (i, r) in rows.iter().enumerate() {
            if index.insert(r.key.clone(), i).is_some() {
                return Err(DuplicateKey(r.key.to_string()));
            }
            digest.add(r);
        }
        Ok(Rows {
            rows: Arc::new(rows),
            index,
            digest,
        })
    }

    /// The rows, in order, shared (no copy: a later change to these rows copies them then,
    /// if this handle is still held).
    pub fn shared(&self) -> Arc<Vec<Row>> {
        self.rows.clone()
    }

    /// The rows, in order.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The row with `key`.
    pub fn get(&self, key: &str) -> Option<&Row> {
        self.index.get(key).map(|&i| &self.rows[i])
    }

    /// The position of the row with `key`.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The result's digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Consumes the result, giving its rows in order.
    pub fn into_rows(self) -> Vec<Row> {
        Arc::unwrap_or_clone(self.rows)
    }

    /// Removes the row with `key`, if any.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Row> {
        let i = self.index.remove(key)?;
        let row = Arc::make_mut(&mut self.rows).remove(i);
        self.digest.remove(&row);
        for r in &self.rows[i..] {
            *self.index.get_mut(&r.key).expect("indexed") -= 1;
        }
        Some(row)
    }

    /// Replaces the row with `row`'s key where it is; false (changing nothing) when there is
    /// none.
    pub(crate) fn replace(&mut self, row: Row) -> bool {
        let Some(&i) = self.index.get(&row.key) else {
            return false;
        };
        self.digest.remove(&self.rows[i]);
        self.digest.add(&row);
        Arc::make_mut(&mut self.rows)[i] = row;
        true
    }

    /// Puts `row` in place of the row with its key, or at the end when there is none.
    pub(crate) fn put_last(&mut self, row: Row) {
        if !self.replace(row.clone()) {
            let last = self.rows.last().map(|r| r.key.clone());
            self.insert_after(last.as_deref(), row);
        }
    }

    /// Inserts `row` right after the row keyed `after` (at the front when `None`). Returns false,
    /// changing nothing, when `after` is not here.
    pub(crate) fn insert_after(&mut self, after: Option<&str>, row: Row) -> bool {
        if let Some(k) = after
            && (k == &*row.key || !self.index.contains_key(k))
        {
            return false;
        }
        self.remove(&row.key);
        let at = after.map_or(0, |k| self.index[k] + 1);
        self.digest.add(&row);
        Arc::make_mut(&mut self.rows).insert(at, row);
        for (i, r) in self.rows.iter().enumerate().skip(at) {
            self.index.insert(r.key.clone(), i);
        }
        true
    }
}

impl PartialEq for Rows {
    fn eq(&self, other: &Rows) -> bool {
        self.rows == other.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(k: &str, v: i64) -> Row {
        Row::from_serialize(k, &v).unwrap()
    }

    #[test]
    fn invariant_8_digest_is_order_independent_and_sees_changes() {
        let a = [row("a", 1), row("b", 2), row("c", 3)];
        let b = [row("c", 3), row("a", 1), row("b", 2)];
        assert_eq!(Digest::of(&a), Digest::of(&b));
        let changed = [row("a", 1), row("b", 20), row("c", 3)];
        assert_ne!(Digest::of(&a), Digest::of(&changed));
        let fewer = [row("a", 1), row("b", 2)];
        assert_ne!(Digest::of(&a), Digest::of(&fewer));
        let d = Digest::of(&a);
        let wire = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&wire).unwrap(), d);
    }

    #[test]
    fn rows_reject_duplicate_keys() {
        assert_eq!(
            Rows::new(vec![row("a", 1), row("a", 2)]).unwrap_err(),
            DuplicateKey("a".into())
        );
    }

    #[test]
    fn insert_after_and_remove_keep_index_and_digest() {
        let mut r = Rows::new(vec![row("a", 1), row("b", 2), row("c", 3)]).unwrap();
        assert!(r.insert_after(Some("c"), row("a", 10)));
        assert_eq!(keys(&r), ["b", "c", "a"]);
        assert!(r.insert_after(None, row("d", 4)));
        assert_eq!(keys(&r), ["d", "b", "c", "a"]);
        assert!(!r.insert_after(Some("zz"), row("e", 5)));
        assert_eq!(r.remove("b").unwrap().key.as_ref(), "b");
        assert_eq!(keys(&r), ["d", "c", "a"]);
        let fresh = Rows::new(r.rows().to_vec()).unwrap();
        assert_eq!(r.digest(), fresh.digest());
        for (i, x) in r.rows().iter().enumerate() {
            assert_eq!(r.position(&x.key), Some(i));
        }
    }

    fn keys(r: &Rows) -> Vec<&str> {
        r.rows().iter().map(|x| &*x.key).collect()
    }
}
