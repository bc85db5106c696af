//! Writing: events as Leptos server actions ([`use_sync_event`]), the sender for events
//! declared by hand ([`use_sync_sender`]), and [`new_id`] for the rows a client creates.

use crate::action::SyncAction;
use crate::client::SyncClient;
use leptos::prelude::*;
use sssync_core::Event;
use sssync_core::Rejection;

/// A typed event sender (see [`use_sync_event`]). `Copy`.
pub struct EventSender<E> {
    client: SyncClient,
    _event: std::marker::PhantomData<fn(E)>,
}

impl<E> Clone for EventSender<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for EventSender<E> {}

impl<E: Event> EventSender<E> {
    /// Applies the event's prediction at once and sends it (exactly once, also after the
    /// connection comes back). Does nothing on the server.
    pub fn send(&self, event: E) {
        #[cfg(feature = "browser")]
        {
            self.client.rejection.set(None);
            self.client.sent.set(true);
            // A refusal by the client shows as the last rejection.
            let _ = self.client.runtime().send(event);
        }
        #[cfg(not(feature = "browser"))]
        {
            let _ = (event, self.client);
        }
    }

    /// How many events of this type this tab has sent that the server has not confirmed yet
    /// (their predictions show meanwhile). Reactive; 0 on the server.
    pub fn pending(&self) -> usize {
        self.client.pending.track();
        #[cfg(feature = "browser")]
        {
            self.client
                .runtime
                .get_value()
                .map_or(0, |rt| rt.state.borrow().pending_count_of(E::NAME))
        }
        #[cfg(not(feature = "browser"))]
        {
            0
        }
    }

    /// Why the server refused the last event of this type, if the last refusal in this tab
    /// was one (cleared by the next send of any event). Its prediction is gone by then.
    /// Reactive.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.client
            .rejection
            .read()
            .as_ref()
            .filter(|r| r.event == E::NAME)
            .map(|r| r.why.clone())
    }
}

/// The sender of event type `E`, for events declared by hand (an `impl Event`) rather than
/// with [`macro@sync_event`] (whose events are server actions: see [`use_sync_event`]).
///
/// ```
/// use leptos::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct Ping { note: String }
///
/// impl sssync_leptos::Event for Ping {
///     const NAME: &'static str = "ping";
/// }
///
/// Owner::new().with(|| {
///     sssync_leptos::provide_sync_client();
///     let ping = sssync_leptos::use_sync_sender::<Ping>();
///     // Nothing sent yet: none of this type pending, none refused.
///     assert_eq!(ping.pending(), 0);
///     assert_eq!(ping.last_rejection(), None);
/// });
/// ```
pub fn use_sync_sender<E: Event>() -> EventSender<E> {
    let client = crate::client::client();
    client.types.update_value(|t| t.add::<E>());
    EventSender {
        client,
        _event: std::marker::PhantomData,
    }
}

/// The action of event `E` (declared with [`macro@sync_event`]): a Leptos `ServerAction`, so
/// it works with `<ActionForm>` (and, with `ServerMultiAction::<E>::new()`,
/// `<MultiActionForm>`) and `.dispatch(…)`.
///
/// In the browser a dispatch predicts the event at once and sends it over the tab's sync
/// connection (exactly once, also across going offline and reloads); the action is pending
/// until the server has settled it, and its value is then `Ok(())`, or
/// `Err(SyncError::Rejected(…))` with the prediction rolled back. Without JavaScript the form
/// posts to the event's server function, and a rejection comes back as the action's value after
/// the redirect.
///
/// ```
/// use leptos::prelude::*;
/// use sssync_leptos::{FormKey, sync_apply, sync_event, use_sync_event};
/// # #[cfg(feature = "ssr")] use sssync_leptos::server::prelude::*;
///
/// #[sync_event]
/// pub struct AddNote {
///     #[serde(default = "sssync_leptos::new_id")]
///     pub id: String,
///     pub board: String,
///     pub text: String,
/// }
///
/// #[sync_apply]
/// impl AddNote {
///     async fn apply(&self, conn: &mut Conn<Db>, _: &EventCtx) -> Result<(), EventError> {
///         sqlx::query("INSERT INTO notes (id, board, text) VALUES ($1, $2, $3)")
///             .bind(&self.id).bind(&self.board).bind(&self.text)
///             .execute(&mut *conn).await?;
///         Ok(())
///     }
/// }
///
/// #[component]
/// fn NewNote(board: String) -> impl IntoView {
///     let add = use_sync_event::<AddNote>();
///     view! {
///         <ActionForm action=add>
///             <input type="hidden" name="board" value=board />
///             <input name="text" aria-label="Note" />
///             <FormKey />
///         </ActionForm>
///         <p>{move || add.pending().get().then_some("Saving…")}</p>
///     }
/// }
///
/// // Rendered on the server, the form posts to the event's own server function (what a
/// // browser without JavaScript sends), with a key that makes the post idempotent.
/// # #[cfg(feature = "ssr")] {
/// let html = Owner::new().with(|| {
///     sssync_leptos::provide_sync_client();
///     view! { <NewNote board="b1".to_owned() /> }.to_html()
/// });
/// assert!(html.contains(r#"action="/api/add_note""#), "{html}");
/// assert!(html.contains(r#"name="sssync_key""#), "{html}");
/// # }
/// ```
pub fn use_sync_event<E: SyncAction>() -> ServerAction<E> {
    let client = crate::client::client();
    client.types.update_value(|t| t.add::<E>());
    ServerAction::new()
}

/// A new random id (128 bits, hex) for rows a client creates (their keys must be known
/// before the server confirms them).
pub fn new_id() -> String {
    #[cfg(feature = "browser")]
    {
        crate::runtime::random_id()
    }
    #[cfg(not(feature = "browser"))]
    {
        use std::hash::{BuildHasher, Hasher};
        // The server side: the std hasher's random keys, plus time and a counter.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut out = String::with_capacity(32);
        for _ in 0..2 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    }
}

/// How `#[sync_event]` finds an event's prediction without a flag that repeats it: the
/// event's `#[sync_event] impl` implements [`Predict`](predicts::Predict) when it has a `fn
/// predict`, and the `Event` impl calls `(&&Probe(self)).__sssync_predict(view)`, which method
/// resolution sends to the prediction when there is one (the impl on `&Probe`, one reference
/// nearer the receiver) and to nothing otherwise.
#[doc(hidden)]
pub mod predicts {
    use sssync_core::client::Prediction;

    /// An event's own prediction (its `#[sync_event] impl`'s `fn predict`).
    pub trait Predict {
        /// The optimistic effect.
        fn predict(&self, view: &mut Prediction<'_>);
    }

    /// The event, probed for a prediction.
    pub struct Probe<'a, T>(pub &'a T);

    /// Chosen when the event has a prediction.
    pub trait Predicted {
        /// Runs it.
        fn __sssync_predict(&self, view: &mut Prediction<'_>);
    }

    impl<T: Predict> Predicted for &Probe<'_, T> {
        fn __sssync_predict(&self, view: &mut Prediction<'_>) {
            self.0.predict(view)
        }
    }

    /// Chosen otherwise: no optimistic effect.
    pub trait Unpredicted {
        /// Does nothing.
        fn __sssync_predict(&self, view: &mut Prediction<'_>) {
            let _ = view;
        }
    }

    impl<T> Unpredicted for Probe<'_, T> {}
}
