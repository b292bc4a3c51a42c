//! Orphans: copies whose tenant object is gone, Secrets whose copy is gone.
//! They appear when a finalizer was stripped by hand while a controller was
//! down, or a namespace was force-deleted. Only objects we made are ever
//! swept: they carry our origin labels and our field manager's entry.

use std::collections::HashSet;

use kube_core::ResourceExt;

use crate::contract::{
    ANNOTATION_ORIGIN_CLUSTER, LABEL_ORIGIN_NAME, LABEL_ORIGIN_NAMESPACE, LABEL_ORIGIN_NS,
};
use crate::labelled::Labelled;

/// The tenant object a copy names: (namespace, name), from its origin labels.
pub fn origin(copy: &impl Labelled) -> Option<(String, String)> {
    let name = copy.label(LABEL_ORIGIN_NAME)?;
    let namespace = copy
        .label(LABEL_ORIGIN_NAMESPACE)
        .or_else(|| copy.label(LABEL_ORIGIN_NS))?;
    Some((namespace.to_owned(), name.to_owned()))
}

/// Copies (names) made by `field_manager` whose tenant object no longer
/// exists: `tenant_uid(namespace, name)` gives the UID of the live tenant
/// object of that name, if any; a copy is named by its tenant's UID, so a
/// different UID means the copy's tenant was deleted and another made since.
pub fn orphaned_copies<'a, K: Labelled + 'a>(
    copies: impl IntoIterator<Item = &'a K>,
    tenant_uid: impl Fn(&str, &str) -> Option<String>,
    field_manager: &str,
    cluster: &str,
) -> Vec<String> {
    copies
        .into_iter()
        .filter(|c| c.meta().deletion_timestamp.is_none() && c.made_by(field_manager))
        .filter(|c| !from_another_cluster(*c, cluster))
        .filter_map(|c| {
            let (namespace, name) = origin(c)?;
            let alive = tenant_uid(&namespace, &name).is_some_and(|uid| uid == c.name_any());
            (!alive).then(|| c.name_any())
        })
        .collect()
}

/// Whether `copy` says it came from a tenant cluster other than `cluster`
/// (another ccm claims the same cluster name). A copy that says nothing
/// (made before the annotation, or by KubeLB) is taken as this cluster's.
pub fn from_another_cluster(copy: &impl Labelled, cluster: &str) -> bool {
    copy.annotation(ANNOTATION_ORIGIN_CLUSTER)
        .is_some_and(|c| c != cluster)
}

/// Secrets (namespace, name) made by `field_manager`, carrying our origin
/// label, whose copy (named by the Secret's name, its owner by UID) no longer
/// exists among `copy_uids`.
pub fn orphaned_secrets<'a, K: Labelled + 'a>(
    secrets: impl IntoIterator<Item = &'a K>,
    copy_uids: &HashSet<String>,
    field_manager: &str,
) -> Vec<(String, String)> {
    secrets
        .into_iter()
        .filter(|s| {
            s.meta().deletion_timestamp.is_none()
                && s.label(LABEL_ORIGIN_NAME).is_some()
                && s.made_by(field_manager)
        })
        .filter(|s| !copy_uids.contains(&s.name_any()))
        .filter_map(|s| Some((s.namespace()?, s.name_any())))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use crate::v1alpha1::SyncSecret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    fn managed(by: &str) -> Option<Vec<ManagedFieldsEntry>> {
        Some(vec![ManagedFieldsEntry {
            manager: Some(by.into()),
            operation: Some("Apply".into()),
            ..Default::default()
        }])
    }

    fn copy(uid_name: &str, origin_name: &str, by: &str) -> SyncSecret {
        let mut c = SyncSecret::default();
        c.metadata.name = Some(uid_name.into());
        c.metadata.labels = Some(
            [
                (LABEL_ORIGIN_NAME.to_owned(), origin_name.to_owned()),
                (LABEL_ORIGIN_NS.to_owned(), "shop".to_owned()),
            ]
            .into(),
        );
        c.metadata.managed_fields = managed(by);
        c
    }

    #[test]
    fn a_copy_another_cluster_made_under_our_name_is_never_an_orphan() {
        let stamped = |uid: &str, cluster: Option<&str>| {
            let mut c = copy(uid, "gone", "syncsecret-ccm");
            if let Some(cluster) = cluster {
                c.metadata.annotations =
                    Some([(ANNOTATION_ORIGIN_CLUSTER.to_owned(), cluster.to_owned())].into());
            }
            c
        };
        let copies = [
            stamped("uid-ours", Some("this")),
            stamped("uid-theirs", Some("other")),
            stamped("uid-unstamped", None),
        ];
        let orphans = orphaned_copies(&copies, |_, _| None, "syncsecret-ccm", "this");
        assert_eq!(orphans, ["uid-ours", "uid-unstamped"]);
        assert!(from_another_cluster(&copies[1], "this"));
        assert!(!from_another_cluster(&copies[2], "this"));
    }

    #[test]
    fn a_copy_is_orphaned_when_its_tenant_object_is_gone_or_was_replaced() {
        let copies = [
            copy("uid-live", "live", "syncsecret-ccm"),
            copy("uid-gone", "gone", "syncsecret-ccm"),
            copy("uid-old", "recreated", "syncsecret-ccm"),
            copy("uid-foreign", "gone", "someone-else"),
        ];
        let tenant = |ns: &str, name: &str| match (ns, name) {
            ("shop", "live") => Some("uid-live".to_owned()),
            ("shop", "recreated") => Some("uid-new".to_owned()),
            _ => None,
        };
        let orphans = orphaned_copies(&copies, tenant, "syncsecret-ccm", "this");
        assert_eq!(orphans, vec!["uid-gone".to_owned(), "uid-old".to_owned()]);
    }

    #[test]
    fn a_secret_is_orphaned_when_its_copy_is_gone() {
        let mk = |name: &str, labelled: bool, by: &str| Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("tenant-a".into()),
                labels: labelled.then(|| [(LABEL_ORIGIN_NAME.to_owned(), "x".to_owned())].into()),
                managed_fields: managed(by),
                ..Default::default()
            },
            ..Default::default()
        };
        let secrets = [
            mk("copy-live", true, "syncsecret-manager"),
            mk("copy-gone", true, "syncsecret-manager"),
            mk("unlabelled", false, "syncsecret-manager"),
            mk("foreign", true, "kubectl"),
        ];
        let live: HashSet<String> = ["copy-live".to_owned()].into();
        let orphans = vec![("tenant-a".to_owned(), "copy-gone".to_owned())];
        assert_eq!(
            orphaned_secrets(&secrets, &live, "syncsecret-manager"),
            orphans
        );
    }
}
