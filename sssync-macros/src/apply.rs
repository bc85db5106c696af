//! `#[sync_apply]`: an event's server handler, per database, registered by itself.

use super::db::{Dbs, method_for_db};
use super::krate;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Error, ImplItem, ItemImpl};

pub(super) fn apply(attr: Tokens, imp: ItemImpl) -> syn::Result<Tokens> {
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
    Ok(handler(ty, &apply_fn, dbs))
}

/// An event's handler `apply_fn` (already checked to be an `async fn apply`): its
/// `ServerEvent` impl per database, `HasHandler`, and its registration, all in a server build
/// only.
pub(super) fn handler(ty: &syn::Type, apply_fn: &syn::ImplItemFn, dbs: Dbs) -> Tokens {
    let p = krate();
    let mut impls = Vec::new();
    for target in dbs.each() {
        let db = &target.db;
        let f = method_for_db(apply_fn, db);
        impls.push(target.gated(quote! {
            impl #p::core::server::ServerEvent<#db> for #ty {
                #f
            }
        }));
    }
    let registrations = dbs.registrations(|r| quote!(#r.event::<#ty>();));
    quote! {
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
    }
}
