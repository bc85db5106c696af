//! A list's page: the TodoMVC header, the items (live: `use_sync_query`), the footer and
//! its filters, and the lists a visitor opened lately.

use super::item::Item;
use super::private::{PrivateLists, Sharing};
use super::{alert, not_found, short};
use crate::model::{
    AddTodo, ClearCompleted, DEFAULT_LIST, DeleteTodo, Filter, Todos, ToggleAll, ToggleTodo,
    items_left, todos,
};
use leptos::html::Input;
use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};
use sssync_leptos::{
    SyncError, SyncForm, SyncQuery, use_hydrated, use_sync_event, use_sync_query, use_sync_status,
};

/// One list under one filter.
#[component]
pub(super) fn ListPage(filter: Filter) -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let list_id = Memo::new(move |_| {
        params
            .read()
            .get("id")
            .unwrap_or_else(|| DEFAULT_LIST.to_owned())
    });
    let add = use_sync_event::<AddTodo>();
    let todos = use_sync_query(move || todos(list_id.get()));
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
                <SyncForm action=add>
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
                </SyncForm>
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
pub(super) const RECENT: usize = 5;

/// Where the browser keeps the lists it opened lately (UI state, in localStorage).
pub(super) const RECENT_KEY: &str = "demo.recent-lists";

/// The lists this browser opened lately, other than the current one: links that navigate in
/// the browser (the list's rows show at once from the sync cache, then sync). Empty on the
/// server and in the hydration render (storage is read only in an effect, after hydration).
pub(super) fn recent_lists(list_id: Memo<String>) -> RwSignal<Vec<String>> {
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

/// The list's items, toggle-all and footer. Built once per load; the rows flow in reactively
/// (deltas, predictions), and only the items that changed are rebuilt, so an edit in progress
/// survives other changes to the list.
#[component]
pub(super) fn ListBody(
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
                    <SyncForm action=toggle_all attr:class="inline">
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
                    </SyncForm>
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
                    <SyncForm action=clear attr:class="inline">
                        <input type="hidden" name="list_id" value=list.get_value() />
                        <button class="clear-completed" type="submit">
                            "Clear completed"
                        </button>
                    </SyncForm>
                </Show>
            </footer>
        </Show>
    }
}
