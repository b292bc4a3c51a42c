//! What the controllers know of the clusters between reads: the watches
//! behind their caches ([`watch`]), the compact form each cached object
//! takes ([`summary`]) read leniently from whatever the API server accepts
//! ([`decode`]), a TLS object's notAfter ([`certificate`]), and our own
//! writes the caches have not shown yet ([`recent`]). Decisions about what
//! to write are not here (they are `syncsecret-api`'s).

pub mod certificate;
pub mod decode;
pub mod recent;
pub mod summary;
pub mod watch;

pub use watch::{
    Kept, KeyFilter, LIST_PAGE_SIZE, Unreadable, WATCH_TIMEOUT_SECS, owners, triggers, tuned,
    watch, whole,
};
