//! Plain forms without JavaScript: the idempotency key a form carries ([`FormKey`]) and the
//! rejection a redirect brings back.

use crate::error::SyncError;
use leptos::prelude::*;
use sssync_core::Rejection;

/// The name of the hidden field [`FormKey`] renders.
pub const FORM_KEY_FIELD: &str = "sssync_key";

/// A hidden `<input name="sssync_key">` for a plain form whose server function applies an event
/// with [`crate::server::apply_form`]: its value, made when the server renders the form, makes the post
/// idempotent (a resubmission of the same form is not applied again). Rendered empty in the
/// browser (there the form's submit goes through the sync connection), and left as the server
/// rendered it by hydration.
#[component]
pub fn FormKey() -> impl IntoView {
    #[cfg(feature = "ssr")]
    let key = crate::event::new_id();
    // A kept page makes it again for every answer.
    #[cfg(feature = "ssr")]
    crate::server::form_key_made(&key);
    #[cfg(not(feature = "ssr"))]
    let key = String::new();
    view! { <input type="hidden" name=FORM_KEY_FIELD value=key/> }
}

/// An event's form, idempotent by default: Leptos's `<ActionForm>` for `action` (from
/// [`use_sync_event`](crate::use_sync_event)) with its [`FormKey`] added, so that a form
/// posted without JavaScript and posted again (a retry, a double click, the back button) is
/// applied once. With JavaScript the submit goes through the sync connection, predicted, as an
/// `<ActionForm>`'s would. Attributes spread on it (`attr:class="inline"`) reach the `<form>`.
///
/// ```standalone_crate
/// # use leptos::prelude::*;
/// # use sssync_leptos::prelude::*;
/// # #[sync_event]
/// # pub struct AddTodo { pub list_id: String, pub title: String }
/// # #[cfg(feature = "ssr")]
/// # #[sync_apply]
/// # impl AddTodo {
/// #     async fn apply(&self, _: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> { Ok(()) }
/// # }
/// #[component]
/// fn NewTodo(list_id: String) -> impl IntoView {
///     let add = use_sync_event::<AddTodo>();
///     view! {
///         <SyncForm action=add>
///             <input type="hidden" name="list_id" value=list_id />
///             <input name="title" placeholder="What needs to be done?" />
///         </SyncForm>
///     }
/// }
/// ```
#[component]
pub fn SyncForm<E>(
    /// The event's action ([`use_sync_event`](crate::use_sync_event)).
    action: ServerAction<E>,
    /// Where the `<form>` element is kept, as `<ActionForm node_ref>`.
    #[prop(optional)]
    node_ref: Option<NodeRef<leptos::html::Form>>,
    /// The fields emptied as the form is sent (with JavaScript: a chat's message box, a new
    /// todo's title), by name: `clear=&["text"]`. Without JavaScript the page the server sends
    /// back renders them empty anyway.
    #[prop(optional)]
    clear: &'static [&'static str],
    /// The form's fields (the event's, by name).
    children: Children,
) -> impl IntoView
where
    E: crate::action::SyncAction
        + leptos::server_fn::ServerFn<
            Protocol = crate::action::ActionProtocol,
            Client = crate::action::ActionClient,
        >,
{
    let fields = children();
    let node_ref = node_ref.unwrap_or_default();
    #[cfg(feature = "browser")]
    if !clear.is_empty() {
        Effect::new(move |_| {
            if action.input().with(Option::is_some)
                && let Some(form) = node_ref.get_untracked()
            {
                clear_fields(&form, clear);
            }
        });
    }
    #[cfg(not(feature = "browser"))]
    let _ = clear;
    view! {
        <ActionForm action node_ref>
            {fields}
            <FormKey />
        </ActionForm>
    }
}

/// Empties the named text fields of a form.
#[cfg(feature = "browser")]
fn clear_fields(form: &web_sys::HtmlFormElement, names: &[&str]) {
    use wasm_bindgen::JsCast;
    for name in names {
        match form.elements().named_item(name) {
            Some(field) if field.is_instance_of::<web_sys::HtmlInputElement>() => field
                .unchecked_into::<web_sys::HtmlInputElement>()
                .set_value(""),
            Some(field) if field.is_instance_of::<web_sys::HtmlTextAreaElement>() => field
                .unchecked_into::<web_sys::HtmlTextAreaElement>()
                .set_value(""),
            _ => {}
        }
    }
}

/// The rejection a plain form's redirect brought back, if it was an event's: the `__err` of
/// Leptos's form-redirect errors in the page's URL. Read from the URL itself, the same way on
/// the server (the request's) and in the browser, so that every component, inside `<Routes>`
/// or not, hydrates with what the server rendered. In the browser it follows the router's URL:
/// a client-side navigation away from the redirect's page drops it (Leptos's own
/// `ServerActionError` context stays as the first page provided it).
pub(super) fn form_rejection() -> Signal<Option<Rejection>> {
    use leptos_router::location::Url;
    fn in_url(url: &Url) -> Option<Rejection> {
        use leptos::server_fn::error::ServerFnUrlError;
        let params = url.search_params();
        params.get_str("__path")?;
        match ServerFnUrlError::<SyncError>::decode_err(params.get_str("__err")?) {
            SyncError::Rejected(r) => Some(r),
            _ => None,
        }
    }
    #[cfg(feature = "browser")]
    {
        use leptos_router::location::{BrowserUrl, LocationProvider};
        if let Some(url) = use_context::<BrowserUrl>() {
            let url = url.as_url().clone();
            return Signal::derive(move || url.with(in_url));
        }
        // No router: the page's URL changes only with a page load.
        Signal::stored(BrowserUrl::current().ok().as_ref().and_then(in_url))
    }
    #[cfg(not(feature = "browser"))]
    {
        let url = use_context::<leptos_router::location::RequestUrl>().and_then(|u| u.parse().ok());
        Signal::stored(url.as_ref().and_then(in_url))
    }
}
