//! What every macro shares: the databases a server item is compiled for (`db = …`), and the
//! rewriting of `Db` and `Conn<Db>` into each database's types.

use super::krate;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::visit_mut::VisitMut;
use syn::{Error, GenericArgument, Ident, PathArguments, Type};

/// The databases a server item is compiled for.
#[derive(Clone, Copy)]
pub(super) struct Dbs {
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
    pub(super) fn parse(meta: &syn::meta::ParseNestedMeta) -> syn::Result<Dbs> {
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
    pub(super) fn only_option(attr: Tokens) -> syn::Result<Dbs> {
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

    /// Each database compiled for: its type, and the gate its items pass (dropped when
    /// `sssync-core` is built without that database's feature).
    pub(super) fn each(self) -> Vec<Target> {
        let p = krate();
        let mut out = Vec::new();
        if self.sqlite {
            out.push(Target {
                db: quote!(#p::core::server::Sqlite),
                gate: quote!(#p::core::__sqlite),
            });
        }
        if self.postgres {
            out.push(Target {
                db: quote!(#p::core::server::Postgres),
                gate: quote!(#p::core::__postgres),
            });
        }
        out
    }

    /// The `sqlite` and `postgres` fields of a registration.
    pub(super) fn registrations(self, register: impl Fn(&Tokens) -> Tokens) -> Tokens {
        let p = krate();
        let one = |on: bool, db: Tokens, name: &str| {
            if on {
                let f = format_ident!("__sssync_register_{}", name);
                let body = register(&quote!(r));
                let gate = format_ident!("__{}", name);
                quote! {
                    #p::core::#gate!(option {
                        fn #f(r: &mut #p::core::server::declared::Registrar<'_, #db>) { #body }
                        #f as fn(&mut #p::core::server::declared::Registrar<'_, #db>)
                    })
                }
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

/// A database an item is compiled for.
pub(super) struct Target {
    /// Its type (`Sqlite`, `Postgres`).
    pub(super) db: Tokens,
    /// The macro that keeps items for it only when `sssync-core` has its feature.
    gate: Tokens,
}

impl Target {
    /// `items`, compiled only when `sssync-core` has this database.
    pub(super) fn gated(&self, items: Tokens) -> Tokens {
        let gate = &self.gate;
        quote!(#gate! { items #items })
    }
}

/// Replaces the type `Db` (a single-segment path) with a database type.
pub(super) struct ReplaceDb(pub(super) Type);

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

pub(super) fn with_db<T: Clone>(
    item: &T,
    db: &Tokens,
    visit: impl Fn(&mut ReplaceDb, &mut T),
) -> T {
    let mut item = item.clone();
    let ty: Type = syn::parse2(db.clone()).expect("a database type");
    visit(&mut ReplaceDb(ty), &mut item);
    item
}

/// A handler written once (`async fn apply`, `run`, `authorize` of an `impl` block) as a trait
/// method for database `db`: `Db` replaced in its signature, named by an alias in its body.
pub(super) fn method_for_db(f: &syn::ImplItemFn, db: &Tokens) -> syn::ImplItemFn {
    let mut f = with_db(f, db, |v, f| v.visit_signature_mut(&mut f.sig));
    f.vis = syn::Visibility::Inherited;
    let stmts = &f.block.stmts;
    let alias: syn::Stmt = syn::parse_quote! {
        #[allow(dead_code)]
        type Db = #db;
    };
    f.block = syn::parse_quote!({ #alias #(#stmts)* });
    f
}

/// Replaces `Conn<Db>` with a type (the connection type parameter of a generic helper).
pub(super) struct ReplaceConn(pub(super) Type);

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
pub(super) fn is_conn(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_some() && last_ident(&r.elem).is_some_and(|i| i == "Conn"))
}

/// Whether `ty` is `&QueryCtx` (or `&…::QueryCtx`).
pub(super) fn is_ctx(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_none() && last_ident(&r.elem).is_some_and(|i| i == name))
}

pub(super) fn last_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}
