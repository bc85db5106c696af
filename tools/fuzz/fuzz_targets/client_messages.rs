//! The client applying whatever a server (or a broken proxy) sends: one message per line,
//! fed to a client that holds two keys and has pending events. Never a panic, and the view of
//! every key stays a well-formed result (unique keys, digest matching its rows).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sssync_core::client::{ClientState, Prediction};
use sssync_core::protocol::ServerMsg;
use sssync_core::{Event, Query, QueryKey, Rows};

struct Items;
impl Query for Items {
    const NAME: &'static str = "items";
    type Args = String;
    type Row = serde_json::Value;
    fn row_key(r: &serde_json::Value) -> String {
        r.get("id").map(|v| v.to_string()).unwrap_or_default()
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Add(String);
impl Event for Add {
    const NAME: &'static str = "add";
    fn predict(&self, view: &mut Prediction<'_>) {
        view.update(Items::request("a".to_owned()), |rows| rows.push(serde_json::json!({"id": self.0})));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = [
        QueryKey::new("items", &"a").expect("key"),
        QueryKey::new("items", &"b").expect("key"),
    ];
    let mut st = ClientState::new("fuzz");
    for k in &keys {
        st.subscribe(k.clone());
    }
    let _ = st.push(Add("p1".into()));
    for line in text.lines().take(64) {
        let Ok(msg) = ServerMsg::parse(line) else {
            continue;
        };
        let _ = st.on_message(msg);
        for k in &keys {
            if let Some(view) = st.view(k) {
                let fresh = Rows::new(view.rows().to_vec()).expect("a view has unique keys");
                assert_eq!(fresh.digest(), view.digest());
            }
            if let Some((_, rows)) = st.confirmed(k) {
                let fresh = Rows::new(rows.rows().to_vec()).expect("confirmed rows are unique");
                assert_eq!(fresh.digest(), rows.digest());
            }
        }
        let _ = st.drain_persist();
        if st.pending_count() == 0 {
            let _ = st.push(Add(format!("p{}", line.len())));
        }
    }
});
