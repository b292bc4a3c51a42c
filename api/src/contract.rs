//! Every name ccm and manager must agree on, and the naming rules.
//!
//! These strings are KubeLB's: changing one breaks compatibility with KubeLB's
//! own controllers and with objects already in clusters.

use kube_core::ResourceExt;

/// The API group.
pub const GROUP: &str = "kubelb.k8c.io";

/// The finalizer both controllers put on the SyncSecrets they act on: the ccm
/// on the tenant object (held until the management copy is gone), the manager
/// on the copy (held until its Secret is gone).
pub const FINALIZER: &str = "kubelb.k8c.io/cleanup";

/// Label on the copy and the Secret: the tenant object's name.
pub const LABEL_ORIGIN_NAME: &str = "kubelb.k8c.io/origin-name";
/// Label on the copy and the Secret: the tenant object's namespace.
pub const LABEL_ORIGIN_NAMESPACE: &str = "kubelb.k8c.io/origin-namespace";
/// The short form of [`LABEL_ORIGIN_NAMESPACE`] that KubeLB's own controllers
/// write; we write both so that either side's selectors keep working.
pub const LABEL_ORIGIN_NS: &str = "kubelb.k8c.io/origin-ns";

/// Selector label: a tenant Secret with this label set to
/// [`MANAGED_BY_KUBELB`] is turned into a SyncSecret by the ccm's synchronizer.
pub const LABEL_MANAGED_BY: &str = "kubelb.k8c.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`] that selects a Secret.
pub const MANAGED_BY_KUBELB: &str = "kubelb";

/// kubectl's client-side-apply annotation: it holds the whole object, payload
/// in clear, so it is never copied anywhere.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Annotation on the copy: the tenant object's `metadata.generation` whose
/// content the copy holds, so that the tenant's `status.observedGeneration`
/// can say "the management cluster holds this generation".
pub const ANNOTATION_ORIGIN_GENERATION: &str = "kubelb.k8c.io/origin-generation";

/// Field manager of the ccm's server-side applies.
pub const FIELD_MANAGER_CCM: &str = "syncsecret-ccm";
/// Field manager of the manager's server-side applies.
pub const FIELD_MANAGER_MANAGER: &str = "syncsecret-manager";

/// Prefix of tenant namespaces in the management cluster (KubeLB's convention).
pub const TENANT_NAMESPACE_PREFIX: &str = "tenant-";

/// The management-cluster namespace of a tenant: its cluster name with
/// `tenant-` in front unless it already starts with it (as KubeLB's ccm does).
pub fn tenant_namespace(cluster_name: &str) -> String {
    tenant_namespace_with(TENANT_NAMESPACE_PREFIX, cluster_name)
}

/// [`tenant_namespace`] for a platform whose tenant namespaces start with
/// `prefix` (the manager's and the ccm's `--tenant-namespace-prefix`).
pub fn tenant_namespace_with(prefix: &str, cluster_name: &str) -> String {
    if cluster_name.starts_with(prefix) {
        cluster_name.to_owned()
    } else {
        format!("{prefix}{cluster_name}")
    }
}

/// Annotation on every copy: the tenant cluster it came from (the UID of
/// that cluster's kube-system namespace). Two clusters whose ccms claim
/// one cluster name write into one tenant namespace; by this each tells
/// the other's copies from its own and never sweeps them.
pub const ANNOTATION_ORIGIN_CLUSTER: &str = "kubelb.k8c.io/origin-cluster";

/// Namespaces of the management cluster that are never a tenant's,
/// whatever the prefix: the manager would write Secrets there for whoever
/// may write copies there.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Why `prefix` cannot mark tenant namespaces, if it cannot: empty (every
/// namespace would be a tenant's), or one that makes a system namespace or
/// the manager's own (`manager_namespace`) a tenant's.
pub fn check_tenant_prefix(prefix: &str, manager_namespace: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err(
            "the tenant namespace prefix is empty: every namespace, kube-system included, would be a tenant's"
                .to_owned(),
        );
    }
    match SYSTEM_NAMESPACES
        .iter()
        .copied()
        .chain([manager_namespace])
        .find(|ns| ns.starts_with(prefix))
    {
        Some(ns) => Err(format!(
            "the tenant namespace prefix {prefix:?} makes namespace {ns} a tenant's; choose one no system namespace starts with (KubeLB's is \"tenant-\")"
        )),
        None => Ok(()),
    }
}

/// The name of the management copy of a tenant SyncSecret: the tenant
/// object's UID, unique across all namespaces of one tenant cluster. `None`
/// for an object that has not been stored yet.
pub fn copy_name(tenant_object: &impl ResourceExt) -> Option<String> {
    tenant_object.uid()
}

/// The name of the Secret the manager makes from a copy: the copy's UID.
pub fn secret_name(copy: &impl ResourceExt) -> Option<String> {
    copy.uid()
}

#[cfg(test)]
mod prefix {
    use super::*;

    #[test]
    fn a_tenant_namespace_is_the_cluster_name_with_the_prefix_once() {
        assert_eq!(tenant_namespace("shop"), "tenant-shop");
        assert_eq!(tenant_namespace("tenant-shop"), "tenant-shop");
        assert_eq!(tenant_namespace_with("team-", "shop"), "team-shop");
        assert_eq!(tenant_namespace_with("team-", "team-shop"), "team-shop");
        assert_eq!(
            tenant_namespace_with("team-", "tenant-shop"),
            "team-tenant-shop"
        );
    }

    #[test]
    fn a_prefix_that_covers_a_system_or_the_managers_namespace_is_refused() {
        assert!(check_tenant_prefix("tenant-", "kubelb").is_ok());
        for (prefix, names) in [
            ("", "empty"),
            ("kube-", "kube-system"),
            ("k", "kube-system"),
            ("def", "default"),
            ("kubelb", "kubelb"),
        ] {
            let e = check_tenant_prefix(prefix, "kubelb").unwrap_err();
            assert!(e.contains(names), "{prefix:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncSecret;

    #[test]
    fn tenant_namespace_is_prefixed_once() {
        assert_eq!(tenant_namespace("alpha"), "tenant-alpha");
        assert_eq!(tenant_namespace("tenant-alpha"), "tenant-alpha");
    }

    #[test]
    fn names_come_from_uids() {
        let mut ss = SyncSecret::default();
        assert_eq!(copy_name(&ss), None);
        ss.metadata.uid = Some("0b7e6c1a-4f5d-4c1e-9d8e-1f2a3b4c5d6e".into());
        assert_eq!(
            copy_name(&ss).as_deref(),
            Some("0b7e6c1a-4f5d-4c1e-9d8e-1f2a3b4c5d6e")
        );
        assert_eq!(secret_name(&ss), copy_name(&ss));
    }
}
