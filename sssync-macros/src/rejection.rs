//! `#[derive(Rejection)]`: an application's own kinds of rejection, as an enum.

use super::krate;
use heck::ToSnakeCase;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Error, Fields, LitStr};

/// A variant's code and message, from its `#[rejection(…)]`.
struct Said {
    code: String,
    message: LitStr,
}

fn said(variant: &syn::Variant) -> syn::Result<Said> {
    let mut code = variant.ident.unraw().to_string().to_snake_case();
    let mut message = None;
    for attr in variant
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("rejection"))
    {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("message") {
                message = Some(meta.value()?.parse::<LitStr>()?);
            } else if meta.path.is_ident("code") {
                code = meta.value()?.parse::<LitStr>()?.value();
            } else {
                return Err(meta.error("unknown option: use message = \"…\" or code = \"…\""));
            }
            Ok(())
        })?;
    }
    let message = message.ok_or_else(|| {
        Error::new_spanned(
            &variant.ident,
            "a rejection needs its message: #[rejection(message = \"…\")]",
        )
    })?;
    Ok(Said { code, message })
}

pub(super) fn derive(input: DeriveInput) -> syn::Result<Tokens> {
    let Data::Enum(data) = &input.data else {
        return Err(Error::new_spanned(
            &input.ident,
            "#[derive(Rejection)] is for an enum: one variant per reason",
        ));
    };
    let p = krate();
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let (mut codes, mut messages, mut froms) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for variant in &data.variants {
        let Said { code, message } = said(variant)?;
        if !seen.insert(code.clone()) {
            return Err(Error::new_spanned(
                &variant.ident,
                format!("two variants have the code `{code}`"),
            ));
        }
        let v = &variant.ident;
        // The message is a format string over the variant's fields (`{chars}`, or `{0}`).
        let (pattern, args, default) = match &variant.fields {
            Fields::Unit => (quote!(#name::#v), quote!(), quote!(#name::#v)),
            Fields::Named(f) => {
                let idents: Vec<_> = f.named.iter().map(|f| f.ident.clone()).collect();
                (
                    quote!(#name::#v { #(#idents),* }),
                    quote!(#(, #idents = #idents)*),
                    quote!(#name::#v { #(#idents: ::core::default::Default::default()),* }),
                )
            }
            Fields::Unnamed(f) => {
                let idents: Vec<_> = (0..f.unnamed.len())
                    .map(|i| quote::format_ident!("__field{}", i))
                    .collect();
                let defaults = idents
                    .iter()
                    .map(|_| quote!(::core::default::Default::default()));
                (
                    quote!(#name::#v(#(#idents),*)),
                    quote!(#(, #idents)*),
                    quote!(#name::#v(#(#defaults),*)),
                )
            }
        };
        codes.push(quote!(#pattern => #code,));
        messages.push(quote! {
            #[allow(unused_variables)]
            #pattern => ::std::format!(#message #args),
        });
        froms.push(quote!(#code => ::core::option::Option::Some(#default),));
    }
    let codes_wild = if data.variants.is_empty() {
        quote!(_ => ::core::unreachable!(),)
    } else {
        quote!()
    };
    Ok(quote! {
        impl #impl_generics #p::core::RejectionKind for #name #ty_generics #where_clause {
            #[allow(unused_variables)]
            fn code(&self) -> &'static str {
                match self { #(#codes)* #codes_wild }
            }

            fn message(&self) -> ::std::string::String {
                match self { #(#messages)* #codes_wild }
            }

            fn from_rejection(
                rejection: &#p::core::Rejection,
            ) -> ::core::option::Option<Self> {
                match rejection.code.as_str() {
                    #(#froms)*
                    _ => ::core::option::Option::None,
                }
            }
        }
    })
}
