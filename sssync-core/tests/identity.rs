//! Identity and authorization on every path (docs/security.md): who a request is comes from the
//! application's `identify` (here an `x-session` header naming a session); a private list is
//! read and written only by its owner and the users it is shared with, on the WebSocket, by
//! server-sent events, by event posts, by the snapshot GET and by in-process calls; results
//! that depend on the reader are never shared; a client id belongs to the identity that first
//! used it; withdrawn access ends live subscriptions.

mod common;

use common::*;
use serde_json::json;
use sssync_core::client::native::{NativeClient, Options};
use sssync_core::client::{ClientStore, MemoryStore};
use sssync_core::protocol::ServerMsg;
use sssync_core::server::Counts;
use sssync_core::{ErrorCode, QueryKey};
use std::sync::Arc;
use std::time::Duration;

fn session(token: &str) -> Vec<(String, String)> {
    vec![("x-session".to_owned(), token.to_owned())]
}

fn client(server: &Server, id: &str, token: Option<&str>) -> NativeClient {
    NativeClient::connect_with(
        server.ws_url(),
        id,
        Options {
            headers: token.map(session).unwrap_or_default(),
            ..Options::default()
        },
    )
}

fn list_key(id: &str) -> QueryKey {
    QueryKey::new("list_todos", &list(id)).unwrap()
}

/// Alice's private list `l`, with one todo; returns her client.
async fn alices_list(server: &Server, alice: &str, l: &str) -> NativeClient {
    let a = client(server, &format!("alice-{l}"), Some(alice));
    a.subscribe::<ListTodos>(&list(l));
    a.send(CreateList { id: l.into() });
    a.send(AddListTodo {
        id: format!("{l}-t1"),
        list_id: l.into(),
        title: "secret".into(),
    });
    a.wait_for(WAIT, |s| {
        s.pending_count() == 0 && s.confirmed(&list_key(l)).is_some_and(|(_, r)| r.len() == 1)
    })
    .await
    .unwrap();
    assert!(a.rejected().is_empty(), "{:?}", a.rejected());
    a
}

/// Waits until `c` is told it may not read list `l` (and holds none of its rows).
async fn wait_forbidden(c: &NativeClient, l: &str) {
    let key = list_key(l);
    let r = c
        .wait_for(WAIT, |s| {
            s.query_error(&key)
                .is_some_and(|e| e.code == ErrorCode::Forbidden)
                && s.confirmed(&key).is_none()
        })
        .await;
    if r.is_err() {
        panic!(
            "{} was not refused list {l}: errors {:?}, who {:?}, rows {:?}",
            c.client_id(),
            c.errors(),
            c.with_state(|s| s.identity_tag().map(str::to_owned)),
            c.rows::<ListTodos>(&list(l))
        );
    }
}

/// The error a raw connection gets for `key`, skipping anything else.
async fn key_error(raw: &mut Raw, q: &str) -> ServerMsg {
    loop {
        match raw.recv().await {
            ServerMsg::Error(e) if e.key().is_some_and(|k| k.name() == q) => {
                return ServerMsg::Error(e);
            }
            ServerMsg::Snapshot(s) if s.q == q => panic!("rows sent: {s:?}"),
            ServerMsg::Delta(d) if d.q == q => panic!("rows sent: {d:?}"),
            _ => {}
        }
    }
}

on_both! {
    async fn a_private_list_is_forbidden_to_others_on_every_path(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let bob = sign_in("bob");
        let _a = alices_list(&server, &alice, "p1").await;

        for who in [Some(bob.as_str()), None] {
            let headers: Vec<(&str, &str)> = who.map(|t| vec![("x-session", t)]).unwrap_or_default();
            // WebSocket: the sub is refused, no rows; the event is rejected, nothing applied.
            let id = format!("other-{}", who.is_some());
            let (mut raw, first) = Raw::hello_with(&server, &headers, &id).await;
            assert!(matches!(first, ServerMsg::Welcome(_)), "{first:?}");
            raw.send(json!({"t": "sub", "q": "list_todos", "a": {"list_id": "p1"}})).await;
            let ServerMsg::Error(e) = key_error(&mut raw, "list_todos").await else { unreachable!() };
            assert_eq!(e.code, ErrorCode::Forbidden);
            let r = raw.event(1, "add_list_todo", add("p1", "x1", "intruder")).await;
            let ServerMsg::Reject(r) = r else { panic!("{r:?}") };
            assert_eq!(r.error.code, "forbidden");

            // The snapshot GET: 403, no rows.
            let path = format!("/sssync/snapshot/list_todos?a={}", encode(r#"{"list_id":"p1"}"#));
            let (status, _, body) = http(server.addr, "GET", &path, &headers, "").await;
            assert_eq!(status, 403, "{body}");
            assert!(!body.contains("secret"), "{body}");

            // Server-sent events: the subscription is refused with no rows.
            let hello = json!({"protocol": 1, "client_id": format!("{id}-sse")}).to_string();
            let subs = json!([{"q": "list_todos", "a": {"list_id": "p1"}}]).to_string();
            let mut sse = SseStream::open_with(
                server.addr,
                &format!("/sssync/sse?hello={}&subs={}", encode(&hello), encode(&subs)),
                &headers,
            )
            .await;
            assert!(matches!(sse.next().await, ServerMsg::Welcome(_)));
            match sse.next().await {
                ServerMsg::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden),
                other => panic!("rows sent: {other:?}"),
            }

            // An event post: rejected.
            let body = json!({"client_id": format!("{id}-post"), "events": [
                {"seq": 1, "name": "add_list_todo", "args": add("p1", "x2", "intruder")}
            ]})
            .to_string();
            let (status, _, answer) = http(server.addr, "POST", "/sssync/events", &headers, &body).await;
            assert_eq!(status, 200, "{answer}");
            assert!(answer.contains(r#""code":"forbidden""#), "{answer}");
        }
        // In process, on behalf of another user: rejected too.
        let r = server
            .engine
            .apply_by("bob", "add_list_todo", &add("p1", "x3", "intruder").to_string())
            .await;
        assert!(matches!(&r, Outcome::Rejected { rejection, .. } if rejection.code == "forbidden"), "{r:?}");
        assert_eq!(titles(&server.todos("p1").await), ["secret"]);

        // Alice reads it on every path.
        let (status, _, body) = http(
            server.addr,
            "GET",
            &format!("/sssync/snapshot/list_todos?a={}", encode(r#"{"list_id":"p1"}"#)),
            &[("x-session", &alice)],
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("secret"));
        server.stop().await;
    }
}

on_both! {
    async fn results_that_depend_on_the_reader_are_never_shared(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let bob = sign_in("bob");
        let a = client(&server, "mine-a", Some(&alice));
        let b = client(&server, "mine-b", Some(&bob));
        for c in [&a, &b] {
            c.subscribe::<MyLists>(&());
        }
        a.send(CreateList { id: "a1".into() });
        b.send(CreateList { id: "b1".into() });
        a.send(CreateList { id: "a2".into() });
        let ids = |c: &NativeClient| -> Vec<String> {
            c.rows::<MyLists>(&()).unwrap_or_default().into_iter().map(|l| l.id).collect()
        };
        a.wait_for(WAIT, |s| s.pending_count() == 0 && s.rows::<MyLists>(&()).is_some_and(|r| r.len() == 2)).await.unwrap();
        b.wait_for(WAIT, |s| s.pending_count() == 0 && s.rows::<MyLists>(&()).is_some_and(|r| r.len() == 1)).await.unwrap();
        assert_eq!(ids(&a), ["a1", "a2"]);
        assert_eq!(ids(&b), ["b1"]);
        // One live result per identity.
        assert_eq!(server.engine.counts(),
            Counts { keys: 2, subscriptions: 2 });
        // The snapshot GET per reader: nobody gets another's.
        for (token, want) in [(&alice, vec!["a1", "a2"]), (&bob, vec!["b1"])] {
            let (status, _, body) = http(
                server.addr,
                "GET",
                &format!("/sssync/snapshot/my_lists?a={}", encode("null")),
                &[("x-session", token)],
                "",
            )
            .await;
            assert_eq!(status, 200);
            let ServerMsg::Snapshot(s) = ServerMsg::parse(&body).unwrap() else { panic!("{body}") };
            let got: Vec<String> = s.rows.iter().map(|r| r.key.to_string()).collect();
            assert_eq!(got, want);
        }
        let (_, _, body) = http(
            server.addr,
            "GET",
            &format!("/sssync/snapshot/my_lists?a={}", encode("null")),
            &[],
            "",
        )
        .await;
        assert!(body.contains(r#""rows":[]"#), "{body}");
        server.stop().await;
    }
}

on_both! {
    async fn a_client_id_belongs_to_the_identity_that_first_used_it(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let bob = sign_in("bob");
        let (mut raw, w) = Raw::hello_with(&server, &[("x-session", &alice)], "alices-tab").await;
        assert!(matches!(w, ServerMsg::Welcome(_)));
        let r = raw.event(1, "add_todo", add("pub", "t1", "one")).await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");

        // Bob (or anyone anonymous) with Alice's client id: the hello is refused.
        for headers in [vec![("x-session", bob.as_str())], vec![]] {
            let (_, first) = Raw::hello_with(&server, &headers, "alices-tab").await;
            match first {
                ServerMsg::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden),
                other => panic!("{other:?}"),
            }
        }
        // By post: refused, and Alice's seqs are not used up.
        let body = json!({"client_id": "alices-tab", "events": [
            {"seq": 2, "name": "add_todo", "args": add("pub", "t2", "stolen")},
            {"seq": 3, "name": "add_todo", "args": add("pub", "t3", "stolen")}
        ]})
        .to_string();
        let (_, _, answer) = http(server.addr, "POST", "/sssync/events", &[("x-session", &bob)], &body).await;
        assert!(answer.contains(r#""code":"forbidden""#), "{answer}");
        assert!(!answer.contains(r#""t":"ack""#), "{answer}");
        assert_eq!(titles(&server.todos("pub").await), ["one"]);

        // Alice goes on: her seq 2 applies (not acknowledged as someone else's duplicate).
        let r = raw.event(2, "add_todo", add("pub", "t4", "two")).await;
        assert!(matches!(&r, ServerMsg::Ack(a) if !a.dup), "{r:?}");
        assert_eq!(titles(&server.todos("pub").await), ["one", "two"]);

        // A native client that finds its id taken goes on under a new one, and its event
        // applies once.
        let store = Arc::new(MemoryStore::default());
        let b = NativeClient::connect_with(
            server.ws_url(),
            "alices-tab",
            Options {
                headers: session(&bob),
                store: Some(store.clone()),
                ..Options::default()
            },
        );
        b.send(AddTodo { id: "t5".into(), list_id: "pub".into(), title: "bob's".into() });
        b.wait_for(WAIT, |s| s.client_id() != "alices-tab" && s.pending_count() == 0 && s.identity_tag().is_some())
            .await
            .unwrap();
        // Its event was made before it knew: it was dropped with the id, not sent as Bob.
        assert_eq!(titles(&server.todos("pub").await), ["one", "two"]);
        b.send(AddTodo { id: "t6".into(), list_id: "pub".into(), title: "bob's".into() });
        b.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        assert_eq!(titles(&server.todos("pub").await), ["one", "two", "bob's"]);
        assert!(server.applied_twice().await.is_empty());
        server.stop().await;
    }
}

on_both! {
    async fn unsharing_ends_open_subscriptions_with_forbidden_and_the_rows_go(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let bob = sign_in("bob");
        let a = alices_list(&server, &alice, "s1").await;
        let store = Arc::new(MemoryStore::default());
        let b = NativeClient::connect_with(
            server.ws_url(),
            "bobs-tab",
            Options { headers: session(&bob), store: Some(store.clone()), ..Options::default() },
        );
        b.subscribe::<ListTodos>(&list("s1"));
        wait_forbidden(&b, "s1").await;

        // Shared: Bob subscribes again and reads it live, and writes to it.
        a.send(Share { list_id: "s1".into(), user: "bob".into(), on: true });
        a.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        b.subscribe::<ListTodos>(&list("s1"));
        b.send(AddListTodo { id: "s1-t2".into(), list_id: "s1".into(), title: "from bob".into() });
        b.wait_for(WAIT, |s| s.pending_count() == 0 && s.confirmed(&list_key("s1")).is_some_and(|(_, r)| r.len() == 2))
            .await
            .unwrap();
        assert!(b.rejected().is_empty());
        assert!(store.load().keys.contains_key(&("list_todos".into(), r#"{"list_id":"s1"}"#.into())));

        // Unshared: Bob's open subscription ends with `forbidden`; his rows go, from the store
        // too; Alice's goes on.
        a.send(Share { list_id: "s1".into(), user: "bob".into(), on: false });
        wait_forbidden(&b, "s1").await;
        assert!(b.rows::<ListTodos>(&list("s1")).is_none());
        assert!(store.load().keys.is_empty(), "{:?}", store.load().keys);
        a.send(AddListTodo { id: "s1-t3".into(), list_id: "s1".into(), title: "after".into() });
        a.wait_for(WAIT, |s| s.confirmed(&list_key("s1")).is_some_and(|(_, r)| r.len() == 3))
            .await
            .unwrap();
        assert!(b.rows::<ListTodos>(&list("s1")).is_none(), "no delta after the revocation");
        server.stop().await;
    }
}

on_both! {
    async fn access_withdrawn_by_a_write_outside_the_engine_ends_subscriptions_too(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let bob = sign_in("bob");
        let a = alices_list(&server, &alice, "o1").await;
        a.send(Share { list_id: "o1".into(), user: "bob".into(), on: true });
        a.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        let b = client(&server, "bob-o1", Some(&bob));
        b.subscribe::<ListTodos>(&list("o1"));
        b.wait_for(WAIT, |s| s.confirmed(&list_key("o1")).is_some()).await.unwrap();
        // An administrator's SQL takes the list from Alice and gives it to Carol.
        server.db.execute("UPDATE lists SET owner = 'carol' WHERE id = $1", &["o1"]).await;
        server.db.execute("DELETE FROM shares WHERE list_id = $1", &["o1"]).await;
        for c in [&a, &b] {
            wait_forbidden(c, "o1").await;
            assert!(c.rows::<ListTodos>(&list("o1")).is_none());
        }
        server.stop().await;
    }
}

on_both! {
    async fn signing_out_the_client_forgets_everything_of_the_identity(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let _a = alices_list(&server, &alice, "g1").await;
        let store = Arc::new(MemoryStore::default());
        let c = NativeClient::connect_with(
            server.ws_url(),
            "shared-computer",
            Options { headers: session(&alice), store: Some(store.clone()), ..Options::default() },
        );
        c.subscribe::<ListTodos>(&list("g1"));
        c.send(AddListTodo { id: "g1-on".into(), list_id: "g1".into(), title: "online".into() });
        c.wait_for(WAIT, |s| {
            s.pending_count() == 0
                && s.confirmed(&list_key("g1")).is_some_and(|(_, r)| r.len() == 2)
                && s.identity_tag().is_some_and(|w| !w.is_empty())
        })
        .await
        .unwrap();
        // Offline, a write is made; then the session ends and the computer is nobody's.
        c.set_online(false);
        eventually("offline", || async { !c.is_live() }).await;
        c.send(AddListTodo { id: "g1-off".into(), list_id: "g1".into(), title: "offline".into() });
        assert_eq!(store.load().events.len(), 1);
        sign_out(&alice);
        c.set_headers(Vec::new());
        c.set_online(true);
        // The client finds its id is Alice's: it forgets everything of hers (rows, the pending
        // write) and goes on, as nobody, under a new id; the private list is forbidden to it.
        wait_forbidden(&c, "g1").await;
        c.wait_for(WAIT, |s| s.client_id() != "shared-computer" && s.identity_tag() == Some(""))
            .await
            .unwrap();
        let kept = store.load();
        assert!(kept.keys.is_empty() && kept.events.is_empty(), "{kept:?}");
        assert!(c.rows::<ListTodos>(&list("g1")).is_none());
        assert_eq!(titles(&server.todos("g1").await), ["secret", "online"]);
        server.stop().await;
    }
}

on_both! {
    async fn a_client_whose_identity_changes_unseen_drops_what_it_held(db) {
        // A client id never used for a write is nobody's: the welcome's identity tag tells the
        // client its cache is another identity's.
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let _a = alices_list(&server, &alice, "u1").await;
        let store = Arc::new(MemoryStore::default());
        let c = NativeClient::connect_with(
            server.ws_url(),
            "reader",
            Options { headers: session(&alice), store: Some(store.clone()), ..Options::default() },
        );
        c.subscribe::<ListTodos>(&list("u1"));
        c.wait_for(WAIT, |s| s.confirmed(&list_key("u1")).is_some()).await.unwrap();
        c.set_online(false);
        eventually("offline", || async { !c.is_live() }).await;
        sign_out(&alice);
        c.set_online(true);
        wait_forbidden(&c, "u1").await;
        assert_eq!(c.with_state(|s| s.identity_tag().map(str::to_owned)).as_deref(), Some(""));
        assert!(store.load().keys.is_empty());
        assert_eq!(c.client_id(), "reader");
        server.stop().await;
    }
}

on_both! {
    async fn an_open_connection_whose_session_ends_is_closed_with_identity_changed(db) {
        // Told at once (`identities_changed`), or found by the periodic check.
        for every in [Duration::from_secs(3600), Duration::from_millis(200)] {
            let server = Server::start_with(
                &db,
                0,
                Config { reidentify_every: Some(every), ..Config::default() },
            )
            .await;
            let bob = sign_in("bob");
            let (mut raw, w) = Raw::hello_with(&server, &[("x-session", &bob)], "bob-raw").await;
            let ServerMsg::Welcome(w) = w else { panic!("{w:?}") };
            assert!(w.who.is_some());
            sign_out(&bob);
            if every > WAIT {
                server.engine.identities_changed();
            }
            match raw.recv().await {
                ServerMsg::Error(e) => assert_eq!(e.code, ErrorCode::IdentityChanged),
                other => panic!("{other:?}"),
            }
            assert!(raw.closed().await);
            server.stop().await;
        }
    }
}

/// Reads what `raw` gets until its `pong`, failing on any rows of list `l`.
async fn no_rows_until_pong(raw: &mut Raw, l: &str) {
    raw.send(json!({"t": "ping"})).await;
    loop {
        match raw.recv().await {
            ServerMsg::Pong(_) => return,
            ServerMsg::Snapshot(s) if s.a.get().contains(l) => panic!("rows sent: {s:?}"),
            ServerMsg::Delta(d) if d.a.get().contains(l) => panic!("rows sent: {d:?}"),
            _ => {}
        }
    }
}

on_both! {
    async fn a_refused_reader_gets_no_rows_by_asking_for_a_resync(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let bob = sign_in("bob");
        // Alice's client keeps the list's group live.
        let a = alices_list(&server, &alice, "p1").await;
        let sub = json!({"t": "sub", "q": "list_todos", "a": {"list_id": "p1"}});
        let resync = json!({"t": "resync", "q": "list_todos", "a": {"list_id": "p1"}});

        // Refused, then a resync: nothing.
        let (mut raw, w) = Raw::hello_with(&server, &[("x-session", &bob)], "bob-1").await;
        assert!(matches!(w, ServerMsg::Welcome(_)), "{w:?}");
        raw.send(sub.clone()).await;
        let ServerMsg::Error(e) = key_error(&mut raw, "list_todos").await else { unreachable!() };
        assert_eq!(e.code, ErrorCode::Forbidden);
        raw.send(resync.clone()).await;
        no_rows_until_pong(&mut raw, "p1").await;

        // A sub and a resync back to back (the resync before the refusal): nothing, and no
        // later delta either.
        let (mut raw2, w) = Raw::hello_with(&server, &[("x-session", &bob)], "bob-2").await;
        assert!(matches!(w, ServerMsg::Welcome(_)), "{w:?}");
        raw2.send(sub.clone()).await;
        raw2.send(resync.clone()).await;
        let ServerMsg::Error(e) = key_error(&mut raw2, "list_todos").await else { unreachable!() };
        assert_eq!(e.code, ErrorCode::Forbidden);
        a.send(AddListTodo { id: "p1-t2".into(), list_id: "p1".into(), title: "second secret".into() });
        // Alice's ack comes after the delta is queued for every subscriber of the list.
        a.wait_for(WAIT, |s| s.pending_count() == 0 && s.confirmed(&list_key("p1")).is_some_and(|(_, r)| r.len() == 2))
            .await
            .unwrap();
        no_rows_until_pong(&mut raw2, "p1").await;
        raw2.send(resync.clone()).await;
        no_rows_until_pong(&mut raw2, "p1").await;
        server.stop().await;
    }
}

on_both! {
    async fn a_reader_whose_share_was_withdrawn_gets_no_rows_by_asking_for_a_resync(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let bob = sign_in("bob");
        let a = alices_list(&server, &alice, "w1").await;
        a.send(Share { list_id: "w1".into(), user: "bob".into(), on: true });
        a.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        let (mut raw, w) = Raw::hello_with(&server, &[("x-session", &bob)], "bob-w").await;
        assert!(matches!(w, ServerMsg::Welcome(_)), "{w:?}");
        raw.send(json!({"t": "sub", "q": "list_todos", "a": {"list_id": "w1"}})).await;
        match raw.recv().await {
            ServerMsg::Snapshot(s) => assert_eq!(s.rows.len(), 1),
            other => panic!("{other:?}"),
        }
        // Withdrawn: `forbidden` for the key; a resync then brings nothing, not the todos
        // added after the withdrawal either.
        a.send(Share { list_id: "w1".into(), user: "bob".into(), on: false });
        let ServerMsg::Error(e) = key_error(&mut raw, "list_todos").await else { unreachable!() };
        assert_eq!(e.code, ErrorCode::Forbidden);
        a.send(AddListTodo { id: "w1-t2".into(), list_id: "w1".into(), title: "after".into() });
        a.wait_for(WAIT, |s| s.pending_count() == 0 && s.confirmed(&list_key("w1")).is_some_and(|(_, r)| r.len() == 2))
            .await
            .unwrap();
        raw.send(json!({"t": "resync", "q": "list_todos", "a": {"list_id": "w1"}})).await;
        no_rows_until_pong(&mut raw, "w1").await;
        server.stop().await;
    }
}

on_both! {
    async fn a_session_read_that_fails_for_a_moment_signs_nobody_out_and_drops_no_write(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let (mut raw, w) = Raw::hello_with(&server, &[("x-session", &alice)], "alice-raw").await;
        assert!(matches!(w, ServerMsg::Welcome(ref w) if w.who.is_some()), "{w:?}");
        // A tab of Alice's with a write made offline (its client id never used yet).
        let store = Arc::new(MemoryStore::default());
        let c = NativeClient::connect_with(
            server.ws_url(),
            "alice-native",
            Options { headers: session(&alice), store: Some(store.clone()), ..Options::default() },
        );
        c.subscribe::<Todos>(&list("pub"));
        c.wait_for(WAIT, |s| s.identity_tag().is_some_and(|w| !w.is_empty()) && s.rows::<Todos>(&list("pub")).is_some())
            .await
            .unwrap();
        c.set_online(false);
        eventually("offline", || async { !c.is_live() }).await;
        c.send(AddTodo { id: "kept".into(), list_id: "pub".into(), title: "made offline".into() });

        // The session store fails for a moment, while every connection asks again who it is.
        session_readable(&alice, false);
        server.engine.identities_changed();
        eventually("the live connection asked", || async { failed_reads(&alice) >= 1 }).await;
        // Meanwhile the other paths answer 503: nothing read or written as anyone.
        let path = format!("/sssync/snapshot/todos?a={}", encode(r#"{"list_id":"pub"}"#));
        let (status, head, _) = http(server.addr, "GET", &path, &[("x-session", &alice)], "").await;
        assert_eq!(status, 503, "{head}");
        assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
        let body = json!({"client_id": "alice-post", "events": [
            {"seq": 1, "name": "add_todo", "args": add("pub", "p1", "posted")}
        ]})
        .to_string();
        let (status, _, answer) = http(server.addr, "POST", "/sssync/events", &[("x-session", &alice)], &body).await;
        assert_eq!(status, 503, "{answer}");
        // The offline tab comes back: its upgrade is refused for now, and it tries again.
        let before = failed_reads(&alice);
        c.set_online(true);
        eventually("the tab's upgrade was answered 503", || async { failed_reads(&alice) > before }).await;
        session_readable(&alice, true);

        // The live connection was not told its identity changed: it goes on.
        raw.send(json!({"t": "ping"})).await;
        loop {
            match raw.recv().await {
                ServerMsg::Pong(_) => break,
                ServerMsg::Error(e) => panic!("{e:?}"),
                _ => {}
            }
        }
        // The tab is welcomed as Alice under its own id, and its write applies once.
        c.wait_for(WAIT, |s| s.pending_count() == 0 && s.rows::<Todos>(&list("pub")).is_some_and(|r| r.len() == 1))
            .await
            .unwrap();
        assert_eq!(c.client_id(), "alice-native");
        assert_eq!(titles(&server.todos("pub").await), ["made offline"]);
        server.stop().await;
    }
}

on_both! {
    async fn a_connection_whose_session_was_replaced_reconnects_and_keeps_its_pending_writes(db) {
        // A write the server cannot take for now is told to come back in a minute: it stays
        // pending on the live connection, and the client sends nothing meanwhile.
        let server = Server::start_with(
            &db,
            0,
            Config {
                write_retry: Some(sssync_core::server::WriteRetry {
                    attempts: 1,
                    backoff: Duration::from_millis(1),
                    resend_after: Duration::from_secs(60),
                }),
                ..Config::default()
            },
        )
        .await;
        let first = sign_in("alice");
        let store = Arc::new(MemoryStore::default());
        let c = NativeClient::connect_with(
            server.ws_url(),
            "alice-tab",
            Options { headers: session(&first), store: Some(store.clone()), ..Options::default() },
        );
        c.subscribe::<Todos>(&list("cy"));
        c.wait_for(WAIT, |s| s.identity_tag().is_some_and(|w| !w.is_empty()) && s.rows::<Todos>(&list("cy")).is_some())
            .await
            .unwrap();
        // (The flaky counts are shared by the tests running at once: an id of this one's.)
        let id = format!("cy-{}", db.tag());
        set_flaky(&id, 1);
        c.send(Flaky { id, list_id: "cy".into(), title: "kept".into() });
        c.wait_for(WAIT, |s| s.write_blocked_reason().is_some()).await.unwrap();
        // Alice signs in again in this browser: a new session, the old one ended. The
        // connection's own request still names the old one.
        let second = sign_in("alice");
        sign_out(&first);
        c.set_headers(session(&second));
        server.engine.identities_changed();
        let told = c
            .wait_for(WAIT, |_| c.errors().iter().any(|e| e.code == ErrorCode::IdentityChanged))
            .await;
        assert!(told.is_ok(), "errors: {:?}", c.errors());
        // It reconnected as Alice again: same client id, the write sent and applied once.
        c.wait_for(WAIT, |s| s.pending_count() == 0 && s.rows::<Todos>(&list("cy")).is_some_and(|r| r.len() == 1))
            .await
            .unwrap();
        assert_eq!(c.client_id(), "alice-tab");
        assert_eq!(titles(&server.todos("cy").await), ["kept"]);
        assert!(server.applied_twice().await.is_empty());
        server.stop().await;
    }
}

on_both! {
    async fn a_snapshot_that_depends_on_who_asks_is_kept_by_no_shared_cache(db) {
        let server = Server::start(&db, 0).await;
        let alice = sign_in("alice");
        let _a = alices_list(&server, &alice, "c1").await;
        let get = |q: &str, a: &str| format!("/sssync/snapshot/{q}?a={}", encode(a));
        for (path, depends) in [
            (get("list_todos", r#"{"list_id":"c1"}"#), true),
            (get("my_lists", "null"), true),
            (get("todos", r#"{"list_id":"c1"}"#), false),
        ] {
            let (status, head, _) = http(server.addr, "GET", &path, &[("x-session", &alice)], "").await;
            assert_eq!(status, 200, "{path}: {head}");
            let etag = head
                .lines()
                .find_map(|l| l.strip_prefix("etag: "))
                .unwrap()
                .trim()
                .to_owned();
            let head = head.to_ascii_lowercase();
            assert_eq!(head.contains("cache-control: private"), depends, "{path}: {head}");
            assert_eq!(head.contains("vary: cookie, authorization"), depends, "{path}: {head}");
            // The answer that nothing changed says so too.
            let (status, head, _) = http(
                server.addr,
                "GET",
                &path,
                &[("x-session", &alice), ("If-None-Match", &etag)],
                "",
            )
            .await;
            assert_eq!(status, 304, "{path}: {head}");
            assert_eq!(head.to_ascii_lowercase().contains("cache-control: private"), depends);
        }
        server.stop().await;
    }
}
