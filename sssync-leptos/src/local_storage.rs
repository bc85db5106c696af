//! Small metadata kept in the browser's localStorage (through `gloo-storage`): the marks sssync
//! leaves for tabs that are gone, and an app's own UI state (say, the lists a visitor opened
//! lately). Values are JSON.
//!
//! - **Never during a render.** The server has no browser storage, and the hydration render
//!   must match the server's HTML: read and write in effects and event handlers. On the server
//!   (without the `hydrate` or `csr` feature) [`get`] is always `None` and [`set`] does nothing.
//! - **Never a panic.** Where the browser refuses storage (private modes, policies, quota),
//!   [`get`] is `None` and [`set`] returns `false`; the app goes on from memory.
//!
//! Keys starting with `sssync.` are sssync's own.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Whether this page may use localStorage. `gloo-storage` panics when the browser refuses it,
/// so every call checks first.
#[cfg(feature = "browser")]
fn available() -> bool {
    web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .is_some()
}

/// The value kept under `key`, if any (and if it decodes as `T`).
pub fn get<T: DeserializeOwned>(key: &str) -> Option<T> {
    #[cfg(feature = "browser")]
    {
        use gloo_storage::Storage;
        available()
            .then(|| gloo_storage::LocalStorage::get(key).ok())
            .flatten()
    }
    #[cfg(not(feature = "browser"))]
    {
        let _ = key;
        None
    }
}

/// Keeps `value` under `key`; `false` when the browser refused (no storage, quota).
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> bool {
    #[cfg(feature = "browser")]
    {
        use gloo_storage::Storage;
        available() && gloo_storage::LocalStorage::set(key, value).is_ok()
    }
    #[cfg(not(feature = "browser"))]
    {
        let _ = (key, value);
        false
    }
}

/// Forgets `key`.
pub fn remove(key: &str) {
    #[cfg(feature = "browser")]
    {
        use gloo_storage::Storage;
        if available() {
            gloo_storage::LocalStorage::delete(key);
        }
    }
    #[cfg(not(feature = "browser"))]
    {
        let _ = key;
    }
}
