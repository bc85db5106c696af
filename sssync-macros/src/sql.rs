//! `#[sync_sql]`: a database helper written once, compiled for each database.

use super::db::{Dbs, ReplaceConn, ReplaceDb, with_db};
use super::krate;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{Error, FnArg, ItemFn, Pat, ReturnType, parse_quote};

pub(super) fn sql(attr: Tokens, func: ItemFn) -> syn::Result<Tokens> {
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
    for target in dbs.each() {
        let db = &target.db;
        let mut isig = with_db(sig, db, |v, s| v.visit_signature_mut(s));
        isig.ident = format_ident!("call");
        let stmts = &func.block.stmts;
        impls.push(target.gated(quote! {
            #[cfg(feature = "ssr")]
            impl #tr for #db {
                #[allow(clippy::needless_lifetimes)]
                #isig {
                    #[allow(dead_code)]
                    type Db = #db;
                    #(#stmts)*
                }
            }
        }));
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
