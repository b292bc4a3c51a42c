//! What the controllers know of the clusters between reads: the watches
//! behind their caches ([`watch`]), the compact form each cached object
//! takes ([`summary`]) read leniently from whatever the API server accepts
//! ([`decode`]), the small objects a watch just delivered, kept whole for
//! the write they trigger ([`delivered`]), a TLS object's notAfter
//! ([`certificate`]), and our own writes the caches have not shown yet
//! ([`recent`]). Decisions about what to write are not here (they are
//! `syncsecret-api`'s).

/// `kube::Resource` for a type that stands for `K` as read from `K`'s
/// own resource (kind, group, version and plural are `K`'s), with the
/// metadata the two expressions give (`$this` is `self`).
macro_rules! resource_of_k {
    ($ty:ident, |$this:ident| $meta:expr, $meta_mut:expr) => {
        impl<K: kube::Resource<DynamicType = ()>> kube::Resource for $ty<K> {
            type DynamicType = ();
            type Scope = K::Scope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                K::kind(dt)
            }
            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                K::group(dt)
            }
            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                K::version(dt)
            }
            fn api_version(dt: &()) -> std::borrow::Cow<'_, str> {
                K::api_version(dt)
            }
            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                K::plural(dt)
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                let $this = self;
                $meta
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                let $this = self;
                $meta_mut
            }
        }
    };
}

pub mod certificate;
pub mod decode;
pub mod delivered;
pub mod recent;
pub mod summary;
pub mod watch;

pub use delivered::Delivered;
pub use watch::{
    Kept, KeyFilter, LIST_PAGE_SIZE, Theirs, Unreadable, WATCH_TIMEOUT_SECS,
    initial_lists_streamed, owners, triggers, tuned, watch, whole,
};
