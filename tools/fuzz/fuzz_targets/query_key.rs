//! A query key from a name and args as a client sends them (a `sub`, the snapshot GET's `a`):
//! never a panic, and the canonical form is a fixed point (the key of a key's own args is the
//! same key), within the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sssync_core::QueryKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, args) = text.split_once('\n').unwrap_or(("q", text));
    let Ok(key) = QueryKey::from_json(name, args) else {
        return;
    };
    let again = QueryKey::from_json(key.name(), key.args_json()).expect("canonical args parse");
    assert_eq!(again, key);
    assert_eq!(again.args_json(), key.args_json());
});
