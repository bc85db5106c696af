//! The demo's sync server: the events' handlers, the queries' bodies and checks, written once
//! for both databases (`#[sync_apply]`, `#[sync_run]`, `#[sync_sql]`: the SQL suits SQLite and PostgreSQL alike,
//! with `$1` placeholders, `FALSE`, `COALESCE`), and the server's start.

use crate::db::Pool;
use crate::model::{
    AddTodo, ClearCompleted, CreateList, DEFAULT_LIST, DeleteTodo, EditTodo, MyList, MyLists,
    PRIVATE_PREFIX, Refused, ShareList, Todos, TodosArgs, ToggleAll, ToggleTodo, UnshareList,
    check_id, clean_title,
};
use sssync_leptos::prelude::*;
use sssync_leptos::server::OpenError;

/// What a reader or writer of a private list it may not see is told (the same as for a list
/// that does not exist: nothing says it does).
const NO_SUCH_LIST: &str = "This list does not exist, or you may not see it.";

/// Starts the sync server on the demo's (migrated) database: its tables, who is asking (the
/// session's user); the queries and events register themselves.
pub async fn start(pool: Pool) -> Result<SyncServer, OpenError> {
    let sessions = crate::auth::Sessions::new(pool.clone());
    let table = |name, partition| {
        Table::new(name, "id")
            .and_then(|t| t.partition(partition))
            .expect("plain identifiers")
    };
    SyncServer::builder()
        .table(table("todos", "list_id"))
        .table(table("lists", "id"))
        .table(table("shares", "list_id"))
        .identify(move |parts| sessions.identify(parts))
        // Public pages (an anonymous visitor's) are made of their lists alone: kept, 32 MiB.
        .keep_public_pages(32 << 20)
        .start(pool)
        .await
}

/// Runs one statement with text arguments.
#[sync_sql]
async fn exec(conn: &mut Conn<Db>, sql: &'static str, args: &[&str]) -> Result<(), sqlx::Error> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// Whether `identity` may read and write list `list_id`: its owner and the users it is shared
/// with may; a list nobody owns is public.
#[sync_sql]
async fn may_access(
    conn: &mut Conn<Db>,
    list_id: &str,
    identity: &Identity,
) -> Result<bool, sqlx::Error> {
    let owner: Option<(String,)> = sqlx::query_as("SELECT owner FROM lists WHERE id = $1")
        .bind(list_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((owner,)) = owner else {
        // Public, unless its id is a private list's that is not made yet.
        return Ok(!list_id.starts_with(PRIVATE_PREFIX));
    };
    let Some(user) = identity.id() else {
        return Ok(false);
    };
    if owner == user {
        return Ok(true);
    }
    let shared: Option<(String,)> =
        sqlx::query_as("SELECT id FROM shares WHERE list_id = $1 AND user_id = $2")
            .bind(list_id)
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(shared.is_some())
}

/// The server side of the queries declared in `model.rs`: who may read the todos of a list.
#[sync_run]
impl Todos {
    async fn authorize(
        conn: &mut Conn<Db>,
        ctx: &QueryCtx,
        args: &TodosArgs,
    ) -> Result<(), AccessError> {
        if may_access(conn, &args.list_id, &ctx.identity).await? {
            Ok(())
        } else {
            Err(Forbidden::new(NO_SUCH_LIST).into())
        }
    }
}

/// Refuses an event on a list its sender may not change (`forbidden`).
#[sync_sql]
async fn check_access(
    conn: &mut Conn<Db>,
    ctx: &EventCtx,
    list_id: &str,
) -> Result<(), EventError> {
    check_id(list_id)?;
    if may_access(conn, list_id, &ctx.identity).await? {
        Ok(())
    } else {
        Err(Forbidden::new(NO_SUCH_LIST).into())
    }
}

/// Refuses an event on a list the sender does not own; the owner's id.
#[sync_sql]
async fn check_owner(
    conn: &mut Conn<Db>,
    ctx: &EventCtx,
    list_id: &str,
) -> Result<String, EventError> {
    check_id(list_id)?;
    let owner: Option<(String,)> = sqlx::query_as("SELECT owner FROM lists WHERE id = $1")
        .bind(list_id)
        .fetch_optional(&mut *conn)
        .await?;
    match (owner, ctx.identity.id()) {
        (Some((owner,)), Some(user)) if owner == user => Ok(owner),
        _ => Err(Forbidden::new("Only the owner of a private list can share it.").into()),
    }
}

/// The id of the user named `name`.
#[sync_sql]
async fn user_named(conn: &mut Conn<Db>, name: &str) -> Result<String, EventError> {
    let id: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE name = $1")
        .bind(name.trim())
        .fetch_optional(&mut *conn)
        .await?;
    id.map(|(id,)| id)
        .ok_or_else(|| Refused::UnknownUser.into())
}

/// The body of [`MyLists`]: the private lists the reader owns or was given.
#[sync_run]
impl MyLists {
    async fn run(conn: &mut Conn<Db>, ctx: &QueryCtx, _: &()) -> Result<Vec<MyList>, sqlx::Error> {
        let Some(user) = ctx.identity.id() else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT l.id, u.name, l.owner FROM lists l JOIN users u ON u.id = l.owner \
             WHERE l.owner = $1 OR l.id IN (SELECT list_id FROM shares WHERE user_id = $1) \
             ORDER BY l.id",
        )
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, owner, owner_id)| MyList {
                id,
                owner,
                mine: owner_id == user,
            })
            .collect())
    }
}

#[sync_apply]
impl AddTodo {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_access(conn, ctx, &self.list_id).await?;
        check_id(&self.id)?;
        if let Some(title) = clean_title(&self.title)? {
            // At the bottom of the list (an id already used is a constraint violation).
            let sql = "INSERT INTO todos (id, list_id, title, completed, position) \
                       VALUES ($1, $2, $3, FALSE, \
                       COALESCE((SELECT MAX(position) FROM todos WHERE list_id = $2), 0) + 1)";
            exec(conn, sql, &[&self.id, &self.list_id, &title]).await?;
        }
        Ok(())
    }
}

#[sync_apply]
impl ToggleTodo {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_access(conn, ctx, &self.list_id).await?;
        check_id(&self.id)?;
        sqlx::query("UPDATE todos SET completed = $1 WHERE list_id = $2 AND id = $3")
            .bind(self.completed)
            .bind(&self.list_id)
            .bind(&self.id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[sync_apply]
impl EditTodo {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_access(conn, ctx, &self.list_id).await?;
        check_id(&self.id)?;
        let (list, id) = (self.list_id.as_str(), self.id.as_str());
        match clean_title(&self.title)? {
            Some(title) => {
                let sql = "UPDATE todos SET title = $1 WHERE list_id = $2 AND id = $3";
                exec(conn, sql, &[&title, list, id]).await?
            }
            None => {
                let sql = "DELETE FROM todos WHERE list_id = $1 AND id = $2";
                exec(conn, sql, &[list, id]).await?
            }
        }
        Ok(())
    }
}

#[sync_apply]
impl DeleteTodo {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_access(conn, ctx, &self.list_id).await?;
        check_id(&self.id)?;
        let sql = "DELETE FROM todos WHERE list_id = $1 AND id = $2";
        exec(conn, sql, &[&self.list_id, &self.id]).await?;
        Ok(())
    }
}

#[sync_apply]
impl ToggleAll {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_access(conn, ctx, &self.list_id).await?;
        sqlx::query("UPDATE todos SET completed = $1 WHERE list_id = $2")
            .bind(self.completed)
            .bind(&self.list_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[sync_apply]
impl ClearCompleted {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_access(conn, ctx, &self.list_id).await?;
        let sql = "DELETE FROM todos WHERE list_id = $1 AND completed";
        exec(conn, sql, &[&self.list_id]).await?;
        Ok(())
    }
}

#[sync_apply]
impl CreateList {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_id(&self.id)?;
        let Some(user) = ctx.identity.id() else {
            return Err(Forbidden::new("Sign in to make a private list.").into());
        };
        // A list others may use stays public: only a new list (an id of the private kind,
        // naming no public list) becomes private. Nobody takes over someone else's list.
        if !self.id.starts_with(PRIVATE_PREFIX) {
            return Err(Refused::ListPublic.into());
        }
        let used: Option<(String,)> =
            sqlx::query_as("SELECT id FROM todos WHERE list_id = $1 LIMIT 1")
                .bind(&self.id)
                .fetch_optional(&mut *conn)
                .await?;
        if used.is_some() || self.id == DEFAULT_LIST {
            return Err(Refused::ListInUse.into());
        }
        let sql = "INSERT INTO lists (id, owner) VALUES ($1, $2)";
        exec(conn, sql, &[&self.id, user]).await?;
        Ok(())
    }
}

#[sync_apply]
impl ShareList {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        let owner = check_owner(conn, ctx, &self.list_id).await?;
        let user = user_named(conn, &self.user_name).await?;
        if user == owner {
            return Err(Refused::OwnList.into());
        }
        let sql = "INSERT INTO shares (id, list_id, user_id) VALUES ($1, $2, $3) \
                   ON CONFLICT (id) DO NOTHING";
        let id = format!("{}:{user}", self.list_id);
        exec(conn, sql, &[&id, &self.list_id, &user]).await?;
        Ok(())
    }
}

#[sync_apply]
impl UnshareList {
    async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
        check_owner(conn, ctx, &self.list_id).await?;
        let user = user_named(conn, &self.user_name).await?;
        let id = format!("{}:{user}", self.list_id);
        exec(conn, "DELETE FROM shares WHERE id = $1", &[&id]).await?;
        Ok(())
    }
}
