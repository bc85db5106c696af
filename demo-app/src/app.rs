//! The demo's components: the HTML shell, the routes and the TodoMVC list page.
//!
//! The list is a sync query (`use_sync_query::<Todos>`): rendered on the server, hydrated without
//! a second fetch, then live. Every control is a real `<form method="post">` aimed at an event's
//! server function, so the page works without JavaScript. Once hydrated, each form's submit is
//! handled in the browser instead (a sync event, predicted at once), and the `html.hydrated`
//! class swaps the few controls that differ (see
//! `style/main.css`): the no-JavaScript toggles are submit buttons with the checkbox role, the
//! hydrated ones real checkboxes; editing without JavaScript follows an `?edit=<id>` link.

use crate::api::{
    AddTodoForm, ClearCompletedForm, CreateListForm, DeleteTodoForm, EditTodoForm, ShareListForm,
    ToggleAllForm, ToggleTodoForm, UnshareListForm, current_user, list_sharing,
};
use crate::model::{
    AddTodo, ClearCompleted, DEFAULT_LIST, DeleteTodo, EditTodo, Filter, ListArgs, MyLists, Todo,
    Todos, ToggleAll, ToggleTodo, items_left,
};
use leptos::ev;
use leptos::html::Input;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::{use_params_map, use_query_map};
use leptos_router::{SsrMode, path};
use sssync_leptos::{
    FormKey, SyncError, SyncEvent, SyncProvider, SyncQuery, use_sync_event, use_sync_query,
    use_sync_status,
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
/// or the links to sign in and up. Plain form posts, with JavaScript and without.
#[component]
fn AccountBar() -> impl IntoView {
    let me = Resource::new(|| (), |_| async { current_user().await.ok().flatten() });
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
                                    <form class="inline" method="post" action=CreateListForm::url()>
                                        <button type="submit">"New private list"</button>
                                        <FormKey />
                                    </form>
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
    let sharing = Resource::new(
        move || list_id.get(),
        |id| async move { list_sharing(id).await.ok().flatten() },
    );
    view! {
        <Transition fallback=|| ()>
            {move || {
                sharing
                    .get()
                    .flatten()
                    .map(|names| {
                        let id = list_id.get();
                        view! {
                            <section class="sharing" aria-label="Sharing">
                                <form method="post" action=ShareListForm::url()>
                                    <input type="hidden" name="list_id" value=id.clone() />
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
                                </form>
                                <ul class="shared-with">
                                    {names
                                        .into_iter()
                                        .map(|name| {
                                            let label = format!("Stop sharing with {name}");
                                            view! {
                                                <li>
                                                    {name.clone()}
                                                    <form
                                                        class="inline"
                                                        method="post"
                                                        action=UnshareListForm::url()
                                                    >
                                                        <input type="hidden" name="list_id" value=id.clone() />
                                                        <input type="hidden" name="user_name" value=name />
                                                        <button type="submit" aria-label=label>
                                                            "Stop sharing"
                                                        </button>
                                                        <FormKey />
                                                    </form>
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

/// What a reader who may not see a list is shown (the same as for a list that does not exist),
/// with a 404 on the server.
fn not_found() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <p class="alert not-found" role="alert">
            "This list does not exist, or you may not see it."
        </p>
    }
}

/// The page's writes: one sync event sender per event type.
#[derive(Clone, Copy)]
struct Writes {
    add: SyncEvent<AddTodo>,
    toggle: SyncEvent<ToggleTodo>,
    edit: SyncEvent<EditTodo>,
    delete: SyncEvent<DeleteTodo>,
    toggle_all: SyncEvent<ToggleAll>,
    clear: SyncEvent<ClearCompleted>,
}

impl Writes {
    /// Why the server refused the page's last refused write (each event's own state).
    fn last_rejection(&self) -> Option<sssync_leptos::Rejection> {
        self.add
            .last_rejection()
            .or_else(|| self.toggle.last_rejection())
            .or_else(|| self.edit.last_rejection())
            .or_else(|| self.delete.last_rejection())
            .or_else(|| self.toggle_all.last_rejection())
            .or_else(|| self.clear.last_rejection())
    }

    fn new() -> Self {
        Writes {
            add: use_sync_event(),
            toggle: use_sync_event(),
            edit: use_sync_event(),
            delete: use_sync_event(),
            toggle_all: use_sync_event(),
            clear: use_sync_event(),
        }
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
    let writes = Writes::new();
    let todos = use_sync_query::<Todos>(move || ListArgs {
        list_id: list_id.get(),
    });
    let status = use_sync_status();
    let recent = recent_lists(list_id);
    // Editing starts from a double-click (JavaScript) or from an `?edit=<id>` link (without).
    let editing = RwSignal::new(query.read_untracked().get("edit"));

    // An error left by a plain form post (no JavaScript) shows once.
    #[cfg(feature = "ssr")]
    let flash = crate::api::form::take_flash();
    #[cfg(not(feature = "ssr"))]
    let flash: Option<String> = None;
    let flash = Resource::new(|| (), move |_| std::future::ready(flash.clone()));

    let new_todo = NodeRef::<Input>::new();
    let on_add = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        let Some(input) = new_todo.get() else { return };
        let title = input.value();
        if title.trim().is_empty() {
            return;
        }
        input.set_value("");
        writes.add.send(AddTodo {
            id: sssync_leptos::new_id(),
            list_id: list_id.get_untracked(),
            title,
        });
    };

    view! {
        <section class="todoapp">
            <header class="header">
                <h1>"todos"</h1>
                <form method="post" action=AddTodoForm::url() on:submit=on_add>
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
                </form>
            </header>
            <Transition fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || {
                    let message = writes
                        .last_rejection()
                        .map(|r| r.message)
                        .or_else(|| flash.get().flatten());
                    message.map(|m| view! { <p class="alert" role="alert">{m}</p> })
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
                                        writes
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
        let mut seen: Vec<String> = sssync_leptos::meta::get(RECENT_KEY).unwrap_or_default();
        seen.retain(|id| *id != current);
        recent.set(seen.iter().take(RECENT).cloned().collect());
        seen.insert(0, current);
        seen.truncate(RECENT + 1);
        sssync_leptos::meta::set(RECENT_KEY, &seen);
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
    writes: Writes,
) -> impl IntoView {
    let all = Memo::new(move |_| todos.rows().and_then(Result::ok).unwrap_or_default());
    let total = Memo::new(move |_| all.read().len());
    let active = Memo::new(move |_| all.read().iter().filter(|t| !t.completed).count());
    let completed = move || total.get() - active.get();
    let all_done = move || total.get() > 0 && active.get() == 0;

    let list = StoredValue::new(list_id.clone());
    let toggle_all = move |completed: bool| {
        writes.toggle_all.send(ToggleAll {
            list_id: list.get_value(),
            completed,
        });
    };
    let clear = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        writes.clear.send(ClearCompleted {
            list_id: list.get_value(),
        });
    };
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
                    <form
                        class="inline"
                        method="post"
                        action=ToggleAllForm::url()
                        on:submit=move |ev: ev::SubmitEvent| {
                            ev.prevent_default();
                            toggle_all(!all_done());
                        }
                    >
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
                            on:change=move |ev| toggle_all(event_target_checked(&ev))
                        />
                        <label class="toggle-all-label js-only" for="toggle-all">
                            "Mark all as complete"
                        </label>
                        <button
                            class="toggle-all-button nojs"
                            type="submit"
                            role="checkbox"
                            aria-checked=move || all_done().to_string()
                            aria-label="Mark all as complete"
                        ></button>
                        <FormKey />
                    </form>
                </div>
                // Busy while adds wait for the server (offline, say).
                <ul class="todo-list" aria-busy=move || (writes.add.pending() > 0).to_string()>
                    <For
                        each=move || {
                            all.get().into_iter().filter(|t| filter.shows(t)).collect::<Vec<_>>()
                        }
                        // A changed todo is a new key: rebuilt; the others keep their elements.
                        key=|todo| todo.clone()
                        let:todo
                    >
                        <Item todo list_id=list.get_value() editing writes />
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
                    <form
                        class="inline"
                        method="post"
                        action=ClearCompletedForm::url()
                        on:submit=clear
                    >
                        <input type="hidden" name="list_id" value=list.get_value() />
                        <button class="clear-completed" type="submit">
                            "Clear completed"
                        </button>
                        <FormKey />
                    </form>
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
    editing: RwSignal<Option<String>>,
    writes: Writes,
) -> impl IntoView {
    let Todo {
        id,
        title,
        completed,
    } = todo;
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
    let toggle = move |completed: bool| {
        writes.toggle.send(ToggleTodo {
            list_id: list_id.get_value(),
            id: id.get_value(),
            completed,
        });
    };
    let delete = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        writes.delete.send(DeleteTodo {
            list_id: list_id.get_value(),
            id: id.get_value(),
        });
    };
    let edit_title = title.clone();

    view! {
        <li data-testid="todo-item" class=class>
            <div class="view">
                <form
                    class="inline"
                    method="post"
                    action=ToggleTodoForm::url()
                    on:submit=move |ev: ev::SubmitEvent| {
                        ev.prevent_default();
                        toggle(!completed);
                    }
                >
                    <input type="hidden" name="list_id" value=list_id.get_value() />
                    <input type="hidden" name="id" value=id.get_value() />
                    <input type="hidden" name="completed" value=(!completed).to_string() />
                    <input
                        class="toggle js-only"
                        type="checkbox"
                        aria-label="Toggle Todo"
                        prop:checked=completed
                        on:change=move |ev| toggle(event_target_checked(&ev))
                    />
                    <button
                        class="toggle-button nojs"
                        type="submit"
                        role="checkbox"
                        aria-checked=completed.to_string()
                        aria-label="Toggle Todo"
                    ></button>
                    <FormKey />
                </form>
                <label
                    data-testid="todo-title"
                    on:dblclick=move |_| editing.set(Some(id.get_value()))
                >
                    {title}
                </label>
                <a
                    class="edit-link nojs"
                    href=format!("?edit={}", id.get_value())
                    aria-label="Edit todo"
                ></a>
                <form class="inline" method="post" action=DeleteTodoForm::url() on:submit=delete>
                    <input type="hidden" name="list_id" value=list_id.get_value() />
                    <input type="hidden" name="id" value=id.get_value() />
                    <button class="destroy" type="submit" aria-label="Delete"></button>
                    <FormKey />
                </form>
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
                                editing
                                writes
                            />
                        }
                    })
            }}
        </li>
    }
}

/// The edit box: Enter or leaving it saves (an empty title deletes), Escape cancels.
#[component]
fn EditForm(
    list_id: String,
    id: String,
    title: String,
    editing: RwSignal<Option<String>>,
    writes: Writes,
) -> impl IntoView {
    let input = NodeRef::<Input>::new();
    Effect::new(move |_| {
        if let Some(el) = input.get() {
            let _ = el.focus();
        }
    });
    let (list_id, id) = (StoredValue::new(list_id), StoredValue::new(id));
    // Saves once: whichever of Enter and blur comes first ends the edit.
    let save = move || {
        if editing.get_untracked().as_deref() != Some(id.read_value().as_str()) {
            return;
        }
        let title = input
            .get_untracked()
            .map(|el| el.value())
            .unwrap_or_default();
        editing.set(None);
        writes.edit.send(EditTodo {
            list_id: list_id.get_value(),
            id: id.get_value(),
            title,
        });
    };
    view! {
        <form
            class="edit-form"
            method="post"
            action=EditTodoForm::url()
            on:submit=move |ev: ev::SubmitEvent| {
                ev.prevent_default();
                save();
            }
        >
            <input type="hidden" name="list_id" value=list_id.get_value() />
            <input type="hidden" name="id" value=id.get_value() />
            <input
                class="edit"
                name="title"
                aria-label="Edit"
                value=title
                autocomplete="off"
                autofocus
                node_ref=input
                on:blur=move |_| save()
                on:keydown=move |ev: ev::KeyboardEvent| {
                    if ev.key() == "Escape" {
                        editing.set(None);
                    }
                }
            />
            <FormKey />
        </form>
    }
}
