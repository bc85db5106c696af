//! `#[sync_event]`: the event type, its `Event` impl (with its prediction), its Leptos server
//! action, and the check that a server build has its handler.

use super::krate;
use heck::ToSnakeCase;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Error, ItemStruct};

pub(super) fn event(attr: Tokens, strukt: ItemStruct) -> syn::Result<Tokens> {
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
