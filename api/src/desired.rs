//! What each controller writes, decided by pure functions: the ccm's copy of a
//! tenant SyncSecret, the manager's Secret for a copy, and whether a live
//! object already is what would be written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube_core::{Resource, ResourceExt};

use crate::contract::{
    ANNOTATION_ORIGIN_CLUSTER, ANNOTATION_ORIGIN_GENERATION, FINALIZER, LABEL_ORIGIN_NAME,
    LABEL_ORIGIN_NAMESPACE, LABEL_ORIGIN_NS, LAST_APPLIED_ANNOTATION, copy_name, secret_name,
};
use crate::labelled::{Labelled, Observed};
use crate::payload::{Payload, PayloadDigest, contains_all, effective_data};
use crate::policy::Policy;
use crate::v1alpha1::SyncSecret;

/// Annotations that are never carried across: kubectl's last-applied
/// configuration holds the whole object, payload in clear.
fn carried_annotations(obj: &impl Labelled) -> BTreeMap<String, String> {
    let mut annotations = obj.annotation_map();
    annotations.remove(LAST_APPLIED_ANNOTATION);
    annotations
}

fn non_empty(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

/// The copy of a tenant SyncSecret in the tenant's namespace of the
/// management cluster: named by the tenant object's UID; its labels plus the
/// origin labels; its annotations but kubectl's last-applied one, plus its
/// generation (`kubelb.k8c.io/origin-generation`); its
/// `type`, its effective data (`stringData` merged over `data`, in
/// `data` only) and `immutable`. Born with the manager's finalizer, so
/// that the manager need not patch it on (one write per object fewer; a
/// copy without it still gets it from the manager). Never its UID,
/// resourceVersion, ownerReferences, managedFields or status.
/// `None` if the tenant object has no UID or namespace (not stored yet).
pub fn desired_copy(
    tenant: &SyncSecret,
    tenant_namespace: &str,
    cluster: Option<&str>,
) -> Option<SyncSecret> {
    // stringData merged into data: no value is stored (or written to an
    // audit log) in clear in the management cluster.
    let data = (tenant.data.is_some() || tenant.string_data.is_some())
        .then(|| effective_data(tenant.data.as_ref(), tenant.string_data.as_ref()));
    Some(SyncSecret {
        metadata: desired_copy_metadata(tenant, tenant_namespace, cluster)?,
        type_: tenant.type_.clone(),
        data,
        string_data: None,
        immutable: tenant.immutable,
        status: None,
    })
}

/// The metadata of [`desired_copy`], from the tenant object whole or as
/// cached: what decides, with the payload's digest, whether the copy is to
/// be written.
pub fn desired_copy_metadata(
    tenant: &impl Labelled,
    tenant_namespace: &str,
    cluster: Option<&str>,
) -> Option<ObjectMeta> {
    let name = copy_name(tenant)?;
    let origin_namespace = tenant.namespace()?;
    let mut labels = tenant.label_map();
    labels.insert(LABEL_ORIGIN_NAME.into(), tenant.name_any());
    labels.insert(LABEL_ORIGIN_NAMESPACE.into(), origin_namespace.clone());
    labels.insert(LABEL_ORIGIN_NS.into(), origin_namespace);
    let mut annotations = carried_annotations(tenant);
    if let Some(g) = tenant.meta().generation {
        annotations.insert(ANNOTATION_ORIGIN_GENERATION.into(), g.to_string());
    }
    if let Some(c) = cluster {
        annotations.insert(ANNOTATION_ORIGIN_CLUSTER.into(), c.to_owned());
    }
    Some(ObjectMeta {
        name: Some(name),
        namespace: Some(tenant_namespace.to_owned()),
        labels: Some(labels),
        annotations: non_empty(annotations),
        finalizers: Some(vec![FINALIZER.to_owned()]),
        ..Default::default()
    })
}

/// The Secret for a management copy: named by the copy's UID, in its
/// namespace, with its type, effective data (stringData merged over data)
/// and immutable, its labels and annotations but those the policy drops
/// (service-account binding, kubectl's last-applied), and a controller
/// ownerReference to the copy so that the garbage collector is the backstop.
/// `None` if the copy has no UID or namespace.
pub fn desired_secret(copy: &SyncSecret, policy: &Policy) -> Option<Secret> {
    let payload = Payload::of_sync_secret(copy);
    Some(Secret {
        metadata: desired_secret_metadata(copy, policy)?,
        type_: Some(payload.type_),
        data: Some(payload.data),
        immutable: payload.immutable.then_some(true),
        string_data: None,
    })
}

/// The metadata of [`desired_secret`], from the copy whole or as cached.
pub fn desired_secret_metadata(copy: &impl Labelled, policy: &Policy) -> Option<ObjectMeta> {
    let owner = OwnerReference {
        api_version: SyncSecret::api_version(&()).into_owned(),
        kind: SyncSecret::kind(&()).into_owned(),
        name: copy.name_any(),
        uid: copy.uid()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    Some(ObjectMeta {
        name: Some(secret_name(copy)?),
        namespace: Some(copy.namespace()?),
        labels: Some(secret_labels(copy, policy)),
        annotations: non_empty(policy.filter(&copy.annotation_map())),
        owner_references: Some(vec![owner]),
        ..Default::default()
    })
}

/// A Secret's labels: the copy's that the policy lets through, and the
/// origin labels, which the manager sets itself (a tenant's own
/// `kubelb.k8c.io/` labels never pass). `origin-name` is on every Secret
/// the manager makes (the copy's name where the copy has none): it is what
/// the manager's watch of its Secrets selects on.
fn secret_labels(copy: &impl Labelled, policy: &Policy) -> BTreeMap<String, String> {
    let mut labels = policy.filter(&copy.label_map());
    let name = copy
        .label(LABEL_ORIGIN_NAME)
        .map_or_else(|| copy.name_any(), str::to_owned);
    labels.insert(LABEL_ORIGIN_NAME.to_owned(), name);
    // Each as the copy carries it: a copy KubeLB's ccm made has only the
    // short one, and so has its Secret (adopted without a write).
    for key in [LABEL_ORIGIN_NAMESPACE, LABEL_ORIGIN_NS] {
        if let Some(ns) = copy.label(key) {
            labels.insert(key.to_owned(), ns.to_owned());
        }
    }
    labels
}

/// Whether applying `desired` would change `live`'s metadata: a wanted label
/// or annotation is missing or different, or one that `field_manager`
/// applied before is no longer wanted (an apply would remove it). Entries
/// that others added are not ours to judge.
pub fn metadata_differs(live: &impl Labelled, desired: &ObjectMeta, field_manager: &str) -> bool {
    let empty = BTreeMap::new();
    let want_labels = desired.labels.as_ref().unwrap_or(&empty);
    let want_annotations = desired.annotations.as_ref().unwrap_or(&empty);
    if !contains_all(|k| live.label(k), want_labels)
        || !contains_all(|k| live.annotation(k), want_annotations)
    {
        return true;
    }
    let stale = |field: &str, want: &BTreeMap<String, String>| {
        live.applied_keys(field_manager, field)
            .iter()
            .any(|k| !want.contains_key(k))
    };
    stale("labels", want_labels) || stale("annotations", want_annotations)
}

/// Whether the live copy differs from the desired one (its metadata,
/// [`desired_copy_metadata`], and its payload's digest) in anything the ccm
/// writes.
///
/// Adoption of copies KubeLB's ccm made: they carry only the short origin
/// label `origin-ns` and no `origin-generation`. The long label is satisfied
/// by the short one with the same value, and `origin-generation` is compared
/// only where present (it comes with the next real write), so that such a
/// copy costs no write while its content matches.
pub fn copy_needs_write(
    live: &impl Observed,
    desired: &ObjectMeta,
    payload: &PayloadDigest,
    field_manager: &str,
) -> bool {
    // A copy carries data only: stringData someone else wrote goes.
    if *live.payload_digest() != *payload || live.has_string_data() {
        return true;
    }
    let mut want = desired.clone();
    if let Some(labels) = want.labels.as_mut()
        && let Some(v) = labels.get(LABEL_ORIGIN_NAMESPACE)
        && live.label(LABEL_ORIGIN_NS) == Some(v.as_str())
        && live.label(LABEL_ORIGIN_NAMESPACE).is_none()
    {
        labels.remove(LABEL_ORIGIN_NAMESPACE);
    }
    // Like origin-generation, origin-cluster comes with the next real write.
    for key in [ANNOTATION_ORIGIN_GENERATION, ANNOTATION_ORIGIN_CLUSTER] {
        if live.annotation(key).is_none()
            && let Some(a) = want.annotations.as_mut()
        {
            a.remove(key);
        }
    }
    metadata_differs(live, &want, field_manager)
}

/// Whether the live Secret differs from the desired one (its metadata,
/// [`desired_secret_metadata`], and its payload's digest) in anything the
/// manager writes (content, metadata, or its ownerReference).
pub fn secret_needs_write(
    live: &impl Observed,
    desired: &ObjectMeta,
    payload: &PayloadDigest,
    field_manager: &str,
) -> bool {
    // Any ownerReference to the same copy will do: KubeLB's manager sets
    // one without `controller`/`blockOwnerDeletion`, and the garbage
    // collector cascades either way (adoption without a write).
    let owners_ok = desired.owner_references.iter().flatten().all(|want| {
        live.meta()
            .owner_references
            .iter()
            .flatten()
            .any(|have| have.uid == want.uid && have.kind == want.kind)
    });
    *live.payload_digest() != *payload
        || !owners_ok
        || metadata_differs(live, desired, field_manager)
}

/// The SyncSecret the ccm's Secret synchronizer makes from a tenant Secret
/// labelled `kubelb.k8c.io/managed-by=kubelb`: same name and namespace, its
/// labels, type, data and immutable. `None` if the Secret has no namespace.
pub fn desired_sync_secret_from_secret(secret: &Secret) -> Option<SyncSecret> {
    let payload = Payload::of_secret(secret);
    Some(SyncSecret {
        metadata: ObjectMeta {
            name: Some(secret.name_any()),
            namespace: Some(secret.namespace()?),
            labels: non_empty(secret.labels().clone()),
            ..Default::default()
        },
        type_: Some(payload.type_),
        data: Some(payload.data),
        string_data: None,
        immutable: payload.immutable.then_some(true),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    use super::*;
    use crate::contract::{FIELD_MANAGER_CCM, FIELD_MANAGER_MANAGER};

    fn tenant() -> SyncSecret {
        SyncSecret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("shop".into()),
                uid: Some("11111111-2222-3333-4444-555555555555".into()),
                resource_version: Some("42".into()),
                generation: Some(7),
                finalizers: Some(vec![
                    "kubelb.k8c.io/cleanup".into(),
                    "example.com/hold".into(),
                ]),
                labels: Some([("app".to_owned(), "shop".to_owned())].into()),
                annotations: Some(
                    [
                        ("note".to_owned(), "keep".to_owned()),
                        (
                            LAST_APPLIED_ANNOTATION.to_owned(),
                            "{\"stringData\":{\"p\":\"secret\"}}".to_owned(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some([("user".to_owned(), ByteString(b"app".to_vec()))].into()),
            string_data: Some([("password".to_owned(), "pw".to_owned())].into()),
            immutable: None,
            status: None,
        }
    }

    /// The reconcilers' question, asked of a whole desired object.
    fn needs_copy(live: &SyncSecret, desired: &SyncSecret, fm: &str) -> bool {
        let digest = Payload::of_sync_secret(desired).digested();
        copy_needs_write(live, &desired.metadata, &digest, fm)
    }

    fn needs_secret(live: &Secret, desired: &Secret, fm: &str) -> bool {
        let digest = Payload::of_secret(desired).digested();
        secret_needs_write(live, &desired.metadata, &digest, fm)
    }

    #[test]
    fn copy_is_named_by_uid_and_carries_origin_labels_but_no_identity() {
        let copy = desired_copy(&tenant(), "tenant-a", None).unwrap();
        assert_eq!(
            copy.metadata.name.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(copy.metadata.namespace.as_deref(), Some("tenant-a"));
        let labels = copy.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_ORIGIN_NAME], "db");
        assert_eq!(labels[LABEL_ORIGIN_NAMESPACE], "shop");
        assert_eq!(labels[LABEL_ORIGIN_NS], "shop");
        assert_eq!(labels["app"], "shop");
        let annotations = copy.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.get("note").map(String::as_str), Some("keep"));
        assert!(!annotations.contains_key(LAST_APPLIED_ANNOTATION));
        assert_eq!(
            annotations
                .get(ANNOTATION_ORIGIN_GENERATION)
                .map(String::as_str),
            Some("7")
        );
        assert_eq!(copy.metadata.uid, None);
        assert_eq!(copy.metadata.resource_version, None);
        assert_eq!(
            copy.metadata.finalizers,
            Some(vec![FINALIZER.to_owned()]),
            "the manager's finalizer only, none of the tenant object's"
        );
        assert_eq!(
            copy.data,
            Some(Payload::of_sync_secret(&tenant()).data),
            "stringData merged into data"
        );
        assert_eq!(copy.string_data, None, "no value in clear");
        assert_eq!(copy.status, None);
    }

    #[test]
    fn no_copy_before_the_tenant_object_is_stored() {
        let mut t = tenant();
        t.metadata.uid = None;
        assert!(desired_copy(&t, "tenant-a", None).is_none());
    }

    #[test]
    fn secret_has_effective_data_and_controller_owner() {
        let mut copy = desired_copy(&tenant(), "tenant-a", None).unwrap();
        copy.metadata.uid = Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into());
        copy.immutable = Some(true);
        let s = desired_secret(&copy, &Policy::default()).unwrap();
        assert_eq!(
            s.metadata.name.as_deref(),
            Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
        );
        assert_eq!(s.metadata.namespace.as_deref(), Some("tenant-a"));
        let data = s.data.as_ref().unwrap();
        assert_eq!(data["user"].0, b"app");
        assert_eq!(data["password"].0, b"pw");
        assert_eq!(s.string_data, None);
        assert_eq!(s.immutable, Some(true));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "SyncSecret");
        assert_eq!(owner.api_version, "kubelb.k8c.io/v1alpha1");
        assert_eq!(owner.uid, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(s.metadata.labels.as_ref().unwrap()[LABEL_ORIGIN_NAME], "db");

        copy.metadata.annotations.get_or_insert_default().insert(
            "kubernetes.io/service-account.name".into(),
            "default".into(),
        );
        let s = desired_secret(&copy, &Policy::default()).unwrap();
        assert_eq!(
            s.metadata.annotations, None,
            "no tenant metadata by default"
        );
        let allowing = Policy {
            allowed_metadata: vec!["note".into(), "kubernetes.io/*".into()],
            ..Policy::default()
        };
        let s = desired_secret(&copy, &allowing).unwrap();
        let annotations = s.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key("kubernetes.io/service-account.name"));
        assert!(annotations.contains_key("note"));
    }

    #[test]
    fn the_manager_sets_the_origin_labels_itself() {
        let mut copy = desired_copy(&tenant(), "tenant-a", None).unwrap();
        copy.metadata.uid = Some("u".into());
        let labels = copy.metadata.labels.get_or_insert_default();
        labels.insert("kubelb.k8c.io/managed-by".into(), "forged".into());
        labels.remove(LABEL_ORIGIN_NAMESPACE);
        let s = desired_secret(&copy, &Policy::default()).unwrap();
        let labels = s.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_ORIGIN_NAME], "db");
        assert!(labels.contains_key(LABEL_ORIGIN_NS));
        assert!(
            !labels.contains_key(LABEL_ORIGIN_NAMESPACE),
            "as the copy has it"
        );
        assert!(!labels.contains_key("kubelb.k8c.io/managed-by"));
        // A copy made by hand, without origin labels, still gets the one
        // the manager's watch selects on.
        copy.metadata.labels = None;
        copy.metadata.name = Some("by-hand".into());
        let s = desired_secret(&copy, &Policy::default()).unwrap();
        assert_eq!(s.metadata.labels.unwrap()[LABEL_ORIGIN_NAME], "by-hand");
    }

    fn applied(manager: &str, labels: &[&str]) -> ManagedFieldsEntry {
        let fields: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|l| (format!("f:{l}"), json!({})))
            .collect();
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(json!({"f:metadata": {"f:labels": fields}}))),
            ..Default::default()
        }
    }

    #[test]
    fn live_copy_equal_in_content_needs_no_write_despite_foreign_labels() {
        let desired = desired_copy(&tenant(), "tenant-a", None).unwrap();
        let mut live = desired.clone();
        // The API server added identity; someone else added a label.
        live.metadata.uid = Some("x".into());
        live.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "ops".into());
        live.metadata.managed_fields = Some(vec![applied(
            FIELD_MANAGER_CCM,
            &["app", LABEL_ORIGIN_NAME],
        )]);
        assert!(!needs_copy(&live, &desired, FIELD_MANAGER_CCM));

        // Content written differently but meaning the same: no write.
        let mut respelled = live.clone();
        respelled.string_data = None;
        respelled.data = Some(
            [
                ("user".to_owned(), ByteString(b"app".to_vec())),
                ("password".to_owned(), ByteString(b"pw".to_vec())),
            ]
            .into(),
        );
        assert!(!needs_copy(&respelled, &desired, FIELD_MANAGER_CCM));
    }

    #[test]
    fn changed_content_or_missing_label_needs_a_write() {
        let desired = desired_copy(&tenant(), "tenant-a", None).unwrap();
        let mut changed = desired.clone();
        changed.string_data = Some([("password".to_owned(), "old".to_owned())].into());
        assert!(needs_copy(&changed, &desired, FIELD_MANAGER_CCM));

        let mut unlabelled = desired.clone();
        unlabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(LABEL_ORIGIN_NS);
        assert!(needs_copy(&unlabelled, &desired, FIELD_MANAGER_CCM));
    }

    #[test]
    fn a_label_we_applied_and_no_longer_want_needs_a_write() {
        let mut t = tenant();
        t.metadata.labels = None;
        let desired = desired_copy(&t, "tenant-a", None).unwrap();
        let mut live = desired.clone();
        live.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("app".into(), "shop".into());
        live.metadata.managed_fields = Some(vec![applied(FIELD_MANAGER_CCM, &["app"])]);
        assert!(needs_copy(&live, &desired, FIELD_MANAGER_CCM));
        // The same label applied by someone else is theirs: no write.
        live.metadata.managed_fields = Some(vec![applied("kubectl", &["app"])]);
        assert!(!needs_copy(&live, &desired, FIELD_MANAGER_CCM));
    }

    #[test]
    fn synchronizer_turns_a_secret_into_a_sync_secret_of_the_same_name() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("registry".into()),
                namespace: Some("ci".into()),
                labels: Some([("kubelb.k8c.io/managed-by".to_owned(), "kubelb".to_owned())].into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some([(".dockerconfigjson".to_owned(), ByteString(b"{}".to_vec()))].into()),
            string_data: Some([("extra".to_owned(), "x".to_owned())].into()),
            immutable: Some(true),
        };
        let ss = desired_sync_secret_from_secret(&secret).unwrap();
        assert_eq!(ss.metadata.name.as_deref(), Some("registry"));
        assert_eq!(ss.metadata.namespace.as_deref(), Some("ci"));
        assert_eq!(ss.metadata.labels, secret.metadata.labels);
        assert_eq!(ss.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        assert_eq!(ss.immutable, Some(true));
        assert!(crate::payload::secret_holds(&ss, &secret));
    }

    #[test]
    fn a_copy_in_kubelbs_shape_is_adopted_without_a_write() {
        let desired = desired_copy(&tenant(), "tenant-a", None).unwrap();
        let mut kubelb = desired.clone();
        let labels = kubelb.metadata.labels.as_mut().unwrap();
        labels.remove(LABEL_ORIGIN_NAMESPACE);
        kubelb
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_ORIGIN_GENERATION);
        kubelb.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubelb".into()),
            operation: Some("Update".into()),
            ..Default::default()
        }]);
        assert!(!needs_copy(&kubelb, &desired, FIELD_MANAGER_CCM));
        // A different short label, or a stale generation, still needs a write.
        let mut other = kubelb.clone();
        other
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_ORIGIN_NS.into(), "elsewhere".into());
        assert!(needs_copy(&other, &desired, FIELD_MANAGER_CCM));
        let mut stale = desired.clone();
        stale
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_ORIGIN_GENERATION.into(), "6".into());
        assert!(needs_copy(&stale, &desired, FIELD_MANAGER_CCM));
    }

    #[test]
    fn secret_needs_write_only_when_content_metadata_or_owner_differ() {
        let mut copy = desired_copy(&tenant(), "tenant-a", None).unwrap();
        copy.metadata.uid = Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into());
        let desired = desired_secret(&copy, &Policy::default()).unwrap();
        let mut live = desired.clone();
        live.metadata
            .annotations
            .get_or_insert_default()
            .insert("foreign".into(), "x".into());
        assert!(!needs_secret(&live, &desired, FIELD_MANAGER_MANAGER));

        let mut no_owner = live.clone();
        no_owner.metadata.owner_references = None;
        assert!(needs_secret(&no_owner, &desired, FIELD_MANAGER_MANAGER));

        let mut tampered = live.clone();
        tampered
            .data
            .as_mut()
            .unwrap()
            .insert("user".into(), ByteString(b"evil".to_vec()));
        assert!(needs_secret(&tampered, &desired, FIELD_MANAGER_MANAGER));
    }
}
