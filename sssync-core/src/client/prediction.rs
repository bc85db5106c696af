//! What an event's `predict` sees: the client's current view of the queries it holds.

use crate::query::QueryKey;
use crate::row::{Row, Rows};
use crate::schema::Query;
use std::any::Any;
use std::collections::{HashMap, HashSet};

/// The view an event's prediction changes. Rows are typed on the way in and out.
///
/// A rebase runs every pending prediction in order. The rows of a query are decoded at the
/// first prediction into it and encoded back once, after the last
/// ([`Prediction::finish`]), so that a run of predictions into one query costs one decode and
/// one encode of its rows, not one per prediction. When the rows a run produced cannot be
/// encoded (two rows with one key, a row that does not serialize), the rebase runs again
/// `careful`ly: each prediction's rows encoded at once, and a prediction whose rows cannot be
/// is dropped alone (the rows before it stand).
pub struct Prediction<'a> {
    pub(crate) views: &'a mut HashMap<QueryKey, Rows>,
    /// The keys a prediction reached (held ones only).
    pub(crate) touched: &'a mut HashSet<QueryKey>,
    /// The rows decoded by the predictions so far and changed by them, by key, with the
    /// function that encodes them back (the key's query's row type is in it).
    pub(crate) typed: HashMap<QueryKey, (Box<dyn Any>, Encode)>,
    /// Each prediction's rows encoded back at once (the slow path, see above).
    pub(crate) careful: bool,
    /// Rows of earlier predictions could not be encoded back before the last one
    /// ([`Prediction::finish`] then says so).
    pub(crate) failed: bool,
}

/// Encodes a query's decoded rows back (`None`: duplicate keys, or a row that does not
/// serialize).
pub(crate) type Encode = fn(Box<dyn Any>) -> Option<Rows>;

impl<'a> Prediction<'a> {
    /// What the predictions of one rebase change: `views` (the confirmed rows of every held
    /// key), noting the keys they reach in `touched`.
    pub(crate) fn new(
        views: &'a mut HashMap<QueryKey, Rows>,
        touched: &'a mut HashSet<QueryKey>,
        careful: bool,
    ) -> Prediction<'a> {
        Prediction {
            views,
            touched,
            typed: HashMap::new(),
            careful,
            failed: false,
        }
    }

    /// Encodes the rows the predictions changed back into the views. `false`: some could not
    /// be (the views are then partly updated: run the rebase again, careful).
    pub(crate) fn finish(mut self) -> bool {
        let keys: Vec<QueryKey> = self.typed.keys().cloned().collect();
        keys.iter().all(|key| self.encode_back(key)) && !self.failed
    }

    /// Encodes `key`'s decoded rows back into its view; `false` when they cannot be (the view
    /// keeps the rows it had).
    fn encode_back(&mut self, key: &QueryKey) -> bool {
        let Some((typed, encode)) = self.typed.remove(key) else {
            return true;
        };
        match encode(typed) {
            Some(rows) => {
                self.views.insert(key.clone(), rows);
                true
            }
            None => false,
        }
    }

    /// Runs `f` on the decoded rows of held key `key` of query `Q`.
    fn edit<Q: Query>(&mut self, key: &QueryKey, f: impl FnOnce(&mut Vec<Q::Row>)) {
        // Another row type under this name (two queries named alike): the rows go back first.
        if self
            .typed
            .get(key)
            .is_some_and(|(typed, _)| !typed.is::<Vec<Q::Row>>())
            && !self.encode_back(key)
        {
            self.failed = true;
            return;
        }
        if !self.typed.contains_key(key) {
            let Some(rows) = self.views.get(key) else {
                return;
            };
            let Ok(decoded) = rows
                .rows()
                .iter()
                .map(|r| r.decode::<Q::Row>())
                .collect::<Result<Vec<Q::Row>, _>>()
            else {
                return;
            };
            self.typed
                .insert(key.clone(), (Box::new(decoded), encode::<Q>));
        }
        if let Some(rows) = self
            .typed
            .get_mut(key)
            .and_then(|(typed, _)| typed.downcast_mut::<Vec<Q::Row>>())
        {
            f(rows);
        }
        if self.careful {
            // Rows that cannot be encoded drop this prediction: the view stands as it was.
            self.encode_back(key);
        }
    }

    /// Changes the rows of query `Q` with `args`, if this client holds that query. The closure
    /// gets the rows in order and may add, remove, change and reorder them.
    pub fn update<Q: Query>(&mut self, args: &Q::Args, f: impl FnOnce(&mut Vec<Q::Row>)) {
        let Ok(key) = QueryKey::new(Q::NAME, args) else {
            return;
        };
        if self.views.contains_key(&key) {
            self.edit::<Q>(&key, f);
            self.touched.insert(key);
        }
    }

    /// Changes the rows of every held key of query `Q` whose args satisfy `which`.
    pub fn update_where<Q: Query>(
        &mut self,
        which: impl Fn(&Q::Args) -> bool,
        mut f: impl FnMut(&mut Vec<Q::Row>),
    ) {
        let mut keys: Vec<QueryKey> = self
            .views
            .keys()
            .filter(|key| key.name() == Q::NAME)
            .cloned()
            .collect();
        // In a fixed order (the views are a hash map): the same rebase edits alike each time.
        keys.sort();
        for key in keys {
            let Ok(args) = serde_json::from_str::<Q::Args>(key.args_json()) else {
                continue;
            };
            if which(&args) {
                self.edit::<Q>(&key, &mut f);
                self.touched.insert(key);
            }
        }
    }
}

/// Encodes rows of query `Q` (see [`Encode`]).
fn encode<Q: Query>(typed: Box<dyn Any>) -> Option<Rows> {
    let typed = typed.downcast::<Vec<Q::Row>>().ok()?;
    let rows = typed
        .iter()
        .map(|r| Row::from_serialize(Q::row_key(r), r))
        .collect::<Result<Vec<Row>, _>>()
        .ok()?;
    Rows::new(rows).ok()
}
