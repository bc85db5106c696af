//! `#[sync_run]`: a query's server side (its `run`, its `authorize`) written in the server
//! code, apart from the query's declaration in the shared model, the way `#[sync_apply]` gives
//! an event its handler.

use crate::db::{Dbs, method_for_db};
use crate::krate;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Error, ImplItem, ItemImpl};

const SHAPE: &str = "a #[sync_run] impl holds `async fn run(conn: &mut Conn<Db>, ctx: &QueryCtx, \
                     args: &…Args) -> Result<Vec<Row>, sqlx::Error>`, `async fn authorize(conn: \
                     &mut Conn<Db>, ctx: &QueryCtx, args: &…Args) -> Result<(), AccessError>`, \
                     or both";

pub(crate) fn run(attr: Tokens, imp: ItemImpl) -> syn::Result<Tokens> {
    let p = krate();
    let dbs = Dbs::only_option(attr)?;
    if imp.trait_.is_some() || !imp.generics.params.is_empty() {
        return Err(Error::new(imp.span(), SHAPE));
    }
    let ty = &imp.self_ty;
    let (mut run_fn, mut authorize_fn) = (None, None);
    for item in &imp.items {
        let ImplItem::Fn(f) = item else {
            return Err(Error::new(item.span(), SHAPE));
        };
        let slot = match f.sig.ident.to_string().as_str() {
            "run" => &mut run_fn,
            "authorize" => &mut authorize_fn,
            _ => return Err(Error::new(f.sig.ident.span(), SHAPE)),
        };
        if slot.is_some() {
            return Err(Error::new(f.sig.ident.span(), "written twice"));
        }
        if f.sig.asyncness.is_none() {
            return Err(Error::new(
                f.sig.fn_token.span,
                format!("`{}` is an `async fn`", f.sig.ident),
            ));
        }
        *slot = Some(f.clone());
    }
    if run_fn.is_none() && authorize_fn.is_none() {
        return Err(Error::new(imp.span(), SHAPE));
    }
    let mut impls = Vec::new();
    for target in dbs.each() {
        let db = &target.db;
        if let Some(f) = &run_fn {
            let f = method_for_db(f, db);
            impls.push(target.gated(quote! {
                impl #p::core::server::declared::RunQuery<#db> for #ty {
                    #f
                }
            }));
        }
        if let Some(f) = &authorize_fn {
            let f = method_for_db(f, db);
            impls.push(target.gated(quote! {
                impl #p::core::server::declared::AuthorizeQuery<#db> for #ty {
                    #f
                }
            }));
        }
    }
    Ok(quote! {
        #[cfg(feature = "ssr")]
            const _: () = {
                #(#impls)*
            };
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(item: Tokens) -> String {
        run(Tokens::new(), syn::parse2(item).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_sync_run_impl_holds_run_or_authorize_and_nothing_else() {
        assert!(err(quote!(impl Q { fn other() {} })).contains("#[sync_run] impl holds"));
        assert!(err(quote!(impl Q {})).contains("#[sync_run] impl holds"));
        assert!(err(quote!(impl Q { fn run() {} })).contains("`run` is an `async fn`"));
        assert!(
            err(quote!(impl Q { async fn run() {} async fn run() {} })).contains("written twice")
        );
        assert!(
            run(
                Tokens::new(),
                syn::parse2(quote!(impl Q { async fn run() {} })).unwrap()
            )
            .is_ok()
        );
    }
}
