//! What the state asks its storage to keep ([`Persist`] operations, drained by the transport),
//! and restoring from it after a reload.

use super::{ClientState, Held, Pending};
use crate::client::persist::{EventTypes, Persist, Persisted};
use crate::query::QueryKey;
use crate::row::Rows;

impl ClientState {
    /// Forgets every row held, here and in the store (not the pending events).
    pub(super) fn forget_rows(&mut self) {
        for h in self.keys.values_mut() {
            h.confirmed = None;
            h.resyncing = false;
            h.failed = None;
        }
        self.views.clear();
        self.settling.clear();
        self.persist.push(Persist::ClearAll);
    }

    /// Forgets every row and pending event, and other tabs' predictions.
    pub(super) fn forget_all(&mut self) {
        self.forget_rows();
        self.foreign.clear();
        self.foreign_done.clear();
        for seq in std::mem::take(&mut self.pending).into_keys() {
            self.persist.push(Persist::DropEvent(seq));
        }
        self.persist.push(Persist::ForgetIdentity);
    }

    /// A client rebuilt from what its store kept: cached rows show at once (offline too), and
    /// pending events are predicted again and resent on the next connection.
    pub fn restore(
        client_id: impl Into<String>,
        kept: Persisted,
        types: &EventTypes,
    ) -> ClientState {
        let mut st = ClientState::new(client_id);
        st.epoch = kept.epoch;
        st.who = kept.who;
        for ((name, args), (v, rows)) in kept.keys {
            let (Ok(key), Ok(rows)) = (QueryKey::from_json(&name, &args), Rows::new(rows)) else {
                continue;
            };
            st.keys.insert(
                key,
                Held {
                    confirmed: Some((v, rows)),
                    ..Held::default()
                },
            );
        }
        for (seq, (name, args)) in kept.events {
            let predict = types.predictor(&name, &args);
            st.arrivals += 1;
            st.pending.insert(
                seq,
                Pending {
                    name,
                    args: args.into(),
                    predict,
                    order: st.arrivals,
                },
            );
        }
        st.next_seq = kept
            .next_seq
            .max(st.pending.keys().next_back().map_or(1, |s| s + 1));
        st.recompute();
        st
    }

    /// The changes to keep since the last call, in order.
    pub fn drain_persist(&mut self) -> Vec<Persist> {
        std::mem::take(&mut self.persist)
    }

    pub(super) fn persist_meta(&mut self) {
        self.persist.push(Persist::Meta {
            epoch: self.epoch.clone(),
            next_seq: self.next_seq,
            who: self.who.clone(),
        });
    }

    pub(super) fn persist_rows(&mut self, key: &QueryKey) {
        let op = match self.keys.get(key).and_then(|h| h.confirmed.as_ref()) {
            Some((v, rows)) => Persist::Rows {
                name: key.name().to_owned(),
                args: key.args_json().to_owned(),
                version: *v,
                rows: rows.shared(),
            },
            None => Persist::DropRows {
                name: key.name().to_owned(),
                args: key.args_json().to_owned(),
            },
        };
        self.persist.push(op);
    }

    pub(super) fn persist_event(&mut self, seq: u64) {
        if let Some(p) = self.pending.get(&seq) {
            self.persist.push(Persist::Event {
                seq,
                name: p.name.clone(),
                args: p.args.clone(),
            });
        }
    }
}
