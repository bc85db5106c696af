//! The demo as a client-only app (feature `csr`, built by Trunk from the root `index.html`):
//! the same components, rendered in the browser, syncing with an sssync server at the same
//! origin (`trunk serve` proxies `/sssync` to it; see `Trunk.toml`).

fn main() {
    console_error_panic_hook::set_once();
    // No server render here: the interactive controls are the only ones.
    if let Some(root) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.document_element())
    {
        let _ = root.class_list().add_1("hydrated");
    }
    leptos::mount::mount_to_body(demo_app::app::App);
}
