//! What a query reads (`reads = [table, table(value), …]`, `access_reads = […]`): the
//! dependencies of one key (a table, or one partition of it by a value over the args), and the
//! same tables known before any args, which the engine checks against the declared tables at
//! start.

use super::krate;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Error, Expr};

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

/// The tables of `reads = [...]`, known before any args (`TableRead`s): the engine checks them
/// against the declared tables when it starts.
pub(super) fn table_reads(list: &Option<syn::ExprArray>) -> syn::Result<Tokens> {
    let p = krate();
    let mut reads = Vec::new();
    for e in list.iter().flat_map(|l| l.elems.iter()) {
        reads.push(match e {
            Expr::Path(path) if path.path.get_ident().is_some() => {
                let t = path
                    .path
                    .get_ident()
                    .map(|i| i.unraw().to_string())
                    .unwrap_or_default();
                quote!(#p::core::server::TableRead::table(#t))
            }
            Expr::Call(call) => match &*call.func {
                Expr::Path(path) if path.path.get_ident().is_some() => {
                    let t = path
                        .path
                        .get_ident()
                        .map(|i| i.unraw().to_string())
                        .unwrap_or_default();
                    quote!(#p::core::server::TableRead::partition(#t))
                }
                _ => return Err(Error::new(e.span(), "a table name")),
            },
            _ => return Err(Error::new(e.span(), "a table name")),
        });
    }
    Ok(quote!(&[#(#reads),*]))
}

pub(super) fn dependencies(
    list: &Option<syn::ExprArray>,
    destructure: &Tokens,
) -> syn::Result<Tokens> {
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
