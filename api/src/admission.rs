//! What the management cluster admits from a tenant's identity, enforced
//! by the API server itself so that no tenant can dodge it: a
//! ValidatingAdmissionPolicy on copies (size, metadata size, the shape a
//! ccm writes) and, per tenant namespace, a ResourceQuota on their count.
//! Limits are counted by the management cluster, never from anything the
//! tenant wrote. Pure: the manifest generator renders these into
//! `config/policy/` and the manager chart.

use serde_json::{Value, json};

use crate::bounds::{self, Bound};
use crate::contract::{FINALIZER, GROUP, LABEL_ORIGIN_NAME};
use crate::v1alpha1::{PLURAL, VERSION};

/// Name of the policy and its binding.
pub const POLICY_NAME: &str = "syncsecret-tenant-copies";
/// Name of each tenant namespace's ResourceQuota.
pub const QUOTA_NAME: &str = "syncsecret-tenant";
/// Name of the policy (and its binding) that refuses the writes of a
/// tenant whose write budget is spent.
pub const PAUSE_POLICY_NAME: &str = "syncsecret-tenant-write-pause";
/// Name of the ConfigMap, in the manager's namespace, whose keys are the
/// tenant namespaces whose writes are paused (the pause policy's params),
/// each valued by what is refused and until when ([`Pause::value`]): the
/// manager writes it, no tenant can.
pub const PAUSE_CONFIG_MAP: &str = "syncsecret-tenant-writes-paused";

/// What the pause policy refuses a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pause {
    /// Its updates of copies: its budget is down to its reserve.
    Updates,
    /// Its creates and updates of copies: its budget is in debt.
    CreatesAndUpdates,
}

impl Pause {
    /// What the list says of a tenant paused so until `until`; the policy
    /// reads what is refused from its start, and quotes it whole.
    pub fn value(self, until: &str) -> String {
        let what = match self {
            Self::Updates => "updates",
            Self::CreatesAndUpdates => "creates and updates",
        };
        format!("{what} of copies are refused until about {until}")
    }
}

/// The settable bounds of [`crate::bounds`], as numbers or as the Helm
/// expressions that render them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// [`bounds::COPIES`].
    pub copies: String,
    /// [`bounds::DATA_BYTES`].
    pub data_bytes: String,
    /// [`bounds::DATA_KEYS`].
    pub data_keys: String,
    /// [`bounds::METADATA_BYTES`].
    pub metadata_bytes: String,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_each(|b| b.default.to_string())
    }
}

impl Limits {
    /// The limits as the manager chart renders them from its values.
    pub fn helm() -> Self {
        Self::from_each(|b| format!("{{{{ int $.Values.tenantLimits.{} }}}}", b.key))
    }

    fn from_each(value: impl Fn(&Bound) -> String) -> Self {
        Self {
            copies: value(&bounds::COPIES),
            data_bytes: value(&bounds::DATA_BYTES),
            data_keys: value(&bounds::DATA_KEYS),
            metadata_bytes: value(&bounds::METADATA_BYTES),
        }
    }
}

/// The ValidatingAdmissionPolicy on copies written in namespaces starting
/// with `prefix` by anyone but the cluster's admins (`system:masters`) and
/// the manager (`manager_user`, which only adds its finalizer and writes
/// status). Each refusal says what to change; the ccm shows it in the
/// tenant object's status.
pub fn copy_policy(prefix: &str, manager_user: &str, limits: &Limits) -> Value {
    let uuid = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
    let width = bounds::MANAGED_FIELDS_WIDTH.default.to_string();
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
        // The API server keeps duplicate finalizers, and each would cost
        // the manager memory and, on deletion, a write.
        bounded(
            &bounds::FINALIZERS,
            "variables.finalizers",
            &bounds::FINALIZERS.default.to_string(),
            "Invalid",
        ),
        bounded(
            &bounds::DATA_KEYS,
            "variables.dataKeys",
            &limits.data_keys,
            "RequestEntityTooLarge",
        ),
        bounded(
            &bounds::DATA_BYTES,
            "variables.dataBytes",
            &limits.data_bytes,
            "RequestEntityTooLarge",
        ),
        bounded(
            &bounds::METADATA_BYTES,
            "variables.metadataBytes",
            &limits.metadata_bytes,
            "RequestEntityTooLarge",
        ),
        // Each depth is counted only while the ones above it are within
        // the width, and the characters only within both: what no rule
        // bounds would otherwise cost more than the API server lets one
        // expression spend, and be refused without saying why.
        bounded(
            &bounds::MANAGED_FIELDS_WIDTH,
            &depth_var(DEPTHS),
            &width,
            "RequestEntityTooLarge",
        ),
        bounded(
            &bounds::MANAGED_FIELDS_ENTRIES,
            "size(variables.managedFields)",
            &bounds::MANAGED_FIELDS_ENTRIES.default.to_string(),
            "RequestEntityTooLarge",
        ),
        // What an entry is counted (MANAGED_FIELDS_ENTRY_BYTES) holds only
        // for entries that name their manager, subresource and API version
        // as the API server's clients do.
        json!({
            "expression": format!(
                "size(variables.managedFields) > {} || variables.managedFields.all(m, {})",
                bounds::MANAGED_FIELDS_ENTRIES.default,
                [
                    format!("(!has(m.manager) || m.manager.matches({MANAGER}))"),
                    "(!has(m.subresource) || m.subresource in ['', 'status'])".to_owned(),
                    format!("(!has(m.apiVersion) || m.apiVersion.matches({API_VERSION}))"),
                ]
                .join(" && ")
            ),
            "message": "a managedFields entry of a copy names its manager in at most 128 printable ASCII characters but \", \\, <, > and &, its subresource as none or status, and its apiVersion as group/version",
            "reason": "Invalid",
        }),
        json!({
            "expression": format!("{} == 0 || {} > {width}", depth_var(DEPTHS + 1), depth_var(DEPTHS)),
            "message": format!("a copy's managedFields name fields below the {DEPTHS} levels a copy has"),
            "reason": "Invalid",
        }),
        json!({
            "expression": format!("{} != 0 || variables.managedFieldsExcess <= {}", depth_var(DEPTHS + 1), bounds::MANAGED_FIELDS_BYTES.default),
            "messageExpression": bounds::MANAGED_FIELDS_BYTES.cel_refusal(
                "variables.managedFieldsExcess",
                &bounds::MANAGED_FIELDS_BYTES.default.to_string(),
            ),
            "reason": "RequestEntityTooLarge",
        }),
    ];
    // Values as JSON stores them (escapes), counted only where their
    // characters alone do not already exceed the limit: so no regular
    // expression walks more than the limit's worth of text.
    let metadata_sum = |value: &dyn Fn(&str) -> String| {
        ["labels", "annotations"]
            .map(|f| {
                format!(
                    "(has(object.metadata.{f}) ? object.metadata.{f}.map(k, 2 * size(k) + {v} + {e}).sum() : 0)",
                    v = value(&format!("object.metadata.{f}[k]")),
                    e = bounds::ENTRY_BYTES
                )
            })
            .join(" + ")
    };
    let metadata_at_least = metadata_sum(&|v| format!("size({v})"));
    let metadata_bytes = format!(
        "variables.metadataAtLeast > {limit} ? variables.metadataAtLeast : {precise}",
        limit = limits.metadata_bytes,
        precise = metadata_sum(&|v| escaped_bytes(v)),
    );
    let mut variables = vec![
        json!({"name": "finalizers", "expression": "has(object.metadata.finalizers) ? size(object.metadata.finalizers) : 0"}),
        json!({"name": "dataKeys", "expression": "has(object.data) ? size(object.data) : 0"}),
        // Keys count, twice (4,096 keys of 253 characters with empty
        // values are two megabytes stored), and every entry 16 more.
        json!({"name": "dataBytes", "expression": format!("has(object.data) ? object.data.map(k, 2 * size(k) + size(object.data[k]) + {e}).sum() : 0", e = bounds::ENTRY_BYTES)}),
        json!({"name": "metadataAtLeast", "expression": metadata_at_least}),
        json!({"name": "metadataBytes", "expression": metadata_bytes}),
        json!({"name": "managedFields", "expression": "has(object.metadata.managedFields) ? object.metadata.managedFields : []"}),
    ];
    variables.extend(managed_fields_variables(&width));
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": copy_writes(),
            "matchConditions": tenant_writers(prefix, manager_user),
            "variables": variables,
            "validations": validations,
        },
    })
}

/// The levels of a copy's managedFields: `f:status` › `f:conditions` ›
/// a condition › its field.
const DEPTHS: usize = 4;

/// The variable counting the fields at `depth` of every entry's fieldsV1.
fn depth_var(depth: usize) -> String {
    format!("variables.managedFieldsDepth{depth}")
}

/// The variables that measure a copy's managedFields (kept whole by the
/// API server as a client sends them, and as opaque maps to CEL):
/// `managedFieldsDepth1` to `5` count the fields at each depth, each
/// carrying the count above it once that is over `width`, so that none
/// walks a level too wide; `managedFieldsExcess` is their characters
/// beyond the names of the copy's own fields
/// ([`bounds::MANAGED_FIELDS_BYTES`]).
fn managed_fields_variables(width: &str) -> Vec<Value> {
    // The map at `depth` of entry `m`: m.fieldsV1, m.fieldsV1[a], ...
    let iters = ["a", "b", "c", "d", "e"];
    let path = |depth: usize| {
        let mut p = String::from("m.fieldsV1");
        for i in iters.iter().take(depth - 1) {
            p.push_str(&format!("[{i}]"));
        }
        p
    };
    let per_entry = |inner: String| {
        format!("variables.managedFields.map(m, has(m.fieldsV1) ? {inner} : 0).sum()")
    };
    let mut out = Vec::new();
    for depth in 1..=DEPTHS + 1 {
        // size(p_depth), summed over the maps above it.
        let mut count = format!("size({})", path(depth));
        for d in (1..depth).rev() {
            count = format!("{}.map({}, {count}).sum()", path(d), iters[d - 1]);
        }
        let above = if depth == 1 {
            "size(variables.managedFields)".to_owned()
        } else {
            depth_var(depth - 1)
        };
        out.push(json!({
            "name": format!("managedFieldsDepth{depth}"),
            "expression": format!("{above} > {width} ? {above} : {}", per_entry(count)),
        }));
    }
    // Fields as stored: a name and 6 bytes of JSON, an entry
    // MANAGED_FIELDS_ENTRY_BYTES. First a character a byte, cheap; where
    // that is within the bound, as JSON stores each name (escapes), so
    // that no regular expression walks more than the bound's worth.
    let fields = |name: &dyn Fn(&str) -> String| {
        let mut chars = String::new();
        for d in (1..=DEPTHS).rev() {
            let i = iters[d - 1];
            let deeper = if chars.is_empty() {
                String::new()
            } else {
                format!(" + {chars}")
            };
            chars = format!("{}.map({i}, {} + 6{deeper}).sum()", path(d), name(i));
        }
        format!(
            "variables.managedFields.map(m, {} + (has(m.fieldsV1) ? {chars} : 0)).sum()",
            bounds::MANAGED_FIELDS_ENTRY_BYTES
        )
    };
    // What names the copy's own fields, once each: `f:`, name and JSON.
    let own = [
        "object.data",
        "object.metadata.labels",
        "object.metadata.annotations",
    ]
    .map(|f| format!("(has({f}) ? {f}.map(k, size(k) + 8).sum() : 0)"))
    .join(" + ");
    out.push(json!({
        "name": "managedFieldsAtLeast",
        "expression": format!("{} - ({own})", fields(&|n| format!("size({n})"))),
    }));
    out.push(json!({
        "name": "managedFieldsExcess",
        "expression": format!(
            "variables.managedFieldsAtLeast > {limit} ? variables.managedFieldsAtLeast : {} - ({own})",
            fields(&|n| escaped_bytes(n)),
            limit = bounds::MANAGED_FIELDS_BYTES.default,
        ),
    }));
    out
}

/// What the API server's JSON holds of string `s`, at most: its UTF-8
/// bytes, six times over if it has a character JSON escapes (`<`, `>`,
/// `&`, control characters, U+2028 and U+2029 as `\u....`; `"` and `\`).
fn escaped_bytes(s: &str) -> String {
    format!(
        "size(bytes({s})) * ({s}.matches({ESCAPED_SIX}) ? 6 : ({s}.matches({ESCAPED_TWO}) ? 2 : 1))"
    )
}

/// A field manager as clients name theirs (CEL raw string, RE2): printable
/// ASCII but what JSON escapes, at most 128 (the API server's own limit).
const MANAGER: &str = r#"r'^[ !#-%(-;=?-\[\]-~]{1,128}$'"#;

/// An API version: a group and a version, at most 128 characters.
const API_VERSION: &str = r#"r'^[a-z0-9.-]{0,100}/?[a-z0-9]{1,27}$'"#;

/// A character the API server's JSON escapes in six bytes (CEL raw
/// string, RE2): `\u003c` and the like.
const ESCAPED_SIX: &str = r#"r'[<>&\x00-\x08\x0b\x0c\x0e-\x1f\x{2028}\x{2029}]'"#;

/// A character the API server's JSON escapes in two bytes: `\"`, `\\`,
/// `\n`, `\r`, `\t`.
const ESCAPED_TWO: &str = r#"r'["\\\n\r\t]'"#;

/// The validation that `expr` is at most `limit`, refused naming both.
fn bounded(bound: &Bound, expr: &str, limit: &str, reason: &str) -> Value {
    json!({
        "expression": format!("{expr} <= {limit}"),
        "messageExpression": bound.cel_refusal(expr, limit),
        "reason": reason,
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

/// The requests both policies look at: creates and updates of copies.
fn copy_writes() -> Value {
    json!({"resourceRules": [{
        "apiGroups": [GROUP],
        "apiVersions": [VERSION],
        "operations": ["CREATE", "UPDATE"],
        "resources": [PLURAL],
    }]})
}

/// The matchConditions both policies share: tenant namespaces, anyone but
/// the cluster's admins and the manager.
fn tenant_writers(prefix: &str, manager_user: &str) -> Value {
    json!([
        {"name": "tenant-namespace", "expression": format!("request.namespace.startsWith('{prefix}')")},
        {"name": "not-an-admin", "expression": "!('system:masters' in request.userInfo.groups)"},
        {"name": "not-the-manager", "expression": format!("request.userInfo.username != '{manager_user}'")},
    ])
}

/// The ValidatingAdmissionPolicy that refuses a tenant's writes of copies
/// while its write budget is spent. A budget counts time, which CEL cannot:
/// the manager counts every revision of a tenant's copies and lists the
/// tenants over budget in [`PAUSE_CONFIG_MAP`] (the policy's params, with
/// what is refused and until when), and the API server refuses their
/// updates ([`Pause::Updates`]), or their creates too
/// ([`Pause::CreatesAndUpdates`]), until the manager takes them off.
/// Deletions stay open: a deletion turns a copy the quota counts into a
/// revision the budget counts, and no copy can take its place while
/// creates are refused.
pub fn pause_policy(prefix: &str, manager_user: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": PAUSE_POLICY_NAME},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": copy_writes(),
            "matchConditions": tenant_writers(prefix, manager_user),
            "validations": [{
                "expression": "!has(params.data) || !(request.namespace in params.data) || (request.operation == 'CREATE' && !params.data[request.namespace].startsWith('creates'))",
                "messageExpression": "'the tenant namespace ' + request.namespace + ' has spent its write budget (--tenant-write-bytes-per-minute of the manager, counting every revision of its copies): its ' + params.data[request.namespace] + '; nothing is lost, a ccm retries'",
                "reason": "Forbidden",
            }],
        },
    })
}

/// The binding of [`pause_policy`] to its params in `namespace`, the
/// manager's: without them (no manager has written them yet), nothing is
/// paused.
pub fn pause_policy_binding(namespace: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": PAUSE_POLICY_NAME},
        "spec": {
            "policyName": PAUSE_POLICY_NAME,
            "paramRef": {
                "name": PAUSE_CONFIG_MAP,
                "namespace": namespace,
                "parameterNotFoundAction": "Allow",
            },
            "validationActions": ["Deny"],
        },
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
    fn the_pause_policy_reads_what_is_refused_from_the_value() {
        let p = pause_policy("tenant-", "system:serviceaccount:kubelb:m");
        let rule = p["spec"]["validations"][0]["expression"].to_string();
        // The value of a pause of creates starts as the policy looks for.
        let creates = Pause::CreatesAndUpdates.value("T");
        let prefix = creates.split(' ').next().unwrap();
        assert!(rule.contains(&format!("startsWith('{prefix}')")), "{rule}");
        assert!(!Pause::Updates.value("T").starts_with(prefix));
        assert_eq!(
            Pause::Updates.value("2026-12-08T02:00:00Z"),
            "updates of copies are refused until about 2026-12-08T02:00:00Z"
        );
    }

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
        for b in [
            bounds::DATA_BYTES,
            bounds::DATA_KEYS,
            bounds::METADATA_BYTES,
            bounds::FINALIZERS,
            bounds::MANAGED_FIELDS_WIDTH,
            bounds::MANAGED_FIELDS_BYTES,
            bounds::MANAGED_FIELDS_ENTRIES,
        ] {
            assert!(
                rules.contains(&b.refusal_with("", &b.default.to_string())),
                "{}: {rules}",
                b.key
            );
        }
        let q = tenant_quota("tenant-a", &Limits::default());
        assert_eq!(
            q["spec"]["hard"]["count/syncsecrets.kubelb.k8c.io"],
            bounds::COPIES.default.to_string()
        );
        let helm = copy_policy("p", "m", &Limits::helm()).to_string();
        assert!(
            helm.contains("variables.dataKeys <= {{ int $.Values.tenantLimits.dataKeys }}"),
            "{helm}"
        );
    }
}
