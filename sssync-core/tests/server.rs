//! The engine against a real server on 127.0.0.1 and a real SQLite file: the raw wire protocol
//! (as any client would speak it) and the native client. Each test is named after the protocol
//! invariant it pins (docs/protocol.md).

mod common;

use common::*;
use serde_json::json;
use sssync_core::client::native::{Chaos, NativeClient, Options};
use sssync_core::client::{EventTypes, MemoryStore};
use sssync_core::protocol::ServerMsg;
use sssync_core::server::declared::DeclarationError;
use sssync_core::server::{Counts, EngineError, Table};
use sssync_core::{ErrorCode, Version};
use std::sync::Arc;
use std::time::Duration;

on_both! {
    async fn invariant_10_two_clients_converge_live_on_one_shared_query(db) {
        let server = Server::start(&db, 0).await;
        let a = NativeClient::connect(server.ws_url(), "client-a");
        let b = NativeClient::connect(server.ws_url(), "client-b");
        a.subscribe::<Todos>(&list("l1"));
        b.subscribe::<Todos>(&list("l1"));
        for c in [&a, &b] {
            c.wait_for(WAIT, |s| s.rows::<Todos>(&list("l1")).is_some())
                .await
                .unwrap();
        }
        a.send(AddTodo {
            id: "t1".into(),
            list_id: "l1".into(),
            title: "from a".into(),
        });
        b.send(AddTodo {
            id: "t2".into(),
            list_id: "l1".into(),
            title: "from b".into(),
        });
        for c in [&a, &b] {
            c.wait_for(WAIT, |s| {
                s.pending_count() == 0 && s.rows::<Todos>(&list("l1")).is_some_and(|r| r.len() == 2)
            })
            .await
            .unwrap();
        }
        let db = server.todos("l1").await;
        assert_eq!(a.rows::<Todos>(&list("l1")).unwrap(), db);
        assert_eq!(b.rows::<Todos>(&list("l1")).unwrap(), db);
        // One result for the key, two subscribers.
        assert_eq!(server.engine.counts(),
            Counts { keys: 1, subscriptions: 2 });
        server.stop().await;
    }
}

on_both! {
    async fn invariant_5_a_duplicated_event_is_acknowledged_and_not_applied_twice(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, welcome) = Raw::connect(&server, "dup").await;
        assert_eq!(welcome.last_seq, 0);
        let first = raw.event(1, "add_todo", add("l", "t1", "once")).await;
        let ServerMsg::Ack(ack) = first else {
            panic!("{first:?}")
        };
        assert!(!ack.dup);
        let again = raw.event(1, "add_todo", add("l", "t1", "once")).await;
        assert!(
            matches!(again, ServerMsg::Ack(ref a) if a.dup && a.seq == 1),
            "{again:?}"
        );
        assert_eq!(server.todos("l").await.len(), 1);
        assert_eq!(server.applied_count().await, 1);
        // A new connection is told where the client stands.
        let (_raw2, welcome) = Raw::connect(&server, "dup").await;
        assert_eq!(welcome.last_seq, 1);
        server.stop().await;
    }
}

on_both! {
    async fn invariant_5_a_duplicate_answered_while_the_original_fans_out_names_the_originals_version(db) {
        // Two tabs send one gone tab's event (same client id, same seq). The second arrives
        // after the first committed, while its fan-out still runs (a subscriber of a query
        // that takes 400 ms holds it). Its acknowledgement must not name an older version: the
        // client would take its rows as confirmed before they reach it.
        let server = Server::start(&db, 0).await;
        let l = format!("dupv-{}", db.tag());
        let (mut watcher, _) = Raw::connect(&server, &format!("watcher-{}", db.tag())).await;
        watcher.send(json!({"t": "sub", "q": "slow", "a": {"list_id": l}})).await;
        let first = watcher.recv().await;
        assert!(matches!(first, ServerMsg::Snapshot(_)), "{first:?}");
        let id = format!("gone-tab-{}", db.tag());
        let (mut a, _) = Raw::connect(&server, &id).await;
        let (mut b, _) = Raw::connect(&server, &id).await;
        a.send(json!({"t": "event", "seq": 1, "name": "add_todo", "args": add(&l, "d1", "once")}))
            .await;
        eventually("the first send committed", || async { server.todos(&l).await.len() == 1 }).await;
        let again = b.event(1, "add_todo", add(&l, "d1", "once")).await;
        let original = a.recv_reply().await;
        let (ServerMsg::Ack(original), ServerMsg::Ack(again)) = (original, again) else {
            panic!("two acknowledgements expected")
        };
        assert!(!original.dup && again.dup);
        assert!(
            again.v >= original.v,
            "the duplicate's version {} is older than the commit it reports ({})",
            again.v,
            original.v
        );
        assert_eq!(server.applied_count().await, 1);
        server.stop().await;
    }
}

on_both! {
    async fn invariant_5_a_gap_applies_nothing_and_says_where_to_resume(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&server, "gappy").await;
        let reply = raw.event(3, "add_todo", add("l", "t3", "too early")).await;
        assert!(
            matches!(reply, ServerMsg::Gap(ref g) if g.seq == 3 && g.expected == 1),
            "{reply:?}"
        );
        assert!(server.todos("l").await.is_empty());
        let reply = raw.event(1, "add_todo", add("l", "t1", "first")).await;
        assert!(matches!(reply, ServerMsg::Ack(_)), "{reply:?}");
        assert_eq!(titles(&server.todos("l").await), ["first"]);
        server.stop().await;
    }
}

on_both! {
    async fn invariant_5_a_rejected_event_changes_no_data_but_uses_its_seq(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&server, "rej").await;
        let long = "x".repeat(201);
        let reply = raw.event(1, "add_todo", add("l", "t1", &long)).await;
        let ServerMsg::Reject(r) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!((r.seq, r.error.code.as_str()), (1, "title_too_long"));
        assert!(server.todos("l").await.is_empty());
        assert_eq!(server.applied_count().await, 0);
        // seq 1 is used: 2 is next, and applies.
        let reply = raw.event(2, "add_todo", add("l", "t2", "fine")).await;
        assert!(
            matches!(reply, ServerMsg::Ack(ref a) if a.seq == 2),
            "{reply:?}"
        );
        assert_eq!(titles(&server.todos("l").await), ["fine"]);
        server.stop().await;
    }
}

on_both! {
    async fn invariant_7_a_rejection_rolls_back_the_prediction_and_reports_why(db) {
        let server = Server::start(&db, 0).await;
        let c = NativeClient::connect(server.ws_url(), "predictor");
        c.subscribe::<Todos>(&list("l"));
        c.wait_for(WAIT, |s| s.rows::<Todos>(&list("l")).is_some())
            .await
            .unwrap();
        c.send(AddTodo {
            id: "ok".into(),
            list_id: "l".into(),
            title: "kept".into(),
        });
        let seq = c.send(AddTodo {
            id: "bad".into(),
            list_id: "l".into(),
            title: "y".repeat(300),
        });
        let seq = seq.expect("sent");
        // Predicted at once, before any server reply.
        assert_eq!(c.rows::<Todos>(&list("l")).unwrap().len(), 2);
        c.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        assert_eq!(titles(&c.rows::<Todos>(&list("l")).unwrap()), ["kept"]);
        let rejected = c.rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, seq);
        assert_eq!(rejected[0].1.code, "title_too_long");
        server.stop().await;
    }
}

on_both! {
    async fn invariant_6_an_acknowledged_event_never_flickers_out_of_the_view(db) {
        let server = Server::start(&db, 0).await;
        let c = NativeClient::connect(server.ws_url(), "flicker");
        c.subscribe::<Todos>(&list("l"));
        c.wait_for(WAIT, |s| s.rows::<Todos>(&list("l")).is_some())
            .await
            .unwrap();
        for i in 0..20 {
            c.send(AddTodo {
                id: format!("t{i}"),
                list_id: "l".into(),
                title: format!("todo {i}"),
            });
        }
        // After every change the client sees, every sent todo is in the view: predicted while
        // pending, confirmed once acknowledged, never missing in between.
        let mut violations = 0;
        c.wait_for(WAIT, |s| {
            let rows = s.rows::<Todos>(&list("l")).unwrap_or_default();
            if rows.len() != 20 {
                violations += 1;
            }
            s.pending_count() == 0
        })
        .await
        .unwrap();
        assert_eq!(violations, 0);
        let confirmed = c.with_state(|s| {
            let key = sssync_core::QueryKey::new("todos", &list("l")).unwrap();
            s.confirmed(&key).unwrap().1.len()
        });
        assert_eq!(confirmed, 20);
        server.stop().await;
    }
}

on_both! {
    async fn invariant_8_a_reconnect_after_missed_writes_receives_only_the_missed_rows(db) {
        let server = Server::start(&db, 0).await;
        let writer = NativeClient::connect(server.ws_url(), "writer");
        for i in 0..300 {
            writer.send(AddTodo {
                id: format!("t{i:03}"),
                list_id: "big".into(),
                title: format!("a todo with a reasonably long title, number {i}"),
            });
        }
        writer
            .wait_for(WAIT, |s| s.pending_count() == 0)
            .await
            .unwrap();

        let reader = NativeClient::connect(server.ws_url(), "reader");
        reader.subscribe::<Todos>(&list("big"));
        reader
            .wait_for(WAIT, |s| {
                s.rows::<Todos>(&list("big"))
                    .is_some_and(|r| r.len() == 300)
            })
            .await
            .unwrap();
        let snapshot_bytes = reader.bytes_received();

        reader.set_online(false);
        reader.wait_for(WAIT, |_| !reader.is_live()).await.unwrap();
        writer.send(ToggleTodo {
            id: "t007".into(),
            list_id: "big".into(),
            completed: true,
        });
        writer.send(DeleteTodo {
            id: "t100".into(),
            list_id: "big".into(),
        });
        writer.send(AddTodo {
            id: "new".into(),
            list_id: "big".into(),
            title: "added while the reader was away".into(),
        });
        writer
            .wait_for(WAIT, |s| s.pending_count() == 0)
            .await
            .unwrap();

        let before = reader.bytes_received();
        reader.set_online(true);
        let expected = server.todos("big").await;
        reader
            .wait_for(WAIT, |s| {
                s.rows::<Todos>(&list("big")).as_ref() == Some(&expected)
            })
            .await
            .unwrap();
        let resume_bytes = reader.bytes_received() - before;
        assert!(
            resume_bytes * 20 < snapshot_bytes,
            "resume took {resume_bytes} bytes; the snapshot was {snapshot_bytes}"
        );
        server.stop().await;
    }
}

on_both! {
    async fn invariant_9_a_restarted_server_on_the_same_database_resumes_every_client(db) {
        let server = Server::start(&db, 0).await;
        let port = server.addr.port();
        let a = NativeClient::connect(server.ws_url(), "restart-a");
        let b = NativeClient::connect(server.ws_url(), "restart-b");
        for c in [&a, &b] {
            c.subscribe::<Todos>(&list("r"));
        }
        a.send(AddTodo {
            id: "before".into(),
            list_id: "r".into(),
            title: "before the restart".into(),
        });
        for c in [&a, &b] {
            c.wait_for(WAIT, |s| {
                s.pending_count() == 0 && s.rows::<Todos>(&list("r")).is_some_and(|r| r.len() == 1)
            })
            .await
            .unwrap();
        }
        server.stop().await;
        for c in [&a, &b] {
            c.wait_for(WAIT, |_| !c.is_live()).await.unwrap();
        }
        // Written while no server runs: pending, predicted.
        a.send(AddTodo {
            id: "during".into(),
            list_id: "r".into(),
            title: "while the server was down".into(),
        });
        assert_eq!(a.rows::<Todos>(&list("r")).unwrap().len(), 2);

        let server = Server::start(&db, port).await;
        let expected_titles = ["before the restart", "while the server was down"];
        for c in [&a, &b] {
            c.wait_for(WAIT, |s| {
                s.pending_count() == 0
                    && s.rows::<Todos>(&list("r"))
                        .is_some_and(|r| titles(&r) == expected_titles)
            })
            .await
            .unwrap();
        }
        assert_eq!(titles(&server.todos("r").await), expected_titles);
        assert!(server.applied_twice().await.is_empty());
        server.stop().await;
    }
}

on_both! {
    async fn invariant_2_a_new_epoch_forces_a_reset_never_a_mix(db) {
        // A second database of the same kind: another history.
        let other = if db.is_sqlite() {
            TestDb::sqlite()
        } else {
            TestDb::postgres().await.unwrap()
        };
        let s1 = Server::start(&db, 0).await;
        let s2 = Server::start(&other, 0).await;
        assert_ne!(s1.engine.epoch(), s2.engine.epoch());
        let w2 = NativeClient::connect(s2.ws_url(), "w2");
        w2.send(AddTodo {
            id: "only-in-2".into(),
            list_id: "e".into(),
            title: "second database".into(),
        });
        w2.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();

        let c = NativeClient::connect(s1.ws_url(), "wanderer");
        c.subscribe::<Todos>(&list("e"));
        c.send(AddTodo {
            id: "only-in-1".into(),
            list_id: "e".into(),
            title: "first database".into(),
        });
        c.wait_for(WAIT, |s| {
            s.pending_count() == 0 && s.rows::<Todos>(&list("e")).is_some_and(|r| r.len() == 1)
        })
        .await
        .unwrap();
        let epoch1 = c.with_state(|s| s.epoch().cloned()).unwrap();

        // The same client now reaches a server with another history.
        c.set_online(false);
        c.wait_for(WAIT, |_| !c.is_live()).await.unwrap();
        c.set_url(s2.ws_url());
        c.set_online(true);
        c.wait_for(WAIT, |s| {
            s.epoch() != Some(&epoch1) && s.rows::<Todos>(&list("e")).is_some()
        })
        .await
        .unwrap();
        c.wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("e"))
                .is_some_and(|r| titles(&r) == ["second database"])
        })
        .await
        .unwrap();
        s1.stop().await;
        s2.stop().await;
    }
}

on_both! {
    async fn invariant_10_a_declarative_query_is_patched_with_the_rows_that_changed_not_read_again(db) {
        let server = Server::start(&db, 0).await;
        let l = format!("shape-{}", db.tag());
        let other = format!("other-{}", db.tag());
        server.db.insert_todos(&l, &[("a", "mango", "1"), ("b", "apple", "2"), ("c", "kiwi", "3"), ("d", "fig", "4")]).await;
        let client = NativeClient::connect(server.ws_url(), format!("shaper-{}", db.tag()));
        client.subscribe::<Shaped>(&list(&l));
        client.subscribe::<Top3>(&list(&l));
        // After each change, the client holds exactly what the query reads in full, in order.
        let converged = |step: &'static str| {
            let (server, client, l) = (&server, &client, &l);
            async move {
                // The client's own writes are settled first (then the database has them).
                client.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
                let shaped = server.db.read_shape(&SHAPED, l).await;
                let top3 = server.db.read_shape(&TOP3, l).await;
                client
                    .wait_for(WAIT, |s| {
                        s.rows::<Shaped>(&list(l)).as_ref() == Some(&shaped)
                            && s.rows::<Top3>(&list(l)).as_ref() == Some(&top3)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        let (a, b) = client.with_state(|s| {
                            (s.rows::<Shaped>(&list(l)), s.rows::<Top3>(&list(l)))
                        });
                        panic!(
                            "after {step}: {e}\nshaped: {a:?}\nwanted {shaped:?}\ntop3: {b:?}\nwanted {top3:?}"
                        )
                    });
            }
        };
        converged("the first read").await;
        assert_eq!(shaped_reads("shaped", &l).0, 1, "read once, in full");

        // Through the engine: a new todo, a toggle, a delete.
        client.send(AddTodo { id: "e".into(), list_id: l.clone(), title: "banana".into() }).unwrap();
        converged("an add").await;
        client.send(ToggleTodo { id: "b".into(), list_id: l.clone(), completed: true }).unwrap();
        converged("a toggle").await;
        client.send(DeleteTodo { id: "c".into(), list_id: l.clone() }).unwrap();
        converged("a delete").await;
        // Outside the engine: a rename that moves a row, a row that moves to another list and
        // one that comes from it, several rows in one statement.
        server.db.execute("UPDATE todos SET title = 'zucchini' WHERE id = $1", &["b"]).await;
        converged("a move").await;
        server.db.execute("UPDATE todos SET list_id = $1 WHERE id = $2", &[&other, "a"]).await;
        converged("a row that left").await;
        server.db.insert_todos(&other, &[("f", "cherry", "9")]).await;
        server.db.execute("UPDATE todos SET list_id = $1 WHERE id = $2", &[&l, "f"]).await;
        converged("a row that came in").await;
        server.db.execute("UPDATE todos SET title = title || '!' WHERE list_id = $1", &[&l]).await;
        converged("every row at once").await;
        server.db.execute("DELETE FROM todos WHERE list_id = $1", &[&l]).await;
        converged("every row gone").await;

        let (reads, patches) = shaped_reads("shaped", &l);
        assert!(server.engine.is_incremental("shaped") && server.engine.is_incremental("top3"));
        assert_eq!(reads, 1, "never read in full again");
        assert!(patches >= 8, "each change read incrementally ({patches})");
        server.stop().await;
    }
}

on_both! {
    async fn a_declarative_query_stays_in_order_when_an_outside_write_lands_just_before_an_event(db) {
        // By title: a, f, m, z. Outside the engine, z becomes c (a, c, f, m in the database);
        // before that write has a version, an event changes f, whose predecessor is now c. A
        // patch of f alone would put it after c's old place (a, m, c, f), and c's own change
        // later would not move f back.
        let server = Server::start(&db, 0).await;
        let l = format!("outside-{}", db.tag());
        server.db.insert_todos(&l, &[("oa", "a", "1"), ("of", "f", "2"), ("om", "m", "3"), ("oz", "z", "4")]).await;
        let client = NativeClient::connect(server.ws_url(), format!("outsider-{}", db.tag()));
        client.subscribe::<Shaped>(&list(&l));
        let want = server.db.read_shape(&SHAPED, &l).await;
        client
            .wait_for(WAIT, |s| s.rows::<Shaped>(&list(&l)).as_ref() == Some(&want))
            .await
            .unwrap();
        server.db.execute("UPDATE todos SET title = 'c' WHERE id = $1", &["oz"]).await;
        client.send(ToggleTodo { id: "of".into(), list_id: l.clone(), completed: true }).unwrap();
        client.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        let want = server.db.read_shape(&SHAPED, &l).await;
        assert_eq!(
            want.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(),
            ["a", "c", "f", "m"]
        );
        client
            .wait_for(WAIT, |s| s.rows::<Shaped>(&list(&l)).as_ref() == Some(&want))
            .await
            .unwrap_or_else(|e| {
                let got = client.with_state(|s| s.rows::<Shaped>(&list(&l)));
                panic!("{e}\ngot {got:?}\nwanted {want:?}")
            });
        server.stop().await;
    }
}

on_both! {
    async fn a_declarative_query_ordered_by_a_column_that_may_be_null_is_re_run_not_patched(db) {
        let server = Server::start(&db, 0).await;
        assert!(
            !server.engine.is_incremental("by_slug"),
            "slug may be NULL: the incremental path cannot order by it"
        );
        // It still answers, re-run on each change.
        let l = format!("slugs-{}", db.tag());
        let client = NativeClient::connect(server.ws_url(), format!("slugger-{}", db.tag()));
        client.subscribe::<BySlug>(&list(&l));
        client.send(AddTodo { id: "s1".into(), list_id: l.clone(), title: "x".into() }).unwrap();
        client.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        let want = server.db.read_shape(&BY_SLUG, &l).await;
        client
            .wait_for(WAIT, |s| s.rows::<BySlug>(&list(&l)).as_ref() == Some(&want))
            .await
            .unwrap();
        assert_eq!(shaped_reads("by_slug", &l).1, 0, "never read incrementally");
        server.stop().await;
    }
}

on_both! {
    async fn invariant_12_a_client_that_pipelines_events_faster_than_its_answers_drain_is_slowed_not_cut_off(db) {
        // A queue of 32 messages per connection; the client sends 1,500 events without waiting
        // for any answer (it reads them meanwhile, as fast as it can), and follows the list it
        // writes (every batch is also a delta). Without flow control, a batch of hundreds of
        // acks overflows the queue and the connection is closed as a slow consumer.
        let limits = sssync_core::protocol::Limits {
            max_queued_messages: 32,
            ..Default::default()
        };
        let server = Server::start_with(
            &db,
            0,
            Config {
                limits: Some(limits),
                ..Config::default()
            },
        )
        .await;
        let (raw, _) = Raw::connect(&server, "pipeliner").await;
        let (mut tx, mut rx) = futures_util::StreamExt::split(raw.ws);
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        tx.send(Message::text(
            json!({"t": "sub", "q": "todos", "a": {"list_id": "pipe"}}).to_string(),
        ))
        .await
        .unwrap();
        const N: u64 = 1500;
        let writer = tokio::spawn(async move {
            for seq in 1..=N {
                let e = json!({"t": "event", "seq": seq, "name": "add_todo",
                               "args": add("pipe", &format!("t{seq:05}"), "x")});
                tx.feed(Message::text(e.to_string())).await.unwrap();
            }
            tx.flush().await.unwrap();
            tx
        });
        let mut acked = 0;
        while acked < N {
            let frame = tokio::time::timeout(WAIT, rx.next())
                .await
                .expect("an answer within the wait")
                .expect("the connection stays open")
                .unwrap();
            let Message::Text(t) = frame else { continue };
            match ServerMsg::parse(&t).unwrap() {
                ServerMsg::Ack(a) => {
                    acked += 1;
                    assert_eq!(a.seq, acked, "acks in order");
                }
                ServerMsg::Delta(_) | ServerMsg::Snapshot(_) => {}
                other => panic!("unexpected {other:?} after {acked} acks"),
            }
        }
        let _tx = writer.await.unwrap();
        assert_eq!(server.todos("pipe").await.len(), N as usize);
        server.stop().await;
    }
}

on_both! {
    async fn invariant_12_bad_input_gets_typed_errors_changes_nothing_and_the_connection_lives(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&server, "bad").await;
        let expect_error = |m: ServerMsg, code: ErrorCode| match m {
            ServerMsg::Error(e) => assert_eq!(e.code, code, "{e:?}"),
            other => panic!("expected {code:?}, got {other:?}"),
        };

        raw.send_text("this is not json".into()).await;
        expect_error(raw.recv().await, ErrorCode::Malformed);
        raw.send(json!({"t": "launch_missiles"})).await;
        expect_error(raw.recv().await, ErrorCode::Malformed);
        raw.send(json!({"t": "sub", "q": "no_such_query", "a": {}}))
            .await;
        expect_error(raw.recv().await, ErrorCode::UnknownQuery);
        raw.send(json!({"t": "sub", "q": "todos", "a": {"list_id": 42}}))
            .await;
        expect_error(raw.recv().await, ErrorCode::BadArgs);
        raw.send(json!({"t": "hello", "protocol": 1, "client_id": "bad"}))
            .await;
        expect_error(raw.recv().await, ErrorCode::HelloFirst);
        let huge = "z".repeat(100 * 1024);
        raw.send(json!({"t": "event", "seq": 1, "name": "add_todo", "args": {"id": "h", "list_id": "l", "title": huge}}))
            .await;
        expect_error(raw.recv().await, ErrorCode::TooLarge);

        // An event with args over the limit, an unknown name, or args of the wrong shape is
        // refused, typed, and its seq is used (later events are not stuck behind it).
        let big = "w".repeat(5 * 1024);
        let r = raw.event(1, "add_todo", add("l", "b", &big)).await;
        assert!(
            matches!(r, ServerMsg::Reject(ref r) if r.error.code == "too_large"),
            "{r:?}"
        );
        let r = raw.event(2, "no_such_event", json!({})).await;
        assert!(
            matches!(r, ServerMsg::Reject(ref r) if r.error.code == "unknown_event"),
            "{r:?}"
        );
        let r = raw.event(3, "add_todo", json!({"id": 5})).await;
        assert!(
            matches!(r, ServerMsg::Reject(ref r) if r.error.code == "bad_args"),
            "{r:?}"
        );

        // Nothing changed, and the connection still works.
        assert_eq!(server.applied_count().await, 0);
        raw.send(json!({"t": "ping"})).await;
        assert!(matches!(raw.recv().await, ServerMsg::Pong(_)));
        let r = raw.event(4, "add_todo", add("l", "t", "still fine")).await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        server.stop().await;
    }
}

on_both! {
    async fn invariant_3_the_snapshot_is_a_cacheable_get(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&server, "snap").await;
        raw.event(1, "add_todo", add("s", "t1", "hello")).await;

        let path = "/sssync/snapshot/todos?a=%7B%22list_id%22%3A%22s%22%7D";
        let (status, headers, body) = http_get(server.addr, path, None).await;
        assert_eq!(status, 200, "{body}");
        let ServerMsg::Snapshot(snap) = ServerMsg::parse(&body).unwrap() else {
            panic!("{body}")
        };
        assert_eq!(snap.rows.len(), 1);
        assert!(snap.v >= Version(1));
        let etag = header(&headers, "etag").expect("an ETag");
        let (status, _, _) = http_get(server.addr, path, Some(&etag)).await;
        assert_eq!(status, 304);

        let (status, _, body) = http_get(server.addr, "/sssync/snapshot/nope?a=%7B%7D", None).await;
        assert_eq!(status, 404);
        assert!(body.contains("unknown_query"), "{body}");
        let (status, _, body) = http_get(server.addr, "/sssync/snapshot/todos?a=%7B%7D", None).await;
        assert_eq!(status, 400);
        assert!(body.contains("bad_args"), "{body}");
        server.stop().await;
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

on_both! {
    async fn invariant_5_random_clients_with_disconnects_and_duplicates_converge_exactly_once(db) {
        // Seeded and reproducible: a small xorshift generator drives every choice.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let server = Server::start(&db, 0).await;
        // Half the clients deliver some events twice and some out of order.
        let clients: Vec<NativeClient> = (0..4)
            .map(|i| {
                let chaos = if i % 2 == 0 {
                    Chaos {
                        duplicate_every: 3,
                        reorder_every: 5,
                    }
                } else {
                    Chaos::default()
                };
                let options = Options {
                    chaos,
                    ..Options::default()
                };
                NativeClient::connect_with(server.ws_url(), format!("prop-{i}"), options)
            })
            .collect();
        let lists = ["p0", "p1"];
        for c in &clients {
            for l in lists {
                c.subscribe::<Todos>(&list(l));
            }
        }
        let mut next_id = 0;
        for step in 0..300 {
            let c = &clients[rand(clients.len() as u64) as usize];
            let l = lists[rand(2) as usize];
            match rand(10) {
                0 => c.set_online(false),
                1 => c.set_online(true),
                2 | 3 => {
                    // Toggle or delete something this client sees.
                    if let Some(rows) = c.rows::<Todos>(&list(l))
                        && !rows.is_empty()
                    {
                        let t = &rows[rand(rows.len() as u64) as usize];
                        if rand(2) == 0 {
                            c.send(ToggleTodo {
                                id: t.id.clone(),
                                list_id: l.into(),
                                completed: !t.completed,
                            });
                        } else {
                            c.send(DeleteTodo {
                                id: t.id.clone(),
                                list_id: l.into(),
                            });
                        }
                    }
                }
                _ => {
                    next_id += 1;
                    c.send(AddTodo {
                        id: format!("x{next_id}"),
                        list_id: l.into(),
                        title: format!("step {step}"),
                    });
                }
            }
            if rand(8) == 0 {
                tokio::task::yield_now().await;
            }
        }
        for c in &clients {
            c.set_online(true);
        }
        // Quiescence: nothing pending anywhere, every view equal to the database.
        for l in lists {
            for c in &clients {
                c.wait_for(Duration::from_secs(30), |s| s.pending_count() == 0)
                    .await
                    .unwrap();
            }
            let expected = server.todos(l).await;
            for c in &clients {
                c.wait_for(Duration::from_secs(30), |s| {
                    s.rows::<Todos>(&list(l)).as_ref() == Some(&expected)
                })
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", c.with_state(|s| s.client_id().to_owned())));
            }
        }
        assert!(
            server.applied_twice().await.is_empty(),
            "an event was applied twice"
        );
        server.stop().await;
    }
}

on_both! {
    async fn invariant_7_pending_events_and_cached_rows_survive_a_client_restart(db) {
        let server = Server::start(&db, 0).await;
        let store = MemoryStore::default();
        let options = || Options {
            store: Some(Arc::new(store.clone())),
            event_types: EventTypes::new().with::<AddTodo>().with::<ToggleTodo>(),
            ..Options::default()
        };
        let c = NativeClient::connect_with(server.ws_url(), "reloader", options());
        c.subscribe::<Todos>(&list("k"));
        c.send(AddTodo {
            id: "a".into(),
            list_id: "k".into(),
            title: "confirmed before".into(),
        });
        c.wait_for(WAIT, |s| {
            s.pending_count() == 0 && s.rows::<Todos>(&list("k")).is_some_and(|r| r.len() == 1)
        })
        .await
        .unwrap();
        // Offline: two writes stay pending; then the client goes away (a closed tab).
        c.set_online(false);
        c.wait_for(WAIT, |_| !c.is_live()).await.unwrap();
        c.send(AddTodo {
            id: "b".into(),
            list_id: "k".into(),
            title: "written offline".into(),
        });
        c.send(ToggleTodo {
            id: "a".into(),
            list_id: "k".into(),
            completed: true,
        });
        drop(c);

        // A new client on the same store shows the cached rows with the pending predictions at
        // once, before any server message, then sends the pending events exactly once.
        let c = NativeClient::connect_with(server.ws_url(), "reloader", options());
        let shown = c.rows::<Todos>(&list("k")).expect("cached rows at once");
        assert_eq!(titles(&shown), ["confirmed before", "written offline"]);
        assert!(shown[0].completed, "the pending toggle is predicted again");
        assert_eq!(c.with_state(|s| s.pending_count()), 2);
        c.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        let db = server.todos("k").await;
        assert_eq!(titles(&db), ["confirmed before", "written offline"]);
        assert!(db[0].completed);
        c.wait_for(WAIT, |s| s.rows::<Todos>(&list("k")).as_ref() == Some(&db))
            .await
            .unwrap();
        assert_eq!(server.applied_count().await, 3);
        assert!(server.applied_twice().await.is_empty());
        server.stop().await;
    }
}

on_both! {
    async fn invariant_11_without_websocket_events_go_by_post_and_updates_by_sse(db) {
        let server = Server::start(&db, 0).await;
        let post = |events: serde_json::Value| {
            let body = json!({"client_id": "http-client", "events": events}).to_string();
            async move { http_post(server.addr, "/sssync/events", &body).await }
        };
        let (status, body) =
            post(json!([{"seq": 1, "name": "add_todo", "args": add("h", "t1", "first")}])).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""t":"ack""#), "{body}");

        let hello = json!({"protocol": 1, "client_id": "http-client"}).to_string();
        let subs = json!([{"q": "todos", "a": {"list_id": "h"}}]).to_string();
        let mut sse = SseStream::open(
            server.addr,
            &format!(
                "/sssync/sse?hello={}&subs={}",
                encode(&hello),
                encode(&subs)
            ),
        )
        .await;
        let ServerMsg::Welcome(w) = sse.next().await else {
            panic!("welcome first")
        };
        assert_eq!(w.last_seq, 1);
        let ServerMsg::Snapshot(snap) = sse.next().await else {
            panic!("then the snapshot")
        };
        assert_eq!(snap.rows.len(), 1);

        // Two events in one request: one batch; the delta arrives on the stream.
        let (_, body) = post(json!([
            {"seq": 2, "name": "add_todo", "args": add("h", "t2", "second")},
            {"seq": 2, "name": "add_todo", "args": add("h", "t2", "second")}
        ]))
        .await;
        let outcomes: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(outcomes[0]["t"], "ack");
        assert_eq!(outcomes[1]["dup"], true, "{body}");
        let ServerMsg::Delta(d) = sse.next().await else {
            panic!("a delta")
        };
        assert_eq!((d.from, d.puts.len()), (snap.v, 1));
        assert_eq!(&*d.puts[0].row.key, "t2");
        assert_eq!(server.applied_count().await, 2);

        let (status, body) = http_post(server.addr, "/sssync/events", "{nope").await;
        assert_eq!(status, 400);
        assert!(body.contains("malformed"), "{body}");
        server.stop().await;
    }
}

on_both! {
    async fn invariant_10_a_server_origin_event_fans_out_like_any_other(db) {
        let server = Server::start(&db, 0).await;
        let c = NativeClient::connect(server.ws_url(), "watching");
        c.subscribe::<Todos>(&list("srv"));
        c.wait_for(WAIT, |s| s.rows::<Todos>(&list("srv")).is_some())
            .await
            .unwrap();
        let args = add("srv", "s1", "from a form post").to_string();
        let r = server
            .engine
            .apply("add_todo", &args)
            .await;
        assert!(matches!(r, Outcome::Applied { .. }), "{r:?}");
        let long = add("srv", "s2", &"x".repeat(300)).to_string();
        let r = server
            .engine
            .apply("add_todo", &long)
            .await;
        assert!(matches!(r, Outcome::Rejected { .. }), "{r:?}");
        c.wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("srv"))
                .is_some_and(|r| titles(&r) == ["from a form post"])
        })
        .await
        .unwrap();
        server.stop().await;
    }
}

on_both! {
    async fn invariant_9_a_write_made_outside_the_engine_reaches_every_subscriber(db) {
        let server = Server::start(&db, 0).await;
        let c = NativeClient::connect(server.ws_url(), "watching-sql");
        c.subscribe::<Todos>(&list("sql"));
        c.wait_for(WAIT, |s| s.rows::<Todos>(&list("sql")).is_some())
            .await
            .unwrap();
        // An administrator's statement, through a connection of its own (not the engine's).
        server
            .db
            .execute(
                "INSERT INTO todos (id, list_id, title, completed, position) \
                 VALUES ($1, $2, $3, FALSE, 1)",
                &["a1", "sql", "written by hand"],
            )
            .await;
        c.wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("sql"))
                .is_some_and(|r| titles(&r) == ["written by hand"])
        })
        .await
        .unwrap();
        server
            .db
            .execute("UPDATE todos SET title = $1 WHERE id = $2", &["edited by hand", "a1"])
            .await;
        server.db.execute("DELETE FROM todos WHERE id = $1", &["zz"]).await;
        c.wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("sql"))
                .is_some_and(|r| titles(&r) == ["edited by hand"])
        })
        .await
        .unwrap();
        server.stop().await;
    }
}

on_both! {
    async fn invariant_9_several_engines_on_one_database_serve_any_client_and_converge(db) {
        // Three instances on one database (for SQLite: three server processes' worth of
        // connections on one file), clients on each, writes through each and by hand.
        let servers = [
            Server::start(&db, 0).await,
            Server::start(&db, 0).await,
            Server::start(&db, 0).await,
        ];
        let clients: Vec<NativeClient> = (0..6)
            .map(|i| NativeClient::connect(servers[i % 3].ws_url(), format!("multi-{i}")))
            .collect();
        let lists = ["m0", "m1"];
        for c in &clients {
            for l in lists {
                c.subscribe::<Todos>(&list(l));
            }
        }
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..120 {
            let l = lists[rand(2) as usize];
            match rand(10) {
                0 => {
                    let id = format!("sql-{step}");
                    servers[0]
                        .db
                        .execute(
                            "INSERT INTO todos (id, list_id, title, completed, position) \
                             VALUES ($1, $2, $3, FALSE, 500)",
                            &[&id, l, "by hand"],
                        )
                        .await;
                }
                1 => {
                    // A client moves to another instance (no sticky sessions).
                    let c = &clients[rand(6) as usize];
                    c.set_url(servers[rand(3) as usize].ws_url());
                    c.set_online(false);
                    c.set_online(true);
                }
                2 => {
                    let c = &clients[rand(6) as usize];
                    if let Some(rows) = c.rows::<Todos>(&list(l))
                        && !rows.is_empty()
                    {
                        let t = &rows[rand(rows.len() as u64) as usize];
                        c.send(ToggleTodo {
                            id: t.id.clone(),
                            list_id: l.into(),
                            completed: !t.completed,
                        });
                    }
                }
                _ => {
                    clients[rand(6) as usize].send(AddTodo {
                        id: format!("t{step}"),
                        list_id: l.into(),
                        title: format!("step {step}"),
                    });
                }
            }
            if rand(4) == 0 {
                tokio::task::yield_now().await;
            }
        }
        for l in lists {
            for c in &clients {
                c.wait_for(Duration::from_secs(30), |s| s.pending_count() == 0)
                    .await
                    .unwrap();
            }
            let expected = servers[0].todos(l).await;
            for c in &clients {
                c.wait_for(Duration::from_secs(30), |s| {
                    s.rows::<Todos>(&list(l)).as_ref() == Some(&expected)
                })
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", c.with_state(|s| s.client_id().to_owned())));
            }
        }
        assert!(servers[0].applied_twice().await.is_empty());
        for s in servers {
            s.stop().await;
        }
    }
}

on_both! {
    async fn invariant_8_a_client_that_reconnects_to_another_instance_resumes_from_the_durable_log(db) {
        let first = Server::start(&db, 0).await;
        let writer = NativeClient::connect(first.ws_url(), "log-writer");
        for i in 0..300 {
            writer.send(AddTodo {
                id: format!("t{i:03}"),
                list_id: "log".into(),
                title: format!("a todo with a reasonably long title, number {i}"),
            });
        }
        writer.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        let reader = NativeClient::connect(first.ws_url(), "log-reader");
        reader.subscribe::<Todos>(&list("log"));
        reader
            .wait_for(WAIT, |s| s.rows::<Todos>(&list("log")).is_some_and(|r| r.len() == 300))
            .await
            .unwrap();
        let snapshot_bytes = reader.bytes_received();
        reader.set_online(false);
        reader.wait_for(WAIT, |_| !reader.is_live()).await.unwrap();
        writer.send(ToggleTodo {
            id: "t007".into(),
            list_id: "log".into(),
            completed: true,
        });
        writer.send(DeleteTodo {
            id: "t100".into(),
            list_id: "log".into(),
        });
        writer.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        // Another instance, which never saw this client nor this query.
        let second = Server::start(&db, 0).await;
        first.db.execute(
            "INSERT INTO todos (id, list_id, title, completed, position) VALUES ($1, $2, $3, FALSE, 999)",
            &["sql", "log", "and one by hand"],
        )
        .await;
        let before = reader.bytes_received();
        reader.set_url(second.ws_url());
        reader.set_online(true);
        let expected = second.todos("log").await;
        reader
            .wait_for(WAIT, |s| s.rows::<Todos>(&list("log")).as_ref() == Some(&expected))
            .await
            .unwrap();
        let resume_bytes = reader.bytes_received() - before;
        assert!(
            resume_bytes * 20 < snapshot_bytes,
            "the resume took {resume_bytes} bytes; the snapshot was {snapshot_bytes}"
        );
        first.stop().await;
        second.stop().await;
    }
}

on_both! {
    async fn invariant_8_beyond_the_logs_retention_a_resume_is_a_reset(db) {
        let config = Config {
            log_retention: Some(2),
            group_ttl: Some(Duration::from_millis(100)),
            ..Config::default()
        };
        let server = Server::start_with(&db, 0, config).await;
        let (mut raw, _) = Raw::connect(&server, "old").await;
        raw.send(json!({"t": "sub", "q": "todos", "a": {"list_id": "ret"}})).await;
        let ServerMsg::Snapshot(snap) = raw.recv().await else {
            panic!("a snapshot")
        };
        raw.send(json!({"t": "unsub", "q": "todos", "a": {"list_id": "ret"}})).await;
        let (mut w, _) = Raw::connect(&server, "busy").await;
        for i in 0..8 {
            let r = w.event(i + 1, "add_todo", add("ret", &format!("r{i}"), "x")).await;
            assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        }
        // The group is gone (idle) and the log pruned past the client's version (the janitor
        // runs every group TTL).
        eventually("the idle group is evicted", || async { server.engine.counts().keys == 0 }).await;
        let epoch = server.engine.epoch();
        let (mut again, _) = Raw::hello(
            &server,
            json!({"t": "hello", "protocol": 1, "client_id": "old", "epoch": epoch.0}),
        )
        .await;
        let mut reset = false;
        for _ in 0..50 {
            again
                .send(json!({"t": "sub", "q": "todos", "a": {"list_id": "ret"}, "v": snap.v}))
                .await;
            match again.recv().await {
                ServerMsg::Snapshot(s) if s.reset => {
                    assert_eq!(s.rows.len(), 8);
                    reset = true;
                    break;
                }
                ServerMsg::Delta(_) => {
                    // Pruning has not reached that far yet: try again after the next prune.
                    again.send(json!({"t": "unsub", "q": "todos", "a": {"list_id": "ret"}})).await;
                    eventually("the idle group is evicted", || async {
                        server.engine.counts().keys == 0
                    })
                    .await;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(reset, "a resume from before the horizon is a reset");
        server.stop().await;
    }
}

on_both! {
    async fn an_instance_that_falls_behind_the_logs_retention_resets_its_clients_instead_of_serving_stale_rows(db) {
        // Instance A prunes the log to its last 2 versions; instance B reads the same database.
        let a = Server::start_with(
            &db,
            0,
            Config {
                log_retention: Some(2),
                group_ttl: Some(Duration::from_millis(100)),
                ..Config::default()
            },
        )
        .await;
        let b = Server::start(&db, 0).await;
        let reader = NativeClient::connect(b.ws_url(), "lagging-reader");
        reader.subscribe::<Todos>(&list("l"));
        reader.wait_for(WAIT, |s| s.rows::<Todos>(&list("l")).is_some()).await.unwrap();
        // B cannot read the database for a while (as when its connection to it is lost).
        let held = b.engine.hold_pool().await;
        let w = NativeClient::connect(a.ws_url(), "writer");
        for i in 0..10 {
            w.send(AddTodo { id: format!("l{i}"), list_id: "l".into(), title: format!("todo {i}") });
        }
        w.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        // A goes on writing elsewhere until its janitor has pruned every change of list l.
        for i in 0.. {
            let left = a
                .db
                .scalar("SELECT COUNT(*) FROM sssync_changes WHERE part = $1", &["l"])
                .await;
            if left == 0 {
                break;
            }
            assert!(i < 2000, "the log was never pruned past list l's changes");
            w.send(AddTodo { id: format!("m{i}"), list_id: "m".into(), title: "elsewhere".into() });
            w.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        }
        drop(held);
        // B finds it missed commits: its reader gets list l as it is, not the rows of before.
        reader
            .wait_for(WAIT, |s| s.rows::<Todos>(&list("l")).is_some_and(|r| r.len() == 10))
            .await
            .unwrap();
        a.stop().await;
        b.stop().await;
    }
}

on_both! {
    async fn an_answer_waits_for_the_resume_of_a_subscription_sent_before_it(db) {
        let first = Server::start(&db, 0).await;
        let (mut filler, _) = Raw::connect(&first, "filler").await;
        let mut v = 0;
        for i in 0..3 {
            match filler.event(i + 1, "add_todo", add("rw", &format!("rw{i}"), "x")).await {
                ServerMsg::Ack(a) => v = a.v.0,
                other => panic!("{other:?}"),
            }
        }
        first.stop().await;
        // A fresh instance: no group remembers the list; the resume is read from the log.
        let second = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&second, "resumer").await;
        raw.send(json!({"t": "sub", "q": "todos", "a": {"list_id": "rw"}, "v": v - 2})).await;
        raw.send(json!({"t": "event", "seq": 1, "name": "add_todo", "args": add("rw", "rw-new", "y")}))
            .await;
        // The list's resume comes before the event's ack: the ack says every delta before it
        // has arrived.
        let mut resumed = false;
        loop {
            match raw.recv().await {
                ServerMsg::Delta(_) | ServerMsg::Snapshot(_) => resumed = true,
                ServerMsg::Ack(_) => {
                    assert!(resumed, "the ack came before the list's resume");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        second.stop().await;
    }
}

on_both! {
    async fn an_event_applied_in_process_as_a_clients_seq_applies_once_in_order_and_only_for_its_owner(db) {
        let server = Server::start(&db, 0).await;
        let first = add("cs", "c1", "first").to_string();
        let second = add("cs", "c2", "second").to_string();
        let from = |seq, args| server.engine.apply_from(Some("alice"), "alices-job", seq, "add_todo", args);
        // Seq 2 before seq 1: out of order, nothing applied.
        assert_eq!(from(2, &second).await.unwrap(), Outcome::OutOfOrder { expected: 1 });
        assert!(server.todos("cs").await.is_empty());
        assert!(matches!(from(1, &first).await.unwrap(), Outcome::Applied { .. }));
        // The same seq again (a retried job): acknowledged, not applied again.
        assert!(matches!(from(1, &first).await.unwrap(), Outcome::AlreadyApplied { .. }));
        assert!(matches!(from(2, &second).await.unwrap(), Outcome::Applied { .. }));
        assert_eq!(titles(&server.todos("cs").await), ["first", "second"]);
        // Another identity cannot write under Alice's client id: refused, nothing recorded.
        let intruder = add("cs", "c3", "intruder").to_string();
        let r = server
            .engine
            .apply_from(Some("mallory"), "alices-job", 3, "add_todo", &intruder)
            .await;
        assert!(matches!(r, Err(sssync_core::server::EngineError::Forbidden(_))), "{r:?}");
        assert!(matches!(from(3, &intruder).await.unwrap(), Outcome::Applied { .. }));
        assert_eq!(titles(&server.todos("cs").await), ["first", "second", "intruder"]);
        assert!(server.applied_twice().await.is_empty());
        server.stop().await;
    }
}

// Declarations that disagree, refused when the engine starts: each would otherwise start and
// leave a query that never updates (or fail at the first write).

/// Whether the engine's own tables exist on `db` (that is, whether a start got that far).
async fn engine_tables_exist(db: &TestDb) -> bool {
    let sql = if db.is_sqlite() {
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sssync_meta'"
    } else {
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = 'sssync_meta'"
    };
    db.pool().await.scalar(sql, &[]).await > 0
}

fn todos_table() -> Table {
    Table::new("todos", "id")
        .unwrap()
        .partition("list_id")
        .unwrap()
}

on_both! {
    async fn a_read_of_an_undeclared_table_refuses_to_start_naming_the_query_the_table_and_the_fix(db) {
        let err = start_declared!(db, |b| b.table(todos_table()).query::<MisspeltRead>()).unwrap_err();
        assert!(
            matches!(
                &err,
                EngineError::Declaration(DeclarationError::UndeclaredTable {
                    query: "misspelt_read",
                    list: "reads",
                    table: "todo",
                    did_you_mean: Some(near),
                }) if near == "todos"
            ),
            "{err:?}"
        );
        let message = err.to_string();
        for part in ["query \"misspelt_read\"", "table \"todo\"", "`reads`", "did you mean \"todos\"?"] {
            assert!(message.contains(part), "{part:?} is not in: {message}");
        }
        // Refused before it touched the database.
        assert!(!engine_tables_exist(&db).await);

        // The same query's reads once the table is declared under its name: it starts.
        let todo = Table::new("todo", "id").unwrap().partition("list_id").unwrap();
        db.pool().await.execute("CREATE TABLE todo (id TEXT PRIMARY KEY, list_id TEXT)", &[]).await;
        start_declared!(db, |b| b.table(todos_table()).table(todo.clone()).query::<MisspeltRead>().query::<Todos>())
            .unwrap();
        assert!(engine_tables_exist(&db).await);
    }
}

on_both! {
    async fn a_partition_read_of_a_table_declared_without_a_partition_refuses_to_start(db) {
        let owned = Table::new("owned", "id").unwrap();
        let err = start_declared!(db, |b| b.table(owned.clone()).query::<PartitionOfWhole>()).unwrap_err();
        assert!(
            matches!(
                &err,
                EngineError::Declaration(DeclarationError::NoPartition {
                    query: "partition_of_whole",
                    list: "reads",
                    table: "owned",
                })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("declare it with `.partition(column)`"), "{err}");
        assert!(!engine_tables_exist(&db).await);
        // Declared with its partition column, it starts.
        let owned = owned.partition("owner").unwrap();
        start_declared!(db, |b| b.table(owned.clone()).query::<PartitionOfWhole>()).unwrap();
    }
}

on_both! {
    async fn an_access_read_of_an_undeclared_table_refuses_to_start(db) {
        let shares = Table::new("shares", "id").unwrap().partition("list_id").unwrap();
        let err = start_declared!(db, |b| b
            .table(todos_table())
            .table(shares.clone())
            .query::<MisspeltAccessRead>())
        .unwrap_err();
        assert!(
            matches!(
                &err,
                EngineError::Declaration(DeclarationError::UndeclaredTable {
                    query: "misspelt_access_read",
                    list: "access_reads",
                    table: "share",
                    did_you_mean: Some(near),
                }) if near == "shares"
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("`access_reads`"), "{err}");
    }
}

on_both! {
    async fn a_table_declared_with_a_column_the_database_lacks_refuses_to_start(db) {
        let todos = Table::new("todos", "id").unwrap().partition("list").unwrap();
        let err = start_declared!(db, |b| b.table(todos.clone()).query::<Todos>()).unwrap_err();
        assert!(
            matches!(
                &err,
                EngineError::Declaration(DeclarationError::NoSuchColumn { table, role: "partition", column })
                    if table == "todos" && column == "list"
            ),
            "{err:?}"
        );
        // A key column the database lacks, or a table it does not have at all.
        let missing = Table::new("todoz", "id").unwrap();
        let err = start_declared!(db, |b| b.table(missing.clone())).unwrap_err();
        assert!(
            matches!(
                &err,
                EngineError::Declaration(DeclarationError::NoSuchColumn { table, role: "key", .. })
                    if table == "todoz"
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("create the table before the engine starts"), "{err}");
    }
}
