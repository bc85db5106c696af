//! The account bar and the sign-in and sign-up pages (plain forms: they work without
//! JavaScript).

use crate::api::current_user;
use crate::model::CreateList;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_query_map};
use sssync_leptos::{FORM_NEXT_FIELD, SyncForm, use_sync_event};

/// The account bar above every page: who is signed in, with `Sign out` and `New private list`,
/// or the links to sign in and up.
#[component]
pub(super) fn AccountBar() -> impl IntoView {
    let me = Resource::new(|| (), |_| async { current_user().await.ok().flatten() });
    let create = use_sync_event::<CreateList>();
    // The id of the list the form makes (a plain post then opens it); a new one once used.
    let next_list = RwSignal::new(crate::model::new_private_list_id());
    // Once the server made it, the list opens (as a plain form's redirect does).
    let made = StoredValue::new(None::<String>);
    Effect::new(move |_| {
        if let Some(list) = create.input().get() {
            made.set_value(Some(list.id));
            next_list.set(crate::model::new_private_list_id());
        }
    });
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let (Some(Ok(())), Some(id)) = (create.value().get(), made.get_value()) {
            navigate(&format!("/lists/{id}"), Default::default());
        }
    });
    view! {
        <nav class="account" aria-label="Account">
            <Transition fallback=|| ()>
                {move || {
                    me.get()
                        .map(|me| match me {
                            Some(name) => {
                                view! {
                                    <span>"Signed in as "</span>
                                    <strong data-testid="user-name">{name}</strong>
                                    <SyncForm action=create attr:class="inline">
                                        <input type="hidden" name="id" value=move || next_list.get() />
                                        <input
                                            type="hidden"
                                            name=FORM_NEXT_FIELD
                                            value=move || format!("/lists/{}", next_list.get())
                                        />
                                        <button type="submit">"New private list"</button>
                                    </SyncForm>
                                    <form class="inline" method="post" action="/auth/logout">
                                        <button type="submit">"Sign out"</button>
                                    </form>
                                }
                                    .into_any()
                            }
                            None => {
                                view! {
                                    <a href="/login">"Sign in"</a>
                                    " · "
                                    <a href="/signup">"Sign up"</a>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
        </nav>
    }
}

/// What an error code of the account forms means.
pub(super) fn auth_message(code: &str) -> &'static str {
    match code {
        "credentials" => "Wrong user name or password.",
        "taken" => "That user name is taken; choose another.",
        "name" => "A user name is 1 to 32 letters, digits, '-', '_' or '.'.",
        "password" => "A password has at least 8 characters.",
        _ => "Something went wrong; please try again.",
    }
}

/// `/signup` and `/login`: a user name and a password, posted as a plain form.
#[component]
pub(super) fn AuthPage(signup: bool) -> impl IntoView {
    let query = use_query_map();
    let error = move || query.read().get("error").map(|c| auth_message(&c));
    let (title, action, button) = if signup {
        ("Sign up", "/auth/signup", "Sign up")
    } else {
        ("Sign in", "/auth/login", "Sign in")
    };
    view! {
        <Title text=format!("sssync • {title}") />
        <section class="auth">
            <h1>{title}</h1>
            {move || error().map(|m| view! { <p class="alert" role="alert">{m}</p> })}
            <form method="post" action=action>
                <label for="user-name">"User name"</label>
                <input
                    id="user-name"
                    name="name"
                    type="text"
                    autocomplete="username"
                    required
                    autofocus
                />
                <label for="password">"Password"</label>
                <input
                    id="password"
                    name="password"
                    type="password"
                    autocomplete=if signup { "new-password" } else { "current-password" }
                    required
                />
                <button type="submit">{button}</button>
            </form>
            <p>
                {if signup {
                    view! { "Have an account? " <a href="/login">"Sign in"</a> }.into_any()
                } else {
                    view! { "New here? " <a href="/signup">"Sign up"</a> }.into_any()
                }}
            </p>
        </section>
    }
}
