//! A hostile tenant, with nothing but what a tenant admin has: its own
//! tenant cluster (the CRD there included), its ccm, and the management
//! identity that ccm holds. Each attack runs on one pair with two tenants,
//! `good` and `evil`; during and after each, the good tenant's objects keep
//! converging (the suite's usual wait), the manager stays ready, and at the
//! end no value either tenant wrote is in any controller log, event,
//! status or `/metrics` (issue 18). One file per attack; helpers in
//! `support`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

mod cluster_name;
mod copies;
mod data;
mod finalizers;
mod forged;
mod logs;
mod managed_fields;
mod namespaces;
mod nested;
mod quota;
mod released;
mod stored;
mod storm;
mod support;
mod undecodable;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_cannot_stop_or_read_another() {
    // evil-second is the evil tenant's second cluster: its ccm is started
    // again with evil's cluster name and management identity.
    // The management cluster runs as docs/security.md says it should:
    // Secrets and copies encrypted at rest, audited at Metadata level.
    // The manager runs as its image, under its chart's memory limit: an
    // attack that makes it use more is an OOM, as in a cluster.
    let launch = Launch {
        manager_image: Some(manager_image()),
        ..Launch::default()
    };
    let mut pair = Pair::start_on(
        &["good", "evil", "evil-second"],
        &launch,
        Options {
            hardened: true,
            ..Options::default()
        },
    )
    .await
    .expect("the pair starts");
    pair.record_written();
    let mut values = Values(Vec::new());
    let result = attacks(&mut pair, &mut values).await;
    if let Err(e) = result {
        panic!("{e:#}\n--- state at failure ---\n{}", pair.dump());
    }
}

/// The manager's image as `make image` builds it (make test does first);
/// the test fails with how to build it when it is missing.
fn manager_image() -> String {
    let image = "localhost/syncsecret/syncsecret-manager:dev";
    if let Err(e) = syncsecret_e2e::podman::podman(&["image", "exists", image]) {
        panic!("no image {image}: build it with `make image` (make test does): {e}");
    }
    image.to_owned()
}

async fn attacks(pair: &mut Pair, values: &mut Values) -> anyhow::Result<()> {
    for i in [GOOD, EVIL] {
        ensure_namespace(&pair.tenants[i], NS).await?;
    }
    good_tenant_converges(pair, "before", &values.fresh("good-before")).await?;

    undecodable::undecodable_tenant_objects(pair, values).await?;
    undecodable::undecodable_copies(pair, values).await?;
    nested::copies_nested_too_deep(pair, values).await?;
    released::unlabelled_secrets_are_released(pair, values).await?;
    forged::forged_types_and_metadata_stay_out(pair, values).await?;
    copies::copies_are_bounded_by_the_management_cluster(pair, values).await?;
    finalizers::finalizers_are_one_and_ours(pair, values).await?;
    data::data_is_bounded_in_keys_and_bytes(pair, values).await?;
    managed_fields::managed_fields_are_bounded(pair, values).await?;
    logs::tenant_strings_are_cut_and_a_retry_is_logged_once(pair, values).await?;

    cluster_name::a_second_ccm_with_the_same_cluster_name(pair, values).await?;
    namespaces::the_manager_writes_secrets_only_in_tenant_namespaces(pair).await?;
    stored::stored_encrypted_and_audited_without_values(pair, values).await?;
    // These spend the evil tenant's write budget, after which its copies
    // sync at the paced rate and its writes are refused.
    storm::a_write_storm_is_paced_and_others_keep_converging(pair, values).await?;
    quota::a_full_quota_at_every_bound_survives_a_restart(pair, values).await?;

    let found = pair.leaks(&values.0).await?;
    ensure!(found.is_empty(), "a secret value leaked in: {found:?}");
    println!(
        "    leak scan: {} values written by the test and {} recorded in the tenant clusters, in every log, event, status and /metrics: none found",
        values.0.len(),
        pair.written().len()
    );
    Ok(())
}
