//! The demo's components: the HTML shell, the routes and the TodoMVC list page.
//!
//! The list is a sync query (`use_sync_query::<Todos>`): rendered on the server, hydrated without
//! a second fetch, then live. Every write is an event's action (`use_sync_event`) in Leptos's
//! own `<ActionForm>`: without JavaScript the form posts to the event's server function; once
//! hydrated, its submit (or a checkbox's change) dispatches the event over the sync connection,
//! predicted at once. The controls that only a page without JavaScript needs (the toggles as
//! submit buttons, the edit link) are gone once the page is hydrated, so each control exists once.

use crate::api::{current_user, list_sharing};
use crate::model::{
    AddTodo, ClearCompleted, CreateList, DEFAULT_LIST, DeleteTodo, EditTodo, Filter, MyLists,
    ShareList, Todo, Todos, TodosArgs, ToggleAll, ToggleTodo, UnshareList, items_left,
};
use leptos::ev;
use leptos::html::Input;
use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use leptos_router::{SsrMode, path};
use sssync_leptos::{
    FORM_NEXT_FIELD, FormKey, SyncError, SyncProvider, SyncQuery, use_hydrated, use_sync_event,
    use_sync_query, use_sync_status,
};

/// The HTML document around the app (server only: the browser hydrates `<body>`).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The app: `/` is the default list, `/lists/{id}` any list, each filter its own URL.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/demo-app.css" />
        <Title text="sssync • TodoMVC" />
        // The tab's sync client (connection, stores) for everything below.
        <SyncProvider>
            <Router>
                <AccountBar />
                <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                    <Route
                        path=path!("/login")
                        view=|| view! { <AuthPage signup=false /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/signup")
                        view=|| view! { <AuthPage signup=true /> }
                        ssr=SsrMode::Async
                    />
                    // Async: the whole page, data included, arrives as HTML (no JavaScript needed).
                    <Route
                        path=path!("/")
                        view=|| view! { <ListPage filter=Filter::All /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/lists/:id")
                        view=|| view! { <ListPage filter=Filter::All /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/lists/:id/active")
                        view=|| view! { <ListPage filter=Filter::Active /> }
                        ssr=SsrMode::Async
                    />
                    <Route
                        path=path!("/lists/:id/completed")
                        view=|| view! { <ListPage filter=Filter::Completed /> }
                        ssr=SsrMode::Async
                    />
                </Routes>
            </Router>
        </SyncProvider>
    }
}

/// The account bar above every page: who is signed in, with `Sign out` and `New private list`,
/// or the links to sign in and up.
#[component]
fn AccountBar() -> impl IntoView {
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
                                    <ActionForm action=create attr:class="inline">
                                        <input type="hidden" name="id" value=move || next_list.get() />
                                        <input
                                            type="hidden"
                                            name=FORM_NEXT_FIELD
                                            value=move || format!("/lists/{}", next_list.get())
                                        />
                                        <button type="submit">"New private list"</button>
                                        <FormKey />
                                    </ActionForm>
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
fn auth_message(code: &str) -> &'static str {
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
fn AuthPage(signup: bool) -> impl IntoView {
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

/// The signed-in user's private lists (owned and shared with them): live, so a list shared
/// with the user shows up at once and one unshared goes.
#[component]
fn PrivateLists() -> impl IntoView {
    let lists = use_sync_query::<MyLists>(|| ());
    view! {
        <Transition fallback=|| ()>
            {move || {
                lists
                    .rows()
                    .and_then(Result::ok)
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        view! {
                            <nav aria-label="Private lists">
                                <p>
                                    "Private lists: "
                                    {l
                                        .into_iter()
                                        .map(|l| {
                                            let by = if l.mine {
                                                String::new()
                                            } else {
                                                format!(" (shared by {})", l.owner)
                                            };
                                            view! {
                                                <a class="private-list" href=format!("/lists/{}", l.id)>
                                                    {short(&l.id)}
                                                    {by}
                                                </a>
                                                " "
                                            }
                                        })
                                        .collect_view()}
                                </p>
                            </nav>
                        }
                    })
            }}
        </Transition>
    }
}

/// The sharing form of a private list, for its owner: share with a user by name, stop sharing.
#[component]
fn Sharing(list_id: Memo<String>) -> impl IntoView {
    let share = use_sync_event::<ShareList>();
    let unshare = use_sync_event::<UnshareList>();
    // Read again after each share or unshare the server settled.
    let sharing = Resource::new(
        move || {
            (
                list_id.get(),
                share.version().get() + unshare.version().get(),
            )
        },
        |(id, _)| async move { list_sharing(id).await.ok().flatten() },
    );
    view! {
        <Transition fallback=|| ()>
            {move || {
                sharing
                    .get()
                    .flatten()
                    .map(|names| {
                        let id = list_id.get();
                        let share_id = id.clone();
                        view! {
                            <section class="sharing" aria-label="Sharing">
                                <ActionForm action=share>
                                    <input type="hidden" name="list_id" value=share_id />
                                    <label for="share-with">"Share with"</label>
                                    <input
                                        id="share-with"
                                        name="user_name"
                                        type="text"
                                        autocomplete="off"
                                        required
                                    />
                                    <button type="submit">"Share"</button>
                                    <FormKey />
                                </ActionForm>
                                <ul class="shared-with">
                                    {names
                                        .into_iter()
                                        .map(|name| {
                                            let id = id.clone();
                                            let label = format!("Stop sharing with {name}");
                                            view! {
                                                <li>
                                                    {name.clone()}
                                                    <ActionForm action=unshare attr:class="inline">
                                                        <input type="hidden" name="list_id" value=id />
                                                        <input type="hidden" name="user_name" value=name />
                                                        <button type="submit" aria-label=label>
                                                            "Stop sharing"
                                                        </button>
                                                        <FormKey />
                                                    </ActionForm>
                                                </li>
                                            }
                                        })
                                        .collect_view()}
                                </ul>
                            </section>
                        }
                    })
            }}
        </Transition>
    }
}

/// An error, for the user.
fn alert(message: String) -> impl IntoView {
    view! { <p class="alert" role="alert">{message}</p> }
}

/// What a reader who may not see a list is shown (the same as for a list that does not exist).
/// The server answers it with a 404, decided before the page renders
/// (`server::not_found_for_hidden_lists`).
fn not_found() -> impl IntoView {
    view! {
        <p class="alert not-found" role="alert">
            "This list does not exist, or you may not see it."
        </p>
    }
}

/// One list under one filter.
#[component]
fn ListPage(filter: Filter) -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let list_id = Memo::new(move |_| {
        params
            .read()
            .get("id")
            .unwrap_or_else(|| DEFAULT_LIST.to_owned())
    });
    let add = use_sync_event::<AddTodo>();
    let todos = use_sync_query::<Todos>(move || TodosArgs {
        list_id: list_id.get(),
    });
    let status = use_sync_status();
    let recent = recent_lists(list_id);
    // Editing starts from a double-click (JavaScript) or from an `?edit=<id>` link (without).
    let editing = RwSignal::new(query.read_untracked().get("edit"));
    // A new todo empties the box.
    let new_todo = NodeRef::<Input>::new();
    Effect::new(move |_| {
        if add.input().read().is_some()
            && let Some(input) = new_todo.get_untracked()
        {
            input.set_value("");
        }
    });

    view! {
        <section class="todoapp">
            <header class="header">
                <h1>"todos"</h1>
                <ActionForm action=add>
                    <input type="hidden" name="list_id" value=move || list_id.get() />
                    <input
                        class="new-todo"
                        name="title"
                        placeholder="What needs to be done?"
                        aria-label="New todo"
                        autocomplete="off"
                        autofocus
                        node_ref=new_todo
                    />
                    <FormKey />
                </ActionForm>
            </header>
            <Transition fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || {
                    status.last_rejection.get().map(|r| alert(r.message))
                }}
                {move || {
                    todos
                        .loaded()
                        .map(|result| match result {
                            Ok(()) => {
                                view! {
                                    <ListBody
                                        todos
                                        filter
                                        list_id=list_id.get()
                                        editing
                                        add
                                    />
                                }
                                    .into_any()
                            }
                            Err(SyncError::Forbidden(_)) => not_found().into_any(),
                            Err(e) => {
                                view! { <p class="alert" role="alert">{e.to_string()}</p> }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
        </section>
        <Sharing list_id />
        <footer class="info">
            <p>"Double-click to edit a todo"</p>
            <PrivateLists />
            <p>
                "List " <code>{move || list_id.get()}</code> " · "
                <a href="/new" rel="external">
                    "New list"
                </a>
            </p>
            <Show when=move || !recent.read().is_empty()>
                <nav aria-label="Recent lists">
                    <p>
                        "Recent lists: "
                        <For
                            each=move || recent.get()
                            key=|id| id.clone()
                            children=|id| {
                                view! {
                                    <a class="recent-list" href=format!("/lists/{id}")>
                                        {short(&id)}
                                    </a>
                                    " "
                                }
                            }
                        />
                    </p>
                </nav>
            </Show>
            <p>
                "Kept in sync by sssync: "
                <span
                    class="sync-status"
                    data-testid="sync-status"
                    class:online=move || status.online.get()
                >
                    {move || if status.online.get() { "live" } else { "offline" }}
                    {move || match status.pending.get() {
                        0 => String::new(),
                        1 => ", 1 write pending".to_owned(),
                        n => format!(", {n} writes pending"),
                    }}
                </span>
            </p>
            // A fault the tab is handling (the server cannot save for now; its data was
            // restored from an earlier copy), in words.
            {move || {
                status
                    .notice
                    .get()
                    .map(|n| {
                        view! {
                            <p class="sync-notice" role="status" data-testid="sync-notice">
                                {n}
                            </p>
                        }
                    })
            }}
        </footer>
    }
}

/// How many other lists the footer links to.
const RECENT: usize = 5;
/// Where the browser keeps the lists it opened lately (UI state, in localStorage).
const RECENT_KEY: &str = "demo.recent-lists";

/// The lists this browser opened lately, other than the current one: links that navigate in
/// the browser (the list's rows show at once from the sync cache, then sync). Empty on the
/// server and in the hydration render (storage is read only in an effect, after hydration).
fn recent_lists(list_id: Memo<String>) -> RwSignal<Vec<String>> {
    let recent = RwSignal::new(Vec::new());
    Effect::new(move |_| {
        let current = list_id.get();
        let mut seen: Vec<String> =
            sssync_leptos::local_storage::get(RECENT_KEY).unwrap_or_default();
        seen.retain(|id| *id != current);
        recent.set(seen.iter().take(RECENT).cloned().collect());
        seen.insert(0, current);
        seen.truncate(RECENT + 1);
        sssync_leptos::local_storage::set(RECENT_KEY, &seen);
    });
    recent
}

/// A list id as the footer shows it.
fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// The list's items, toggle-all and footer. Built once per load; the rows flow in reactively
/// (deltas, predictions), and only the items that changed are rebuilt, so an edit in progress
/// survives other changes to the list.
#[component]
fn ListBody(
    todos: SyncQuery<Todos>,
    filter: Filter,
    list_id: String,
    editing: RwSignal<Option<String>>,
    add: ServerAction<AddTodo>,
) -> impl IntoView {
    let (toggle_all, clear) = (
        use_sync_event::<ToggleAll>(),
        use_sync_event::<ClearCompleted>(),
    );
    // One action per kind for the whole list (not per item: a page of 100 todos renders 2
    // actions, not 200).
    let (toggle, delete) = (
        use_sync_event::<ToggleTodo>(),
        use_sync_event::<DeleteTodo>(),
    );
    let all = Memo::new(move |_| todos.rows().and_then(Result::ok).unwrap_or_default());
    let total = Memo::new(move |_| all.read().len());
    let active = Memo::new(move |_| all.read().iter().filter(|t| !t.completed).count());
    let completed = move || total.get() - active.get();
    let all_done = move || total.get() > 0 && active.get() == 0;
    let js = use_hydrated();
    let list = StoredValue::new(list_id.clone());
    let links = move || {
        Filter::ALL
            .into_iter()
            .map(|f| {
                view! {
                    <li>
                        <a
                            href=f.href(&list.get_value())
                            class=if f == filter { "selected" } else { "" }
                        >
                            {f.label()}
                        </a>
                    </li>
                }
            })
            .collect_view()
    };

    view! {
        <Show when=move || { total.get() > 0 }>
            <main class="main">
                <div class="toggle-all-container">
                    <ActionForm action=toggle_all attr:class="inline">
                        <input type="hidden" name="list_id" value=list.get_value() />
                        <input
                            type="hidden"
                            name="completed"
                            value=move || (!all_done()).to_string()
                        />
                        <input
                            id="toggle-all"
                            class="toggle-all js-only"
                            type="checkbox"
                            prop:checked=all_done
                            on:change=move |ev| {
                                toggle_all.dispatch(ToggleAll {
                                    list_id: list.get_value(),
                                    completed: event_target_checked(&ev),
                                });
                            }
                        />
                        <label class="toggle-all-label js-only" for="toggle-all">
                            "Mark all as complete"
                        </label>
                        <Show when=move || !js.get()>
                            <button
                                class="toggle-all-button nojs"
                                type="submit"
                                role="checkbox"
                                aria-checked=move || all_done().to_string()
                                aria-label="Mark all as complete"
                            ></button>
                        </Show>
                        <FormKey />
                    </ActionForm>
                </div>
                // Busy while adds wait for the server (offline, say).
                <ul class="todo-list" aria-busy=move || add.pending().get().to_string()>
                    <For
                        each=move || {
                            all.get().into_iter().filter(|t| filter.shows(t)).collect::<Vec<_>>()
                        }
                        // A changed todo is a new key: rebuilt; the others keep their elements.
                        key=|todo| todo.clone()
                        let:todo
                    >
                        <Item todo list_id=list.get_value() filter editing toggle delete />
                    </For>
                </ul>
            </main>
            <footer class="footer">
                <span class="todo-count" data-testid="todo-count">
                    <strong>{move || active.get()}</strong>
                    " "
                    {move || items_left(active.get())}
                </span>
                <ul class="filters">{links()}</ul>
                <Show when=move || { completed() > 0 }>
                    <ActionForm action=clear attr:class="inline">
                        <input type="hidden" name="list_id" value=list.get_value() />
                        <button class="clear-completed" type="submit">
                            "Clear completed"
                        </button>
                        <FormKey />
                    </ActionForm>
                </Show>
            </footer>
        </Show>
    }
}

/// One todo: toggle, title (double-click to edit), delete.
#[component]
fn Item(
    todo: Todo,
    list_id: String,
    filter: Filter,
    editing: RwSignal<Option<String>>,
    toggle: ServerAction<ToggleTodo>,
    delete: ServerAction<DeleteTodo>,
) -> impl IntoView {
    let Todo {
        id,
        title,
        completed,
    } = todo;
    let js = use_hydrated();
    let list_id = StoredValue::new(list_id);
    let id = StoredValue::new(id);
    let is_editing =
        Memo::new(move |_| editing.read().as_deref() == Some(id.read_value().as_str()));
    let class = move || {
        if is_editing.get() {
            "editing"
        } else if completed {
            "completed"
        } else {
            ""
        }
    };
    let edit_title = title.clone();

    view! {
        <li data-testid="todo-item" class=class>
            <div class="view">
                <ActionForm action=toggle attr:class="inline">
                    <input type="hidden" name="list_id" value=list_id.get_value() />
                    <input type="hidden" name="id" value=id.get_value() />
                    <input type="hidden" name="completed" value=(!completed).to_string() />
                    <input
                        class="toggle js-only"
                        type="checkbox"
                        aria-label="Toggle Todo"
                        prop:checked=completed
                        on:change=move |ev| {
                            toggle.dispatch(ToggleTodo {
                                list_id: list_id.get_value(),
                                id: id.get_value(),
                                completed: event_target_checked(&ev),
                            });
                        }
                    />
                    <Show when=move || !js.get()>
                        <button
                            class="toggle-button nojs"
                            type="submit"
                            role="checkbox"
                            aria-checked=completed.to_string()
                            aria-label="Toggle Todo"
                        ></button>
                    </Show>
                    <FormKey />
                </ActionForm>
                <label
                    data-testid="todo-title"
                    on:dblclick=move |_| editing.set(Some(id.get_value()))
                >
                    {title}
                </label>
                <Show when=move || !js.get()>
                    <a
                        class="edit-link nojs"
                        href=format!("?edit={}", id.get_value())
                        aria-label="Edit todo"
                    ></a>
                </Show>
                <ActionForm action=delete attr:class="inline">
                    <input type="hidden" name="list_id" value=list_id.get_value() />
                    <input type="hidden" name="id" value=id.get_value() />
                    <button class="destroy" type="submit" aria-label="Delete"></button>
                    <FormKey />
                </ActionForm>
            </div>
            {move || {
                is_editing
                    .get()
                    .then(|| {
                        view! {
                            <EditForm
                                list_id=list_id.get_value()
                                id=id.get_value()
                                title=edit_title.clone()
                                back=filter.href(&list_id.get_value())
                                editing
                            />
                        }
                    })
            }}
        </li>
    }
}

/// The edit box: Enter or leaving it saves once (an empty title deletes), Escape cancels. Without JavaScript it is a form that posts the title
/// and goes `back` to the list.
#[component]
fn EditForm(
    list_id: String,
    id: String,
    title: String,
    back: String,
    editing: RwSignal<Option<String>>,
) -> impl IntoView {
    let edit = use_sync_event::<EditTodo>();
    let (input, form) = (
        NodeRef::<Input>::new(),
        NodeRef::<leptos::html::Form>::new(),
    );
    let todo = StoredValue::new(id.clone());
    let still_editing =
        move || editing.get_untracked().as_deref() == Some(todo.read_value().as_str());
    // Submits the form (its action dispatches the edit) and ends the edit, once.
    let save = move || {
        if let Some(form) = form.get_untracked().filter(|_| still_editing()) {
            let _ = form.request_submit();
            editing.set(None);
        }
    };
    Effect::new(move |_| {
        if let Some(el) = input.get() {
            let _ = el.focus();
        }
    });
    view! {
        <ActionForm action=edit node_ref=form attr:class="edit-form">
            <input type="hidden" name="list_id" value=list_id />
            <input type="hidden" name="id" value=id />
            <input type="hidden" name=FORM_NEXT_FIELD value=back />
            <input
                class="edit"
                name="title"
                aria-label="Edit"
                value=title
                autocomplete="off"
                autofocus
                node_ref=input
                on:blur=move |_| save()
                on:keydown=move |ev: ev::KeyboardEvent| match ev.key().as_str() {
                    "Enter" => {
                        ev.prevent_default();
                        save();
                    }
                    "Escape" => editing.set(None),
                    _ => {}
                }
            />
            <FormKey />
        </ActionForm>
    }
}
