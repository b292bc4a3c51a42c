//! What the management cluster admits from a tenant's identity, enforced
//! by the API server itself so that no tenant can dodge it: a
//! ValidatingAdmissionPolicy on copies (size, metadata size, the shape a
//! ccm writes) and, per tenant namespace, a ResourceQuota on their count.
//! Limits are counted by the management cluster, never from anything the
//! tenant wrote. Pure: the manifest generator renders these into
//! `config/policy/` and the manager chart.

use serde_json::{Value, json};

use crate::contract::{FINALIZER, GROUP, LABEL_ORIGIN_NAME};
use crate::v1alpha1::{PLURAL, VERSION};

/// Name of the policy and its binding.
pub const POLICY_NAME: &str = "syncsecret-tenant-copies";
/// Name of each tenant namespace's ResourceQuota.
pub const QUOTA_NAME: &str = "syncsecret-tenant";

/// The limits, as numbers or as the Helm expressions that render them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most copies per tenant namespace.
    pub copies: String,
    /// Most bytes of base64 `data` per copy (a Secret holds at most 1 MiB
    /// decoded: 1,398,104 base64 characters).
    pub data_bytes: String,
    /// Most bytes of label and annotation keys and values per copy.
    pub metadata_bytes: String,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            copies: DEFAULT_COPIES.to_string(),
            data_bytes: DEFAULT_DATA_BYTES.to_string(),
            metadata_bytes: DEFAULT_METADATA_BYTES.to_string(),
        }
    }
}

/// Default of [`Limits::copies`].
pub const DEFAULT_COPIES: u32 = 1000;
/// Default of [`Limits::data_bytes`]: the base64 of 1 MiB.
pub const DEFAULT_DATA_BYTES: u32 = 1_398_104;
/// Default of [`Limits::metadata_bytes`]: far above what a ccm copies for
/// a few labels and annotations, far below the API server's 256 KiB of
/// annotations, which, times every copy, is what the manager would
/// otherwise have to hold.
pub const DEFAULT_METADATA_BYTES: u32 = 16_384;

/// The ValidatingAdmissionPolicy on copies written in namespaces starting
/// with `prefix` by anyone but the cluster's admins (`system:masters`) and
/// the manager (`manager_user`, which only adds its finalizer and writes
/// status). Each refusal says what to change; the ccm shows it in the
/// tenant object's status.
pub fn copy_policy(prefix: &str, manager_user: &str, limits: &Limits) -> Value {
    let uuid = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
    let validations = vec![
        json!({
            "expression": format!("object.metadata.name.matches('{uuid}')"),
            "message": "a copy is named by its tenant object's UID (as the ccm names it)",
            "reason": "Invalid",
        }),
        json!({
            "expression": format!("has(object.metadata.labels) && '{LABEL_ORIGIN_NAME}' in object.metadata.labels"),
            "message": format!("a copy carries the label {LABEL_ORIGIN_NAME} (as the ccm writes it)"),
            "reason": "Invalid",
        }),
        json!({
            "expression": "!has(object.stringData)",
            "message": "a copy carries its values in data only (stringData is merged in by the ccm), so that no value is stored or audited in clear",
            "reason": "Invalid",
        }),
        json!({
            "expression": "!has(object.metadata.ownerReferences)",
            "message": "a copy has no ownerReferences",
            "reason": "Invalid",
        }),
        json!({
            "expression": format!("!has(object.metadata.finalizers) || object.metadata.finalizers.all(f, f == '{FINALIZER}')"),
            "message": format!("a copy carries no finalizer but {FINALIZER}"),
            "reason": "Invalid",
        }),
        json!({
            "expression": format!("variables.dataBytes <= {}", limits.data_bytes),
            "messageExpression": format!("'the copy holds ' + string(variables.dataBytes) + ' bytes of base64 data, more than the management cluster takes per copy ({})'", limits.data_bytes),
            "reason": "RequestEntityTooLarge",
        }),
        json!({
            "expression": format!("variables.metadataBytes <= {}", limits.metadata_bytes),
            "messageExpression": format!("'the copy carries ' + string(variables.metadataBytes) + ' bytes of labels and annotations, more than the management cluster takes per copy ({})'", limits.metadata_bytes),
            "reason": "RequestEntityTooLarge",
        }),
    ];
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "operations": ["CREATE", "UPDATE"],
                "resources": [PLURAL],
            }]},
            "matchConditions": [
                {"name": "tenant-namespace", "expression": format!("request.namespace.startsWith('{prefix}')")},
                {"name": "not-an-admin", "expression": "!('system:masters' in request.userInfo.groups)"},
                {"name": "not-the-manager", "expression": format!("request.userInfo.username != '{manager_user}'")},
            ],
            "variables": [
                {"name": "dataBytes", "expression": "has(object.data) ? object.data.map(k, size(object.data[k])).sum() : 0"},
                {"name": "metadataBytes", "expression": "(has(object.metadata.labels) ? object.metadata.labels.map(k, size(k) + size(bytes(object.metadata.labels[k]))).sum() : 0) + (has(object.metadata.annotations) ? object.metadata.annotations.map(k, size(k) + size(bytes(object.metadata.annotations[k]))).sum() : 0)"},
            ],
            "validations": validations,
        },
    })
}

/// The binding that turns the policy on (deny).
pub fn copy_policy_binding() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    })
}

/// The ResourceQuota of one tenant namespace: how many copies it holds.
pub fn tenant_quota(namespace: &str, limits: &Limits) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": namespace},
        "spec": {"hard": {format!("count/{PLURAL}.{GROUP}"): limits.copies}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_binds_tenant_namespaces_and_spares_admins_and_the_manager() {
        let p = copy_policy(
            "tenant-",
            "system:serviceaccount:kubelb:m",
            &Limits::default(),
        );
        let conditions = p["spec"]["matchConditions"].to_string();
        assert!(conditions.contains("startsWith('tenant-')"), "{conditions}");
        assert!(conditions.contains("system:masters"), "{conditions}");
        assert!(
            conditions.contains("system:serviceaccount:kubelb:m"),
            "{conditions}"
        );
        let rules = p["spec"]["validations"].to_string();
        assert!(
            rules.contains(&DEFAULT_METADATA_BYTES.to_string()),
            "{rules}"
        );
        let q = tenant_quota("tenant-a", &Limits::default());
        assert_eq!(q["spec"]["hard"]["count/syncsecrets.kubelb.k8c.io"], "1000");
    }
}
