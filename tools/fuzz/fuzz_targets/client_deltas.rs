//! Deltas, structured: two arbitrary results A and B. The delta the server computes from A to
//! B, applied by a client holding A, gives exactly B (order included). An arbitrary delta (a
//! broken one) applied by a client holding A either gives a result whose digest is the delta's,
//! or leaves A shown and stored while it asks for a reset: never a corrupt view.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sssync_core::client::ClientState;
use sssync_core::delta::{self, Put};
use sssync_core::protocol::{ClientMsg, DeltaMsg, ServerMsg, Snapshot, Welcome};
use sssync_core::{Digest, Epoch, Limits, QueryKey, Row, Rows, Version};
use std::sync::Arc;

fn rows(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<Row>> {
    let n = u.int_in_range(0..=12)?;
    let mut out: Vec<Row> = Vec::new();
    for _ in 0..n {
        let k: u8 = u.int_in_range(0..=15)?;
        let v: u8 = u.arbitrary()?;
        let key = format!("k{k}");
        if out.iter().all(|r| *r.key != *key) {
            out.push(Row::from_serialize(key, &v).expect("serializes"));
        }
    }
    Ok(out)
}

fn key_of(u: &mut Unstructured<'_>) -> arbitrary::Result<Arc<str>> {
    Ok(format!("k{}", u.int_in_range(0..=17u8)?).into())
}

#[derive(Debug)]
struct Input {
    a: Vec<Row>,
    b: Vec<Row>,
    puts: Vec<(Row, Option<Arc<str>>)>,
    dels: Vec<Arc<str>>,
    honest_digest: bool,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let a = rows(u)?;
        let b = rows(u)?;
        let mut puts = Vec::new();
        for _ in 0..u.int_in_range(0..=6)? {
            let row = Row::from_serialize(key_of(u)?, &u.arbitrary::<u8>()?).expect("row");
            let after = if u.arbitrary()? { Some(key_of(u)?) } else { None };
            puts.push((row, after));
        }
        let mut dels = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            dels.push(key_of(u)?);
        }
        Ok(Input {
            a,
            b,
            puts,
            dels,
            honest_digest: u.arbitrary()?,
        })
    }
}

fn raw(json: &str) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(json.to_owned()).expect("json")
}

fn client_holding(a: &[Row]) -> (ClientState, QueryKey) {
    let key = QueryKey::new("q", &()).expect("key");
    let mut st = ClientState::new("fuzz");
    st.subscribe(key.clone());
    st.on_message(ServerMsg::Welcome(Welcome {
        protocol: sssync_core::protocol::PROTOCOL,
        epoch: Epoch("e".into()),
        version: Version(1),
        last_seq: 0,
        limits: Limits::default(),
        proof: None,
        who: None,
    }));
    st.on_message(ServerMsg::Snapshot(Snapshot {
        q: "q".into(),
        a: raw("null"),
        v: Version(1),
        reset: false,
        rows: a.to_vec(),
        digest: Digest::of(a),
    }));
    (st, key)
}

fuzz_target!(|input: Input| {
    let (a, b) = (
        Rows::new(input.a.clone()).expect("unique"),
        Rows::new(input.b.clone()).expect("unique"),
    );
    // The server's delta from A to B, as a client applies it.
    let d = delta::diff(&a, &b);
    let (mut st, key) = client_holding(&input.a);
    st.on_message(ServerMsg::Delta(DeltaMsg {
        q: "q".into(),
        a: raw("null"),
        from: Version(1),
        to: Version(2),
        puts: d.puts.clone(),
        dels: d.dels.clone(),
        digest: b.digest(),
    }));
    let (v, got) = st.confirmed(&key).expect("held");
    assert_eq!(v, Version(2));
    assert_eq!(got.rows(), b.rows(), "diff then apply gives B, in order");

    // An arbitrary delta.
    let puts: Vec<Put> = input
        .puts
        .iter()
        .map(|(row, after)| Put {
            row: row.clone(),
            after: after.clone(),
        })
        .collect();
    let mut expected = a.clone();
    let applies = delta::apply(
        &mut expected,
        &delta::Delta {
            puts: puts.clone(),
            dels: input.dels.clone(),
        },
    )
    .is_ok();
    let digest = if input.honest_digest && applies {
        expected.digest()
    } else {
        b.digest()
    };
    let (mut st, key) = client_holding(&input.a);
    let _ = st.drain_persist();
    let u = st.on_message(ServerMsg::Delta(DeltaMsg {
        q: "q".into(),
        a: raw("null"),
        from: Version(1),
        to: Version(2),
        puts,
        dels: input.dels.clone(),
        digest,
    }));
    let (v, got) = st.confirmed(&key).expect("held");
    if applies && expected.digest() == digest {
        assert_eq!((v, got.rows()), (Version(2), expected.rows()));
    } else {
        assert_eq!((v, got.rows()), (Version(1), a.rows()), "A stays until a reset");
        assert!(u.send.iter().any(|m| matches!(m, ClientMsg::Resync(_))));
        assert!(st.drain_persist().is_empty(), "nothing of A is dropped from the store");
    }
    let view = st.view(&key).expect("a view");
    assert_eq!(
        Rows::new(view.rows().to_vec()).expect("unique").digest(),
        view.digest()
    );
});
