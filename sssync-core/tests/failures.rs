//! The engine under faults: each test pins one failure a production server meets (a handler
//! that cannot succeed, a database that refuses writes, a restored backup, a query that
//! breaks…) and what must follow: no acknowledged write lost, none applied twice, no client
//! stuck. Real SQLite files, a real server on 127.0.0.1, real WebSockets.

mod common;

use common::*;
use serde_json::json;
use sssync_core::client::native::{NativeClient, Options};
use sssync_core::protocol::ServerMsg;
use sssync_core::server::Counts;
use sssync_core::server::WriteRetry;
use sssync_core::{ErrorCode, Limits, QueryKey};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

fn quick_retries() -> WriteRetry {
    WriteRetry {
        attempts: 2,
        backoff: Duration::from_millis(5),
        resend_after: Duration::from_millis(100),
    }
}

fn key_error(m: &ServerMsg) -> Option<(ErrorCode, QueryKey)> {
    match m {
        ServerMsg::Error(e) => Some((e.code, e.key()?)),
        _ => None,
    }
}

on_both! {
    async fn a_poison_event_is_rejected_as_internal_and_the_clients_later_writes_apply(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&server, "poisoner").await;
        // Its handler reads a row that is not there (`fetch_one`: RowNotFound): a resend would fail
        // the same way, forever.
        let r = raw.event(1, "poison", json!({"id": "missing"})).await;
        match r {
            ServerMsg::Reject(r) => assert_eq!((r.seq, r.error.code.as_str()), (1, "internal")),
            other => panic!("expected a rejection, got {other:?}"),
        }
        let r = raw
            .event(2, "add_todo", add("p", "t1", "after the poison"))
            .await;
        assert!(matches!(r, ServerMsg::Ack(ref a) if a.seq == 2), "{r:?}");
        assert_eq!(titles(&server.todos("p").await), ["after the poison"]);
        let (_again, w) = Raw::connect(&server, "poisoner").await;
        assert_eq!(w.last_seq, 2, "the poison's seq is used");
        server.stop().await;
    }
}

on_both! {
    async fn a_transient_handler_failure_is_retried_and_the_client_is_told_to_resend(db) {
        let config = Config {
            write_retry: Some(WriteRetry {
                attempts: 3,
                backoff: Duration::from_millis(5),
                resend_after: Duration::from_millis(50),
            }),
            ..Config::default()
        };
        let server = Server::start_with(&db, 0, config).await;
        let (mut raw, _) = Raw::connect(&server, "flaky").await;
        // Event ids of this database's own (the failures are counted per id, process-wide).
        let id = |n: &str| format!("{n}-{}", db.tag());
        // A fault that passes within the server's own attempts: the client sees only the ack.
        set_flaky(&id("a"), 2);
        let r = raw
            .event(1, "flaky", add("f", &id("a"), "survived two faults"))
            .await;
        assert!(matches!(r, ServerMsg::Ack(ref a) if a.seq == 1), "{r:?}");
        // One that outlasts them: the client is told to resend later; nothing applied, seq unused.
        set_flaky(&id("b"), 100);
        let r = raw.event(2, "flaky", add("f", &id("b"), "later")).await;
        match r {
            ServerMsg::Retry(r) => assert!(r.seq == 2 && r.after_ms > 0, "{r:?}"),
            other => panic!("expected retry, got {other:?}"),
        }
        assert_eq!(titles(&server.todos("f").await), ["survived two faults"]);
        let (_again, w) = Raw::connect(&server, "flaky").await;
        assert_eq!(w.last_seq, 1, "seq 2 is not used");
        // The native client resends by itself after the wait it is given, until it applies.
        set_flaky(&id("c"), 7);
        let c = NativeClient::connect(server.ws_url(), "native-flaky");
        c.send(Flaky {
            id: id("c"),
            list_id: "f".into(),
            title: "applied in the end".into(),
        });
        c.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        assert_eq!(
            titles(&server.todos("f").await),
            ["survived two faults", "applied in the end"]
        );
        assert!(server.applied_twice().await.is_empty());
        server.stop().await;
    }
}

#[tokio::test]
async fn a_batch_refused_by_a_full_disk_is_resent_by_the_client_once_space_returns() {
    let db = TestDb::sqlite();
    let pages = Arc::new(AtomicU32::new(0));
    let config = Config {
        max_pages: Some(pages.clone()),
        write_retry: Some(quick_retries()),
        ..Config::default()
    };
    let server = Server::start_with(&db, 0, config).await;
    let c = NativeClient::connect(server.ws_url(), "filler");
    c.subscribe::<Todos>(&list("full"));
    c.wait_for(WAIT, |s| s.rows::<Todos>(&list("full")).is_some())
        .await
        .unwrap();
    // The disk is full: the database may not grow by a single page (a real SQLITE_FULL).
    let now: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(server.engine.sqlite_pool())
        .await
        .unwrap();
    pages.store(now as u32, Ordering::SeqCst);
    for i in 0..40 {
        c.send(AddTodo {
            id: format!("t{i:02}"),
            list_id: "full".into(),
            title: format!("{i:02} {}", "x".repeat(180)),
        });
    }
    // The client is told (the server could not save), and its writes stay pending.
    c.wait_for(WAIT, |s| s.write_blocked_reason().is_some())
        .await
        .unwrap();
    assert!(c.with_state(|s| s.pending_count()) > 0);
    // Space returns: without anything else happening, every write applies, once.
    pages.store(0, Ordering::SeqCst);
    c.wait_for(WAIT, |s| {
        s.pending_count() == 0 && s.write_blocked_reason().is_none()
    })
    .await
    .unwrap();
    let db = server.todos("full").await;
    assert_eq!(db.len(), 40);
    assert!(server.applied_twice().await.is_empty());
    c.wait_for(WAIT, |s| {
        s.rows::<Todos>(&list("full")).as_ref() == Some(&db)
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_batch_refused_while_another_connection_holds_the_write_lock_applies_once_it_is_free() {
    let db = TestDb::sqlite();
    let config = Config {
        busy_timeout: Some(Duration::from_millis(50)),
        write_retry: Some(quick_retries()),
        ..Config::default()
    };
    let server = Server::start_with(&db, 0, config).await;
    // Another writer of the file (a connection of its own, as another process would have) holds
    // the write lock: the engine's BEGIN IMMEDIATE gets SQLITE_BUSY.
    use sqlx::{Connection, Executor};
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.file().display()))
        .await
        .unwrap();
    other.execute("BEGIN IMMEDIATE").await.unwrap();
    let c = NativeClient::connect(server.ws_url(), "blocked");
    c.send(AddTodo {
        id: "b".into(),
        list_id: "busy".into(),
        title: "waits for the lock".into(),
    });
    c.wait_for(WAIT, |s| s.write_blocked_reason().is_some())
        .await
        .unwrap();
    other.execute("ROLLBACK").await.unwrap();
    c.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
    assert_eq!(titles(&server.todos("busy").await), ["waits for the lock"]);
    assert!(server.applied_twice().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_database_restored_from_an_earlier_copy_is_a_new_history_and_nothing_loops() {
    let db = TestDb::sqlite();
    let server = Server::start(&db, 0).await;
    let port = server.addr.port();
    let old_epoch = server.engine.epoch();
    let frames = Arc::new(AtomicUsize::new(0));
    let welcomes = Arc::new(AtomicUsize::new(0));
    let options = Options {
        observer: Some({
            let (frames, welcomes) = (frames.clone(), welcomes.clone());
            Arc::new(move |m: &ServerMsg| {
                frames.fetch_add(1, Ordering::SeqCst);
                if matches!(m, ServerMsg::Welcome(_)) {
                    welcomes.fetch_add(1, Ordering::SeqCst);
                }
            })
        }),
        ..Options::default()
    };
    let c = NativeClient::connect_with(server.ws_url(), "restorer", options);
    c.subscribe::<Todos>(&list("bk"));
    let add = |id: &str| AddTodo {
        id: id.into(),
        list_id: "bk".into(),
        title: id.into(),
    };
    c.send(add("one"));
    c.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
    // The backup: a consistent copy of the file, taken now.
    let backup = db.file().with_file_name("backup.db");
    sqlx::query("VACUUM INTO ?")
        .bind(backup.display().to_string())
        .execute(server.engine.sqlite_pool())
        .await
        .unwrap();
    c.send(add("two"));
    c.send(add("three"));
    c.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
    server.stop().await;
    c.wait_for(WAIT, |_| !c.is_live()).await.unwrap();
    c.send(add("four")); // written while the server is down
    // The operator restores the earlier copy and starts the server again.
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(db.file().with_file_name(format!("test.{ext}")));
    }
    std::fs::copy(&backup, db.file()).unwrap();
    let before = frames.load(Ordering::SeqCst);
    let server = Server::start(&db, port).await;
    // "two" and "three" went with the restore; "four", pending, is applied once, in the new
    // history; the client's view is the database's.
    c.wait_for(WAIT, |s| {
        s.pending_count() == 0
            && s.rows::<Todos>(&list("bk"))
                .is_some_and(|r| titles(&r) == ["one", "four"])
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: pending {:?}, rows {:?}, errors {:?}",
            c.with_state(|s| s.pending_events()),
            c.rows::<Todos>(&list("bk")),
            c.errors()
        )
    });
    assert_eq!(titles(&server.todos("bk").await), ["one", "four"]);
    assert!(server.applied_twice().await.is_empty());
    assert_ne!(server.engine.epoch(), old_epoch, "a new history");
    assert_eq!(
        c.with_state(|s| s.epoch().cloned()),
        Some(server.engine.epoch())
    );
    // No loop: a handful of frames and connections, then quiet.
    let used = frames.load(Ordering::SeqCst) - before;
    assert!(used < 20, "{used} frames to recover");
    assert!(
        welcomes.load(Ordering::SeqCst) <= 4,
        "{welcomes:?} welcomes"
    );
    server.stop().await;
}

#[tokio::test]
async fn insert_or_replace_moving_a_row_to_another_list_removes_it_from_the_old_one() {
    let db = TestDb::sqlite();
    let server = Server::start(&db, 0).await;
    let c = NativeClient::connect(server.ws_url(), "mover");
    for l in ["from", "to"] {
        c.subscribe::<Todos>(&list(l));
    }
    let replace = |list_id: &str| ReplaceTodo {
        id: "t1".into(),
        list_id: list_id.into(),
        title: "moving".into(),
        slug: "s1".into(),
    };
    c.send(replace("from"));
    c.wait_for(WAIT, |s| {
        s.pending_count() == 0 && s.rows::<Todos>(&list("from")).is_some_and(|r| r.len() == 1)
    })
    .await
    .unwrap();
    c.send(replace("to"));
    c.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
    // The other list's subscribers (another client here) see it leave the old list.
    let watcher = NativeClient::connect(server.ws_url(), "watcher");
    watcher.subscribe::<Todos>(&list("from"));
    watcher.subscribe::<Todos>(&list("to"));
    for cl in [&c, &watcher] {
        cl.wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("from")).is_some_and(|r| r.is_empty())
                && s.rows::<Todos>(&list("to")).is_some_and(|r| r.len() == 1)
        })
        .await
        .unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn insert_or_replace_deleting_a_row_with_another_key_is_seen_by_its_subscribers() {
    let db = TestDb::sqlite();
    let server = Server::start(&db, 0).await;
    let watcher = NativeClient::connect(server.ws_url(), "watcher");
    watcher.subscribe::<Todos>(&list("a"));
    let writer = NativeClient::connect(server.ws_url(), "writer");
    writer.send(ReplaceTodo {
        id: "x1".into(),
        list_id: "a".into(),
        title: "first with this slug".into(),
        slug: "same".into(),
    });
    watcher
        .wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("a")).is_some_and(|r| r.len() == 1)
        })
        .await
        .unwrap();
    // Another key, another list, the same slug: SQLite's REPLACE deletes x1 from list "a".
    writer.send(ReplaceTodo {
        id: "x2".into(),
        list_id: "b".into(),
        title: "second".into(),
        slug: "same".into(),
    });
    writer
        .wait_for(WAIT, |s| s.pending_count() == 0)
        .await
        .unwrap();
    assert!(server.todos("a").await.is_empty());
    watcher
        .wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("a")).is_some_and(|r| r.is_empty())
        })
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn rows_a_replace_deletes_from_a_connection_without_recursive_triggers_leave_their_subscribers()
 {
    let db = TestDb::sqlite();
    let server = Server::start(&db, 0).await;
    let watcher = NativeClient::connect(server.ws_url(), "watcher");
    for l in ["a", "c", "d"] {
        watcher.subscribe::<Todos>(&list(l));
    }
    let writer = NativeClient::connect(server.ws_url(), "writer");
    for (id, l, slug) in [("x1", "a", "same"), ("y1", "c", "other"), ("z1", "d", "z")] {
        writer.send(ReplaceTodo {
            id: id.into(),
            list_id: l.into(),
            title: format!("{id} in {l}"),
            slug: slug.into(),
        });
    }
    watcher
        .wait_for(WAIT, |s| {
            ["a", "c", "d"]
                .iter()
                .all(|l| s.rows::<Todos>(&list(l)).is_some_and(|r| r.len() == 1))
        })
        .await
        .unwrap();
    // A process of its own (the sqlite3 shell, a script): SQLite's defaults, so no
    // `recursive_triggers`, and no delete trigger fires for the rows a REPLACE deletes.
    let plain = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", db.file().display()))
        .await
        .unwrap();
    // Another key, the same unique slug: x1 goes from list a.
    sqlx::query(
        "INSERT OR REPLACE INTO todos (id, list_id, title, completed, position, slug) \
         VALUES ('t9', 'b', 'by hand', 0, 1, 'same')",
    )
    .execute(&plain)
    .await
    .unwrap();
    // The same key into another list: y1 leaves list c.
    sqlx::query(
        "INSERT OR REPLACE INTO todos (id, list_id, title, completed, position, slug) \
         VALUES ('y1', 'b', 'moved by hand', 0, 2, 'other')",
    )
    .execute(&plain)
    .await
    .unwrap();
    // An update onto another row's slug: z1 goes from list d.
    sqlx::query("UPDATE OR REPLACE todos SET slug = 'z' WHERE id = 't9'")
        .execute(&plain)
        .await
        .unwrap();
    plain.close().await;
    for l in ["a", "c", "d"] {
        assert!(server.todos(l).await.is_empty());
    }
    watcher
        .wait_for(WAIT, |s| {
            ["a", "c", "d"]
                .iter()
                .all(|l| s.rows::<Todos>(&list(l)).is_some_and(|r| r.is_empty()))
        })
        .await
        .unwrap();
    server.stop().await;
}

on_both! {
    async fn queries_partitioned_by_a_uuid_a_bool_an_integer_or_bytes_see_their_writes(db) {
        let server = Server::start(&db, 0).await;
        let c = NativeClient::connect(server.ws_url(), "typed");
        let owner = OwnerArgs {
            owner: uuid::Uuid::new_v4(),
        };
        let flag = FlagArgs { done: true };
        let group = GroupArgs { group: 7 };
        let bytes = BytesArgs {
            bytes: vec![1, 2, 3],
        };
        c.subscribe::<ByOwner>(&owner);
        c.subscribe::<ByFlag>(&flag);
        c.subscribe::<ByGroup>(&group);
        c.subscribe::<ByBytes>(&bytes);
        c.wait_for(WAIT, |s| {
            s.rows::<ByOwner>(&owner).is_some()
                && s.rows::<ByFlag>(&flag).is_some()
                && s.rows::<ByGroup>(&group).is_some()
                && s.rows::<ByBytes>(&bytes).is_some()
        })
        .await
        .unwrap();
        let put = |table: &str| PutTagged {
            table: table.into(),
            id: format!("{table}-1"),
            note: "hello".into(),
            owner: Some(owner.owner),
            done: Some(true),
            group: Some(7),
            bytes: Some(vec![1, 2, 3]),
        };
        for t in ["owned", "flagged", "grouped", "blobbed"] {
            c.send(put(t));
        }
        c.wait_for(WAIT, |s| {
            s.pending_count() == 0
                && s.rows::<ByOwner>(&owner).is_some_and(|r| r.len() == 1)
                && s.rows::<ByFlag>(&flag).is_some_and(|r| r.len() == 1)
                && s.rows::<ByGroup>(&group).is_some_and(|r| r.len() == 1)
                && s.rows::<ByBytes>(&bytes).is_some_and(|r| r.len() == 1)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", c.with_state(|s| s.rows::<ByFlag>(&flag))));
        server.stop().await;
    }
}

on_both! {
    async fn a_partition_value_that_is_not_utf8_breaks_no_other_query(db) {
        let server = Server::start(&db, 0).await;
        let welcomes = Arc::new(AtomicUsize::new(0));
        let options = Options {
            observer: Some({
                let welcomes = welcomes.clone();
                Arc::new(move |m: &ServerMsg| {
                    if matches!(m, ServerMsg::Welcome(_)) {
                        welcomes.fetch_add(1, Ordering::SeqCst);
                    }
                })
            }),
            ..Options::default()
        };
        let c = NativeClient::connect_with(server.ws_url(), "bystander", options);
        let odd = BytesArgs {
            bytes: vec![0xff, 0xfe, 0x00],
        };
        c.subscribe::<Todos>(&list("plain"));
        c.subscribe::<ByBytes>(&odd);
        c.wait_for(WAIT, |s| s.rows::<Todos>(&list("plain")).is_some())
            .await
            .unwrap();
        c.send(PutTagged {
            table: "blobbed".into(),
            id: "odd".into(),
            note: "bytes that are not UTF-8".into(),
            owner: None,
            done: None,
            group: None,
            bytes: Some(odd.bytes.clone()),
        });
        c.send(AddTodo {
            id: "p".into(),
            list_id: "plain".into(),
            title: "still live".into(),
        });
        c.wait_for(WAIT, |s| {
            s.pending_count() == 0
                && s.rows::<ByBytes>(&odd).is_some_and(|r| r.len() == 1)
                && s.rows::<Todos>(&list("plain"))
                    .is_some_and(|r| r.len() == 1)
        })
        .await
        .unwrap();
        assert_eq!(
            welcomes.load(Ordering::SeqCst),
            1,
            "the connection was never lost"
        );
        server.stop().await;
    }
}

on_both! {
    async fn a_subscription_dropped_before_its_query_opened_gets_nothing_and_leaks_nothing(db) {
        let config = Config {
            group_ttl: Some(Duration::from_secs(2)),
            ..Config::default()
        };
        let server = Server::start_with(&db, 0, config).await;
        let (mut raw, _) = Raw::connect(&server, "fickle").await;
        // The key's first read takes a while (400 ms): the unsub arrives while it runs.
        let s6 = format!("s6-{}", db.tag());
        raw.send(json!({"t": "sub", "q": "slow", "a": {"list_id": s6}}))
            .await;
        eventually("the group's first read has started", || async {
            slow_runs(&s6) == 1
        })
        .await;
        raw.send(json!({"t": "unsub", "q": "slow", "a": {"list_id": s6}}))
            .await;
        // A write to that list: the connection gets its ack, and no snapshot or delta before it
        // (the writer finishes the group's read first, then the batch).
        raw.send(json!({"t": "event", "seq": 1, "name": "add_todo", "args": add(&s6, "t", "x")}))
            .await;
        let first = raw.recv().await;
        assert!(matches!(first, ServerMsg::Ack(_)), "{first:?}");
        assert_eq!(
            server.engine.counts(),
            Counts { keys: 1, subscriptions: 0 },
            "the group is made, nobody subscribes"
        );
        // Idle, the group goes after its time to live.
        eventually("the idle group is evicted", || async {
            server.engine.counts() == Counts { keys: 0, subscriptions: 0 }
        })
        .await;
        server.stop().await;
    }
}

on_both! {
    async fn a_failing_query_is_reported_for_its_key_and_recovers_when_it_works_again(db) {
        let server = Server::start(&db, 0).await;
        let (mut watcher, _) = Raw::connect(&server, "watcher").await;
        watcher
            .send(json!({"t": "sub", "q": "fragile", "a": {"list_id": "f"}}))
            .await;
        watcher
            .send(json!({"t": "sub", "q": "todos", "a": {"list_id": "other"}}))
            .await;
        for _ in 0..2 {
            assert!(matches!(watcher.recv().await, ServerMsg::Snapshot(_)));
        }
        let fragile = QueryKey::from_json("fragile", r#"{"list_id":"f"}"#).unwrap();
        let (mut writer, _) = Raw::connect(&server, "breaker").await;
        let r = writer.event(1, "add_todo", add("f", "b", "boom")).await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        // The watcher is told which query failed; its connection and other queries go on.
        let m = watcher.recv().await;
        assert_eq!(
            key_error(&m),
            Some((ErrorCode::QueryFailed, fragile.clone())),
            "{m:?}"
        );
        watcher.send(json!({"t": "ping"})).await;
        assert!(matches!(watcher.recv().await, ServerMsg::Pong(_)));
        let r = writer.event(2, "add_todo", add("other", "o", "fine")).await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        assert!(matches!(watcher.recv().await, ServerMsg::Delta(_)));
        // Subscribing while it fails: the same typed error, for the key.
        watcher
            .send(json!({"t": "sub", "q": "fragile", "a": {"list_id": "f"}}))
            .await;
        let m = watcher.recv().await;
        assert_eq!(
            key_error(&m),
            Some((ErrorCode::QueryFailed, fragile.clone())),
            "{m:?}"
        );

        // A client shows the query as failed (keeping what it had), and recovers by itself.
        let c = NativeClient::connect(server.ws_url(), "patient");
        c.subscribe::<Fragile>(&list("f"));
        c.wait_for(WAIT, |s| {
            s.query_error(&fragile)
                .is_some_and(|e| e.code == ErrorCode::QueryFailed)
        })
        .await
        .unwrap();
        let r = writer
            .event(3, "delete_todo", json!({"id": "b", "list_id": "f"}))
            .await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        c.wait_for(WAIT, |s| {
            s.query_error(&fragile).is_none()
                && s.rows::<Fragile>(&list("f")).is_some_and(|r| r.is_empty())
        })
        .await
        .unwrap();
        server.stop().await;
    }
}

on_both! {
    async fn a_query_the_database_refuses_holds_up_no_other_key_of_its_round(db) {
        let server = Server::start(&db, 0).await;
        let (mut watcher, _) = Raw::connect(&server, "watcher").await;
        let (mut writer, _) = Raw::connect(&server, "writer").await;
        for (q, l) in [("fragile", "f1"), ("todos", "f2")] {
            watcher.send(json!({"t": "sub", "q": q, "a": {"list_id": l}})).await;
            assert!(matches!(watcher.recv().await, ServerMsg::Snapshot(_)));
        }
        // One batch touches both keys: one round re-runs both; the first fails in the database.
        writer
            .send(json!({"t": "event", "seq": 1, "name": "add_todo", "args": add("f1", "a", "bad sql")}))
            .await;
        writer
            .send(json!({"t": "event", "seq": 2, "name": "add_todo", "args": add("f2", "b", "fine")}))
            .await;
        let mut failed = false;
        let mut delta = false;
        while !(failed && delta) {
            match watcher.recv().await {
                ServerMsg::Error(e) => {
                    let k = e.key().expect("a key");
                    assert_eq!((k.name(), e.code), ("fragile", ErrorCode::QueryFailed), "{e:?}");
                    failed = true;
                }
                ServerMsg::Delta(d) => {
                    assert_eq!(d.q, "todos", "{d:?}");
                    assert_eq!(&*d.puts[0].row.key, "b");
                    delta = true;
                }
                other => panic!("{other:?}"),
            }
        }
        // The tailer goes on: a later change is fanned out.
        let r = writer.event(3, "add_todo", add("f2", "c", "later")).await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        let ServerMsg::Delta(d) = watcher.recv().await else { panic!("a delta") };
        assert_eq!(&*d.puts[0].row.key, "c");
        server.stop().await;
    }
}

on_both! {
    async fn a_reconnect_during_a_fan_out_never_shows_an_applied_event_missing(db) {
        let server = Server::start(&db, 0).await;
        let (mut first, welcome) = Raw::connect(&server, "mover").await;
        first
            .send(json!({"t": "sub", "q": "slow", "a": {"list_id": "s8"}}))
            .await;
        let ServerMsg::Snapshot(snap) = first.recv().await else {
            panic!("a snapshot first")
        };
        // The event commits; its fan-out (a slow re-run) takes 400 ms; meanwhile the client's
        // connection is lost and it reconnects.
        first
            .send(json!({"t": "event", "seq": 1, "name": "add_todo", "args": add("s8", "t1", "made")}))
            .await;
        eventually("the event is committed", || async {
            server.todos("s8").await.len() == 1
        })
        .await;
        let (mut second, w) = Raw::hello(
            &server,
            json!({"t": "hello", "protocol": 1, "client_id": "mover", "epoch": welcome.epoch.0,
                   "acked": 0, "version": snap.v}),
        )
        .await;
        let ServerMsg::Welcome(w) = w else {
            panic!("{w:?}")
        };
        assert_eq!(w.last_seq, 1, "the event is applied");
        // The client drops its pending event (applied) and resumes from its version: the answer
        // must bring the event's row, or the todo would vanish until the next delta.
        second
            .send(json!({"t": "sub", "q": "slow", "a": {"list_id": "s8"}, "v": snap.v}))
            .await;
        match second.recv().await {
            ServerMsg::Delta(d) => assert!(
                d.puts.iter().any(|p| &*p.row.key == "t1"),
                "a resume without the applied event's row: {d:?}"
            ),
            ServerMsg::Snapshot(s) => assert!(s.rows.iter().any(|r| &*r.key == "t1")),
            other => panic!("{other:?}"),
        }
        server.stop().await;
    }
}

on_both! {
    async fn a_result_over_the_size_limit_is_refused_for_its_key_and_the_connection_goes_on(db) {
        let config = Config {
            limits: Some(Limits {
                max_result_bytes: 2_000,
                ..Limits::default()
            }),
            ..Config::default()
        };
        let server = Server::start_with(&db, 0, config).await;
        let (mut raw, _) = Raw::connect(&server, "greedy").await;
        for i in 0..20 {
            let title = format!("{i:02} {}", "y".repeat(100));
            let r = raw
                .event(i + 1, "add_todo", add("huge", &format!("h{i}"), &title))
                .await;
            assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        }
        raw.send(json!({"t": "sub", "q": "todos", "a": {"list_id": "huge"}}))
            .await;
        let huge = QueryKey::from_json("todos", r#"{"list_id":"huge"}"#).unwrap();
        let m = raw.recv().await;
        assert_eq!(key_error(&m), Some((ErrorCode::TooLarge, huge)), "{m:?}");
        raw.send(json!({"t": "sub", "q": "todos", "a": {"list_id": "small"}}))
            .await;
        assert!(matches!(raw.recv().await, ServerMsg::Snapshot(_)));
        // The snapshot GET says the same, with its status.
        let (status, _, body) = http_get(
            server.addr,
            "/sssync/snapshot/todos?a=%7B%22list_id%22%3A%22huge%22%7D",
            None,
        )
        .await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("too_large"), "{body}");
        server.stop().await;
    }
}

on_both! {
    async fn the_number_of_live_queries_is_bounded_and_idle_ones_make_room(db) {
        let config = Config {
            limits: Some(Limits {
                max_groups: 2,
                ..Limits::default()
            }),
            ..Config::default()
        };
        let server = Server::start_with(&db, 0, config).await;
        let (mut raw, _) = Raw::connect(&server, "collector").await;
        let sub = |l: &str| json!({"t": "sub", "q": "todos", "a": {"list_id": l}});
        raw.send(sub("g1")).await;
        assert!(matches!(raw.recv().await, ServerMsg::Snapshot(_)));
        raw.send(sub("g2")).await;
        assert!(matches!(raw.recv().await, ServerMsg::Snapshot(_)));
        raw.send(sub("g3")).await;
        let g3 = QueryKey::from_json("todos", r#"{"list_id":"g3"}"#).unwrap();
        let m = raw.recv().await;
        assert_eq!(key_error(&m), Some((ErrorCode::Overloaded, g3)), "{m:?}");
        assert_eq!(server.engine.counts(),
            Counts { keys: 2, subscriptions: 2 });
        // Once nobody follows g1, it makes room.
        raw.send(json!({"t": "unsub", "q": "todos", "a": {"list_id": "g1"}}))
            .await;
        raw.send(sub("g3")).await;
        assert!(matches!(raw.recv().await, ServerMsg::Snapshot(_)));
        assert_eq!(server.engine.counts(),
            Counts { keys: 2, subscriptions: 2 });
        server.stop().await;
    }
}

fn eager_retries() -> WriteRetry {
    WriteRetry {
        attempts: 2,
        backoff: Duration::from_millis(1),
        resend_after: Duration::from_millis(5),
    }
}

on_both! {
    async fn a_handler_that_fails_for_now_holds_up_nobody_else(db) {
        let config = Config {
            write_retry: Some(eager_retries()),
            ..Config::default()
        };
        let server = Server::start_with(&db, 0, config).await;
        let stuck = format!("stuck-{}", db.tag());
        set_flaky(&stuck, u32::MAX);
        let (mut a, _) = Raw::connect(&server, "unlucky").await;
        let (mut b, _) = Raw::connect(&server, "bystander").await;
        // Sent together, so that they may share a batch: the other client's write goes through.
        a.send(json!({"t": "event", "seq": 1, "name": "flaky", "args": add("h", &stuck, "never")}))
            .await;
        let r = b.event(1, "add_todo", add("h", "ok", "through")).await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        // The failing one (an I/O error: the database's, as far as the engine can tell) is told
        // to resend, as often as it takes.
        for _ in 0..12 {
            match a.recv_reply().await {
                ServerMsg::Retry(_) => {
                    a.send(json!({"t": "event", "seq": 1, "name": "flaky", "args": add("h", &stuck, "never")}))
                        .await;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(titles(&server.todos("h").await), ["through"]);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_handler_at_fault_is_refused_after_ten_tries_and_its_client_goes_on() {
    let db = TestDb::sqlite();
    let config = Config {
        write_retry: Some(eager_retries()),
        ..Config::default()
    };
    let server = Server::start_with(&db, 0, config).await;
    // The handler writes through a pool of its own: while the engine holds the write lock, a
    // real SQLITE_BUSY, every time.
    misbehave_on("m", &db.file()).await;
    let (mut a, _) = Raw::connect(&server, "at-fault").await;
    let mut retries = 0;
    a.send(json!({"t": "event", "seq": 1, "name": "misbehaving", "args": {"id": "m"}}))
        .await;
    loop {
        match a.recv_reply().await {
            ServerMsg::Retry(_) => {
                retries += 1;
                assert!(retries <= 20, "resent without end");
                a.send(json!({"t": "event", "seq": 1, "name": "misbehaving", "args": {"id": "m"}}))
                    .await;
            }
            ServerMsg::Reject(r) => {
                assert_eq!(r.error.code, "internal");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let r = a.event(2, "add_todo", add("hf", "later", "later")).await;
    assert!(matches!(r, ServerMsg::Ack(_)), "the client goes on: {r:?}");
    behave("m");
    server.stop().await;
}

#[tokio::test]
async fn server_events_are_not_refused_for_the_faults_of_other_server_events() {
    let db = TestDb::sqlite();
    let config = Config {
        write_retry: Some(eager_retries()),
        ..Config::default()
    };
    let server = Server::start_with(&db, 0, config).await;
    misbehave_on("job", &db.file()).await;
    // Server-origin events (a job, a plain form without a key) have no seq of their own: each
    // is a write of its own, told to retry while its handler fails.
    for _ in 0..11 {
        let r = server.engine.apply("misbehaving", r#"{"id":"job"}"#).await;
        assert!(matches!(r, Outcome::RetryLater { .. }), "{r:?}");
    }
    behave("job");
    // The others are not refused for those faults.
    let r = server
        .engine
        .apply("add_todo", &add("se", "s1", "from a job").to_string())
        .await;
    assert!(matches!(r, Outcome::Applied { .. }), "{r:?}");
    assert_eq!(titles(&server.todos("se").await), ["from a job"]);
    server.stop().await;
}

on_both! {
    async fn a_panicking_handler_or_query_is_refused_and_the_engine_goes_on(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&server, "buggy").await;
        let r = raw.event(1, "panic", json!({"id": "x"})).await;
        assert!(matches!(r, ServerMsg::Reject(ref r) if r.error.code == "internal"), "{r:?}");
        raw.send(json!({"t": "sub", "q": "panicky", "a": {"list_id": "p"}}))
            .await;
        assert!(matches!(raw.recv().await, ServerMsg::Snapshot(_)));
        // A change makes the query panic: its subscribers are told, for the key (before the
        // write's ack: the fan-out comes first).
        raw.send(json!({"t": "event", "seq": 2, "name": "add_todo", "args": add("p", "p1", "panic")}))
            .await;
        let panicky = QueryKey::from_json("panicky", r#"{"list_id":"p"}"#).unwrap();
        let m = raw.recv().await;
        assert_eq!(key_error(&m), Some((ErrorCode::QueryFailed, panicky)), "{m:?}");
        let r = raw.recv().await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        // Writes and other queries go on.
        raw.send(json!({"t": "sub", "q": "todos", "a": {"list_id": "p"}}))
            .await;
        assert!(matches!(raw.recv().await, ServerMsg::Snapshot(_)));
        let r = raw.event(3, "add_todo", add("p", "p2", "fine")).await;
        assert!(matches!(r, ServerMsg::Ack(_)), "{r:?}");
        server.stop().await;
    }
}

on_both! {
    async fn a_client_cannot_start_a_new_epoch_with_a_version_no_server_gave_it(db) {
        let server = Server::start(&db, 0).await;
        let epoch = server.engine.epoch();
        for proof in [None, Some("00112233445566778899aabbccddeeff"), Some("ab")] {
            let (_raw, first) = Raw::hello(
                &server,
                json!({"t": "hello", "protocol": 1, "client_id": "liar", "epoch": epoch.0,
                       "version": 1_000_000_000u64, "proof": proof}),
            )
            .await;
            assert!(matches!(first, ServerMsg::Welcome(ref w) if w.epoch == epoch), "{first:?}");
        }
        assert_eq!(server.engine.epoch(), epoch);
        server.stop().await;
    }
}

on_both! {
    async fn a_client_that_settled_seqs_the_database_lacks_goes_on_from_its_own_seqs(db) {
        let server = Server::start(&db, 0).await;
        let epoch = server.engine.epoch();
        // Seqs 1 to 5 were settled in a history this database does not have (a restore).
        let (mut raw, first) = Raw::hello(
            &server,
            json!({"t": "hello", "protocol": 1, "client_id": "ahead", "epoch": epoch.0, "acked": 5}),
        )
        .await;
        let ServerMsg::Welcome(w) = first else {
            panic!("{first:?}")
        };
        assert_eq!(w.last_seq, 5, "the client's last_seq moved up to what it settled");
        let r = raw.event(6, "add_todo", add("ff", "t6", "six")).await;
        assert!(matches!(r, ServerMsg::Ack(ref a) if a.seq == 6), "{r:?}");
        assert_eq!(server.applied_count().await, 1);
        server.stop().await;
    }
}

on_both! {
    async fn a_refused_form_post_is_refused_again_when_resubmitted(db) {
        let server = Server::start(&db, 0).await;
        let long = add("fp", "t", &"x".repeat(300)).to_string();
        for _ in 0..2 {
            let r = server.engine.apply_once("form-1", "add_todo", &long).await;
            assert!(matches!(r, Outcome::Rejected { ref rejection, .. } if rejection.code == "title_too_long"), "{r:?}");
        }
        let ok = add("fp", "t2", "fine").to_string();
        let first = server.engine.apply_once("form-2", "add_todo", &ok).await;
        assert!(matches!(first, Outcome::Applied { .. }), "{first:?}");
        let again = server.engine.apply_once("form-2", "add_todo", &ok).await;
        assert!(matches!(again, Outcome::AlreadyApplied { .. }), "{again:?}");
        assert_eq!(titles(&server.todos("fp").await), ["fine"]);
        server.stop().await;
    }
}

on_both! {
    async fn a_subscription_is_answered_when_its_round_cannot_begin_its_read(db) {
        let server = Server::start(&db, 0).await;
        let (mut raw, _) = Raw::connect(&server, "reader").await;
        server.engine.spoil_pool().await;
        let sub = json!({"t": "sub", "q": "todos", "a": {"list_id": "sp"}});
        raw.send(sub.clone()).await;
        // Told that the query failed (the client subscribes again), or served: never left
        // unanswered.
        let mut failed = 0;
        loop {
            match raw.recv().await {
                ServerMsg::Snapshot(s) => {
                    assert!(s.rows.is_empty());
                    break;
                }
                ServerMsg::Error(e) if e.code == ErrorCode::QueryFailed => {
                    failed += 1;
                    assert!(failed <= 20, "the pool never healed: {e:?}");
                    raw.send(sub.clone()).await;
                }
                other => panic!("{other:?}"),
            }
        }
        // The pool healed: a write goes through and reaches the subscriber.
        raw.send(json!({"t": "event", "seq": 1, "name": "add_todo", "args": add("sp", "x", "after")}))
            .await;
        let mut acked = false;
        let mut delta = false;
        while !(acked && delta) {
            match raw.recv().await {
                ServerMsg::Ack(_) => acked = true,
                ServerMsg::Delta(d) => {
                    assert!(!acked, "the delta comes before the ack");
                    delta = true;
                    assert_eq!(d.puts.len(), 1);
                }
                other => panic!("{other:?}"),
            }
        }
        server.stop().await;
    }
}

on_both! {
    async fn a_database_that_goes_back_in_history_while_the_server_runs_gets_a_new_epoch(db) {
        let server = Server::start(&db, 0).await;
        let a = NativeClient::connect(server.ws_url(), "back-a");
        a.subscribe::<Todos>(&list("r"));
        for i in 0..3 {
            a.send(AddTodo { id: format!("r{i}"), list_id: "r".into(), title: format!("before {i}") });
            a.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        }
        a.wait_for(WAIT, |s| s.rows::<Todos>(&list("r")).is_some_and(|r| r.len() == 3))
            .await
            .unwrap();
        let epoch = server.engine.epoch();
        // A restore three versions back under the same epoch, while the server runs (no
        // declared table is touched: nothing is logged).
        server.db.execute("UPDATE sssync_meta SET version = version - 3", &[]).await;
        let b = NativeClient::connect(server.ws_url(), "back-b");
        b.send(AddTodo { id: "after".into(), list_id: "r".into(), title: "after the restore".into() });
        // The client that held rows of the lost versions is not left silent: it resets into the
        // new history and shows the write.
        a.wait_for(WAIT, |s| {
            s.rows::<Todos>(&list("r")).is_some_and(|r| r.iter().any(|t| t.title == "after the restore"))
        })
        .await
        .unwrap();
        assert_ne!(server.engine.epoch(), epoch);
        assert!(server.applied_twice().await.is_empty());
        server.stop().await;
    }
}

on_both! {
    async fn a_database_restored_and_caught_up_to_the_version_fanned_out_gets_a_new_epoch(db) {
        let server = Server::start(&db, 0).await;
        let a = NativeClient::connect(server.ws_url(), "caught-up-a");
        a.subscribe::<Todos>(&list("cu"));
        for i in 0..2 {
            a.send(AddTodo { id: format!("cu{i}"), list_id: "cu".into(), title: format!("t{i}") });
            a.wait_for(WAIT, |s| s.pending_count() == 0).await.unwrap();
        }
        a.wait_for(WAIT, |s| s.rows::<Todos>(&list("cu")).is_some_and(|r| r.len() == 2))
            .await
            .unwrap();
        let epoch = server.engine.epoch();
        // A copy restored while the server runs that took other commits since, up to the same
        // version: the version is the one fanned out, its commit another, and a row is gone
        // without a word in the log (what a restore does).
        server
            .db
            .script(
                "BEGIN; \
                 DELETE FROM todos WHERE id = 'cu1'; \
                 DELETE FROM sssync_changes WHERE version IS NULL; \
                 UPDATE sssync_changes SET row_key = 'another commit' WHERE tbl = '' \
                 AND version = (SELECT version FROM sssync_meta WHERE id = 1); \
                 COMMIT;",
            )
            .await;
        // The client does not keep the row the database no longer has: a new epoch resets it.
        a.wait_for(WAIT, |s| s.rows::<Todos>(&list("cu")).is_some_and(|r| titles(&r) == ["t0"]))
            .await
            .unwrap();
        assert_ne!(server.engine.epoch(), epoch);
        server.stop().await;
    }
}
