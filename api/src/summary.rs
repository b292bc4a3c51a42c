//! What a compare-only watch cache keeps of an object.
//!
//! Two of the four caches are never read for content, only compared with
//! what would be written: the ccm's copies and the manager's Secrets. A
//! whole object there holds its payload a second time in each process
//! (1 KiB of data per object in `make bench`, plus a map node of about
//! 0.5 KiB around it), for nothing but an equality test. A [`Summary`]
//! keeps the metadata and status as they are and, of the payload, its type,
//! immutability, size and a SHA-256 per key ([`PayloadDigest`], in
//! `payload`): enough to
//! tell whether a write is needed and which keys it would change, never
//! enough to write the payload back.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::object::HasStatus;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::payload::{Payload, PayloadDigest};
use crate::v1alpha1::{SyncSecret, SyncSecretStatus};

/// An object as a compare-only cache keeps it: its metadata (slimmed by
/// the cache like any other), its status, and its payload's digest. It is
/// read from the API server as `K` and summarized as it is decoded, so a
/// watch of `Summary<K>` never holds more than one whole object at a time.
pub struct Summary<K> {
    /// The object's metadata.
    pub metadata: ObjectMeta,
    /// The object's payload, digested.
    pub payload: PayloadDigest,
    /// The object's status (a Secret has none).
    pub status: Option<SyncSecretStatus>,
    kind: PhantomData<fn() -> K>,
}

/// The types a [`Summary`] is made of.
pub trait Summarize: kube::Resource<DynamicType = ()> + DeserializeOwned {
    /// The summary of this object.
    fn summary(self) -> Summary<Self>;
}

impl Summarize for SyncSecret {
    fn summary(self) -> Summary<Self> {
        Summary {
            payload: Payload::of_sync_secret(&self).digested(),
            metadata: self.metadata,
            status: self.status,
            kind: PhantomData,
        }
    }
}

impl Summarize for Secret {
    fn summary(self) -> Summary<Self> {
        Summary {
            payload: Payload::of_secret(&self).digested(),
            metadata: self.metadata,
            status: None,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for Summary<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            payload: self.payload.clone(),
            status: self.status.clone(),
            kind: PhantomData,
        }
    }
}

/// Prints names, never values (as `SyncSecret`'s does).
impl<K: kube::Resource<DynamicType = ()>> std::fmt::Debug for Summary<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(&format!("Summary<{}>", K::kind(&())))
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("payload", &self.payload)
            .field("status", &self.status)
            .finish()
    }
}

impl<'de, K: Summarize> Deserialize<'de> for Summary<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(K::summary)
    }
}

impl<K: kube::Resource<DynamicType = ()>> kube::Resource for Summary<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K> HasStatus for Summary<K> {
    type Status = SyncSecretStatus;
    fn status(&self) -> Option<&SyncSecretStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<SyncSecretStatus> {
        &mut self.status
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_summary_is_decoded_from_the_wire_form_and_holds_no_value() {
        let wire = json!({
            "apiVersion": "kubelb.k8c.io/v1alpha1",
            "kind": "SyncSecret",
            "metadata": {"name": "c", "namespace": "tenant-a", "labels": {"x": "y"}},
            "data": {"password": "aHVudGVyMg=="},
            "stringData": {"user": "admin"},
            "status": {"phase": "Synced"}
        });
        let full: SyncSecret = serde_json::from_value(wire.clone()).unwrap();
        let summary: Summary<SyncSecret> = serde_json::from_value(wire).unwrap();
        assert_eq!(
            summary.payload,
            Payload::of_sync_secret(&full).digested(),
            "the effective payload: stringData merged over data"
        );
        assert_eq!(summary.metadata, full.metadata);
        assert_eq!(summary.status, full.status);
        let printed = format!("{summary:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("admin"));
        assert!(printed.contains("password") && printed.contains("user"));
        use kube::Resource;
        assert_eq!(Summary::<SyncSecret>::plural(&()), "syncsecrets");
        assert_eq!(Summary::<Secret>::kind(&()), "Secret");
        assert_eq!(Summary::<Secret>::api_version(&()), "v1");
    }
}
