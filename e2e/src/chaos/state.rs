//! What every object should be at the end of a round, and waiting for
//! both clusters to show exactly that.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::{LABEL_ORIGIN_NAME, tenant_namespace};

use super::{Expected, NAMESPACE};
use crate::HarnessError;
use crate::pair::Pair;

/// Everything the run looks at, read once.
pub(super) struct State {
    /// Per tenant: name → (uid, terminating).
    pub(super) tenants: Vec<BTreeMap<String, (String, bool)>>,
    /// Per tenant: copies (ours, by origin label): name (the tenant
    /// object's uid) → (origin name, the copy's own uid).
    pub(super) copies: Vec<BTreeMap<String, (String, String)>>,
    /// Per tenant: Secrets (ours): owner copy uid → value of key `v`.
    pub(super) secrets: Vec<Vec<(String, Option<String>)>>,
}

/// What differs from the expected state.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) lost: usize,
    pub(super) orphans: usize,
    pub(super) stuck: usize,
    pub(super) detail: Vec<String>,
}

impl State {
    pub(super) async fn read(pair: &Pair) -> Result<Self, HarnessError> {
        let mut s = Self {
            tenants: Vec::new(),
            copies: Vec::new(),
            secrets: Vec::new(),
        };
        let ours = ListParams::default().labels(LABEL_ORIGIN_NAME);
        for (i, t) in pair.tenants.iter().enumerate() {
            let objects = Api::<SyncSecret>::namespaced(t.clone(), NAMESPACE)
                .list(&ListParams::default())
                .await?;
            s.tenants.push(
                objects
                    .items
                    .iter()
                    .map(|o| {
                        (
                            o.name_any(),
                            (
                                o.uid().unwrap_or_default(),
                                o.metadata.deletion_timestamp.is_some(),
                            ),
                        )
                    })
                    .collect(),
            );
            let ns = tenant_namespace(&pair.tenant_names[i]);
            let copies = Api::<SyncSecret>::namespaced(pair.management.clone(), &ns)
                .list(&ours)
                .await?;
            s.copies.push(
                copies
                    .items
                    .iter()
                    .map(|c| {
                        (
                            c.name_any(),
                            (
                                c.labels()
                                    .get(LABEL_ORIGIN_NAME)
                                    .cloned()
                                    .unwrap_or_default(),
                                c.uid().unwrap_or_default(),
                            ),
                        )
                    })
                    .collect(),
            );
            let secrets = Api::<Secret>::namespaced(pair.management.clone(), &ns)
                .list(&ours)
                .await?;
            s.secrets.push(
                secrets
                    .items
                    .iter()
                    .map(|sec| {
                        let owner = sec
                            .owner_references()
                            .iter()
                            .map(|o| o.uid.clone())
                            .next()
                            .unwrap_or_default();
                        let value = sec
                            .data
                            .as_ref()
                            .and_then(|d| d.get("v"))
                            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
                        (owner, value)
                    })
                    .collect(),
            );
        }
        Ok(s)
    }

    pub(super) fn compare(&self, pair: &Pair, expected: &Expected) -> Report {
        let mut r = Report::default();
        for (i, tenant) in self.tenants.iter().enumerate() {
            let want: BTreeMap<&String, &String> = expected
                .iter()
                .filter(|((t, _), _)| *t == i)
                .map(|((_, n), v)| (n, v))
                .collect();
            let tenant_name = &pair.tenant_names[i];
            // Stuck: deleted in the tenant but still there.
            for (name, (_, terminating)) in tenant {
                if !want.contains_key(name) {
                    r.stuck += 1;
                    r.detail.push(format!(
                        "{tenant_name}/{name} still there{}",
                        if *terminating { " (Terminating)" } else { "" }
                    ));
                }
            }
            // Each live object: one copy, one Secret, the latest value.
            let copies_by_origin: BTreeMap<&String, Vec<&String>> =
                self.copies[i]
                    .iter()
                    .fold(BTreeMap::new(), |mut m, (copy, (origin, _))| {
                        m.entry(origin).or_insert_with(Vec::new).push(copy);
                        m
                    });
            let mut secrets_by_owner: HashMap<&String, Vec<&Option<String>>> = HashMap::new();
            for (owner, value) in &self.secrets[i] {
                secrets_by_owner.entry(owner).or_default().push(value);
            }
            let mut accounted_copies = BTreeSet::new();
            let mut accounted_owners = BTreeSet::new();
            for (name, value) in &want {
                let Some((uid, _)) = tenant.get(*name) else {
                    r.lost += 1;
                    r.detail
                        .push(format!("{tenant_name}/{name} missing in the tenant"));
                    continue;
                };
                let copy_uid = self.copies[i].get(uid).map(|(_, copy_uid)| copy_uid);
                let secrets = copy_uid.and_then(|u| secrets_by_owner.get(u));
                let ok = copy_uid.is_some()
                    && secrets
                        .is_some_and(|s| s.len() == 1 && s[0].as_deref() == Some(value.as_str()));
                if let Some(u) = copy_uid {
                    accounted_copies.insert(uid.clone());
                    accounted_owners.insert(u.clone());
                }
                if !ok {
                    r.lost += 1;
                    r.detail.push(format!(
                        "{tenant_name}/{name}: copy {}, Secrets {}",
                        if copy_uid.is_some() {
                            "present"
                        } else {
                            "missing"
                        },
                        secrets.map_or(0, Vec::len)
                    ));
                }
                if copies_by_origin.get(*name).map_or(0, Vec::len) > 1 {
                    r.orphans += 1;
                    r.detail
                        .push(format!("{tenant_name}/{name}: more than one copy"));
                }
            }
            for copy in self.copies[i].keys() {
                if !accounted_copies.contains(copy) {
                    r.orphans += 1;
                    r.detail.push(format!(
                        "{tenant_name}: copy {copy} without a live tenant object"
                    ));
                }
            }
            for (owner, secrets) in &secrets_by_owner {
                if !accounted_owners.contains(*owner) {
                    r.orphans += secrets.len();
                    r.detail.push(format!(
                        "{tenant_name}: {} Secret(s) of copy {owner} without a live tenant object",
                        secrets.len()
                    ));
                }
            }
        }
        r
    }
}

/// Polls until the clusters hold exactly `expected`; `Ok(Err(what))` if
/// they do not within `settle`.
pub(super) async fn converge(
    pair: &Pair,
    expected: &Expected,
    settle: Duration,
) -> Result<Result<(), String>, HarnessError> {
    let deadline = Instant::now() + settle;
    loop {
        let report = match State::read(pair).await {
            Ok(state) => state.compare(pair, expected),
            Err(e) => Report {
                lost: 1,
                detail: vec![e.to_string()],
                ..Report::default()
            },
        };
        if report.lost == 0 && report.orphans == 0 && report.stuck == 0 {
            return Ok(Ok(()));
        }
        if Instant::now() > deadline {
            let mut detail = report.detail;
            detail.truncate(10);
            return Ok(Err(format!(
                "{} lost, {} orphans, {} stuck after {} s: {}",
                report.lost,
                report.orphans,
                report.stuck,
                settle.as_secs(),
                detail.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
