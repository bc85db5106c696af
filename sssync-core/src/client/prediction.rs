//! What an event's `predict` sees: the client's current view of the queries it holds.

use crate::query::QueryKey;
use crate::row::{Row, Rows};
use crate::schema::{Query, Request};
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

/// What a key-addressed edit of encoded rows did.
enum Edited {
    /// Done (or nothing to do).
    Done,
    /// It could not encode the row (as when a run of predictions cannot encode its rows).
    Failed,
    /// Not done: the rows are to be decoded and edited so.
    Not,
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

    /// Changes the rows of `request` (a query with its args, `todos(&self.list_id)`), if this
    /// client holds it. The closure gets the rows in order and may add, remove, change and
    /// reorder them.
    pub fn update<Q: Query>(&mut self, request: Request<Q>, f: impl FnOnce(&mut Vec<Q::Row>)) {
        let Ok(key) = request.key() else {
            return;
        };
        if self.views.contains_key(&key) {
            self.edit::<Q>(&key, f);
            self.touched.insert(key);
        }
    }

    /// Adds `row` to the rows of `request`, if this client holds it: in place of the row with
    /// its key if there is one, else at the end. By key: the one row is encoded, the others
    /// are left as they are (no decoding of the query's rows).
    pub fn insert<Q: Query>(&mut self, request: Request<Q>, row: Q::Row) {
        let Ok(key) = request.key() else {
            return;
        };
        if !self.views.contains_key(&key) {
            return;
        }
        let row_key = Q::row_key(&row);
        if self.typed.contains_key(&key) {
            // Decoded by an earlier prediction of this rebase: changed there, in order.
            self.edit::<Q>(&key, |rows| {
                match rows.iter_mut().find(|r| Q::row_key(r) == row_key) {
                    Some(r) => *r = row,
                    None => rows.push(row),
                }
            });
        } else {
            let Ok(encoded) = Row::from_serialize(row_key, &row) else {
                self.failed |= !self.careful; // careful: this prediction is dropped alone
                return;
            };
            if let Some(rows) = self.views.get_mut(&key) {
                rows.put_last(encoded);
            }
        }
        self.touched.insert(key);
    }

    /// Changes the row whose key is `key` wherever this client holds it: in every held result
    /// of query `Q`, whatever its args. By key: only that row is decoded and encoded again.
    pub fn edit_row<Q: Query>(&mut self, key: &str, f: impl Fn(&mut Q::Row)) {
        self.edit_holding::<Q>(
            key,
            |rows| {
                rows.iter_mut()
                    .filter(|r| Q::row_key(r) == key)
                    .for_each(&f)
            },
            |rows| {
                let Some(Ok(mut row)) = rows.get(key).map(Row::decode::<Q::Row>) else {
                    return Edited::Done; // a row that does not decode: nothing to predict
                };
                f(&mut row);
                if Q::row_key(&row) != key {
                    return Edited::Not; // the key changed: the whole rows, decoded
                }
                match Row::from_serialize(key, &row) {
                    Ok(encoded) => {
                        rows.replace(encoded);
                        Edited::Done
                    }
                    Err(_) => Edited::Failed,
                }
            },
        );
    }

    /// Removes the row whose key is `key` from every held result of query `Q`.
    pub fn remove_row<Q: Query>(&mut self, key: &str) {
        self.edit_holding::<Q>(
            key,
            |rows| rows.retain(|r| Q::row_key(r) != key),
            |rows| {
                rows.remove(key);
                Edited::Done
            },
        );
    }

    /// Edits every held result of query `Q` that has a row whose key is `key`: with `one` on
    /// its encoded rows while no prediction of this rebase decoded them, else (or when `one`
    /// cannot) with `typed` on its decoded rows.
    fn edit_holding<Q: Query>(
        &mut self,
        key: &str,
        mut typed: impl FnMut(&mut Vec<Q::Row>),
        mut one: impl FnMut(&mut Rows) -> Edited,
    ) {
        for held in self.held::<Q>() {
            if !self.holds_row::<Q>(&held, key) {
                continue;
            }
            let done = match self.views.get_mut(&held) {
                Some(rows) if !self.typed.contains_key(&held) => one(rows),
                _ => Edited::Not,
            };
            match done {
                Edited::Done => {}
                Edited::Failed => {
                    self.failed |= !self.careful; // careful: dropped alone
                    continue;
                }
                Edited::Not => self.edit::<Q>(&held, &mut typed),
            }
            self.touched.insert(held);
        }
    }

    /// The held keys of query `Q`, in a fixed order (the views are a hash map: the same
    /// rebase edits alike each time).
    fn held<Q: Query>(&self) -> Vec<QueryKey> {
        let mut keys: Vec<QueryKey> = self
            .views
            .keys()
            .filter(|key| key.name() == Q::NAME)
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Whether held key `held` of query `Q` has a row whose key is `key` (in the rows the
    /// predictions so far made, else in the view, without decoding it).
    fn holds_row<Q: Query>(&self, held: &QueryKey, key: &str) -> bool {
        match self.typed.get(held) {
            Some((typed, _)) => typed
                .downcast_ref::<Vec<Q::Row>>()
                .is_some_and(|rows| rows.iter().any(|r| Q::row_key(r) == key)),
            None => self
                .views
                .get(held)
                .is_some_and(|rows| rows.get(key).is_some()),
        }
    }

    /// Changes the rows of every held key of query `Q` whose args satisfy `which`.
    pub fn update_where<Q: Query>(
        &mut self,
        which: impl Fn(&Q::Args) -> bool,
        mut f: impl FnMut(&mut Vec<Q::Row>),
    ) {
        let keys = self.held::<Q>();
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

#[cfg(test)]
mod tests {
    use super::Prediction;
    use crate::client::ClientState;
    use crate::row::Row;
    use crate::{Epoch, Event, Query, QueryKey, Version};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Todo {
        id: String,
        title: String,
    }

    /// The todos of a list (the args: its id).
    struct Todos;
    impl Query for Todos {
        const NAME: &'static str = "todos";
        type Args = String;
        type Row = Todo;
        fn row_key(t: &Todo) -> String {
            t.id.clone()
        }
    }

    fn todo(id: &str, title: &str) -> Todo {
        Todo {
            id: id.into(),
            title: title.into(),
        }
    }

    #[derive(Clone, Serialize, Deserialize)]
    enum Edit {
        Rename(String, String),
        Remove(String),
        Insert(String, Todo),
    }

    impl Event for Edit {
        const NAME: &'static str = "edit";
        fn predict(&self, view: &mut Prediction<'_>) {
            match self {
                Edit::Rename(id, title) => view.edit_row::<Todos>(id, |t| t.title = title.clone()),
                Edit::Remove(id) => view.remove_row::<Todos>(id),
                Edit::Insert(list, todo) => view.insert(Todos::request(list.clone()), todo.clone()),
            }
        }
    }

    fn key(list: &str) -> QueryKey {
        Todos::request(list.to_owned()).key().unwrap()
    }

    /// A tab holding these lists, confirmed at version 1.
    fn holding(lists: &[(&str, &[Todo])]) -> ClientState {
        let mut tab = ClientState::new("tab-1");
        for (list, todos) in lists {
            let rows = todos
                .iter()
                .map(|t| Row::from_serialize(t.id.as_str(), t).unwrap())
                .collect();
            tab.seed(key(list), &Epoch("e".into()), Version(1), rows);
        }
        tab
    }

    fn rows(tab: &ClientState, list: &str) -> Option<Vec<Todo>> {
        tab.rows::<Todos>(&list.to_owned())
    }

    #[test]
    fn a_row_edited_or_removed_by_key_changes_in_every_result_holding_it_and_nowhere_else() {
        // "1" is in two results of the query (a list and, say, a search), "3" in one.
        let mut tab = holding(&[
            ("a", &[todo("1", "milk"), todo("2", "eggs")]),
            ("b", &[todo("3", "tea")]),
            ("search", &[todo("1", "milk")]),
        ]);
        tab.push(Edit::Rename("1".into(), "oat milk".into()))
            .unwrap();
        assert_eq!(
            rows(&tab, "a"),
            Some(vec![todo("1", "oat milk"), todo("2", "eggs")])
        );
        assert_eq!(rows(&tab, "search"), Some(vec![todo("1", "oat milk")]));
        assert_eq!(rows(&tab, "b"), Some(vec![todo("3", "tea")]));
        // Only the results the prediction reached wait for the server.
        assert!(!tab.is_confirmed(&key("a")) && !tab.is_confirmed(&key("search")));
        assert!(tab.is_confirmed(&key("b")));

        tab.push(Edit::Remove("1".into())).unwrap();
        assert_eq!(rows(&tab, "a"), Some(vec![todo("2", "eggs")]));
        assert_eq!(rows(&tab, "search"), Some(vec![]));
        // A key held nowhere changes nothing.
        tab.push(Edit::Remove("9".into())).unwrap();
        tab.push(Edit::Rename("9".into(), "x".into())).unwrap();
        assert_eq!(rows(&tab, "b"), Some(vec![todo("3", "tea")]));
        assert!(tab.is_confirmed(&key("b")));
    }

    #[test]
    fn an_inserted_row_replaces_the_row_with_its_key_or_goes_last_and_only_where_held() {
        let mut tab = holding(&[("a", &[todo("1", "milk"), todo("2", "eggs")])]);
        tab.push(Edit::Insert("a".into(), todo("3", "tea")))
            .unwrap();
        tab.push(Edit::Insert("a".into(), todo("1", "oat milk")))
            .unwrap();
        assert_eq!(
            rows(&tab, "a"),
            Some(vec![
                todo("1", "oat milk"),
                todo("2", "eggs"),
                todo("3", "tea")
            ])
        );
        // Into a result the tab does not hold: nothing (the server's rows will show it).
        tab.push(Edit::Insert("z".into(), todo("4", "jam")))
            .unwrap();
        assert_eq!(rows(&tab, "z"), None);
    }

    #[test]
    fn predictions_by_key_leave_the_other_rows_as_they_were() {
        // A row the query's type cannot decode (another shape, from an older version of the
        // app, say) is no obstacle to an insert, an edit or a removal of another row, and
        // comes out byte for byte.
        let mut tab = holding(&[("a", &[todo("1", "milk")])]);
        let odd = Row::from_serialize("0", &serde_json::json!({"legacy": true})).unwrap();
        let mut kept = vec![odd.clone()];
        kept.extend(tab.view(&key("a")).unwrap().rows().iter().cloned());
        tab.seed(key("a"), &Epoch("e".into()), Version(2), kept);
        tab.push(Edit::Insert("a".into(), todo("2", "eggs")))
            .unwrap();
        tab.push(Edit::Rename("1".into(), "oat milk".into()))
            .unwrap();
        tab.push(Edit::Remove("2".into())).unwrap();
        tab.push(Edit::Insert("a".into(), todo("3", "tea")))
            .unwrap();
        let view = tab.view(&key("a")).unwrap();
        assert_eq!(view.rows()[0], odd);
        let rest: Vec<Todo> = view.rows()[1..]
            .iter()
            .map(|r| r.decode().unwrap())
            .collect();
        assert_eq!(rest, [todo("1", "oat milk"), todo("3", "tea")]);
    }
}
