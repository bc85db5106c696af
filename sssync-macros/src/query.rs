//! `#[sync_query]`: the query type, its args struct, and per database its `ServerQuery` (a body
//! of its own, a declarative shape, or a `#[sync_run]`'s), registered by itself.

use super::db::{Dbs, is_conn, is_ctx};
use super::krate;
use super::reads::{dependencies, table_reads};
use heck::ToUpperCamelCase;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Error, Expr, FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Type};

/// `T` of `Result<Vec<T>, _>`.
pub(super) fn row_type(ret: &ReturnType) -> Option<Type> {
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

/// A query's function: with a body (its own SQL), or without (declarative).
pub(super) struct QueryFn {
    pub(super) attrs: Vec<syn::Attribute>,
    pub(super) vis: syn::Visibility,
    pub(super) sig: syn::Signature,
    pub(super) block: Option<Box<syn::Block>>,
}

/// A column name of a declarative query's options (a plain identifier).
pub(super) fn column(e: &Expr) -> syn::Result<String> {
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
pub(super) fn vec_of(ret: &ReturnType) -> Option<Type> {
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

pub(super) fn query(attr: Tokens, func: QueryFn) -> syn::Result<Tokens> {
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
    // The query by its own name: `todos(list_id)` is the request `use_sync_query` and a
    // prediction take (each arg anything that converts into its type).
    let request_fn = {
        let fn_ident = &sig.ident;
        let args_value = if arg_names.is_empty() {
            quote!(())
        } else {
            quote!(#args_ty { #(#arg_names: ::core::convert::Into::into(#arg_names)),* })
        };
        let doc = format!(
            "The query [`{marker}`] with these args: what `use_sync_query`, a prediction and a \
             check take (`{name}(…)`)."
        );
        quote! {
            #[doc = #doc]
            #[allow(clippy::too_many_arguments)]
            #vis fn #fn_ident(
                #(#arg_names: impl ::core::convert::Into<#arg_types>),*
            ) -> #p::core::Request<#marker> {
                #p::core::Request::new(#args_value)
            }
        }
    };
    let deps = dependencies(&reads, &destructure)?;
    let access_deps = dependencies(&access_reads, &destructure)?;
    let table_reads_list = table_reads(&reads)?;
    let access_table_reads = table_reads(&access_reads)?;
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
    let (deps, table_reads_list) = match (&reads, &from) {
        (None, Some(table)) => {
            let t = table.unraw().to_string();
            (
                quote!(::std::vec![#p::core::server::Dependency::table(#t)]),
                quote!(&[#p::core::server::TableRead::table(#t)]),
            )
        }
        _ => (deps, table_reads_list),
    };
    let ret = &sig.output;
    let inputs = &sig.inputs;
    let body_attrs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("doc"))
        .collect();

    let mut impls = Vec::new();
    for target in dbs.each() {
        let db = &target.db;
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
        impls.push(target.gated(quote! {
            impl #p::core::server::ServerQuery<#db> for #marker {
                const KEYED_BY: ::core::option::Option<&'static str> = #keyed_by;
                const ACCESS: #p::core::server::Access = #access;
                const READS: &'static [#p::core::server::TableRead] = #table_reads_list;
                const ACCESS_READS: &'static [#p::core::server::TableRead] = #access_table_reads;

                fn dependencies(args: &#args_type) -> ::std::vec::Vec<#p::core::server::Dependency> {
                    #deps
                }

                fn access_dependencies(args: &#args_type) -> ::std::vec::Vec<#p::core::server::Dependency> {
                    #access_deps
                }

                #authorize_fn

                #body
            }
        }));
    }
    let at = format!("query `{name}`");
    let registrations = dbs.registrations(|r| quote!(#r.query::<#marker>();));
    Ok(quote! {
        #(#docs)*
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #marker;

        #args_decl

        #request_fn

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
