//! One todo: its checkbox, its title (double-click to edit), its delete button.

use crate::model::{DeleteTodo, EditTodo, Filter, Todo, ToggleTodo};
use leptos::ev;
use leptos::html::Input;
use leptos::prelude::*;
use sssync_leptos::{FORM_NEXT_FIELD, SyncForm, use_hydrated, use_sync_event};

/// One todo: toggle, title (double-click to edit), delete.
#[component]
pub(super) fn Item(
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
                <SyncForm action=toggle attr:class="inline">
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
                </SyncForm>
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
                <SyncForm action=delete attr:class="inline">
                    <input type="hidden" name="list_id" value=list_id.get_value() />
                    <input type="hidden" name="id" value=id.get_value() />
                    <button class="destroy" type="submit" aria-label="Delete"></button>
                </SyncForm>
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
pub(super) fn EditForm(
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
        <SyncForm action=edit node_ref=form attr:class="edit-form">
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
        </SyncForm>
    }
}
