//! The demo's list query is declarative, and its tables pass the engine's checks: each write
//! patches the lists it touches (on both databases) instead of reading them again.

mod common;

async fn check(url: &str) {
    let pool = demo_app::db::open(url).await.unwrap();
    let sync = demo_app::sync::start(pool).await.unwrap();
    assert!(
        sync.is_incremental("todos"),
        "the demo's todos query is maintained incrementally"
    );
    assert!(
        !sync.is_incremental("my_lists"),
        "a query with its own SQL is re-run and diffed"
    );
    sync.shutdown();
}

#[tokio::test]
async fn the_todos_of_a_list_are_maintained_incrementally_on_sqlite() {
    check(&common::sqlite_url()).await;
}

#[tokio::test]
async fn the_todos_of_a_list_are_maintained_incrementally_on_postgres() {
    let Some((url, _schema)) = common::postgres_url().await else {
        return;
    };
    check(&url).await;
}
