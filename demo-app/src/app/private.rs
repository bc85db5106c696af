//! The signed-in user's private lists, and sharing a list with other users.

use super::short;
use crate::api::list_sharing;
use crate::model::{ShareList, UnshareList, my_lists};
use leptos::prelude::*;
use sssync_leptos::{SyncForm, use_sync_event, use_sync_query};

/// The signed-in user's private lists (owned and shared with them): live, so a list shared
/// with the user shows up at once and one unshared goes.
#[component]
pub(super) fn PrivateLists() -> impl IntoView {
    let lists = use_sync_query(my_lists);
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
pub(super) fn Sharing(list_id: Memo<String>) -> impl IntoView {
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
                                <SyncForm action=share>
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
                                </SyncForm>
                                <ul class="shared-with">
                                    {names
                                        .into_iter()
                                        .map(|name| {
                                            let id = id.clone();
                                            let label = format!("Stop sharing with {name}");
                                            view! {
                                                <li>
                                                    {name.clone()}
                                                    <SyncForm action=unshare attr:class="inline">
                                                        <input type="hidden" name="list_id" value=id />
                                                        <input type="hidden" name="user_name" value=name />
                                                        <button type="submit" aria-label=label>
                                                            "Stop sharing"
                                                        </button>
                                                    </SyncForm>
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
