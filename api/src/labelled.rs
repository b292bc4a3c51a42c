//! Reading an object's labels, annotations and server-side-apply ownership
//! the same way whether it is whole or a cache's summary of it, so that
//! every decision in this crate takes either ([`Labelled`], [`Observed`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use crate::payload::{Payload, PayloadDigest};
use crate::v1alpha1::SyncSecret;

/// The label and annotation keys a cache did not keep of an object: the
/// first [`KeptOff::NAMED`] of each, by name, and how many in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptOff {
    /// The first label keys kept off, sorted.
    pub labels: Vec<String>,
    /// How many label keys were kept off.
    pub labels_total: usize,
    /// The first annotation keys kept off, sorted.
    pub annotations: Vec<String>,
    /// How many annotation keys were kept off.
    pub annotations_total: usize,
}

impl KeptOff {
    /// How many keys of each kind are named.
    pub const NAMED: usize = 8;
}

/// Labels and annotations, wherever an object keeps them: a whole object in
/// its metadata's maps, a cache's summary in its own lists. What reads the
/// labels of a cached object reads them through this.
pub trait Labelled: kube_core::Resource {
    /// The value of label `key`.
    fn label(&self, key: &str) -> Option<&str>;
    /// The value of annotation `key`.
    fn annotation(&self, key: &str) -> Option<&str>;
    /// All labels, as a map of their own.
    fn label_map(&self) -> BTreeMap<String, String>;
    /// All annotations, as a map of their own.
    fn annotation_map(&self) -> BTreeMap<String, String>;
    /// The keys of `metadata.<field>` (`labels` or `annotations`) that
    /// `field_manager` owns through server-side apply.
    fn applied_keys(&self, field_manager: &str, field: &str) -> BTreeSet<String>;
    /// Whether `field_manager` has applied this object (server-side apply
    /// is how both controllers make what they own).
    fn made_by(&self, field_manager: &str) -> bool;
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
            fn applied_keys(&self, field_manager: &str, field: &str) -> BTreeSet<String> {
                self.metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .filter(|e| applies(e, field_manager))
                    .flat_map(|e| owned_keys(e, field))
                    .map(str::to_owned)
                    .collect()
            }
            fn made_by(&self, field_manager: &str) -> bool {
                self.metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .any(|e| applies(e, field_manager))
            }
        }
    )*};
}
labelled_by_metadata!(SyncSecret, Secret);

/// The keys of `metadata.<field>` that a managedFields entry's fieldsV1
/// tree owns (`{"f:metadata": {"f:labels": {"f:<key>": {}}}}`).
pub fn owned_keys<'a>(entry: &'a ManagedFieldsEntry, field: &str) -> impl Iterator<Item = &'a str> {
    entry
        .fields_v1
        .as_ref()
        .and_then(|f| f.0.get("f:metadata"))
        .and_then(|m| m.get(format!("f:{field}")))
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| k.strip_prefix("f:"))
}

/// Whether an entry is a server-side apply by `field_manager`.
pub fn applies(entry: &ManagedFieldsEntry, field_manager: &str) -> bool {
    entry.manager.as_deref() == Some(field_manager) && entry.operation.as_deref() == Some("Apply")
}

/// A live object as a decision needs it: labels and more, its payload's
/// digest, and whether someone wrote `stringData` on it.
pub trait Observed: Labelled {
    /// The digest of the object's payload.
    fn payload_digest(&self) -> Cow<'_, PayloadDigest>;
    /// Whether the object has `stringData` (a copy written by the ccm never
    /// has: one that has was written by someone else).
    fn has_string_data(&self) -> bool;
}

impl Observed for SyncSecret {
    fn payload_digest(&self) -> Cow<'_, PayloadDigest> {
        Cow::Owned(Payload::of_sync_secret(self).digested())
    }
    fn has_string_data(&self) -> bool {
        self.string_data.is_some()
    }
}

impl Observed for Secret {
    fn payload_digest(&self) -> Cow<'_, PayloadDigest> {
        Cow::Owned(Payload::of_secret(self).digested())
    }
    fn has_string_data(&self) -> bool {
        // The API server folds a Secret's stringData into data.
        false
    }
}
