//! The server reading one frame from a client: size check, parse, and what it does next with
//! a key (canonical args). Never a panic; a message that parses re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sssync_core::protocol::{ClientMsg, decode_client};
use sssync_core::{Limits, QueryKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    let Ok(msg) = decode_client(text, &limits) else {
        return;
    };
    match &msg {
        ClientMsg::Sub(s) => {
            let _ = QueryKey::from_json(&s.q, s.a.get());
        }
        ClientMsg::Unsub(k) | ClientMsg::Resync(k) => {
            let _ = QueryKey::from_json(&k.q, k.a.get());
        }
        _ => {}
    }
    let json = msg.to_json();
    let again = ClientMsg::parse(&json).expect("a parsed message re-encodes to a valid one");
    assert_eq!(again.to_json(), json);
});
