//! The types and rules shared by the server and the browser.

use serde::{Deserialize, Serialize};
use sssync_leptos::prelude::*;

/// The list that `/` opens.
pub const DEFAULT_LIST: &str = "default";

/// How a private list's id begins: a list is made private when it is made (`CreateList`), never
/// later, so nobody can take a public list others use; an id with this prefix names no public
/// list.
pub const PRIVATE_PREFIX: &str = "private-";

/// The id of a new private list.
pub fn new_private_list_id() -> String {
    format!("{PRIVATE_PREFIX}{}", sssync_leptos::new_id())
}

/// The longest title the server accepts, in characters. Longer ones are rejected (and, with
/// JavaScript, rolled back in the UI) to show how a rejected write looks.
pub const MAX_TITLE_CHARS: usize = 200;

/// The longest list or todo id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// One todo of a list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Todo {
    /// Stable key (a UUID made by the server).
    pub id: String,
    /// The text, trimmed, 1 to [`MAX_TITLE_CHARS`] characters.
    pub title: String,
    /// Done or not.
    pub completed: bool,
}

/// Which todos a list page shows; each filter has its own URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every todo: `/lists/{id}`.
    All,
    /// Not completed: `/lists/{id}/active`.
    Active,
    /// Completed: `/lists/{id}/completed`.
    Completed,
}

impl Filter {
    /// Every filter, in the order the footer links show them.
    pub const ALL: [Filter; 3] = [Filter::All, Filter::Active, Filter::Completed];

    /// Whether `todo` passes this filter.
    pub fn shows(self, todo: &Todo) -> bool {
        match self {
            Filter::All => true,
            Filter::Active => !todo.completed,
            Filter::Completed => todo.completed,
        }
    }

    /// The link text (also the link's accessible name).
    pub fn label(self) -> &'static str {
        match self {
            Filter::All => "All",
            Filter::Active => "Active",
            Filter::Completed => "Completed",
        }
    }

    /// The URL of list `list_id` under this filter.
    pub fn href(self, list_id: &str) -> String {
        match self {
            Filter::All => format!("/lists/{list_id}"),
            Filter::Active => format!("/lists/{list_id}/active"),
            Filter::Completed => format!("/lists/{list_id}/completed"),
        }
    }
}

/// Whether `id` can name a list or a todo: 1 to [`MAX_ID_BYTES`] ASCII letters, digits, `-`, `_`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why the server refuses an event of the demo: each a stable code (the variant's name in snake
/// case) and a message; the browser gets it back typed, `rejection.kind::<Refused>()`. (A
/// refusal of an identity is `Forbidden`, the same for every app.)
#[derive(Clone, Debug, PartialEq, Rejection)]
pub enum Refused {
    #[rejection(message = "A todo can have at most {max} characters; this one has {chars}.")]
    TitleTooLong { max: usize, chars: usize },
    #[rejection(message = "Invalid id {id:?}.")]
    BadId { id: String },
    #[rejection(message = "There is no user of that name.")]
    UnknownUser,
    #[rejection(message = "Only a new list can be private; this one stays public.")]
    ListPublic,
    #[rejection(message = "That list is in use already.")]
    ListInUse,
    #[rejection(message = "This list is yours already.")]
    OwnList,
}

/// What a title becomes once trimmed: `Ok(None)` when nothing is left, a rejection when too
/// long (the server's rule; the client predicts the todo anyway and rolls back on rejection).
pub fn clean_title(raw: &str) -> Result<Option<String>, Refused> {
    let title = raw.trim();
    let chars = title.chars().count();
    if chars == 0 {
        Ok(None)
    } else if chars > MAX_TITLE_CHARS {
        Err(Refused::TitleTooLong {
            max: MAX_TITLE_CHARS,
            chars,
        })
    } else {
        Ok(Some(title.to_owned()))
    }
}

/// Checks an id from a client.
pub fn check_id(id: &str) -> Result<(), Refused> {
    if valid_id(id) {
        Ok(())
    } else {
        let id = id.chars().take(80).collect();
        Err(Refused::BadId { id })
    }
}

/// The todos of one list, in order (new ones at the bottom). A private list is read by its
/// owner and the users it is shared with only (its `authorize`, in `sync.rs`, checked again whenever the
/// list's row or its shares change). Declarative (no body): the engine writes its SQL and
/// patches each list with the todos a write changed, instead of reading it again; its rows are
/// the table's own, so a client resumes from the durable log on any instance.
#[sync_query(
    key = id,
    from = todos,
    columns = [id, title, completed],
    order_by = [position],
    reads = [todos(list_id)],
    access_reads = [lists(list_id), shares(list_id)],
    authorize
)]
pub fn todos(list_id: String) -> Vec<Todo>;

/// Adds a todo at the bottom (the title is trimmed; an empty one adds nothing).
#[sync_event]
pub struct AddTodo {
    /// The new todo's id (made by the browser; by the server for a plain form).
    #[serde(default = "sssync_leptos::new_id")]
    pub id: String,
    /// The list.
    pub list_id: String,
    /// The title, as typed.
    pub title: String,
}

#[sync_event]
impl AddTodo {
    fn predict(&self, view: &mut Prediction<'_>) {
        let title = self.title.trim();
        if title.is_empty() {
            return;
        }
        let todo = Todo {
            id: self.id.clone(),
            title: title.to_owned(),
            completed: false,
        };
        view.insert(todos(&self.list_id), todo);
    }
}

/// Marks one todo completed or not.
#[sync_event]
pub struct ToggleTodo {
    /// The list.
    pub list_id: String,
    /// The todo.
    pub id: String,
    /// The new state.
    pub completed: bool,
}

#[sync_event]
impl ToggleTodo {
    fn predict(&self, view: &mut Prediction<'_>) {
        view.edit_row::<Todos>(&self.id, |t| t.completed = self.completed);
    }
}

/// Changes a todo's title (trimmed); an empty title deletes it.
#[sync_event]
pub struct EditTodo {
    /// The list.
    pub list_id: String,
    /// The todo.
    pub id: String,
    /// The new title, as typed.
    pub title: String,
}

#[sync_event]
impl EditTodo {
    fn predict(&self, view: &mut Prediction<'_>) {
        let title = self.title.trim();
        if title.is_empty() {
            view.remove_row::<Todos>(&self.id);
        } else {
            view.edit_row::<Todos>(&self.id, |t| t.title = title.to_owned());
        }
    }
}

/// Deletes one todo.
#[sync_event]
pub struct DeleteTodo {
    /// The list.
    pub list_id: String,
    /// The todo.
    pub id: String,
}

#[sync_event]
impl DeleteTodo {
    fn predict(&self, view: &mut Prediction<'_>) {
        view.remove_row::<Todos>(&self.id);
    }
}

/// Marks every todo of a list completed, or every one not completed.
#[sync_event]
pub struct ToggleAll {
    /// The list.
    pub list_id: String,
    /// The new state of every todo.
    pub completed: bool,
}

#[sync_event]
impl ToggleAll {
    fn predict(&self, view: &mut Prediction<'_>) {
        view.update(todos(&self.list_id), |rows| {
            rows.iter_mut().for_each(|t| t.completed = self.completed)
        });
    }
}

/// Deletes the completed todos of a list.
#[sync_event]
pub struct ClearCompleted {
    /// The list.
    pub list_id: String,
}

#[sync_event]
impl ClearCompleted {
    fn predict(&self, view: &mut Prediction<'_>) {
        view.update(todos(&self.list_id), |rows| rows.retain(|t| !t.completed));
    }
}

/// "1 item left", "2 items left", "0 items left".
pub fn items_left(n: usize) -> &'static str {
    if n == 1 { "item left" } else { "items left" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_empty_is_nothing_and_long_is_rejected() {
        assert_eq!(clean_title("  milk \n").unwrap().as_deref(), Some("milk"));
        assert_eq!(clean_title("   ").unwrap(), None);
        let ok = "é".repeat(MAX_TITLE_CHARS);
        assert_eq!(clean_title(&ok).unwrap(), Some(ok.clone()));
        let err = Rejection::from(clean_title(&format!("{ok}x")).unwrap_err());
        assert_eq!(err.code, "title_too_long");
        assert_eq!(err.kind(), Some(Refused::TitleTooLong { max: 0, chars: 0 }));
        assert!(
            err.message
                .contains("at most 200 characters; this one has 201")
        );
    }

    #[test]
    fn ids_are_short_and_url_safe() {
        assert!(valid_id("default"));
        assert!(valid_id("0b6e1c2a-5f7d-4a8e-9c1d-2f3a4b5c6d7e"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a b"));
        assert!(!valid_id(&"a".repeat(MAX_ID_BYTES + 1)));
    }

    #[test]
    fn filters_select_and_link() {
        let done = Todo {
            id: "1".into(),
            title: "t".into(),
            completed: true,
        };
        assert!(Filter::All.shows(&done));
        assert!(!Filter::Active.shows(&done));
        assert!(Filter::Completed.shows(&done));
        assert_eq!(Filter::Active.href("x"), "/lists/x/active");
        assert_eq!(items_left(1), "item left");
        assert_eq!(items_left(0), "items left");
    }
}

/// A private list the reader owns or was given (a row of [`MyLists`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MyList {
    /// The list's id (its URL is `/lists/{id}`).
    pub id: String,
    /// The owner's user name.
    pub owner: String,
    /// Whether the reader owns it (otherwise it is shared with the reader).
    pub mine: bool,
}

/// The private lists of the signed-in reader: those it owns and those shared with it (empty
/// for an anonymous reader). Its result depends on who reads it: never shared.
/// Its body is in `sync.rs` (`#[sync_run]`).
#[sync_query(key = id, reads = [lists, shares], per_identity)]
pub fn my_lists() -> Vec<MyList>;

/// Creates a private list owned by the signed-in sender.
#[sync_event]
pub struct CreateList {
    /// The new list's id.
    pub id: String,
}

/// Shares a private list of the sender's with another user (who may then read and write it).
#[sync_event]
pub struct ShareList {
    /// The list.
    pub list_id: String,
    /// The user to share it with, by name.
    pub user_name: String,
}

/// Stops sharing a private list of the sender's with a user.
#[sync_event]
pub struct UnshareList {
    /// The list.
    pub list_id: String,
    /// The user it was shared with, by name.
    pub user_name: String,
}
