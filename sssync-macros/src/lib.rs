//! The declaration macros of sssync, re-exported (and documented, with examples) by
//! `sssync-leptos`: [`macro@sync_query`], [`macro@sync_run`], [`macro@sync_event`],
//! [`macro@sync_apply`] and [`macro@sync_sql`].
//!
//! Each expands to the traits of `sssync-core` (`Query`, `Event`, `ServerQuery`,
//! `ServerEvent`), a Leptos server function per event, and a registration that
//! `EngineBuilder::declared` finds at start, so that nothing is named or listed twice. Server
//! code (query bodies, handlers, SQL helpers) is compiled only with the `ssr` feature of the
//! crate that declares it (Leptos's convention; that feature turns on `sssync-leptos/ssr`), once for each database it is compiled for (SQLite and PostgreSQL unless
//! `db = sqlite` or `db = postgres` says otherwise); inside it, `Db` names that database.

mod run;

use heck::{ToSnakeCase, ToUpperCamelCase};
use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    Error, Expr, FnArg, GenericArgument, Ident, ImplItem, ItemFn, ItemImpl, ItemStruct, Pat,
    PathArguments, ReturnType, Type, parse_macro_input, parse_quote,
};

/// The path every expansion goes through.
fn krate() -> Tokens {
    quote!(::sssync_leptos::__private)
}

/// The databases a server item is compiled for.
#[derive(Clone, Copy)]
struct Dbs {
    sqlite: bool,
    postgres: bool,
}

impl Default for Dbs {
    fn default() -> Self {
        Dbs {
            sqlite: true,
            postgres: true,
        }
    }
}

impl Dbs {
    fn parse(meta: &syn::meta::ParseNestedMeta) -> syn::Result<Dbs> {
        let db: Ident = meta.value()?.parse()?;
        match db.to_string().as_str() {
            "sqlite" => Ok(Dbs {
                sqlite: true,
                postgres: false,
            }),
            "postgres" => Ok(Dbs {
                sqlite: false,
                postgres: true,
            }),
            _ => Err(Error::new(db.span(), "`db` is `sqlite` or `postgres`")),
        }
    }

    /// The databases of an attribute whose one option is `db` (`#[sync_apply]`, `#[sync_sql]`).
    fn only_option(attr: Tokens) -> syn::Result<Dbs> {
        let mut dbs = Dbs::default();
        syn::meta::parser(|meta| {
            if meta.path.is_ident("db") {
                dbs = Dbs::parse(&meta)?;
                Ok(())
            } else {
                Err(meta.error("unknown option: use db = sqlite or db = postgres"))
            }
        })
        .parse2(attr)?;
        Ok(dbs)
    }

    /// The type of each database compiled for.
    fn each(self) -> Vec<Tokens> {
        let p = krate();
        let mut out = Vec::new();
        if self.sqlite {
            out.push(quote!(#p::core::server::Sqlite));
        }
        if self.postgres {
            out.push(quote!(#p::core::server::Postgres));
        }
        out
    }

    /// The `sqlite` and `postgres` fields of a registration.
    fn registrations(self, register: impl Fn(&Tokens) -> Tokens) -> Tokens {
        let p = krate();
        let one = |on: bool, db: Tokens, name: &str| {
            if on {
                let f = format_ident!("__sssync_register_{}", name);
                let body = register(&quote!(r));
                quote! {{
                    fn #f(r: &mut #p::core::server::declared::Registrar<'_, #db>) { #body }
                    ::core::option::Option::Some(#f as fn(&mut #p::core::server::declared::Registrar<'_, #db>))
                }}
            } else {
                quote!(::core::option::Option::None)
            }
        };
        let sqlite = one(self.sqlite, quote!(#p::core::server::Sqlite), "sqlite");
        let postgres = one(
            self.postgres,
            quote!(#p::core::server::Postgres),
            "postgres",
        );
        quote!(sqlite: #sqlite, postgres: #postgres,)
    }
}

/// Replaces the type `Db` (a single-segment path) with a database type.
struct ReplaceDb(Type);

impl VisitMut for ReplaceDb {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(p) = ty
            && p.qself.is_none()
            && p.path.leading_colon.is_none()
            && p.path.segments.len() == 1
            && p.path.segments[0].ident == "Db"
            && p.path.segments[0].arguments.is_none()
        {
            *ty = self.0.clone();
            return;
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}

fn with_db<T: Clone>(item: &T, db: &Tokens, visit: impl Fn(&mut ReplaceDb, &mut T)) -> T {
    let mut item = item.clone();
    let ty: Type = syn::parse2(db.clone()).expect("a database type");
    visit(&mut ReplaceDb(ty), &mut item);
    item
}

/// Replaces `Conn<Db>` with a type (the connection type parameter of a generic helper).
struct ReplaceConn(Type);

impl VisitMut for ReplaceConn {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(p) = ty
            && p.qself.is_none()
            && let Some(seg) = p.path.segments.last()
            && seg.ident == "Conn"
            && let PathArguments::AngleBracketed(args) = &seg.arguments
            && args.args.len() == 1
            && matches!(&args.args[0], GenericArgument::Type(Type::Path(d)) if d.path.is_ident("Db"))
        {
            *ty = self.0.clone();
            return;
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}

/// Whether `ty` is `&mut Conn<…>` (or `&mut …::Conn<…>`).
fn is_conn(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_some() && last_ident(&r.elem).is_some_and(|i| i == "Conn"))
}

/// Whether `ty` is `&QueryCtx` (or `&…::QueryCtx`).
fn is_ctx(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_none() && last_ident(&r.elem).is_some_and(|i| i == name))
}

fn last_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

/// `T` of `Result<Vec<T>, _>`.
fn row_type(ret: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = ret else {
        return None;
    };
    let first_arg = |ty: &Type, name: &str| -> Option<Type> {
        let Type::Path(p) = ty else { return None };
        let seg = p.path.segments.last()?;
        if seg.ident != name {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &seg.arguments else {
            return None;
        };
        match args.args.first()? {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        }
    };
    first_arg(&first_arg(ty, "Result")?, "Vec")
}

/// An entry of `reads = [...]`: a whole table, or a table's partition by a value.
fn dependency(e: &Expr) -> syn::Result<Tokens> {
    let p = krate();
    let table_name = |e: &Expr| -> syn::Result<String> {
        match e {
            Expr::Path(path) if path.path.get_ident().is_some() => Ok(path
                .path
                .get_ident()
                .map(|i| i.unraw().to_string())
                .unwrap_or_default()),
            _ => Err(Error::new(e.span(), "a table name")),
        }
    };
    match e {
        Expr::Path(_) => {
            let t = table_name(e)?;
            Ok(quote!(#p::core::server::Dependency::table(#t)))
        }
        Expr::Call(call) if call.args.len() == 1 => {
            let t = table_name(&call.func)?;
            let v = &call.args[0];
            Ok(quote!(#p::core::server::Dependency::partition(#t, #v)))
        }
        _ => Err(Error::new(
            e.span(),
            "each read is `table` (any row of it) or `table(value)` (the rows whose partition column is the value, an expression over the args)",
        )),
    }
}

fn dependencies(list: &Option<syn::ExprArray>, destructure: &Tokens) -> syn::Result<Tokens> {
    let p = krate();
    let mut deps = Vec::new();
    for e in list.iter().flat_map(|l| l.elems.iter()) {
        let dep = dependency(e)?;
        deps.push(quote! {{
            #[allow(unused_variables)]
            #destructure
            #dep
        }});
    }
    Ok(quote!(::std::vec![#(#deps),*] as ::std::vec::Vec<#p::core::server::Dependency>))
}

/// Declares a query from an `async fn` (or, declarative, a `fn` without a body: below): its
/// name is the query's, its parameters (besides a `conn: &mut Conn<Db>` and a `ctx:
/// &QueryCtx`) are the args, it returns the rows in order.
///
/// It makes the query type (the function's name in upper camel case) and its args struct
/// (`…Args`, one field per parameter; `()` without any). The body is compiled only with the
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
/// use sssync_leptos::{SyncQueryDef, sync_query};
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
/// let key = sssync_core::QueryKey::new(Todos::NAME, &TodosArgs { list_id: "l1".into() }).unwrap();
/// assert_eq!(key.args_json(), r#"{"list_id":"l1"}"#);
/// ```
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sssync_leptos::{SyncQueryDef, sync_query};
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
/// let key = sssync_core::QueryKey::new(Notes::NAME, &NotesArgs { board: "b1".into() }).unwrap();
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

/// A query's function: with a body (its own SQL), or without (declarative).
struct QueryFn {
    attrs: Vec<syn::Attribute>,
    vis: syn::Visibility,
    sig: syn::Signature,
    block: Option<Box<syn::Block>>,
}

/// A column name of a declarative query's options (a plain identifier).
fn column(e: &Expr) -> syn::Result<String> {
    match e {
        Expr::Path(path) if path.path.get_ident().is_some() => Ok(path
            .path
            .get_ident()
            .map(|i| i.unraw().to_string())
            .unwrap_or_default()),
        _ => Err(Error::new(e.span(), "a column name")),
    }
}

/// `T` of `Vec<T>`.
fn vec_of(ret: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = ret else {
        return None;
    };
    let Type::Path(p) = &**ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != "Vec" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn query(attr: Tokens, func: QueryFn) -> syn::Result<Tokens> {
    let p = krate();
    let mut key: Option<Ident> = None;
    let mut from: Option<Ident> = None;
    let mut order_by: Option<syn::ExprArray> = None;
    let mut columns: Option<syn::ExprArray> = None;
    let mut limit: Option<syn::LitInt> = None;
    let mut reads: Option<syn::ExprArray> = None;
    let mut access_reads: Option<syn::ExprArray> = None;
    // `authorize = path` (a helper), or bare `authorize` (a `#[sync_run]` impl's).
    let mut authorize: Option<Option<syn::Path>> = None;
    let mut per_identity = false;
    let mut keyed_by: Option<Ident> = None;
    let mut dbs = Dbs::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("key") {
            key = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("reads") {
            reads = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("access_reads") {
            access_reads = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("authorize") {
            authorize = Some(if meta.input.peek(syn::Token![=]) {
                Some(meta.value()?.parse()?)
            } else {
                None
            });
        } else if meta.path.is_ident("per_identity") {
            per_identity = true;
        } else if meta.path.is_ident("keyed_by") {
            keyed_by = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("db") {
            dbs = Dbs::parse(&meta)?;
        } else if meta.path.is_ident("from") {
            from = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("order_by") {
            order_by = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("columns") {
            columns = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("limit") {
            limit = Some(meta.value()?.parse()?);
        } else {
            return Err(meta.error(
                "unknown option: use key, reads, access_reads, authorize, per_identity, keyed_by, \
                 db, or for a declarative query from, order_by, columns and limit",
            ));
        }
        Ok(())
    });
    parser.parse2(attr)?;
    let sig = &func.sig;
    // Without a body: declarative (`from = table`: the engine writes the SQL), or served (the
    // body is a `#[sync_run]` impl in the server code).
    let bodiless = func.block.is_none();
    let declarative = bodiless && from.is_some();
    let served = bodiless && from.is_none();
    if served {
        if sig.asyncness.is_some() {
            return Err(Error::new(
                sig.fn_token.span,
                "a sync_query without a body is a plain `fn`: `fn my_lists() -> Vec<MyList>;` \
                 (its body is a `#[sync_run]` impl in the server code)",
            ));
        }
        if order_by.is_some() || columns.is_some() || limit.is_some() {
            return Err(Error::new(
                Span::call_site(),
                "`order_by`, `columns` and `limit` are for a declarative query: name its table \
                 with `from = table`",
            ));
        }
        if reads.is_none() {
            return Err(Error::new(
                Span::call_site(),
                "a query whose body is a `#[sync_run]` names what it reads: `reads = [table, \
                 table(arg), …]` (the changes that re-run it; `reads = []` for a result that \
                 never changes)",
            ));
        }
    }
    if declarative {
        if sig.asyncness.is_some() {
            return Err(Error::new(
                sig.fn_token.span,
                "a declarative sync_query is a plain `fn` without a body: `fn todos(list_id: String) -> Vec<Todo>;`",
            ));
        }
        if keyed_by.is_some() {
            return Err(Error::new(
                Span::call_site(),
                "a declarative query is keyed by its table already (without `limit`)",
            ));
        }
    } else if !served {
        if sig.asyncness.is_none() {
            return Err(Error::new(
                sig.fn_token.span,
                "a sync_query is an `async fn` (or, declarative, a `fn` without a body)",
            ));
        }
        if from.is_some() || order_by.is_some() || columns.is_some() || limit.is_some() {
            return Err(Error::new(
                Span::call_site(),
                "`from`, `order_by`, `columns` and `limit` are for a declarative query: a `fn` \
                 without a body (the engine writes its SQL)",
            ));
        }
        if reads.is_none() {
            return Err(Error::new(
                Span::call_site(),
                "a query with its own SQL names what it reads: `reads = [table, table(arg), …]` \
                 (the changes that re-run it; without them its result would never update; \
                 `reads = []` for a result that never changes)",
            ));
        }
    }
    if access_reads.is_some() && authorize.is_none() {
        return Err(Error::new(
            Span::call_site(),
            "`access_reads` says what `authorize` reads: name the check with `authorize = path` \
             (without one, anyone may read the query)",
        ));
    }
    if authorize.is_some() && access_reads.is_none() {
        return Err(Error::new(
            Span::call_site(),
            "a checked query names what its `authorize` reads: `access_reads = [table(arg), …]` \
             (a commit that changes them checks every reader again; without them, a reader \
             whose access was withdrawn keeps the subscription; `access_reads = []` when \
             nothing it reads ever changes)",
        ));
    }
    let key = key.ok_or_else(|| {
        Error::new(
            Span::call_site(),
            "name the row's key field: #[sync_query(key = id, …)]",
        )
    })?;
    let row = if bodiless {
        vec_of(&sig.output).ok_or_else(|| {
            Error::new(
                sig.output.span(),
                "a declarative sync_query returns Vec<Row> (Row: sqlx::FromRow)",
            )
        })?
    } else {
        row_type(&sig.output).ok_or_else(|| {
            Error::new(
                sig.output.span(),
                "a sync_query returns Result<Vec<Row>, sqlx::Error>",
            )
        })?
    };
    let name = sig.ident.unraw().to_string();
    let marker = format_ident!("{}", name.to_upper_camel_case(), span = sig.ident.span());
    let args_ty = format_ident!("{}Args", marker);
    let vis = &func.vis;
    let docs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();

    // The parameters: the connection, the context, and the args (by name).
    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    let mut call = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else {
            return Err(Error::new(input.span(), "a sync_query is a free function"));
        };
        if bodiless && (is_conn(&pt.ty) || is_ctx(&pt.ty, "QueryCtx")) {
            return Err(Error::new(
                pt.ty.span(),
                "a declarative query's parameters are its args only (each equals the column of \
                 its name)",
            ));
        }
        if is_conn(&pt.ty) {
            call.push(quote!(__sssync_conn));
        } else if is_ctx(&pt.ty, "QueryCtx") {
            call.push(quote!(__sssync_ctx));
        } else {
            let Pat::Ident(id) = &*pt.pat else {
                return Err(Error::new(
                    pt.pat.span(),
                    "an arg is a plain name: `list_id: String`",
                ));
            };
            let ident = &id.ident;
            arg_names.push(ident.clone());
            arg_types.push((*pt.ty).clone());
            call.push(quote!(#ident));
        }
    }
    let run_destructure = if arg_names.is_empty() {
        quote!(let _ = __sssync_args;)
    } else {
        quote!(let #args_ty { #(#arg_names),* } = ::core::clone::Clone::clone(__sssync_args);)
    };
    let (args_decl, args_type, destructure) = if arg_names.is_empty() {
        (quote!(), quote!(()), quote!())
    } else {
        let serde = quote!(#p::serde);
        let serde_path = format!("{}", quote!(#p::serde)).replace(' ', "");
        let doc = format!("The args of the query [`{marker}`].");
        (
            quote! {
                #[doc = #doc]
                #[derive(::core::clone::Clone, ::core::fmt::Debug, ::core::cmp::PartialEq, #serde::Serialize, #serde::Deserialize)]
                #[serde(crate = #serde_path)]
                #vis struct #args_ty {
                    #(
                        #[allow(missing_docs)]
                        #vis #arg_names: #arg_types,
                    )*
                }
            },
            quote!(#args_ty),
            quote!(let #args_ty { #(#arg_names),* } = ::core::clone::Clone::clone(args);),
        )
    };
    let deps = dependencies(&reads, &destructure)?;
    let access_deps = dependencies(&access_reads, &destructure)?;
    let access = if per_identity {
        quote!(#p::core::server::Access::PerIdentity)
    } else if authorize.is_some() {
        quote!(#p::core::server::Access::Checked)
    } else {
        quote!(#p::core::server::Access::Public)
    };
    // A declarative query without a limit is its table's rows: resumable from the log.
    let keyed_by = match (&from, &limit) {
        (Some(t), None) => Some(t.clone()),
        (Some(_), Some(_)) => None,
        (None, _) => keyed_by,
    };
    let keyed_by = match keyed_by {
        Some(t) => {
            let t = t.unraw().to_string();
            quote!(::core::option::Option::Some(#t))
        }
        None => quote!(::core::option::Option::None),
    };
    // A declarative query's shape: its table, the args as the filter, the order, the limit.
    let shape = match &from {
        None => None,
        Some(table) => {
            let table = table.unraw().to_string();
            let key_col = key.unraw().to_string();
            let filter: Vec<String> = arg_names.iter().map(|a| a.unraw().to_string()).collect();
            let mut order = Vec::new();
            for e in order_by.iter().flat_map(|l| l.elems.iter()) {
                let (dir, col) = match e {
                    Expr::Call(call) if call.args.len() == 1 => {
                        let dir = column(&call.func)?;
                        let col = column(&call.args[0])?;
                        match dir.as_str() {
                            "desc" => (quote!(Desc), col),
                            "asc" => (quote!(Asc), col),
                            _ => {
                                return Err(Error::new(
                                    call.func.span(),
                                    "an order is `column`, `asc(column)` or `desc(column)`",
                                ));
                            }
                        }
                    }
                    e => (quote!(Asc), column(e)?),
                };
                order.push(quote!(#p::core::server::Order::#dir(#col)));
            }
            let cols = columns
                .iter()
                .flat_map(|l| l.elems.iter())
                .map(column)
                .collect::<syn::Result<Vec<_>>>()?;
            let limit = match &limit {
                Some(n) => {
                    let n: u32 = n.base10_parse()?;
                    quote!(::core::option::Option::Some(#n))
                }
                None => quote!(::core::option::Option::None),
            };
            Some(quote! {
                #p::core::server::Shape {
                    table: #table,
                    key: #key_col,
                    columns: &[#(#cols),*],
                    filter: &[#(#filter),*],
                    order: &[#(#order),*],
                    limit: #limit,
                }
            })
        }
    };
    // Without `reads`, a declarative query depends on its whole table.
    let deps = match (&reads, &from) {
        (None, Some(table)) => {
            let t = table.unraw().to_string();
            quote!(::std::vec![#p::core::server::Dependency::table(#t)])
        }
        _ => deps,
    };
    let ret = &sig.output;
    let inputs = &sig.inputs;
    let body_attrs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("doc"))
        .collect();

    let mut impls = Vec::new();
    for db in dbs.each() {
        let authorize_fn = authorize.as_ref().map(|path| {
            let call = match path {
                Some(path) => quote!(#path(conn, ctx, args).await),
                None => quote! {
                    <Self as #p::core::server::declared::AuthorizeQuery<#db>>::authorize(
                        conn, ctx, args,
                    ).await
                },
            };
            quote! {
                async fn authorize(
                    conn: &mut #p::core::server::Conn<#db>,
                    ctx: &#p::core::server::QueryCtx,
                    args: &#args_type,
                ) -> ::core::result::Result<(), #p::core::server::AccessError> {
                    #call
                }
            }
        });
        let body = match (&func.block, &shape) {
            (Some(block), _) => quote! {
                async fn run(
                    __sssync_conn: &mut #p::core::server::Conn<#db>,
                    __sssync_ctx: &#p::core::server::QueryCtx,
                    __sssync_args: &#args_type,
                ) -> ::core::result::Result<::std::vec::Vec<#row>, #p::sqlx::Error> {
                    #[allow(dead_code)]
                    type Db = #db;
                    #(#body_attrs)*
                    async fn __sssync_body(#inputs) #ret #block
                    let _ = __sssync_ctx;
                    #run_destructure
                    __sssync_body(#(#call),*).await.map_err(::core::convert::Into::into)
                }
            },
            (None, Some(shape)) => {
                let binds = arg_names.iter().map(|a| {
                    quote!(__sssync_q = __sssync_q.bind(::core::clone::Clone::clone(&__sssync_args.#a));)
                });
                quote! {
                    const SHAPE: ::core::option::Option<#p::core::server::Shape> =
                        ::core::option::Option::Some(#shape);

                    async fn run(
                        __sssync_conn: &mut #p::core::server::Conn<#db>,
                        __sssync_ctx: &#p::core::server::QueryCtx,
                        __sssync_args: &#args_type,
                    ) -> ::core::result::Result<::std::vec::Vec<#row>, #p::sqlx::Error> {
                        static SQL: ::std::sync::OnceLock<::std::string::String> =
                            ::std::sync::OnceLock::new();
                        let _ = __sssync_ctx;
                        let sql = SQL.get_or_init(|| #shape.select_sql());
                        let rows = <Self as #p::core::server::ServerQuery<#db>>::fetch(
                            __sssync_conn, sql, __sssync_args, ::core::option::Option::None,
                        ).await?;
                        ::core::result::Result::Ok(rows.into_iter().map(|f| f.row).collect())
                    }

                    async fn fetch(
                        __sssync_conn: &mut #p::core::server::Conn<#db>,
                        __sssync_sql: &str,
                        __sssync_args: &#args_type,
                        __sssync_keys: ::core::option::Option<&str>,
                    ) -> ::core::result::Result<
                        ::std::vec::Vec<#p::core::server::Fetched<#row>>,
                        #p::sqlx::Error,
                    > {
                        let _ = __sssync_args;
                        let mut __sssync_q = #p::sqlx::query(
                            #p::sqlx::AssertSqlSafe(::std::borrow::ToOwned::to_owned(__sssync_sql)),
                        );
                        #(#binds)*
                        if let ::core::option::Option::Some(k) = __sssync_keys {
                            __sssync_q = __sssync_q.bind(::std::borrow::ToOwned::to_owned(k));
                        }
                        let rows = __sssync_q.fetch_all(&mut *__sssync_conn).await?;
                        let keyed = __sssync_keys.is_some();
                        rows.iter()
                            .map(|r| {
                                ::core::result::Result::Ok(#p::core::server::Fetched {
                                    row: <#row as #p::sqlx::FromRow<'_, <#db as #p::sqlx::Database>::Row>>::from_row(r)?,
                                    key: if keyed {
                                        ::core::option::Option::Some(#p::sqlx::Row::try_get::<::std::string::String, _>(r, "__sssync_key")?)
                                    } else {
                                        ::core::option::Option::None
                                    },
                                    prev: if keyed {
                                        #p::sqlx::Row::try_get::<::core::option::Option<::std::string::String>, _>(r, "__sssync_prev")?
                                    } else {
                                        ::core::option::Option::None
                                    },
                                })
                            })
                            .collect()
                    }
                }
            }
            (None, None) => quote! {
                async fn run(
                    conn: &mut #p::core::server::Conn<#db>,
                    ctx: &#p::core::server::QueryCtx,
                    args: &#args_type,
                ) -> ::core::result::Result<::std::vec::Vec<#row>, #p::sqlx::Error> {
                    <Self as #p::core::server::declared::RunQuery<#db>>::run(conn, ctx, args).await
                }
            },
        };
        impls.push(quote! {
            impl #p::core::server::ServerQuery<#db> for #marker {
                const KEYED_BY: ::core::option::Option<&'static str> = #keyed_by;
                const ACCESS: #p::core::server::Access = #access;

                fn dependencies(args: &#args_type) -> ::std::vec::Vec<#p::core::server::Dependency> {
                    #deps
                }

                fn access_dependencies(args: &#args_type) -> ::std::vec::Vec<#p::core::server::Dependency> {
                    #access_deps
                }

                #authorize_fn

                #body
            }
        });
    }
    let at = format!("query `{name}`");
    let registrations = dbs.registrations(|r| quote!(#r.query::<#marker>();));
    Ok(quote! {
        #(#docs)*
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #marker;

        #args_decl

        impl #p::core::Query for #marker {
            const NAME: &'static str = #name;
            type Args = #args_type;
            type Row = #row;
            fn row_key(row: &#row) -> ::std::string::String {
                ::std::string::ToString::to_string(&row.#key)
            }
        }

        #[cfg(feature = "ssr")]
            const _: () = {
                #(#impls)*
                #p::inventory::submit! {
                    #p::core::server::declared::Declared {
                        kind: #p::core::server::declared::DeclaredKind::Query,
                        name: #name,
                        at: ::core::concat!(::core::module_path!(), ": ", #at),
                        #registrations
                    }
                }
            };
    })
}

/// Declares an event from a struct: its fields are its args (and a plain form's fields), its
/// name the struct's in snake case (`name = "…"` to choose).
///
/// It derives `Clone`, `Debug`, `Serialize` and `Deserialize`, implements `Event` and makes the
/// event a Leptos server function at `/api/{name}` (so `use_sync_event::<E>()` is a
/// `ServerAction`, for `<ActionForm>` and `.dispatch(…)`). With `predict`, the event's own
/// `fn predict(&self, view: &mut Prediction<'_>)` is its optimistic effect in the browser. In a
/// server build, an event without a `#[sync_apply]` handler does not compile.
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
/// #[sync_event(predict)]
/// pub struct AddNote { pub board: String, pub id: String, pub text: String }
///
/// impl AddNote {
///     fn predict(&self, view: &mut Prediction<'_>) {
///         let note = Note { id: self.id.clone(), text: self.text.clone() };
///         view.update::<Notes>(&NotesArgs { board: self.board.clone() }, |rows| rows.push(note));
///     }
/// }
///
/// // The prediction, as a tab's client applies it before the server answers.
/// use sssync_core::{Epoch, Event, Query, QueryKey, Version, client::ClientState};
/// assert_eq!(AddNote::NAME, "add_note");
/// let args = NotesArgs { board: "b".into() };
/// let mut tab = ClientState::new("tab-1");
/// tab.seed(QueryKey::new(Notes::NAME, &args).unwrap(), &Epoch("e".into()), Version(1), vec![]);
/// tab.push(AddNote { board: "b".into(), id: "n1".into(), text: "hi".into() }).unwrap();
/// assert_eq!(tab.rows::<Notes>(&args), Some(vec![Note { id: "n1".into(), text: "hi".into() }]));
/// ```
#[proc_macro_attribute]
pub fn sync_event(attr: TokenStream, item: TokenStream) -> TokenStream {
    let strukt = parse_macro_input!(item as ItemStruct);
    match event(attr.into(), strukt) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn event(attr: Tokens, strukt: ItemStruct) -> syn::Result<Tokens> {
    let p = krate();
    let mut predict = false;
    let mut name: Option<syn::LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("predict") {
            predict = true;
        } else if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
        } else {
            return Err(meta.error("unknown option: use predict or name = \"…\""));
        }
        Ok(())
    });
    parser.parse2(attr)?;
    if !strukt.generics.params.is_empty() {
        return Err(Error::new(
            strukt.generics.span(),
            "a sync_event has no generic parameters",
        ));
    }
    let ident = &strukt.ident;
    let name = name
        .map(|n| n.value())
        .unwrap_or_else(|| ident.unraw().to_string().to_snake_case());
    let path = format!("/api/{name}");
    let serde = quote!(#p::serde);
    let serde_path = format!("{}", quote!(#p::serde)).replace(' ', "");
    let predict_fn = predict.then(|| {
        quote! {
            // Calls the event's own `fn predict(&self, view: &mut Prediction<'_>)` (an
            // inherent method); without one this would call itself, which is an error.
            #[deny(unconditional_recursion)]
            fn predict(&self, view: &mut #p::core::client::Prediction<'_>) {
                #ident::predict(self, view)
            }
        }
    });
    let at = format!("event `{name}`");
    Ok(quote! {
        #[derive(::core::clone::Clone, ::core::fmt::Debug, #serde::Serialize, #serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #strukt

        impl #p::core::Event for #ident {
            const NAME: &'static str = #name;
            #predict_fn
        }

        #p::__server_action!(#ident, #path);

        #[cfg(feature = "ssr")]
            const _: () = {
                // Every event has a server handler (`#[sync_apply] impl …`).
                const fn __sssync_has_handler<T: #p::core::server::declared::HasHandler>() {}
                const _: () = __sssync_has_handler::<#ident>();
                #p::inventory::submit! {
                    #p::core::server::declared::Declared {
                        kind: #p::core::server::declared::DeclaredKind::Event,
                        name: #name,
                        at: ::core::concat!(::core::module_path!(), ": ", #at),
                        sqlite: ::core::option::Option::None,
                        postgres: ::core::option::Option::None,
                    }
                }
            };
    })
}

/// Declares an event's server handler: an `impl` of the event holding one `async fn apply(&self,
/// conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError>`. It runs inside the engine's
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

fn apply(attr: Tokens, imp: ItemImpl) -> syn::Result<Tokens> {
    let p = krate();
    let dbs = Dbs::only_option(attr)?;
    if imp.trait_.is_some() {
        return Err(Error::new(
            imp.span(),
            "#[sync_apply] goes on `impl MyEvent { async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError> { … } }`",
        ));
    }
    let ty = &imp.self_ty;
    let mut apply_fn = None;
    for item in &imp.items {
        match item {
            ImplItem::Fn(f) if f.sig.ident == "apply" && apply_fn.is_none() => {
                apply_fn = Some(f.clone())
            }
            other => {
                return Err(Error::new(
                    other.span(),
                    "a #[sync_apply] impl holds one `async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError>`",
                ));
            }
        }
    }
    let apply_fn = apply_fn.ok_or_else(|| {
        Error::new(
            imp.span(),
            "write `async fn apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), EventError>`",
        )
    })?;
    if apply_fn.sig.asyncness.is_none() {
        return Err(Error::new(
            apply_fn.sig.fn_token.span,
            "`apply` is an `async fn`",
        ));
    }
    let mut impls = Vec::new();
    for db in dbs.each() {
        let mut f = with_db(&apply_fn, &db, |v, f| v.visit_signature_mut(&mut f.sig));
        f.vis = syn::Visibility::Inherited;
        let stmts = &f.block.stmts;
        let alias: syn::Stmt = parse_quote! {
            #[allow(dead_code)]
            type Db = #db;
        };
        f.block = parse_quote!({ #alias #(#stmts)* });
        impls.push(quote! {
            impl #p::core::server::ServerEvent<#db> for #ty {
                #f
            }
        });
    }
    let registrations = dbs.registrations(|r| quote!(#r.event::<#ty>();));
    Ok(quote! {
        #[cfg(feature = "ssr")]
            const _: () = {
                #(#impls)*
                impl #p::core::server::declared::HasHandler for #ty {}
                #p::inventory::submit! {
                    #p::core::server::declared::Declared {
                        kind: #p::core::server::declared::DeclaredKind::Handler,
                        name: <#ty as #p::core::Event>::NAME,
                        at: ::core::module_path!(),
                        #registrations
                    }
                }
            };
    })
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

fn sql(attr: Tokens, func: ItemFn) -> syn::Result<Tokens> {
    let p = krate();
    let dbs = Dbs::only_option(attr)?;
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span,
            "a sync_sql helper is an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "a sync_sql helper has no generic parameters (`Db` names the database)",
        ));
    }
    let name = &sig.ident;
    let tr = format_ident!("__SsSyncSql_{}", name);
    let vis = &func.vis;
    let attrs = &func.attrs;
    let mut names = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(id) => names.push(id.ident.clone()),
                other => {
                    return Err(Error::new(other.span(), "a parameter is a plain name"));
                }
            },
            FnArg::Receiver(r) => {
                return Err(Error::new(r.span(), "a sync_sql helper is a free function"));
            }
        }
    }
    // The trait's signature: `Db` is `Self`; it answers a `Send` future.
    let mut trait_sig = with_db(sig, &quote!(Self), |v, s| v.visit_signature_mut(s));
    trait_sig.asyncness = None;
    trait_sig.ident = format_ident!("call");
    let out = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => {
            let t = with_db(&**t, &quote!(Self), |v, t| v.visit_type_mut(t));
            quote!(#t)
        }
    };
    trait_sig.output =
        parse_quote!(-> impl ::core::future::Future<Output = #out> + ::core::marker::Send);
    let mut impls = Vec::new();
    for db in dbs.each() {
        let mut isig = with_db(sig, &db, |v, s| v.visit_signature_mut(s));
        isig.ident = format_ident!("call");
        let stmts = &func.block.stmts;
        impls.push(quote! {
            #[cfg(feature = "ssr")]
            impl #tr for #db {
                #[allow(clippy::needless_lifetimes)]
                #isig {
                    #[allow(dead_code)]
                    type Db = #db;
                    #(#stmts)*
                }
            }
        });
    }
    // Generic over the connection type (which names its database), so that a call infers it.
    let mut generic_sig = sig.clone();
    ReplaceConn(parse_quote!(__SsSyncConn)).visit_signature_mut(&mut generic_sig);
    ReplaceDb(parse_quote!(<__SsSyncConn as #p::core::server::declared::ConnOf>::Db))
        .visit_signature_mut(&mut generic_sig);
    generic_sig.generics = parse_quote!(<__SsSyncConn: #p::core::server::declared::ConnOf>);
    generic_sig.generics.where_clause =
        Some(parse_quote!(where <__SsSyncConn as #p::core::server::declared::ConnOf>::Db: #tr));
    Ok(quote! {
        #[cfg(feature = "ssr")]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis trait #tr: #p::sqlx::Database {
            #trait_sig;
        }
        #(#impls)*
        #[cfg(feature = "ssr")]
        #(#attrs)*
        #vis #generic_sig {
            <<__SsSyncConn as #p::core::server::declared::ConnOf>::Db as #tr>::call(#(#names),*).await
        }
    })
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
