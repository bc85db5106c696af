//! What an event's `predict` sees: the client's current view of the queries it holds.

use crate::query::QueryKey;
use crate::row::{Row, Rows};
use crate::schema::Query;
use std::collections::{HashMap, HashSet};

/// The view an event's prediction changes. Rows are typed on the way in and out.
pub struct Prediction<'a> {
    pub(crate) views: &'a mut HashMap<QueryKey, Rows>,
    /// The keys a prediction reached (held ones only).
    pub(crate) touched: &'a mut HashSet<QueryKey>,
}

impl Prediction<'_> {
    /// Changes the rows of query `Q` with `args`, if this client holds that query. The closure
    /// gets the rows in order and may add, remove, change and reorder them.
    pub fn update<Q: Query>(&mut self, args: &Q::Args, f: impl FnOnce(&mut Vec<Q::Row>)) {
        let Ok(key) = QueryKey::new(Q::NAME, args) else {
            return;
        };
        if let Some(rows) = self.views.get_mut(&key) {
            edit::<Q>(rows, f);
            self.touched.insert(key);
        }
    }

    /// Changes the rows of every held key of query `Q` whose args satisfy `which`.
    pub fn update_where<Q: Query>(
        &mut self,
        which: impl Fn(&Q::Args) -> bool,
        mut f: impl FnMut(&mut Vec<Q::Row>),
    ) {
        for (key, rows) in self.views.iter_mut() {
            if key.name() != Q::NAME {
                continue;
            }
            let Ok(args) = serde_json::from_str::<Q::Args>(key.args_json()) else {
                continue;
            };
            if which(&args) {
                edit::<Q>(rows, &mut f);
            }
        }
    }
}

/// Decodes, edits, encodes. A prediction that produces duplicate keys or rows that do not
/// serialize is dropped (the confirmed rows stand).
fn edit<Q: Query>(rows: &mut Rows, f: impl FnOnce(&mut Vec<Q::Row>)) {
    let Ok(mut typed) = rows
        .rows()
        .iter()
        .map(|r| r.decode::<Q::Row>())
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    f(&mut typed);
    let encoded: Result<Vec<Row>, _> = typed
        .iter()
        .map(|r| Row::from_serialize(Q::row_key(r), r))
        .collect();
    if let Ok(new) = encoded.map(Rows::new)
        && let Ok(new) = new
    {
        *rows = new;
    }
}
