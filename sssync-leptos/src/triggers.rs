//! A trigger per query key: what makes a hook read its rows again when (only when) its key's
//! view changed.

use leptos::prelude::*;
use sssync_core::QueryKey;

/// The triggers of the client's rows (`SyncClient::rows_of`), by query key (one per key a hook
/// read, for the page's life).
#[derive(Default)]
pub(crate) struct RowTriggers(pub(crate) std::collections::HashMap<QueryKey, ArcTrigger>);

impl RowTriggers {
    /// Notifies the triggers of `keys`, or every trigger (`None`).
    #[cfg_attr(not(feature = "browser"), allow(dead_code))]
    pub(crate) fn notify(&self, keys: Option<&[QueryKey]>) {
        match keys {
            Some(keys) => keys
                .iter()
                .filter_map(|k| self.0.get(k))
                .for_each(ArcTrigger::notify),
            None => self.0.values().for_each(ArcTrigger::notify),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RowTriggers;
    use leptos::prelude::*;
    use sssync_core::QueryKey;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_change_to_one_keys_rows_reaches_only_the_readers_of_that_key() {
        let owner = Owner::new();
        owner.set();
        let key = |list: &str| QueryKey::new("todos", &list).unwrap();
        let mut triggers = RowTriggers::default();
        for list in ["a", "b"] {
            triggers.0.insert(key(list), ArcTrigger::new());
        }
        let (reads, of_a) = (Arc::new(AtomicUsize::new(0)), triggers.0[&key("a")].clone());
        let counted = reads.clone();
        let rows_of_a = Memo::new(move |_| {
            of_a.track();
            counted.fetch_add(1, Ordering::SeqCst)
        });
        let read = || {
            rows_of_a.get();
            reads.load(Ordering::SeqCst)
        };
        assert_eq!(read(), 1);
        triggers.notify(Some(&[key("b")])); // a delta to another list
        assert_eq!(
            read(),
            1,
            "a delta to list b made list a's hook read its rows again"
        );
        triggers.notify(Some(&[key("a")]));
        assert_eq!(read(), 2);
        triggers.notify(None); // anything else: every key
        assert_eq!(read(), 3);
    }
}
