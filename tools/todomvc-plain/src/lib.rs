//! The baseline of the benchmark's SSR and bundle rows: the demo's TodoMVC page written in plain
//! Leptos, without sssync. The same routes and markup (the list page, its items, their forms,
//! the controls a page without JavaScript needs), the todos passed in by server functions (a
//! `Resource` over `get_todos`, read again after each write), kept in the server's memory.
//! What a Leptos developer writes without a sync engine: `sssync-bench perf` renders its page
//! and measures its bundle beside the demo's.

// Leptos views are deeply nested types; the hydrate build needs more room than the default.
#![recursion_limit = "256"]

use leptos::html::Input;
use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::use_params_map;
use leptos_router::{SsrMode, path};
use serde::{Deserialize, Serialize};

/// One todo of a list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Todo {
    pub id: String,
    pub title: String,
    pub completed: bool,
}

/// The server's lists, in memory. (Not behind `ssr`: in a build where another crate turns on
/// Leptos's `ssr`, the server functions' bodies are compiled here too.)
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
pub mod store {
    use super::Todo;
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    static LISTS: LazyLock<Mutex<HashMap<String, Vec<Todo>>>> = LazyLock::new(Default::default);
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    /// Runs `f` on list `id` (created empty).
    pub fn with<T>(id: &str, f: impl FnOnce(&mut Vec<Todo>) -> T) -> T {
        let mut lists = LISTS.lock().unwrap_or_else(|e| e.into_inner());
        f(lists.entry(id.to_owned()).or_default())
    }

    /// A new todo's id.
    pub fn next_id() -> String {
        format!(
            "t{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }

    /// Fills list `id` with `n` todos.
    pub fn seed(id: &str, n: usize) {
        with(id, |todos| {
            for i in 0..n {
                todos.push(Todo {
                    id: next_id(),
                    title: format!("a todo of reasonable length, number {i}"),
                    completed: i % 3 == 0,
                });
            }
        });
    }
}

#[server]
pub async fn get_todos(list_id: String) -> Result<Vec<Todo>, ServerFnError> {
    Ok(store::with(&list_id, |t| t.clone()))
}

#[server]
pub async fn current_user() -> Result<Option<String>, ServerFnError> {
    Ok(None)
}

#[server]
pub async fn add_todo(list_id: String, title: String) -> Result<(), ServerFnError> {
    let title = title.trim().to_owned();
    if title.chars().count() > 200 {
        return Err(ServerFnError::new("a title has at most 200 characters"));
    }
    if !title.is_empty() {
        store::with(&list_id, |t| {
            t.push(Todo {
                id: store::next_id(),
                title,
                completed: false,
            })
        });
    }
    Ok(())
}

#[server]
pub async fn toggle_todo(
    list_id: String,
    id: String,
    completed: bool,
) -> Result<(), ServerFnError> {
    store::with(&list_id, |t| {
        t.iter_mut()
            .filter(|t| t.id == id)
            .for_each(|t| t.completed = completed)
    });
    Ok(())
}

#[server]
pub async fn delete_todo(list_id: String, id: String) -> Result<(), ServerFnError> {
    store::with(&list_id, |t| t.retain(|t| t.id != id));
    Ok(())
}

#[server]
pub async fn edit_todo(list_id: String, id: String, title: String) -> Result<(), ServerFnError> {
    let title = title.trim().to_owned();
    store::with(&list_id, |t| {
        if title.is_empty() {
            t.retain(|t| t.id != id);
        } else {
            t.iter_mut()
                .filter(|t| t.id == id)
                .for_each(|t| t.title = title.clone());
        }
    });
    Ok(())
}

#[server]
pub async fn toggle_all(list_id: String, completed: bool) -> Result<(), ServerFnError> {
    store::with(&list_id, |t| {
        t.iter_mut().for_each(|t| t.completed = completed)
    });
    Ok(())
}

#[server]
pub async fn clear_completed(list_id: String) -> Result<(), ServerFnError> {
    store::with(&list_id, |t| t.retain(|t| !t.completed));
    Ok(())
}

/// Which todos a page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    All,
    Active,
    Completed,
}

impl Filter {
    const ALL: [Filter; 3] = [Filter::All, Filter::Active, Filter::Completed];

    fn shows(self, todo: &Todo) -> bool {
        match self {
            Filter::All => true,
            Filter::Active => !todo.completed,
            Filter::Completed => todo.completed,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Filter::All => "All",
            Filter::Active => "Active",
            Filter::Completed => "Completed",
        }
    }

    fn href(self, list_id: &str) -> String {
        match self {
            Filter::All => format!("/lists/{list_id}"),
            Filter::Active => format!("/lists/{list_id}/active"),
            Filter::Completed => format!("/lists/{list_id}/completed"),
        }
    }
}

/// The HTML document (the browser hydrates `<body>`).
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

/// The routes: the demo's list pages.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/app.css" />
        <Title text="Leptos • TodoMVC" />
        <Router>
            <AccountBar />
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                <Route path=path!("/") view=|| view! { <ListPage filter=Filter::All /> } ssr=SsrMode::Async />
                <Route path=path!("/lists/:id") view=|| view! { <ListPage filter=Filter::All /> } ssr=SsrMode::Async />
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
    }
}

#[component]
fn AccountBar() -> impl IntoView {
    let me = Resource::new(|| (), |_| async { current_user().await.ok().flatten() });
    view! {
        <nav class="account" aria-label="Account">
            <Transition fallback=|| ()>
                {move || {
                    me.get()
                        .map(|me| match me {
                            Some(name) => view! { <span>"Signed in as "</span> <strong>{name}</strong> }.into_any(),
                            None => view! { <a href="/login">"Sign in"</a> " · " <a href="/signup">"Sign up"</a> }.into_any(),
                        })
                }}
            </Transition>
        </nav>
    }
}

/// Whether the page is hydrated (false on the server and in the hydration render).
fn use_hydrated() -> RwSignal<bool> {
    let js = RwSignal::new(false);
    Effect::new(move |_| js.set(true));
    js
}

#[component]
fn ListPage(filter: Filter) -> impl IntoView {
    let params = use_params_map();
    let list_id = Memo::new(move |_| {
        params
            .read()
            .get("id")
            .unwrap_or_else(|| "default".to_owned())
    });
    let add = ServerAction::<AddTodo>::new();
    let toggle = ServerAction::<ToggleTodo>::new();
    let delete = ServerAction::<DeleteTodo>::new();
    let edit = ServerAction::<EditTodo>::new();
    let toggle_all = ServerAction::<ToggleAll>::new();
    let clear = ServerAction::<ClearCompleted>::new();
    let todos = Resource::new(
        move || {
            (
                list_id.get(),
                add.version().get()
                    + toggle.version().get()
                    + delete.version().get()
                    + edit.version().get()
                    + toggle_all.version().get()
                    + clear.version().get(),
            )
        },
        |(id, _)| get_todos(id),
    );
    let new_todo = NodeRef::<Input>::new();
    Effect::new(move |_| {
        if add.input().read().is_some()
            && let Some(input) = new_todo.get_untracked()
        {
            input.set_value("");
        }
    });
    let actions = Actions {
        toggle,
        delete,
        edit,
        toggle_all,
        clear,
    };
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
                </ActionForm>
            </header>
            <Transition fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || {
                    todos
                        .get()
                        .map(|result| match result {
                            Ok(all) => view! { <ListBody all filter list_id=list_id.get() actions /> }.into_any(),
                            Err(e) => view! { <p class="alert" role="alert">{e.to_string()}</p> }.into_any(),
                        })
                }}
            </Transition>
        </section>
        <footer class="info">
            <p>"Double-click to edit a todo"</p>
            <p>"List " <code>{move || list_id.get()}</code> " · " <a href="/new" rel="external">"New list"</a></p>
            <p>"Plain Leptos: server functions, read again after each write"</p>
        </footer>
    }
}

#[derive(Clone, Copy)]
struct Actions {
    toggle: ServerAction<ToggleTodo>,
    delete: ServerAction<DeleteTodo>,
    edit: ServerAction<EditTodo>,
    toggle_all: ServerAction<ToggleAll>,
    clear: ServerAction<ClearCompleted>,
}

#[component]
fn ListBody(all: Vec<Todo>, filter: Filter, list_id: String, actions: Actions) -> impl IntoView {
    let total = all.len();
    let active = all.iter().filter(|t| !t.completed).count();
    let all_done = total > 0 && active == 0;
    let js = use_hydrated();
    let editing = RwSignal::new(None::<String>);
    let list = StoredValue::new(list_id);
    let shown: Vec<Todo> = all.into_iter().filter(|t| filter.shows(t)).collect();
    (total > 0).then(|| {
        view! {
            <main class="main">
                <div class="toggle-all-container">
                    <ActionForm action=actions.toggle_all attr:class="inline">
                        <input type="hidden" name="list_id" value=list.get_value() />
                        <input type="hidden" name="completed" value=(!all_done).to_string() />
                        <input
                            id="toggle-all"
                            class="toggle-all js-only"
                            type="checkbox"
                            prop:checked=all_done
                            on:change=move |ev| {
                                actions.toggle_all.dispatch(ToggleAll {
                                    list_id: list.get_value(),
                                    completed: event_target_checked(&ev),
                                });
                            }
                        />
                        <label class="toggle-all-label js-only" for="toggle-all">"Mark all as complete"</label>
                        <Show when=move || !js.get()>
                            <button
                                class="toggle-all-button nojs"
                                type="submit"
                                role="checkbox"
                                aria-checked=all_done.to_string()
                                aria-label="Mark all as complete"
                            ></button>
                        </Show>
                    </ActionForm>
                </div>
                <ul class="todo-list">
                    <For each=move || shown.clone() key=|todo| todo.clone() let:todo>
                        <Item todo list_id=list.get_value() filter editing actions js />
                    </For>
                </ul>
            </main>
            <footer class="footer">
                <span class="todo-count" data-testid="todo-count">
                    <strong>{active}</strong>
                    " "
                    {if active == 1 { "item left" } else { "items left" }}
                </span>
                <ul class="filters">
                    {Filter::ALL
                        .into_iter()
                        .map(|f| {
                            view! {
                                <li>
                                    <a href=f.href(&list.get_value()) class=if f == filter { "selected" } else { "" }>
                                        {f.label()}
                                    </a>
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
                {(total > active).then(|| {
                    view! {
                        <ActionForm action=actions.clear attr:class="inline">
                            <input type="hidden" name="list_id" value=list.get_value() />
                            <button class="clear-completed" type="submit">"Clear completed"</button>
                        </ActionForm>
                    }
                })}
            </footer>
        }
    })
}

#[component]
fn Item(
    todo: Todo,
    list_id: String,
    filter: Filter,
    editing: RwSignal<Option<String>>,
    actions: Actions,
    js: RwSignal<bool>,
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
    let edit_title = StoredValue::new(title.clone());
    view! {
        <li data-testid="todo-item" class=class>
            <div class="view">
                <ActionForm action=actions.toggle attr:class="inline">
                    <input type="hidden" name="list_id" value=list_id.get_value() />
                    <input type="hidden" name="id" value=id.get_value() />
                    <input type="hidden" name="completed" value=(!completed).to_string() />
                    <input
                        class="toggle js-only"
                        type="checkbox"
                        aria-label="Toggle Todo"
                        prop:checked=completed
                        on:change=move |ev| {
                            actions.toggle.dispatch(ToggleTodo {
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
                </ActionForm>
                <label data-testid="todo-title" on:dblclick=move |_| editing.set(Some(id.get_value()))>
                    {title}
                </label>
                <Show when=move || !js.get()>
                    <a class="edit-link nojs" href=format!("?edit={}", id.get_value()) aria-label="Edit todo"></a>
                </Show>
                <ActionForm action=actions.delete attr:class="inline">
                    <input type="hidden" name="list_id" value=list_id.get_value() />
                    <input type="hidden" name="id" value=id.get_value() />
                    <button class="destroy" type="submit" aria-label="Delete"></button>
                </ActionForm>
            </div>
            {move || {
                is_editing
                    .get()
                    .then(|| {
                        view! {
                            <ActionForm action=actions.edit attr:class="edit-form">
                                <input type="hidden" name="list_id" value=list_id.get_value() />
                                <input type="hidden" name="id" value=id.get_value() />
                                <input
                                    class="edit"
                                    name="title"
                                    aria-label="Edit"
                                    value=edit_title.get_value()
                                    autocomplete="off"
                                    autofocus
                                    on:blur=move |_| editing.set(None)
                                />
                                <a href=filter.href(&list_id.get_value())>"Back"</a>
                            </ActionForm>
                        }
                    })
            }}
        </li>
    }
}

/// The browser entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
    if let Some(root) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.document_element())
    {
        let _ = root.class_list().add_1("hydrated");
    }
}
