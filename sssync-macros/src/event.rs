//! `#[sync_event]`: the event type, its `Event` impl (with its prediction), its Leptos server
//! action, and the check that a server build has its handler.

use super::krate;
use heck::ToSnakeCase;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Error, ImplItem, ItemImpl, ItemStruct};

pub(super) fn event(attr: Tokens, strukt: ItemStruct) -> syn::Result<Tokens> {
    let p = krate();
    let mut name: Option<syn::LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("predict") {
            return Err(meta.error(
                "`predict` is not an option: write `fn predict(&self, view: &mut Prediction<'_>)` \
                 in the event's `#[sync_event] impl` block, which is found without a flag",
            ));
        } else if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse()?);
        } else {
            return Err(meta.error("unknown option: use name = \"…\""));
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
    // The prediction of the event's `#[sync_event] impl`, if it has one (see `Probe`).
    let predict_fn = quote! {
        fn predict(&self, view: &mut #p::core::client::Prediction<'_>) {
            #[allow(unused_imports)]
            use #p::{Predicted as _, Unpredicted as _};
            (&&#p::Probe(self)).__sssync_predict(view)
        }
    };
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

/// `#[sync_event] impl MyEvent { fn predict(…) { … } async fn apply(…) { … } }`: the event's
/// optimistic effect (both builds) and its server handler (a server build only), in one block.
pub(super) fn event_impl(attr: Tokens, imp: ItemImpl) -> syn::Result<Tokens> {
    let p = krate();
    let dbs = super::db::Dbs::only_option(attr)?;
    if imp.trait_.is_some() || !imp.generics.params.is_empty() {
        return Err(Error::new(
            imp.span(),
            "#[sync_event] goes on the event's struct, and on one `impl MyEvent { fn predict(…) \
             { … } async fn apply(…) { … } }`",
        ));
    }
    let ty = &imp.self_ty;
    let (mut predict, mut apply) = (None, None);
    for item in &imp.items {
        match item {
            ImplItem::Fn(f) if f.sig.ident == "predict" && predict.is_none() => predict = Some(f),
            ImplItem::Fn(f) if f.sig.ident == "apply" && apply.is_none() => apply = Some(f),
            other => {
                return Err(Error::new(
                    other.span(),
                    "an event's #[sync_event] impl holds its `fn predict(&self, view: &mut \
                     Prediction<'_>)` (the optimistic effect, optional) and its `async fn \
                     apply(&self, conn: &mut Conn<Db>, ctx: &EventCtx) -> Result<(), \
                     EventError>` (the server handler), nothing else",
                ));
            }
        }
    }
    let predict = predict.map(|f| {
        let (attrs, block) = (&f.attrs, &f.block);
        let inputs = &f.sig.inputs;
        quote! {
            impl #p::Predict for #ty {
                #(#attrs)*
                fn predict(#inputs) #block
            }
        }
    });
    let apply = match apply {
        Some(f) if f.sig.asyncness.is_none() => {
            return Err(Error::new(f.sig.fn_token.span, "`apply` is an `async fn`"));
        }
        Some(f) => Some(super::apply::handler(ty, f, dbs)),
        None => None,
    };
    Ok(quote! {
        #predict
        #apply
    })
}
