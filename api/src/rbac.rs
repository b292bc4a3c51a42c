//! The permissions each controller needs, written once; the generated RBAC
//! under `config/rbac/` (and the charts' templates) and the e2e tests use
//! these same rules.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::contract::GROUP;
use crate::v1alpha1::PLURAL;

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(owned(groups)),
        resources: Some(owned(resources)),
        verbs: owned(verbs),
        ..Default::default()
    }
}

/// What the ccm's management identity may do in its own tenant namespace,
/// and nowhere else: keep its copies (read, watch, write, delete).
pub fn ccm_management_rules() -> Vec<PolicyRule> {
    vec![rule(
        &[GROUP],
        &[PLURAL],
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    )]
}

/// Name of the ccm's Role and RoleBinding in a tenant namespace.
pub const CCM_MANAGEMENT_ROLE: &str = "syncsecret-ccm";

/// The Role and RoleBinding that let `user` (the ccm's identity in the
/// management cluster) keep copies in `tenant_namespace` only.
pub fn ccm_management_access(tenant_namespace: &str, subject: Subject) -> (Role, RoleBinding) {
    let meta = ObjectMeta {
        name: Some(CCM_MANAGEMENT_ROLE.to_owned()),
        namespace: Some(tenant_namespace.to_owned()),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(ccm_management_rules()),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: CCM_MANAGEMENT_ROLE.to_owned(),
        },
        subjects: Some(vec![subject]),
    };
    (role, binding)
}
