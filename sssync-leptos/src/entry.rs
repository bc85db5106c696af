//! The two functions every server-rendered Leptos app exports, written for it
//! ([`entry_points!`](crate::entry_points)): the HTML document the server renders the app in
//! (`shell`), and the browser's `hydrate`.

use leptos::prelude::*;

/// The document: `<html lang>`, a UTF-8 charset, a viewport, no favicon request (an app that
/// has one serves its own shell), cargo-leptos's reload script while `cargo leptos watch`
/// runs, the hydration scripts, and the app in `<body>`.
#[doc(hidden)]
pub fn document<AV: IntoView + 'static>(
    options: LeptosOptions,
    lang: &'static str,
    app: impl FnOnce() -> AV,
) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang=lang>
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <link rel="icon" href="data:," />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
            </head>
            <body>{untrack(app)}</body>
        </html>
    }
}

/// Hydrates `<body>` with the app, panics reported on the browser's console.
#[cfg(feature = "hydrate")]
#[doc(hidden)]
pub fn hydrate<AV: IntoView + 'static>(app: impl FnOnce() -> AV + 'static) {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app);
}

/// Writes an app's two entry points: `pub fn shell(options: LeptosOptions)`, the HTML document
/// the server renders the app in (what `SyncServer::serve(App, shell)` takes), and, with the
/// app crate's `hydrate` feature, the `#[wasm_bindgen] pub fn hydrate()` that cargo-leptos calls
/// in the browser. `entry_points!(App, lang = "fr")` for another language. An app that needs
/// more in its `<head>` (a stylesheet, `leptos_meta`'s `<MetaTags/>`) writes its own `shell`
/// (as the demo does) and `hydrate`.
///
/// ```standalone_crate
/// use leptos::prelude::*;
///
/// #[component]
/// pub fn App() -> impl IntoView {
///     view! { <h1>"Hello"</h1> }
/// }
///
/// sssync_leptos::entry_points!(App);
/// ```
#[macro_export]
macro_rules! entry_points {
    ($app:path) => {
        $crate::entry_points!($app, lang = "en");
    };
    ($app:path, lang = $lang:literal) => {
        /// The HTML document the server renders the app in.
        pub fn shell(
            options: $crate::__private::LeptosOptions,
        ) -> impl $crate::__private::IntoView {
            $crate::__private::document(options, $lang, $app)
        }

        /// The browser's entry point: hydrates the server-rendered page.
        #[cfg(feature = "hydrate")]
        #[$crate::__private::wasm_bindgen_attr(wasm_bindgen = $crate::__private::wasm_bindgen)]
        pub fn hydrate() {
            $crate::__private::hydrate($app);
        }
    };
}
