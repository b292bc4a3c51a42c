//! How much of the management cluster's API server a tenant's identity
//! gets, by the API server's own fair queuing (API Priority and Fairness,
//! `flowcontrol.apiserver.k8s.io/v1`): every tenant identity's requests go
//! to one priority level of their own, queued fairly by user, so that one
//! tenant writing as fast as it can waits behind itself and neither other
//! tenants nor the platform's own requests wait behind it. The manager's
//! requests go to the built-in `workload-high` level, and its Lease
//! renewals to `leader-election`, ahead of any tenant's. Pure: the
//! manifest generator renders these into `config/policy/` and the manager
//! chart.

use serde_json::{Value, json};

/// The priority level's share of the API server's concurrency, as the
/// built-in levels count theirs (`workload-low` has 100, `global-default`
/// 20): enough for every tenant's ccm, small enough that tenants together
/// cannot take the server from the platform.
pub const TENANT_SHARES: u32 = 20;

/// The names, as numbers or as the Helm expressions that render them.
#[derive(Clone, Debug)]
pub struct Names {
    /// The tenants' priority level and FlowSchema.
    pub tenants: String,
    /// The manager's FlowSchemas (`-leases` is added for the Lease one).
    pub manager: String,
    /// The manager's user (`system:serviceaccount:<namespace>:<name>`).
    pub manager_user: String,
    /// The share of [`TENANT_SHARES`].
    pub shares: String,
}

/// The tenants' priority level: `shares` of the server, requests queued
/// (64 queues, each flow shuffled onto 6 of them) rather than refused.
pub fn tenant_priority_level(names: &Names) -> Value {
    json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": names.tenants},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": names.shares,
                // What tenants do not use, others may borrow; never the other way.
                "lendablePercent": 50,
                "limitResponse": {
                    "type": "Queue",
                    "queuing": {"queues": 64, "handSize": 6, "queueLengthLimit": 50},
                },
            },
        },
    })
}

/// The FlowSchema that sends every request of the tenants' identities
/// (each a group `system:serviceaccounts:<tenant namespace>`, from
/// `subjects`) to the tenants' priority level, one flow per user.
pub fn tenant_flow_schema(names: &Names, subjects: Value) -> Value {
    json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": names.tenants},
        "spec": {
            "priorityLevelConfiguration": {"name": names.tenants},
            // Before the built-in `service-accounts` (9000).
            "matchingPrecedence": 1000,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": subjects,
                "resourceRules": [{
                    "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                    "namespaces": ["*"], "clusterScope": true,
                }],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    })
}

/// The FlowSchemas of the manager's own requests: its Lease renewals at
/// `leader-election`, everything else at `workload-high`.
pub fn manager_flow_schemas(names: &Names) -> [Value; 2] {
    let (name, namespace) = names
        .manager_user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map_or(("", ""), |(ns, name)| (name, ns));
    let subject = json!([{"kind": "ServiceAccount", "serviceAccount": {"name": name, "namespace": namespace}}]);
    let schema = |suffix: &str, level: &str, precedence: u32, rule: Value| {
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": format!("{}{suffix}", names.manager)},
            "spec": {
                "priorityLevelConfiguration": {"name": level},
                "matchingPrecedence": precedence,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [rule],
            },
        })
    };
    [
        schema(
            "-leases",
            "leader-election",
            200,
            json!({"subjects": subject, "resourceRules": [{
                "verbs": ["get", "create", "update"], "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"], "namespaces": ["*"],
            }]}),
        ),
        schema(
            "",
            "workload-high",
            900,
            json!({"subjects": subject, "resourceRules": [{
                "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                "namespaces": ["*"], "clusterScope": true,
            }]}),
        ),
    ]
}

/// The subject of one tenant namespace's identities.
pub fn tenant_subject(namespace: &str) -> Value {
    json!({"kind": "Group", "group": {"name": format!("system:serviceaccounts:{namespace}")}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_queued_by_user_and_the_manager_goes_first() {
        let names = Names {
            tenants: "t".into(),
            manager: "m".into(),
            manager_user: "system:serviceaccount:kubelb:syncsecret-manager".into(),
            shares: TENANT_SHARES.to_string(),
        };
        let fs = tenant_flow_schema(&names, json!([tenant_subject("tenant-a")]));
        assert_eq!(fs["spec"]["distinguisherMethod"]["type"], "ByUser");
        assert_eq!(
            fs["spec"]["rules"][0]["subjects"][0]["group"]["name"],
            "system:serviceaccounts:tenant-a"
        );
        let [leases, rest] = manager_flow_schemas(&names);
        let sa = &rest["spec"]["rules"][0]["subjects"][0]["serviceAccount"];
        assert_eq!(
            (sa["name"].as_str(), sa["namespace"].as_str()),
            (Some("syncsecret-manager"), Some("kubelb"))
        );
        let precedence = |v: &Value| v["spec"]["matchingPrecedence"].as_u64().unwrap();
        assert!(precedence(&leases) < precedence(&rest) && precedence(&rest) < precedence(&fs));
        assert_eq!(
            leases["spec"]["priorityLevelConfiguration"]["name"],
            "leader-election"
        );
    }
}
