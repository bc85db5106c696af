//! Other tabs' pending events (invariant 7): shown here, in order, until this tab sees them
//! settled.

use super::{ClientState, Update};
use crate::client::persist::EventTypes;
use crate::version::Version;

impl ClientState {
    /// Whether any event predicts into the views now: this tab's pending or settling events,
    /// or another tab's.
    pub(super) fn predicting(&self) -> bool {
        !self.foreign.is_empty()
            || self
                .pending
                .values()
                .chain(self.settling.values())
                .any(|e| e.predict.is_some())
    }

    /// Another tab of this browser has event `seq` pending: predict it here too.
    pub fn add_foreign(
        &mut self,
        tab: &str,
        seq: u64,
        name: &str,
        args: &str,
        types: &EventTypes,
    ) -> Update {
        // Known already (told by its tab, then adopted): it keeps its place in the order.
        if self.foreign.contains_key(&(tab.to_owned(), seq)) {
            return Update::default();
        }
        match types.predictor(name, args) {
            Some(p) => {
                self.arrivals += 1;
                self.foreign
                    .insert((tab.to_owned(), seq), (self.arrivals, p));
                self.recompute()
            }
            None => Update::default(),
        }
    }

    /// Another tab's event `seq` was settled by the server at version `v`: drop its prediction
    /// once this tab has seen `v` (its own connection brings the effect; no flicker).
    pub fn settle_foreign(&mut self, tab: &str, seq: u64, v: Version) -> Update {
        self.foreign_done.push((v, (tab.to_owned(), seq)));
        self.drop_seen_foreign()
    }

    /// Another tab's pending events will never apply (another identity's, or lost): their
    /// predictions go.
    pub fn drop_tab(&mut self, tab: &str) -> Update {
        self.foreign.retain(|(t, _), _| t != tab);
        self.foreign_done.retain(|(_, (t, _))| t != tab);
        self.recompute()
    }

    pub(super) fn drop_seen_foreign(&mut self) -> Update {
        // A subscription not answered yet (after a welcome, a resync) may still lack what was
        // seen: the predictions wait for it, as this client's own settled events do.
        if !self.asked.is_empty() {
            return Update::default();
        }
        let seen = self.seen;
        let before = self.foreign.len();
        let foreign = &mut self.foreign;
        self.foreign_done.retain(|(v, id)| {
            if *v <= seen {
                foreign.remove(id);
                false
            } else {
                true
            }
        });
        if self.foreign.len() != before {
            self.recompute()
        } else {
            Update::default()
        }
    }
}
