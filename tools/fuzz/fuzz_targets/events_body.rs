//! The server reading the body of `POST /sssync/events`. Never a panic; a body accepted has a
//! valid client id and fits the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sssync_core::Limits;
use sssync_core::protocol::{EventsBody, valid_client_id};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(body) = EventsBody::decode(data, &limits) {
        assert!(valid_client_id(&body.client_id));
        assert!(data.len() <= limits.max_message_bytes);
        for e in &body.events {
            let _ = e.args.get().len() > limits.max_args_bytes;
        }
    }
});
