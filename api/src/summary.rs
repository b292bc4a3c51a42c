//! What a watch cache keeps of an object.
//!
//! Every cache of the controllers holds [`Summary`]s: the tenant
//! SyncSecrets and the copies in the ccm, the copies and the Secrets in the
//! manager. A reconcile decides from the caches alone whether anything is
//! to be written, which at a steady state is never; only when it writes does
//! it read the one whole object it writes from (a GET of the tenant object
//! or of the copy). A whole object in a cache held its payload for as long
//! as it existed (1 KiB of data per object in `make bench`, plus a map node
//! of about 0.5 KiB around it) to be read on the rare write, and the
//! caches' memory grew with the size of what tenants sync. A summary keeps
//! the metadata and status as they are and, of the payload, its type,
//! immutability, size and a SHA-256 per key ([`PayloadDigest`], in
//! `payload`), and for a TLS SyncSecret its certificate's notAfter: enough
//! to tell whether a write is needed and which keys it would change, never
//! enough to write the payload back, and never a value.
//!
//! Its labels and annotations are kept out of the metadata, as sorted lists
//! ([`Pairs`]): a `BTreeMap` allocates a node of about 0.5 KiB for its
//! first entry, and a summary's two maps (four origin labels, one
//! annotation) were about 1 KiB of its 2.1 KiB at 10,000 objects. Read
//! them through [`Labelled`] (or the inherent [`Summary::labels`] and
//! [`Summary::annotations`]); `metadata.labels` and `metadata.annotations`
//! of a summary are always `None`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::object::HasStatus;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::certificate::read_not_after;
use crate::payload::{Payload, PayloadDigest};
use crate::v1alpha1::{SyncSecret, SyncSecretStatus};

/// An object as every watch cache keeps it: its metadata (slimmed by the
/// cache, labels and annotations as [`Pairs`]), its status, and its
/// payload's digest. It is
/// read from the API server as `K` and summarized as it is decoded, so a
/// watch of `Summary<K>` never holds more than one whole object at a time.
pub struct Summary<K> {
    /// The object's metadata, without its labels and annotations.
    pub metadata: ObjectMeta,
    labels: Pairs,
    annotations: Pairs,
    /// The object's payload, digested.
    pub payload: PayloadDigest,
    /// The object's status (a Secret has none).
    pub status: Option<SyncSecretStatus>,
    /// The notAfter of its `tls.crt`, for a `kubernetes.io/tls` SyncSecret
    /// ([`read_not_after`]); a Secret's is not read.
    pub certificate: Option<Result<i64, String>>,
    kind: PhantomData<fn() -> K>,
}

/// The types a [`Summary`] is made of.
pub trait Summarize: kube::Resource<DynamicType = ()> + DeserializeOwned {
    /// The summary of this object.
    fn summary(self) -> Summary<Self>;
}

impl Summarize for SyncSecret {
    fn summary(self) -> Summary<Self> {
        let payload = Payload::of_sync_secret(&self);
        let mut summary = Summary::new(self.metadata, payload.digested(), self.status);
        summary.certificate = read_not_after(&payload);
        summary
    }
}

impl Summarize for Secret {
    fn summary(self) -> Summary<Self> {
        let payload = Payload::of_secret(&self).digested();
        Summary::new(self.metadata, payload, None)
    }
}

impl<K> Summary<K> {
    fn new(
        mut metadata: ObjectMeta,
        payload: PayloadDigest,
        status: Option<SyncSecretStatus>,
    ) -> Self {
        Self {
            labels: Pairs::from(metadata.labels.take()),
            annotations: Pairs::from(metadata.annotations.take()),
            metadata,
            payload,
            status,
            certificate: None,
            kind: PhantomData,
        }
    }

    /// The object's labels. (An inherent method: it is what
    /// `summary.labels()` calls, not `ResourceExt::labels`, which would
    /// read the empty `metadata.labels`.)
    pub fn labels(&self) -> &Pairs {
        &self.labels
    }

    /// The object's annotations (as [`Summary::labels`]).
    pub fn annotations(&self) -> &Pairs {
        &self.annotations
    }
}

/// Key/value pairs sorted by key, each string allocated to its length:
/// what a label or annotation map holds, without a map node.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(Box<str>, Box<str>)]>);

impl Pairs {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// Whether `key` is there.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The pairs as a map of their own.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl From<Option<BTreeMap<String, String>>> for Pairs {
    fn from(map: Option<BTreeMap<String, String>>) -> Self {
        // A BTreeMap iterates in key order: the list is sorted as built.
        Self(
            map.into_iter()
                .flatten()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }
}

/// Keys only: an annotation may hold anything.
impl std::fmt::Debug for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// Labels and annotations, wherever an object keeps them: a whole object in
/// its metadata's maps, a [`Summary`] in its own lists. What reads the
/// labels of a cached object reads them through this.
pub trait Labelled: kube::Resource {
    /// The value of label `key`.
    fn label(&self, key: &str) -> Option<&str>;
    /// The value of annotation `key`.
    fn annotation(&self, key: &str) -> Option<&str>;
    /// All labels, as a map of their own.
    fn label_map(&self) -> BTreeMap<String, String>;
    /// All annotations, as a map of their own.
    fn annotation_map(&self) -> BTreeMap<String, String>;
}

fn map_get<'a>(map: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    map.and_then(|m| m.get(key)).map(String::as_str)
}

/// For objects that keep their maps in their metadata.
macro_rules! labelled_by_metadata {
    ($($kind:ty),*) => {$(
        impl Labelled for $kind {
            fn label(&self, key: &str) -> Option<&str> {
                map_get(self.metadata.labels.as_ref(), key)
            }
            fn annotation(&self, key: &str) -> Option<&str> {
                map_get(self.metadata.annotations.as_ref(), key)
            }
            fn label_map(&self) -> BTreeMap<String, String> {
                self.metadata.labels.clone().unwrap_or_default()
            }
            fn annotation_map(&self) -> BTreeMap<String, String> {
                self.metadata.annotations.clone().unwrap_or_default()
            }
        }
    )*};
}
labelled_by_metadata!(SyncSecret, Secret);

impl<K: kube::Resource<DynamicType = ()>> Labelled for Summary<K> {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }
    fn label_map(&self) -> BTreeMap<String, String> {
        self.labels.to_map()
    }
    fn annotation_map(&self) -> BTreeMap<String, String> {
        self.annotations.to_map()
    }
}

impl<K> Clone for Summary<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            certificate: self.certificate.clone(),
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
            .field("labels", &self.labels)
            .field("annotations", &self.annotations)
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

/// Never written: a summary holds no payload to write. (kube's finalizer
/// helper asks for `Serialize` of what it patches, though it sends only a
/// JSON patch of the finalizers; that is all a summary is ever patched
/// with, besides its status.)
impl<K: kube::Resource<DynamicType = ()>> Serialize for Summary<K> {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(format!(
            "a cached summary of {} {}/{} holds no payload and is never written",
            K::kind(&()),
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )))
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
        let mut identity = full.metadata.clone();
        let labels = identity.labels.take();
        assert_eq!(identity.annotations.take(), None);
        assert_eq!(summary.metadata, identity, "the metadata but its maps");
        assert_eq!(summary.labels().get("x"), Some("y"));
        assert_eq!(summary.label("x"), Some("y"));
        assert_eq!(summary.labels(), &Pairs::from(labels));
        assert!(summary.annotations().iter().next().is_none());
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

#[cfg(test)]
mod pairs {
    use super::*;

    #[test]
    fn pairs_are_found_by_key_whatever_the_order_they_were_given_in() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", "1"), ("kubelb.k8c.io/x", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let pairs = Pairs::from(Some(map.clone()));
        for (k, v) in &map {
            assert_eq!(pairs.get(k), Some(v.as_str()));
        }
        assert_eq!(pairs.get("c"), None);
        assert!(!pairs.contains_key(""));
        let listed: Vec<(&str, &str)> = pairs.iter().collect();
        assert_eq!(listed, [("a", "1"), ("b", "2"), ("kubelb.k8c.io/x", "3")]);
        assert_eq!(Pairs::from(None), Pairs::default());
        assert_eq!(format!("{pairs:?}"), r#"["a", "b", "kubelb.k8c.io/x"]"#);
    }
}
