//! The permissions each controller needs, written once: the generated RBAC
//! under `config/rbac/` and the e2e tests (which run the controllers with
//! exactly these grants, nothing more) use these same rules.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use syncsecret_api::contract::GROUP;
use syncsecret_api::v1alpha1::PLURAL;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(owned(groups)),
        resources: Some(owned(resources)),
        verbs: owned(verbs),
        ..Default::default()
    }
}

const READ_WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// Events the controllers publish (events.k8s.io, as kube-runtime does).
fn events_rule() -> PolicyRule {
    rule(&["events.k8s.io"], &["events"], &["create", "patch"])
}

/// The ccm in its tenant cluster, cluster-wide: SyncSecrets (and their
/// status and finalizers) in every namespace, and events.
pub fn ccm_tenant_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[GROUP], &[PLURAL], READ_WRITE),
        rule(
            &[GROUP],
            &[&format!("{PLURAL}/status")],
            &["get", "update", "patch"],
        ),
        rule(&[GROUP], &[&format!("{PLURAL}/finalizers")], &["update"]),
        events_rule(),
        // The cluster's identity (kube-system's UID), stamped on copies.
        PolicyRule {
            resource_names: Some(vec!["kube-system".to_owned()]),
            ..rule(&[""], &["namespaces"], &["get"])
        },
    ]
}

/// What the ccm's Secret synchronizer adds: Secrets, read and patched (it
/// lists only labelled ones and writes only its finalizer on them, but RBAC
/// cannot say so; without the synchronizer, do not bind this).
pub fn ccm_synchronizer_rules() -> Vec<PolicyRule> {
    vec![rule(
        &[""],
        &["secrets"],
        &["get", "list", "watch", "update", "patch"],
    )]
}

/// The ccm's identity in the management cluster, in its own tenant
/// namespace only: keep its copies (read, watch, write, delete).
pub fn ccm_management_rules() -> Vec<PolicyRule> {
    vec![rule(&[GROUP], &[PLURAL], READ_WRITE)]
}

/// The manager, cluster-wide in the management cluster: copies (and their
/// status and finalizers) and reading Secrets (one watch of the Secrets
/// carrying its origin label, in every namespace). It writes Secrets and
/// events only where [`manager_tenant_rules`] are bound: in tenant
/// namespaces, never kube-system or a namespace no tenant owns.
pub fn manager_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[GROUP],
            &[PLURAL],
            &["get", "list", "watch", "update", "patch"],
        ),
        rule(
            &[GROUP],
            &[&format!("{PLURAL}/status")],
            &["get", "update", "patch"],
        ),
        rule(&[GROUP], &[&format!("{PLURAL}/finalizers")], &["update"]),
        rule(&[""], &["secrets"], &["get", "list", "watch"]),
    ]
}

/// The manager in one tenant namespace: the Secrets it makes from that
/// tenant's copies, and events on them.
pub fn manager_tenant_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &["secrets"],
            &["create", "update", "patch", "delete"],
        ),
        // The tenant's quota of copies sizes its write budget.
        rule(&[""], &["resourcequotas"], &["get"]),
        events_rule(),
    ]
}

/// Leader election: the Lease in the controller's own namespace.
pub fn leader_election_rules() -> Vec<PolicyRule> {
    vec![rule(
        &["coordination.k8s.io"],
        &["leases"],
        &["get", "create", "update"],
    )]
}

/// The manager's Leases: its own, and a list of the others' to know which
/// tenant namespaces its shard acts on (`serve::shards`).
pub fn manager_lease_rules() -> Vec<PolicyRule> {
    vec![rule(
        &["coordination.k8s.io"],
        &["leases"],
        &["get", "list", "create", "update"],
    )]
}

/// The manager in its own namespace: the ConfigMap that lists the tenants
/// whose writes are paused (the pause policy's params,
/// [`syncsecret_api::admission::PAUSE_CONFIG_MAP`]). Applied, so created
/// by a patch where it is missing.
pub fn manager_pause_rules() -> Vec<PolicyRule> {
    let mut named = rule(&[""], &["configmaps"], &["get", "patch"]);
    named.resource_names = Some(vec![syncsecret_api::admission::PAUSE_CONFIG_MAP.to_owned()]);
    vec![named, rule(&[""], &["configmaps"], &["create"])]
}

/// Name of the ccm's roles.
pub const CCM_ROLE: &str = "syncsecret-ccm";
/// Name of the manager's roles.
pub const MANAGER_ROLE: &str = "syncsecret-manager";
/// Name of the ccm synchronizer's extra ClusterRole.
pub const CCM_SYNCHRONIZER_ROLE: &str = "syncsecret-ccm-synchronizer";

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..Default::default()
    }
}

/// A Role `name` in `namespace` with `rules`, bound to `subject`.
pub fn role(
    name: &str,
    namespace: &str,
    rules: Vec<PolicyRule>,
    subject: Subject,
) -> (Role, RoleBinding) {
    let role = Role {
        metadata: meta(name, Some(namespace)),
        rules: Some(rules),
    };
    let binding = RoleBinding {
        metadata: meta(name, Some(namespace)),
        role_ref: RoleRef {
            api_group: Some(RBAC_GROUP.to_owned()),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![subject]),
    };
    (role, binding)
}

/// A ClusterRole `name` with `rules`, bound to `subject`.
pub fn cluster_role(
    name: &str,
    rules: Vec<PolicyRule>,
    subject: Subject,
) -> (ClusterRole, ClusterRoleBinding) {
    let role = ClusterRole {
        metadata: meta(name, None),
        rules: Some(rules),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: RoleRef {
            api_group: Some(RBAC_GROUP.to_owned()),
            kind: "ClusterRole".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![subject]),
    };
    (role, binding)
}

/// The Role and RoleBinding that let `subject` (the ccm's identity in the
/// management cluster) keep copies in `tenant_namespace` only.
pub fn ccm_management_access(tenant_namespace: &str, subject: Subject) -> (Role, RoleBinding) {
    role(CCM_ROLE, tenant_namespace, ccm_management_rules(), subject)
}

/// A ServiceAccount subject.
pub fn service_account(name: &str, namespace: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".to_owned(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
        api_group: None,
    }
}

/// A user subject (a client certificate's common name).
pub fn user(name: &str) -> Subject {
    Subject {
        kind: "User".to_owned(),
        name: name.to_owned(),
        namespace: None,
        api_group: Some(RBAC_GROUP.to_owned()),
    }
}
