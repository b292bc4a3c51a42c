//! What a watch cache keeps of an object.
//!
//! Every cache of the controllers holds [`Summary`]s: the tenant
//! SyncSecrets and the copies in the ccm, the copies and the Secrets in the
//! manager. A reconcile decides from the caches alone whether anything is
//! to be written, which at a steady state is never; only when it writes does
//! it need the one whole object it writes from: the one its watch just
//! delivered, kept a moment beside the cache
//! ([`Delivered`](crate::cache::delivered::Delivered)), else a GET of the
//! tenant object or of the copy. A whole object in a cache held its
//! payload for as long as it existed, to be read on the rare write, and
//! the caches' memory grew with the size of what tenants sync. A summary
//! keeps
//! the metadata and status as they are and, of the payload, its type,
//! immutability, size and a SHA-256 per key ([`PayloadDigest`], in
//! `payload`), and for a TLS SyncSecret its certificate's notAfter: enough
//! to tell whether a write is needed and which keys it would change, never
//! enough to write the payload back, and never a value.
//!
//! Its labels and annotations are kept out of the metadata, as sorted lists
//! ([`Pairs`]): a `BTreeMap` allocates a whole node for its first entry,
//! which for a few labels is most of what a summary holds. Read
//! them through [`Labelled`] (or the inherent [`Summary::labels`] and
//! [`Summary::annotations`]); `metadata.labels` and `metadata.annotations`
//! of a summary are always `None`. So is `metadata.managedFields`: of it a
//! summary keeps, per field manager that applied the object, the label and
//! annotation keys it owns (read through [`Labelled::applied_keys`] and
//! [`Labelled::made_by`]), and a cache only its own controller's. The
//! contract's label keys and field managers are not allocated per object
//! ([`Pairs`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::core::object::HasStatus;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use syncsecret_api::labelled::{KeptOff, Labelled, Observed, applies, owned_keys};

use crate::cache::certificate::read_not_after;
use crate::cache::decode::{Lenient, Undecodable};
use crate::cache::delivered::KEPT_ENTRIES;
use syncsecret_api::contract::{
    ANNOTATION_ORIGIN_GENERATION, FIELD_MANAGER_CCM, FIELD_MANAGER_MANAGER, FINALIZER,
    LABEL_MANAGED_BY, LABEL_ORIGIN_NAME, LABEL_ORIGIN_NAMESPACE, LABEL_ORIGIN_NS,
};
use syncsecret_api::payload::{Payload, PayloadDigest};
use syncsecret_api::v1alpha1::{SyncSecret, SyncSecretStatus};

/// An object as every watch cache keeps it: its metadata (slimmed by the
/// cache, labels and annotations as [`Pairs`]), its status, and its
/// payload's digest. It is
/// read from the API server as `K` and summarized as it is decoded, so a
/// list of `Summary<K>` never holds more than one whole object at a time
/// (a watch with a stash holds also its list's small objects, until each
/// is handed on: [`Fresh`](crate::cache::delivered::Fresh)).
pub struct Summary<K> {
    /// The object's metadata, without its labels and annotations.
    pub metadata: ObjectMeta,
    labels: Pairs,
    annotations: Pairs,
    /// Per field manager that applied the object (server-side apply), the
    /// label and annotation keys it owns: `labels/<key>` and
    /// `annotations/<key>`, one per line. The cache keeps only its own
    /// controller's ([`Summary::keep_applied_by`]).
    applied: Pairs,
    /// The object's payload, digested.
    pub payload: PayloadDigest,
    /// The object's status (a Secret has none).
    pub status: Option<SyncSecretStatus>,
    /// The notAfter of its `tls.crt`, for a `kubernetes.io/tls` SyncSecret
    /// ([`read_not_after`]); a Secret's is not read.
    pub certificate: Option<Result<i64, String>>,
    /// Whether the object has `stringData` (a copy written by the ccm never
    /// has: one that has was written by someone else).
    pub has_string_data: bool,
    /// The length of the object's JSON as the API server sent it (0 when
    /// not read from an answer): about what etcd holds of a custom
    /// resource, so what a write of the whole object stores again.
    pub stored_bytes: usize,
    /// The label and annotation keys the cache did not keep
    /// ([`Summary::retain_metadata`]), by name; `None` when it kept all.
    kept_off: Option<Box<KeptOff>>,
    /// Why the object could not be read as `K` (`None` when it could):
    /// then only its metadata is known, and its payload digest is empty.
    undecodable: Option<Box<str>>,
    kind: PhantomData<fn() -> K>,
}

/// The types a [`Summary`] is made of.
pub trait Summarize: kube::Resource<DynamicType = ()> + DeserializeOwned {
    /// The summary of this object.
    fn summary(self) -> Summary<Self>;

    /// The summary of this object and, for a kind that writes are made
    /// from and an object of at most
    /// [`KEPT_ENTRIES`](crate::cache::delivered::KEPT_ENTRIES), the object
    /// itself without its `managedFields` and status (which nothing writes
    /// from): what a watch keeps a moment
    /// ([`Fresh`](crate::cache::delivered::Fresh)).
    fn summary_and_whole(self) -> (Summary<Self>, Option<Self>) {
        (self.summary(), None)
    }
}

impl Summarize for SyncSecret {
    fn summary(self) -> Summary<Self> {
        summarize_sync_secret(self, false).0
    }

    fn summary_and_whole(self) -> (Summary<Self>, Option<Self>) {
        summarize_sync_secret(self, true)
    }
}

fn summarize_sync_secret(
    mut ss: SyncSecret,
    keep_whole: bool,
) -> (Summary<SyncSecret>, Option<SyncSecret>) {
    let payload = Payload::of_sync_secret(&ss);
    let has_string_data = ss.string_data.is_some();
    let certificate = read_not_after(&payload);
    let digest = payload.digested();
    let (mut summary, whole) = if keep_whole && entries(&ss) <= KEPT_ENTRIES {
        // The payload moves into the whole object, not copied; the summary
        // takes its own metadata, with the managedFields, and the status.
        let managed = ss.metadata.managed_fields.take();
        let mut metadata = ss.metadata.clone();
        metadata.managed_fields = managed;
        let status = ss.status.take();
        (Summary::new(metadata, digest, status), Some(ss))
    } else {
        (Summary::new(ss.metadata, digest, ss.status), None)
    };
    summary.certificate = certificate;
    summary.has_string_data = has_string_data;
    (summary, whole)
}

/// The entries of an object's maps and lists but its managedFields and
/// status (see [`KEPT_ENTRIES`]).
fn entries(ss: &SyncSecret) -> usize {
    let m = &ss.metadata;
    ss.data.as_ref().map_or(0, BTreeMap::len)
        + ss.string_data.as_ref().map_or(0, BTreeMap::len)
        + m.labels.as_ref().map_or(0, BTreeMap::len)
        + m.annotations.as_ref().map_or(0, BTreeMap::len)
        + m.finalizers.as_ref().map_or(0, Vec::len)
        + m.owner_references.as_ref().map_or(0, Vec::len)
}

impl Summarize for Secret {
    fn summary(self) -> Summary<Self> {
        let payload = Payload::of_secret(&self).digested();
        Summary::new(self.metadata, payload, None)
    }
}

/// The most finalizers a summary keeps, duplicates dropped: enough for
/// every object a controller writes (ours, and a few of others'), and a
/// bound on what one object costs whatever its list holds (the API server
/// keeps duplicates, 50,000 of them in a megabyte). A write of the
/// finalizers of a summary holding this many reads the whole list first
/// ([`Writer::release_finalizer`](crate::reconcile::writer::Writer::release_finalizer)).
pub const KEPT_FINALIZERS: usize = 16;

/// `finalizers` without duplicates, the first [`KEPT_FINALIZERS`] only,
/// ours among them wherever it stands (the last place gives way to it):
/// a reconcile that did not see it would never take it off.
fn kept_finalizers(finalizers: Option<Vec<String>>) -> Option<Vec<String>> {
    finalizers.map(|all| {
        let mut kept: Vec<String> = Vec::new();
        let mut ours = false;
        for f in all {
            ours |= f == FINALIZER;
            if kept.len() < KEPT_FINALIZERS && !kept.contains(&f) {
                kept.push(f);
            }
        }
        if ours && !kept.iter().any(|f| f == FINALIZER) {
            kept.pop();
            kept.push(FINALIZER.to_owned());
        }
        kept
    })
}

impl<K> Summary<K> {
    fn new(
        mut metadata: ObjectMeta,
        payload: PayloadDigest,
        status: Option<SyncSecretStatus>,
    ) -> Self {
        metadata.finalizers = kept_finalizers(metadata.finalizers.take());
        Self {
            labels: Pairs::from(metadata.labels.take()),
            annotations: Pairs::from(metadata.annotations.take()),
            applied: applied_by_manager(metadata.managed_fields.take()),
            metadata,
            payload,
            status,
            certificate: None,
            has_string_data: false,
            stored_bytes: 0,
            kept_off: None,
            undecodable: None,
            kind: PhantomData,
        }
    }

    /// The summary of an object that could not be read as `K`.
    pub fn undecodable(u: Undecodable) -> Self {
        let mut summary = Self::new(u.metadata, PayloadDigest::default(), None);
        summary.undecodable = Some(u.reason.into_boxed_str());
        summary
    }

    /// Why the object could not be read as `K`, if it could not: which
    /// field, and what it should have been (never its value).
    pub fn unreadable(&self) -> Option<&str> {
        self.undecodable.as_deref()
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

    /// Forgets what field managers other than `field_manager` (all, when
    /// `None`) applied: nothing but a controller's own applies is read of a
    /// cached object ([`Labelled::applied_keys`], [`Labelled::made_by`]).
    pub fn keep_applied_by(&mut self, field_manager: Option<&str>) {
        if self.applied.iter().any(|(m, _)| Some(m) != field_manager) {
            self.applied = Pairs(
                std::mem::take(&mut self.applied.0)
                    .into_iter()
                    .filter(|(m, _)| Some(&**m) == field_manager)
                    .collect(),
            );
        }
    }
}

impl<K> Summary<K> {
    /// Forgets every label and annotation whose key `keep` says no to,
    /// naming the first few of them in [`Summary::kept_off`]: a cache of
    /// what tenants wrote then holds only what the policy lets through,
    /// however much they put in metadata.
    pub fn retain_metadata(&mut self, keep: &dyn Fn(&str) -> bool) {
        let mut off = KeptOff::default();
        self.labels = split(
            std::mem::take(&mut self.labels),
            keep,
            &mut off.labels,
            &mut off.labels_total,
        );
        self.annotations = split(
            std::mem::take(&mut self.annotations),
            keep,
            &mut off.annotations,
            &mut off.annotations_total,
        );
        self.kept_off = (off.labels_total + off.annotations_total > 0).then(|| Box::new(off));
    }

    /// The keys [`Summary::retain_metadata`] did not keep.
    pub fn kept_off(&self) -> Option<&KeptOff> {
        self.kept_off.as_deref()
    }
}

/// `pairs` without the keys `keep` says no to; their names go to `named`
/// (the first [`KeptOff::NAMED`]) and their count to `total`.
fn split(
    pairs: Pairs,
    keep: &dyn Fn(&str) -> bool,
    named: &mut Vec<String>,
    total: &mut usize,
) -> Pairs {
    let (kept, off): (Vec<_>, Vec<_>) = pairs.0.into_vec().into_iter().partition(|(k, _)| keep(k));
    *total = off.len();
    named.extend(
        off.into_iter()
            .take(KeptOff::NAMED)
            .map(|(k, _)| k.into_owned()),
    );
    Pairs(kept.into_boxed_slice())
}

/// The fields whose keys a summary keeps of a server-side apply.
const APPLIED_FIELDS: [&str; 2] = ["labels", "annotations"];

/// Of managedFields, only the server-side applies, each manager's owned
/// label and annotation keys as lines of `<field>/<key>` (a fieldsV1 tree
/// spends a JSON map node per level, and the entry around it more).
fn applied_by_manager(entries: Option<Vec<ManagedFieldsEntry>>) -> Pairs {
    let mut by_manager: BTreeMap<String, String> = BTreeMap::new();
    for entry in entries.iter().flatten() {
        let Some(manager) = entry.manager.as_deref() else {
            continue;
        };
        if !applies(entry, manager) {
            continue;
        }
        let keys = by_manager.entry(manager.to_owned()).or_default();
        for field in APPLIED_FIELDS {
            for key in owned_keys(entry, field) {
                keys.push_str(field);
                keys.push('/');
                keys.push_str(key);
                keys.push('\n');
            }
        }
    }
    Pairs::from(Some(by_manager))
}

/// Key/value pairs sorted by key, each string allocated to its length:
/// what a label or annotation map holds, without a map node. A key of the
/// contract ([`KNOWN_KEYS`]: on every object we make) is not allocated at
/// all.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(Cow<'static, str>, Box<str>)]>);

/// The keys every copy and Secret carries (labels, annotations, and the
/// field managers of [`Summary`]'s applied keys), kept by reference.
const KNOWN_KEYS: &[&str] = &[
    LABEL_ORIGIN_NAME,
    LABEL_ORIGIN_NAMESPACE,
    LABEL_ORIGIN_NS,
    LABEL_MANAGED_BY,
    ANNOTATION_ORIGIN_GENERATION,
    FIELD_MANAGER_CCM,
    FIELD_MANAGER_MANAGER,
];

/// `key`, by reference if it is one of [`KNOWN_KEYS`].
fn key(key: String) -> Cow<'static, str> {
    match KNOWN_KEYS.iter().find(|k| **k == key) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(key.into_boxed_str().into_string()),
    }
}

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
                .map(|(k, v)| (key(k), v.into_boxed_str()))
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
    fn applied_keys(&self, field_manager: &str, field: &str) -> BTreeSet<String> {
        self.applied
            .get(field_manager)
            .into_iter()
            .flat_map(str::lines)
            .filter_map(|line| line.strip_prefix(field)?.strip_prefix('/'))
            .map(str::to_owned)
            .collect()
    }
    fn made_by(&self, field_manager: &str) -> bool {
        self.applied.contains_key(field_manager)
    }
}

impl<K: kube::Resource<DynamicType = ()>> Observed for Summary<K> {
    fn payload_digest(&self) -> std::borrow::Cow<'_, PayloadDigest> {
        std::borrow::Cow::Borrowed(&self.payload)
    }
    fn has_string_data(&self) -> bool {
        self.has_string_data
    }
}

impl<K> Clone for Summary<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            applied: self.applied.clone(),
            certificate: self.certificate.clone(),
            payload: self.payload.clone(),
            status: self.status.clone(),
            has_string_data: self.has_string_data,
            stored_bytes: self.stored_bytes,
            kept_off: self.kept_off.clone(),
            undecodable: self.undecodable.clone(),
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
            .field("applied_by", &self.applied)
            .field("payload", &self.payload)
            .field("status", &self.status)
            .field("undecodable", &self.undecodable)
            .finish()
    }
}

/// Read leniently ([`Lenient`]): an object that is not a valid `K` is
/// summarized as [`Summary::undecodable`], so that it never fails the list
/// or watch page it came in.
impl<'de, K: Summarize> Deserialize<'de> for Summary<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let read = Lenient::<K>::from_json(raw.get()).map_err(serde::de::Error::custom)?;
        let mut summary = Summary::of_lenient(read);
        summary.stored_bytes = raw.get().len();
        Ok(summary)
    }
}

impl<K: Summarize> Summary<K> {
    /// The summary of an object read leniently.
    pub fn of_lenient(read: Lenient<K>) -> Self {
        match read {
            Lenient::Decoded(object) => object.summary(),
            Lenient::Undecodable(u) => Summary::undecodable(*u),
        }
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

resource_of_k!(Summary, |this| &this.metadata, &mut this.metadata);

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
    fn a_summary_keeps_each_finalizer_once_and_at_most_sixteen() {
        let mut list = vec!["kubelb.k8c.io/cleanup".to_owned(); 50_000];
        list.insert(3, "example.com/other".to_owned());
        let summary: Summary<SyncSecret> = serde_json::from_value(json!({
            "apiVersion": "kubelb.k8c.io/v1alpha1",
            "kind": "SyncSecret",
            "metadata": {"name": "c", "namespace": "tenant-a", "finalizers": list},
        }))
        .unwrap();
        assert_eq!(
            summary.metadata.finalizers.unwrap(),
            ["kubelb.k8c.io/cleanup", "example.com/other"]
        );
        let many: Vec<String> = (0..40).map(|i| format!("example.com/f{i}")).collect();
        let kept = kept_finalizers(Some(many.clone())).unwrap();
        assert_eq!(kept, many[..KEPT_FINALIZERS]);
        // Ours after sixteen others: still seen, so still taken off.
        let mut late = many.clone();
        late.push(FINALIZER.to_owned());
        let kept = kept_finalizers(Some(late)).unwrap();
        assert_eq!(kept.len(), KEPT_FINALIZERS);
        assert_eq!(kept[..KEPT_FINALIZERS - 1], many[..KEPT_FINALIZERS - 1]);
        assert_eq!(kept.last().map(String::as_str), Some(FINALIZER));
    }

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

    #[test]
    fn a_summary_knows_how_large_the_object_it_was_read_from_is() {
        let text = r#"{"apiVersion":"kubelb.k8c.io/v1alpha1","kind":"SyncSecret","metadata":{"name":"c","managedFields":[{"manager":"m","fieldsV1":{"f:spec":{"f:made-up":{}}}}]},"data":{"k":"dg=="}}"#;
        let summary: Summary<SyncSecret> = serde_json::from_str(text).unwrap();
        assert_eq!(summary.stored_bytes, text.len(), "managedFields included");
        let undecodable = text.replace(r#""dg==""#, "42");
        let summary: Summary<SyncSecret> = serde_json::from_str(&undecodable).unwrap();
        assert!(summary.unreadable().is_some());
        assert_eq!(summary.stored_bytes, undecodable.len());
        let fresh: crate::cache::delivered::Fresh<SyncSecret> = serde_json::from_str(text).unwrap();
        assert_eq!(fresh.into_parts().0.stored_bytes, text.len());
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

#[cfg(test)]
mod applied {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::{Value, json};

    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            api_version: Some("v1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: Some(FieldsV1(fields)),
            time: None,
            subresource: None,
        }
    }

    fn secret() -> Secret {
        let mut s = Secret::default();
        s.metadata.managed_fields = Some(vec![
            entry(
                "ours",
                "Apply",
                json!({"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}, "f:kubelb.k8c.io/origin-name": {}}, "f:annotations": {"f:y": {}}, "f:finalizers": {}}}),
            ),
            entry(
                "kubectl",
                "Apply",
                json!({"f:metadata": {"f:labels": {"f:z": {}}}}),
            ),
            entry("status-writer", "Update", json!({"f:status": {}})),
        ]);
        s
    }

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn a_summary_reads_the_applied_keys_as_the_whole_object_does() {
        let whole = secret();
        let summary = whole.clone().summary();
        assert_eq!(summary.metadata.managed_fields, None, "no tree is kept");
        for (manager, field, want) in [
            ("ours", "labels", keys(&["kubelb.k8c.io/origin-name", "x"])),
            ("ours", "annotations", keys(&["y"])),
            ("kubectl", "labels", keys(&["z"])),
            ("kubectl", "annotations", keys(&[])),
            ("status-writer", "labels", keys(&[])),
        ] {
            assert_eq!(
                whole.applied_keys(manager, field),
                want,
                "{manager} {field}"
            );
            assert_eq!(
                summary.applied_keys(manager, field),
                want,
                "{manager} {field}"
            );
        }
        for (manager, made) in [("ours", true), ("kubectl", true), ("status-writer", false)] {
            assert_eq!(whole.made_by(manager), made, "{manager}");
            assert_eq!(summary.made_by(manager), made, "{manager}");
        }
    }

    #[test]
    fn a_cache_keeps_only_its_own_controllers_applies() {
        let mut summary = secret().summary();
        summary.keep_applied_by(Some("ours"));
        assert!(summary.made_by("ours"));
        assert_eq!(summary.applied_keys("ours", "annotations"), keys(&["y"]));
        assert!(!summary.made_by("kubectl"));
        assert!(summary.applied_keys("kubectl", "labels").is_empty());
        summary.keep_applied_by(None);
        assert!(!summary.made_by("ours"));
        assert!(summary.applied_keys("ours", "labels").is_empty());
    }
}

#[cfg(test)]
mod kept_off {
    use super::*;

    #[test]
    fn a_cache_keeps_only_the_allowed_metadata_and_names_what_it_dropped() {
        let mut copy = SyncSecret::default();
        let labels: BTreeMap<String, String> = (0..10)
            .map(|i| (format!("l{i}"), "x".repeat(1000)))
            .chain([("app".to_owned(), "shop".to_owned())])
            .collect();
        copy.metadata.labels = Some(labels);
        copy.metadata.annotations = Some([("big".to_owned(), "y".repeat(10_000))].into());
        let mut summary = copy.summary();
        summary.retain_metadata(&|k| k == "app");
        assert_eq!(summary.label("app"), Some("shop"));
        assert_eq!(summary.labels().iter().count(), 1);
        assert!(
            summary.annotations().iter().next().is_none(),
            "nothing big is held"
        );
        let off = summary.kept_off().unwrap();
        assert_eq!(off.labels_total, 10);
        assert_eq!(off.labels.len(), KeptOff::NAMED);
        assert_eq!(off.labels[0], "l0");
        assert_eq!(off.annotations, ["big"]);
        summary.retain_metadata(&|_| true);
        assert!(summary.kept_off().is_none());
    }
}

#[cfg(test)]
mod decisions {
    use syncsecret_api::contract::LAST_APPLIED_ANNOTATION;
    use syncsecret_api::desired::{
        desired_copy, desired_copy_metadata, desired_secret, desired_secret_metadata,
    };
    use syncsecret_api::policy::Policy;

    use super::*;

    #[test]
    fn the_sweep_finds_the_same_orphans_in_a_cache_as_in_whole_copies() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        use syncsecret_api::contract::{LABEL_ORIGIN_NAME, LABEL_ORIGIN_NS};
        use syncsecret_api::sweep::orphaned_copies;
        let copy = |uid: &str, origin: &str, by: &str| {
            let mut c = SyncSecret::default();
            c.metadata.name = Some(uid.into());
            c.metadata.labels = Some(
                [
                    (LABEL_ORIGIN_NAME.to_owned(), origin.to_owned()),
                    (LABEL_ORIGIN_NS.to_owned(), "shop".to_owned()),
                ]
                .into(),
            );
            c.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
                manager: Some(by.into()),
                operation: Some("Apply".into()),
                ..Default::default()
            }]);
            c
        };
        let whole = vec![
            copy("uid-live", "live", "syncsecret-ccm"),
            copy("uid-gone", "gone", "syncsecret-ccm"),
            copy("uid-foreign", "gone", "someone-else"),
        ];
        let tenant = |_: &str, name: &str| (name == "live").then(|| "uid-live".to_owned());
        let mut cached: Vec<Summary<SyncSecret>> =
            whole.iter().cloned().map(Summarize::summary).collect();
        for c in &mut cached {
            c.keep_applied_by(Some("syncsecret-ccm"));
        }
        let found = orphaned_copies(&whole, tenant, "syncsecret-ccm", "this");
        assert_eq!(found, vec!["uid-gone".to_owned()]);
        assert_eq!(
            orphaned_copies(&cached, tenant, "syncsecret-ccm", "this"),
            found
        );
    }

    #[test]
    fn a_copy_as_cached_gives_the_verdict_it_gives_whole() {
        use syncsecret_api::SyncSecretPhase;
        use syncsecret_api::contract::ANNOTATION_ORIGIN_GENERATION;
        use syncsecret_api::status::{mirrored, status};
        let mut copy = SyncSecret::default();
        copy.metadata.generation = Some(3);
        copy.metadata.annotations =
            Some([(ANNOTATION_ORIGIN_GENERATION.to_owned(), "5".to_owned())].into());
        copy.status = Some(status(
            SyncSecretPhase::Failed,
            Some(3),
            false,
            "ApplySecretFailed",
            "denied".into(),
        ));
        let whole = mirrored(&copy, None);
        assert!(whole.is_some());
        assert_eq!(mirrored(&copy.summary(), None), whole);
    }

    /// A tenant object with labels, annotations (one kubectl's), data and
    /// stringData: everything the copy's metadata and payload come from.
    fn tenant() -> SyncSecret {
        let object = serde_json::json!({
            "apiVersion": "kubelb.k8c.io/v1alpha1",
            "kind": "SyncSecret",
            "metadata": {
                "name": "db", "namespace": "shop", "generation": 7,
                "uid": "11111111-2222-3333-4444-555555555555", "resourceVersion": "42",
                "finalizers": ["kubelb.k8c.io/cleanup"],
                "labels": {"app": "shop"},
                "annotations": {"note": "keep", (LAST_APPLIED_ANNOTATION): "{}"},
            },
            "type": "Opaque",
            "data": {"user": "YXBw"},
            "stringData": {"password": "pw"},
        });
        serde_json::from_value(object).unwrap()
    }

    #[test]
    fn what_is_decided_from_a_cache_is_what_is_written_from_the_whole_object() {
        let whole = tenant();
        let cached = whole.clone().summary();
        let copy = desired_copy(&whole, "tenant-a", None).unwrap();
        assert_eq!(
            desired_copy_metadata(&cached, "tenant-a", None),
            Some(copy.metadata.clone()),
            "the copy's metadata from the tenant object as cached"
        );
        assert_eq!(
            cached.payload,
            Payload::of_sync_secret(&copy).digested(),
            "the tenant object's digest is its copy's"
        );
        let mut copy = copy;
        copy.metadata.uid = Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into());
        copy.metadata
            .annotations
            .get_or_insert_default()
            .insert("kubernetes.io/service-account.name".into(), "x".into());
        let policy = Policy::default();
        let secret = desired_secret(&copy, &policy).unwrap();
        let cached = copy.clone().summary();
        assert_eq!(
            desired_secret_metadata(&cached, &policy),
            Some(secret.metadata.clone()),
            "the Secret's metadata from the copy as cached, the policy applied"
        );
        assert_eq!(cached.payload, Payload::of_secret(&secret).digested());
    }
}
