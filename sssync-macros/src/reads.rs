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

/// An entry of `reads = [...]`: a whole table (`table`), or a table's partition by a value
/// (`table(value)`, the value an expression over the args).
fn read(e: &Expr) -> syn::Result<(String, Option<&Expr>)> {
    let table_name = |e: &Expr| match e {
        Expr::Path(path) => path.path.get_ident().map(|i| i.unraw().to_string()),
        _ => None,
    };
    let read = match e {
        Expr::Call(call) if call.args.len() == 1 => {
            table_name(&call.func).map(|t| (t, Some(&call.args[0])))
        }
        _ => table_name(e).map(|t| (t, None)),
    };
    read.ok_or_else(|| {
        Error::new(
            e.span(),
            "each read is `table` (any row of it) or `table(value)` (the rows whose partition column is the value, an expression over the args)",
        )
    })
}

/// The tables of `reads = [...]`, known before any args (`TableRead`s): the engine checks them
/// against the declared tables when it starts.
pub(super) fn table_reads(list: &Option<syn::ExprArray>) -> syn::Result<Tokens> {
    let p = krate();
    let mut reads = Vec::new();
    for e in list.iter().flat_map(|l| l.elems.iter()) {
        reads.push(match read(e)? {
            (t, None) => quote!(#p::core::server::TableRead::table(#t)),
            (t, Some(_)) => quote!(#p::core::server::TableRead::partition(#t)),
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
        let dep = match read(e)? {
            (t, None) => quote!(#p::core::server::Dependency::table(#t)),
            (t, Some(v)) => quote!(#p::core::server::Dependency::partition(#t, #v)),
        };
        deps.push(quote! {{
            #[allow(unused_variables)]
            #destructure
            #dep
        }});
    }
    Ok(quote!(::std::vec![#(#deps),*] as ::std::vec::Vec<#p::core::server::Dependency>))
}
