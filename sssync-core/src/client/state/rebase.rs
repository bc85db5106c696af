//! The views: the confirmed rows with every pending event (this tab's and others') predicted
//! on top, recomputed after each change.

use super::{ClientState, Update};
use crate::client::Prediction;
use crate::client::persist::PredictFn;
use crate::query::QueryKey;
use crate::row::Rows;
use std::collections::{HashMap, HashSet};

impl ClientState {
    /// `key` has answered since the welcome; when all have, settled events stop predicting.
    pub(super) fn answered(&mut self, key: &QueryKey) {
        self.awaiting.remove(key);
        self.asked.remove(key);
        self.settle();
    }

    pub(super) fn settle(&mut self) {
        if self.awaiting.is_empty() {
            self.settling.clear();
        }
    }

    /// Rebase: confirmed rows, then every pending prediction in seq order.
    pub(super) fn recompute(&mut self) -> Update {
        let (mut views, mut predicted, done) = self.rebase(false);
        if !done {
            // A run of predictions produced rows that cannot be encoded: again, one
            // prediction at a time (the one at fault is dropped alone).
            (views, predicted, _) = self.rebase(true);
        }
        let mut changed: Vec<QueryKey> = views
            .iter()
            .filter(|(k, rows)| self.views.get(*k) != Some(rows))
            .map(|(k, _)| k.clone())
            .collect();
        let gone: HashSet<&QueryKey> = self
            .views
            .keys()
            .filter(|k| !views.contains_key(*k))
            .collect();
        changed.extend(gone.into_iter().cloned());
        changed.sort();
        self.views = views;
        self.predicted = predicted;
        Update {
            changed,
            ..Update::default()
        }
    }

    /// The views (confirmed rows with every unsettled prediction on top), the keys the
    /// predictions reached, and whether the predictions' rows could all be encoded back
    /// (always when `careful`: see [`Prediction`]).
    pub(super) fn rebase(
        &self,
        careful: bool,
    ) -> (HashMap<QueryKey, Rows>, HashSet<QueryKey>, bool) {
        let mut views: HashMap<QueryKey, Rows> = self
            .keys
            .iter()
            .filter_map(|(k, h)| Some((k.clone(), h.confirmed.as_ref()?.1.clone())))
            .collect();
        let mut predicted = HashSet::new();
        let mut p = Prediction::new(&mut views, &mut predicted, careful);
        // Settled events first (they are older); then this tab's and other tabs' pending
        // events in the order this tab learned of them.
        for predict in self.settling.values().filter_map(|e| e.predict.as_ref()) {
            predict(&mut p);
        }
        let mut live: Vec<(u64, &PredictFn)> = self
            .pending
            .values()
            .filter_map(|e| Some((e.order, e.predict.as_ref()?)))
            .chain(self.foreign.values().map(|(order, f)| (*order, f)))
            .collect();
        live.sort_by_key(|(order, _)| *order);
        for (_, predict) in live {
            predict(&mut p);
        }
        let done = p.finish();
        (views, predicted, done)
    }
}
