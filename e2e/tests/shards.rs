//! Manager shards on the real control plane: two shards split the tenant
//! namespaces, each reconciling (and so writing) only its own; a shard
//! killed with SIGKILL has its namespaces picked up by its replacement once
//! its Lease lapses; and going from two shards to three while the tenants
//! keep writing loses no update and never has two shards at work on one
//! namespace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use syncsecret_api::SyncSecret;
use syncsecret_api::contract::tenant_namespace;
use syncsecret_api::shard::shard_of;
use syncsecret_e2e::kube_util::{holds_value, put_value};
use syncsecret_e2e::pair::{ControllerProcess, Launch, MANAGER_NAMESPACE, Pair, ensure_namespace};
use syncsecret_runtime::serve::leader::{LEASE_DURATION, RETRY_PERIOD};

/// The tenant objects' namespace in each tenant cluster.
const NS: &str = "shards";
/// Objects per tenant.
const OBJECTS: usize = 3;

/// Two tenant names: the first in shard 0 of two and of three, the second
/// in shard 1 of two that moves to shard 2 of three.
fn tenant_names() -> (String, String) {
    let find = |two: u32, three: u32| {
        (0..)
            .map(|k| format!("shard{k}"))
            .find(|n| {
                let ns = tenant_namespace(n);
                shard_of(&ns, 2) == two && shard_of(&ns, 3) == three
            })
            .unwrap()
    };
    (find(0, 0), find(1, 2))
}

/// Reconciles `c` counted for copies in namespace `ns`.
fn reconciled_in(c: &ControllerProcess, ns: &str) -> anyhow::Result<f64> {
    let label = format!("namespace=\"{ns}\"");
    Ok(c.metrics()?
        .lines()
        .filter(|l| l.starts_with("kubelb_manager_sync_secret_reconcile_total{"))
        .filter(|l| l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.0.
        + 0.0)
}

/// The manager's flags for shard `index` of `count` (the last of a flag
/// given twice wins).
fn shard_args(pair: &Pair, index: u32, count: u32) -> Vec<String> {
    let mut args = pair.manager.base_args().to_vec();
    args.push(format!("--shard={index}"));
    args.push(format!("--shards={count}"));
    args
}

struct Tenants {
    apis: Vec<Api<SyncSecret>>,
    namespaces: Vec<String>,
    /// The value each object should end up with, by tenant.
    latest: Vec<BTreeMap<String, String>>,
}

impl Tenants {
    async fn put(&mut self, i: usize, name: &str, value: String) -> anyhow::Result<()> {
        put_value(&self.apis[i], name, &value)
            .await
            .with_context(|| format!("applying {name} in tenant {i}"))?;
        self.latest[i].insert(name.to_owned(), value);
        Ok(())
    }

    async fn all_synced(&self, pair: &Pair) -> anyhow::Result<()> {
        for (i, latest) in self.latest.iter().enumerate() {
            for (name, value) in latest {
                pair.synced(i, NS, name, holds_value(value)).await?;
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_the_tenants_survive_a_kill_and_a_count_change() {
    let (a, b) = tenant_names();
    let launch = Launch {
        manager_args: vec!["--shard=0".to_owned(), "--shards=2".to_owned()],
        ..Launch::default()
    };
    let mut pair = Pair::start_with(&[&a, &b], &launch)
        .await
        .expect("the pair starts");
    if let Err(e) = shards(&mut pair).await {
        panic!("{e:#}\n--- state at failure ---\n{}", pair.dump());
    }
}

async fn shards(pair: &mut Pair) -> anyhow::Result<()> {
    let mut shard1 = pair
        .manager
        .variant("syncsecret-manager-1-of-2", shard_args(pair, 1, 2))?;
    shard1.wait_ready().await?;
    let mut t = Tenants {
        apis: Vec::new(),
        namespaces: pair
            .tenant_names
            .iter()
            .map(|n| tenant_namespace(n))
            .collect(),
        latest: vec![BTreeMap::new(), BTreeMap::new()],
    };
    for client in &pair.tenants {
        ensure_namespace(client, NS).await?;
        t.apis.push(Api::namespaced(client.clone(), NS));
    }
    for i in 0..2 {
        for k in 0..OBJECTS {
            t.put(i, &format!("o{k}"), format!("first-{i}-{k}")).await?;
        }
    }
    t.all_synced(pair).await?;

    // 1. Each shard reconciled its own tenant only.
    let (ns_a, ns_b) = (t.namespaces[0].clone(), t.namespaces[1].clone());
    let counts = |c: &ControllerProcess| -> anyhow::Result<(f64, f64)> {
        Ok((reconciled_in(c, &ns_a)?, reconciled_in(c, &ns_b)?))
    };
    let (zero_a, zero_b) = counts(&pair.manager)?;
    let (one_a, one_b) = counts(&shard1)?;
    println!(
        "shard 0 of 2: {zero_a} reconciles in {ns_a}, {zero_b} in {ns_b}; shard 1 of 2: {one_a}, {one_b}"
    );
    ensure!(
        zero_a > 0.0 && zero_b == 0.0,
        "shard 0 of 2 reconciled {zero_a} in {ns_a}, {zero_b} in {ns_b}"
    );
    ensure!(
        one_a == 0.0 && one_b > 0.0,
        "shard 1 of 2 reconciled {one_a} in {ns_a}, {one_b} in {ns_b}"
    );

    // 2. Shard 0 killed; its replacement (as a Deployment would start it)
    // picks its tenant up once the killed one's Lease lapses, and the
    // other shard never touches it.
    let leases: Api<Lease> = Api::namespaced(pair.management.clone(), MANAGER_NAMESPACE);
    let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let killed_holder = holder(&leases.get("syncsecret-manager-0-of-2").await?);
    pair.manager.kill();
    let killed = Instant::now();
    pair.manager.start().await?;
    t.put(0, "o0", "after-kill".to_owned()).await?;
    pair.synced(0, NS, "o0", holds_value("after-kill")).await?;
    let took = killed.elapsed();
    let new_holder = holder(&leases.get("syncsecret-manager-0-of-2").await?);
    println!(
        "shard 0 of 2 killed: its tenant synced again {:.1} s later (Lease {LEASE_DURATION:?})",
        took.as_secs_f64()
    );
    ensure!(
        new_holder.is_some() && new_holder != killed_holder,
        "Lease holder {new_holder:?}, killed {killed_holder:?}"
    );
    ensure!(
        reconciled_in(&shard1, &ns_a)? == 0.0,
        "shard 1 of 2 acted on {ns_a}"
    );

    // 3. Two shards to three. The three start beside the two and yield to
    // them (their Leases are younger): they reconcile nothing.
    let mut three = Vec::new();
    for i in 0..3 {
        let name = format!("syncsecret-manager-{i}-of-3");
        let mut c = pair.manager.variant(&name, shard_args(pair, i, 3))?;
        c.wait_ready().await?;
        three.push(c);
    }
    tokio::time::sleep(2 * RETRY_PERIOD).await;
    t.put(0, "o1", "beside-0".to_owned()).await?;
    t.put(1, "o1", "beside-1".to_owned()).await?;
    t.all_synced(pair).await?;
    for c in &three {
        let (x, y) = counts(c)?;
        ensure!(
            x == 0.0 && y == 0.0,
            "{} reconciled {x} in {ns_a}, {y} in {ns_b} while the two ran",
            c.name()
        );
    }

    // The two go while the tenants keep writing: shard 0 of 2 with
    // SIGTERM (it releases its Lease: its tenant moves at once), shard 1
    // of 2 with SIGKILL (its Lease stays until it lapses: its tenant must
    // wait for that, and then move). Every last value arrives.
    pair.manager.stop()?;
    shard1.kill();
    let killed = Instant::now();
    let mut k = 0;
    let mut first_act = None;
    while killed.elapsed() < LEASE_DURATION + 4 * RETRY_PERIOD {
        k += 1;
        t.put(0, "o2", format!("moving-0-{k}")).await?;
        t.put(1, "o2", format!("moving-1-{k}")).await?;
        if first_act.is_none() && reconciled_in(&three[2], &ns_b)? > 0.0 {
            first_act = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its Lease was renewed at most a retry period before the kill, and
    // the newcomer lists every retry period: it may act no sooner than
    // the Lease duration less those two.
    let earliest = LEASE_DURATION - 2 * RETRY_PERIOD - Duration::from_secs(1);
    println!("shard 2 of 3 acted on {ns_b} {first_act:?} after shard 1 of 2 was killed");
    ensure!(
        first_act.is_none_or(|at| at >= earliest),
        "shard 2 of 3 acted on {ns_b} {first_act:?} after the kill, before the killed shard's Lease could lapse"
    );
    t.all_synced(pair).await?;

    // Each namespace now has one actor among the three: its shard of three.
    let mut actors = BTreeMap::new();
    for c in &three {
        let (x, y) = counts(c)?;
        actors.insert(c.name().to_owned(), (x, y));
    }
    println!("after the change: {actors:?}");
    let of = |i: usize| actors[&format!("syncsecret-manager-{i}-of-3")];
    ensure!(of(0).0 > 0.0 && of(0).1 == 0.0, "{actors:?}");
    ensure!(of(1) == (0.0, 0.0), "{actors:?}");
    // The one with no share wrote nothing at all.
    let idle = three[1].metric_sum("kubelb_manager_writes_total")?;
    ensure!(
        idle == 0.0,
        "shard 1 of 3, with no namespace, made {idle} writes"
    );
    ensure!(of(2).0 == 0.0 && of(2).1 > 0.0, "{actors:?}");
    for mut c in three {
        c.stop()?;
    }
    Ok(())
}
