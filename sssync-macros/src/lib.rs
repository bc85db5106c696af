//! The declaration macros of sssync, re-exported (and documented, with examples) by
//! `sssync-leptos`: [`macro@sync_query`], [`macro@sync_run`], [`macro@sync_event`],
//! [`macro@sync_apply`] and [`macro@sync_sql`].
//!
//! Each expands to the traits of `sssync-core` (`Query`, `Event`, `ServerQuery`,
//! `ServerEvent`), a Leptos server function per event, and a registration that
//! `EngineBuilder::declared` finds at start, so that nothing is named or listed twice. Server
//! code (query bodies, handlers, SQL helpers) is compiled only with the `ssr` feature of the
//! crate that declares it (Leptos's convention; that feature turns on `sssync-leptos/ssr`),
//! once for each database it is compiled for: those `sssync-leptos`'s features `sqlite` and
//! `postgres` compile in, unless `db = sqlite` or `db = postgres` narrows it; inside it, `Db`
//! names that database. `#[derive(Rejection)]` makes an enum an app's own kinds of refusal.
#![warn(missing_docs)] // a library: everything public is documented

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{ItemFn, ItemImpl, parse_macro_input};

mod apply;
mod db;
mod event;
mod query;
mod reads;
mod rejection;
mod run;
mod sql;

use apply::apply;
use event::event;
use query::{QueryFn, query};
use sql::sql;

/// The path every expansion goes through.
fn krate() -> Tokens {
    quote!(::sssync_leptos::__private)
}

/// Declares a query from an `async fn` (or, declarative, a `fn` without a body: below): its
/// name is the query's, its parameters (besides a `conn: &mut Conn<Db>` and a `ctx:
/// &QueryCtx`) are the args, it returns the rows in order.
///
/// It makes the query type (the function's name in upper camel case), its args struct (`…Args`,
/// one field per parameter; `()` without any), and, on both builds, a function of the query's
/// own name and args (each anything that converts into its type) that gives the query with
/// those args, a `Request`: `todos(list_id)` is what `use_sync_query(move || todos(…))`, a
/// prediction (`view.update(todos(&self.list_id), …)`) and `SyncServer::may_read` take, so an app
/// names a query once and never writes its args struct. The body is compiled only with the
/// declaring crate's `ssr` feature, once per database (`Db` names it). Options:
///
/// - `key = field`: the row's key (required);
/// - `reads = [table, table(value), …]`: what the result depends on (a whole table, or the rows
///   whose partition column is `value`, an expression over the args); required for a query
///   with a body (`reads = []`: a result that never changes), a compile error without;
/// - `authorize = path`: who may read it, an `async fn(conn, ctx: &QueryCtx, args: &…Args) ->
///   Result<(), AccessError>` (a `#[sync_sql]` helper), or bare `authorize`: the `async fn
///   authorize` of the query's [`macro@sync_run`] impl, in the server code (then the shared
///   declaration names no server code); `access_reads = […]`: what it reads
///   (a commit that changes it checks every reader again). Each without the other is a
///   compile error;
/// - `per_identity`: the result depends on who reads it (never shared across identities);
/// - `keyed_by = table`: the rows are that table's own (resume from the durable log);
/// - `db = sqlite` or `db = postgres`: compile the body for one database only.
///
/// A name written as a raw identifier (`fn r#match`, an arg or a column `r#type`) reaches the
/// wire and the SQL without its `r#`.
///
/// **A declarative query** is a `fn` without a body, `from = table`: its rows are that table's
/// rows whose columns named like the parameters equal the args, in `order_by = [column,
/// desc(column), …]` order (then by the key), at most `limit = n` of them, read from `columns =
/// [...]` (default: every column; the row type derives `sqlx::FromRow`). The engine writes its
/// SQL and maintains its results incrementally: a write costs in proportion to the rows it
/// changed, not to the result (see `Shape` in `sssync-core`). The table must be declared (with
/// the key column `key`), the order columns and the key `NOT NULL`, and an index on (the filter
/// columns, the order columns, the key) makes each change one index seek. Without `limit`, it is
/// keyed by its table (a reconnecting client resumes from the durable log); without `reads`, it
/// depends on the whole table.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sssync_leptos::{Query, sync_query};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// pub struct Todo { pub id: String, pub title: String, pub completed: bool }
///
/// /// The todos of a list, in their order: declarative.
/// #[sync_query(key = id, from = todos, columns = [id, title, completed],
///              order_by = [position], reads = [todos(list_id)])]
/// pub fn todos(list_id: String) -> Vec<Todo>;
///
/// assert_eq!(Todos::NAME, "todos");
/// let key = todos("l1").key().unwrap();
/// assert_eq!(key.args_json(), r#"{"list_id":"l1"}"#);
/// ```
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sssync_leptos::{Query, sync_query};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// pub struct Note { pub id: String, pub text: String }
///
/// /// The notes of a board.
/// #[sync_query(key = id, reads = [notes(board)])]
/// pub async fn notes(conn: &mut Conn<Db>, board: String) -> Result<Vec<Note>, sqlx::Error> {
///     sqlx::query_as("SELECT id, text FROM notes WHERE board = $1")
///         .bind(board)
///         .fetch_all(&mut *conn)
///         .await
/// }
///
/// assert_eq!(Notes::NAME, "notes");
/// let key = notes("b1").key().unwrap();
/// assert_eq!(key.args_json(), r#"{"board":"b1"}"#);
/// assert_eq!(Notes::row_key(&Note { id: "n1".into(), text: "hi".into() }), "n1");
/// ```
#[proc_macro_attribute]
pub fn sync_query(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item: Tokens = item.into();
    // An `async fn` with a body, or (a declarative query) a `fn` without one.
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => QueryFn {
            attrs: f.attrs,
            vis: f.vis,
            sig: f.sig,
            block: Some(f.block),
        },
        Err(e) => match syn::parse2::<syn::ForeignItemFn>(item) {
            Ok(f) => QueryFn {
                attrs: f.attrs,
                vis: f.vis,
                sig: f.sig,
                block: None,
            },
            Err(_) => return e.to_compile_error().into(),
        },
    };
    match query(attr.into(), func) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Declares an event from a struct: its fields are its args (and a plain form's fields), its
/// name the struct's in snake case (`name = "…"` to choose).
///
/// It derives `Clone`, `Debug`, `Serialize` and `Deserialize`, implements `Event` and makes the
/// event a Leptos server function at `/api/{name}` (so `use_sync_event::<E>()` is a
/// `ServerAction`, for `<ActionForm>` and `.dispatch(…)`).
///
/// On the event's `impl`, `#[sync_event]` takes the rest of the event in one block: `fn
/// predict(&self, view: &mut Prediction<'_>)`, its optimistic effect in the browser (optional:
/// found without a flag), and `async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) ->
/// Result<(), EventError>`, its server handler (as [`macro@sync_apply`] makes it, compiled with
/// the `ssr` feature only; `#[sync_event(db = sqlite)]` for one database). A handler may instead
/// live in server code under `#[sync_apply]`. In a server build, an event without a handler
/// does not compile.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sssync_leptos::{Prediction, sync_event, sync_query};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// pub struct Note { pub id: String, pub text: String }
///
/// #[sync_query(key = id, reads = [notes(board)])]
/// pub async fn notes(conn: &mut Conn<Db>, board: String) -> Result<Vec<Note>, sqlx::Error> {
///     todo!()
/// }
///
/// /// Adds a note.
/// #[sync_event]
/// pub struct AddNote { pub board: String, pub id: String, pub text: String }
///
/// #[sync_event]
/// impl AddNote {
///     fn predict(&self, view: &mut Prediction<'_>) {
///         let note = Note { id: self.id.clone(), text: self.text.clone() };
///         view.insert(notes(&self.board), note);
///     }
///
///     async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
///         sqlx::query("INSERT INTO notes (id, board, text) VALUES ($1, $2, $3)")
///             .bind(&self.id).bind(&self.board).bind(&self.text)
///             .execute(&mut *conn).await?;
///         Ok(())
///     }
/// }
///
/// // The prediction, as a tab's client applies it before the server answers.
/// use sssync_core::{Epoch, Event, Version, client::ClientState};
/// assert_eq!(AddNote::NAME, "add_note");
/// let board = notes("b");
/// let mut tab = ClientState::new("tab-1");
/// tab.seed(board.key().unwrap(), &Epoch("e".into()), Version(1), vec![]);
/// tab.push(AddNote { board: "b".into(), id: "n1".into(), text: "hi".into() }).unwrap();
/// assert_eq!(tab.rows::<Notes>(board.args()), Some(vec![Note { id: "n1".into(), text: "hi".into() }]));
/// ```
#[proc_macro_attribute]
pub fn sync_event(attr: TokenStream, item: TokenStream) -> TokenStream {
    let expanded = match parse_macro_input!(item as syn::Item) {
        syn::Item::Struct(strukt) => event(attr.into(), strukt),
        syn::Item::Impl(imp) => event::event_impl(attr.into(), imp),
        other => Err(syn::Error::new_spanned(
            other,
            "#[sync_event] goes on the event's struct and on its `impl` (predict, apply)",
        )),
    };
    match expanded {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Declares an event's server handler apart from the event (in server code; the event's
/// `#[sync_event] impl` can hold it instead): an `impl` of the event holding one `async fn
/// apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError>`. It runs inside the engine's
/// transaction (with the client's seq: exactly once, all or nothing); a `Rejection` refuses the
/// event (rolled back in the browser). Compiled only with the declaring crate's `ssr` feature,
/// for both databases (`db = sqlite` or `db = postgres` for one); registered by itself.
///
/// ```
/// use sssync_leptos::{sync_apply, sync_event};
/// #[cfg(feature = "ssr")]
/// use sssync_leptos::server::prelude::*;
///
/// /// Adds a note.
/// #[sync_event]
/// pub struct AddNote { pub board: String, pub id: String, pub text: String }
///
/// #[sync_apply]
/// impl AddNote {
///     async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> {
///         if self.text.is_empty() {
///             return Err(Rejection::new("empty", "A note has a text.").into());
///         }
///         sqlx::query("INSERT INTO notes (id, board, text) VALUES ($1, $2, $3)")
///             .bind(&self.id).bind(&self.board).bind(&self.text)
///             .execute(&mut *conn).await?;
///         Ok(())
///     }
/// }
/// # use sssync_core::Event;
/// # assert_eq!(AddNote::NAME, "add_note");
/// ```
///
/// (The server side runs in `sssync-leptos/tests/macros.rs`, on SQLite and PostgreSQL.)
#[proc_macro_attribute]
pub fn sync_apply(attr: TokenStream, item: TokenStream) -> TokenStream {
    let imp = parse_macro_input!(item as ItemImpl);
    match apply(attr.into(), imp) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Gives a query declared without a body (in the shared model, so that it names no server
/// code) its server side: an `impl` of the query type holding `async fn run(conn: &mut
/// Conn<Db>, ctx: &QueryCtx, args: &…Args) -> Result<Vec<Row>, sqlx::Error>` (the rows in
/// order), `async fn authorize(conn, ctx: &QueryCtx, args: &…Args) -> Result<(), AccessError>`
/// (for `#[sync_query(authorize, …)]`), or both. The counterpart of [`macro@sync_apply`] for
/// queries: compiled only with the declaring crate's `ssr` feature, for both databases (`db =
/// sqlite` or `db = postgres` for one). A declaration without its `#[sync_run]` does not compile
/// in a server build.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sssync_leptos::{sync_query, sync_run};
/// #[cfg(feature = "ssr")]
/// use sssync_leptos::server::prelude::*;
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// pub struct Note { pub id: String, pub text: String }
///
/// // The shared model: the declaration only.
/// /// The notes of a board.
/// #[sync_query(key = id, reads = [notes(board)], access_reads = [locked(board)], authorize)]
/// pub fn notes(board: String) -> Vec<Note>;
///
/// // The server code: the body and the check.
/// #[sync_run]
/// impl Notes {
///     async fn run(conn: &mut Conn<Db>, _: &QueryCtx, args: &NotesArgs)
///         -> Result<Vec<Note>, sqlx::Error> {
///         sqlx::query_as("SELECT id, text FROM notes WHERE board = $1")
///             .bind(&args.board)
///             .fetch_all(&mut *conn)
///             .await
///     }
///     async fn authorize(conn: &mut Conn<Db>, _: &QueryCtx, args: &NotesArgs)
///         -> Result<(), AccessError> {
///         let locked: Option<(String,)> =
///             sqlx::query_as("SELECT board FROM locked WHERE board = $1")
///                 .bind(&args.board)
///                 .fetch_optional(&mut *conn)
///                 .await?;
///         match locked {
///             None => Ok(()),
///             Some(_) => Err(AccessError::forbidden("locked")),
///         }
///     }
/// }
/// # use sssync_core::Query;
/// # assert_eq!(Notes::NAME, "notes");
/// ```
///
/// (The server side runs in `sssync-leptos/tests/macros.rs`, on SQLite and PostgreSQL.)
#[proc_macro_attribute]
pub fn sync_run(attr: TokenStream, item: TokenStream) -> TokenStream {
    let imp = parse_macro_input!(item as ItemImpl);
    match run::run(attr.into(), imp) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Declares a database helper written once for both databases: an `async fn` whose parameters
/// may name `Db` (`conn: &mut Conn<Db>`), compiled for SQLite and PostgreSQL (with the
/// declaring crate's `ssr` feature), and callable from any handler, query or helper with
/// either's connection (the database is inferred from it).
///
/// ```
/// use sssync_leptos::sync_sql;
///
/// /// Whether a board is locked.
/// #[sync_sql]
/// pub async fn locked(conn: &mut Conn<Db>, board: &str) -> Result<bool, sqlx::Error> {
///     let row: Option<(String,)> = sqlx::query_as("SELECT board FROM locked WHERE board = $1")
///         .bind(board)
///         .fetch_optional(&mut *conn)
///         .await?;
///     Ok(row.is_some())
/// }
/// ```
///
/// (The server side runs in `sssync-leptos/tests/macros.rs`, on SQLite and PostgreSQL.)
#[proc_macro_attribute]
pub fn sync_sql(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    match sql(attr.into(), func) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// An application's own kinds of rejection, as an enum: one variant per reason, each with its
/// message (`#[rejection(message = "…")]`, a format string over the variant's fields) and its
/// stable code (the variant's name in snake case, or `code = "…"`). It implements
/// `RejectionKind`: a handler returns a variant (`Err(SayError::TooLong.into())`, an
/// `EventError`), the browser matches it (`rejection.kind::<SayError>()`).
///
/// ```
/// use sssync_leptos::{Rejection, RejectionKind};
///
/// #[derive(Debug, PartialEq, Rejection)]
/// pub enum SayError {
///     #[rejection(message = "Say something.")]
///     Empty,
///     #[rejection(message = "At most {max} characters; this has {chars}.")]
///     TooLong { max: usize, chars: usize },
///     #[rejection(code = "muted", message = "You cannot speak here.")]
///     NotAllowed,
/// }
///
/// let r = Rejection::from(SayError::TooLong { max: 500, chars: 501 });
/// assert_eq!((r.code.as_str(), r.message.as_str()), ("too_long", "At most 500 characters; this has 501."));
/// assert_eq!(Rejection::from(SayError::NotAllowed).code, "muted");
/// // Back from the wire: a code alone carries no fields (they come back as their defaults).
/// assert_eq!(r.kind::<SayError>(), Some(SayError::TooLong { max: 0, chars: 0 }));
/// assert_eq!(Rejection::new("muted", "…").kind(), Some(SayError::NotAllowed));
/// assert_eq!(Rejection::new("other", "…").kind::<SayError>(), None);
/// ```
#[proc_macro_derive(Rejection, attributes(rejection))]
pub fn derive_rejection(item: TokenStream) -> TokenStream {
    match rejection::derive(parse_macro_input!(item as syn::DeriveInput)) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `#[sync_query(attr)]` on `item` makes, or its compile error's message.
    fn expand(attr: &str, item: &str) -> Result<String, String> {
        let attr: Tokens = attr.parse().unwrap();
        let item: Tokens = item.parse().unwrap();
        let func = match syn::parse2::<ItemFn>(item.clone()) {
            Ok(f) => QueryFn {
                attrs: f.attrs,
                vis: f.vis,
                sig: f.sig,
                block: Some(f.block),
            },
            Err(_) => {
                let f = syn::parse2::<syn::ForeignItemFn>(item).unwrap();
                QueryFn {
                    attrs: f.attrs,
                    vis: f.vis,
                    sig: f.sig,
                    block: None,
                }
            }
        };
        query(attr, func)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    const BODIED: &str = "pub async fn notes(conn: &mut Conn<Db>, board: String) \
                          -> Result<Vec<Note>, sqlx::Error> { todo!() }";

    #[test]
    fn a_query_with_its_own_sql_and_no_reads_is_a_compile_error() {
        let e = expand("key = id", BODIED).unwrap_err();
        assert!(e.contains("names what it reads"), "{e}");
        // Saying it reads nothing is a choice, not an omission.
        assert!(expand("key = id, reads = []", BODIED).is_ok());
        assert!(expand("key = id, reads = [notes(board)]", BODIED).is_ok());
    }

    #[test]
    fn access_reads_without_authorize_and_authorize_without_access_reads_are_compile_errors() {
        let e = expand(
            "key = id, reads = [notes(board)], access_reads = [locked(board)]",
            BODIED,
        )
        .unwrap_err();
        assert!(e.contains("name the check with `authorize"), "{e}");
        let e = expand(
            "key = id, reads = [notes(board)], authorize = check",
            BODIED,
        )
        .unwrap_err();
        assert!(e.contains("access_reads = [table(arg)"), "{e}");
        assert!(
            expand(
                "key = id, reads = [notes(board)], access_reads = [locked(board)], authorize = check",
                BODIED
            )
            .is_ok()
        );
    }

    #[test]
    fn raw_identifiers_name_their_columns_and_queries_without_r_hash() {
        let out = expand(
            "key = id, from = r#items, columns = [id, r#type]",
            "pub fn r#match(r#type: String) -> Vec<Item>;",
        )
        .unwrap();
        assert!(
            !out.contains("\"r#"),
            "a name reaches SQL or the wire with r#: {out}"
        );
        assert!(out.contains("\"match\""), "{out}");
        assert!(out.contains("filter : & [\"type\"]"), "{out}");
        assert!(out.contains("table : \"items\""), "{out}");
    }
}
