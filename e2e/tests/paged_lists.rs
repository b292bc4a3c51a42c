//! Clusters whose API servers do not stream lists (the WatchList feature
//! gate turned off, as a platform may run it): both controllers fall back
//! to paged lists, say so, and sync as anywhere else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use kube::Api;
use kube::api::PostParams;
use syncsecret_api::SyncSecret;
use syncsecret_e2e::bench::accounting;
use syncsecret_e2e::control_plane::Options;
use syncsecret_e2e::pair::{Launch, Pair, ensure_namespace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_list_in_pages_where_lists_are_not_streamed() {
    let pair = Pair::start_on(
        &["tenant1"],
        &Launch::default(),
        Options {
            apiserver_args: &["--feature-gates=WatchList=false"],
            ..Options::default()
        },
    )
    .await
    .expect("the pair starts and its watches sync without streamed lists");
    let result = async {
        ensure_namespace(&pair.tenants[0], "paged").await?;
        let mut obj = SyncSecret::default();
        obj.metadata.name = Some("paged".into());
        obj.string_data = Some([("k".to_owned(), "v".to_owned())].into());
        Api::<SyncSecret>::namespaced(pair.tenants[0].clone(), "paged")
            .create(&PostParams::default(), &obj)
            .await?;
        pair.synced(0, "paged", "paged", |s| {
            s.data
                .as_ref()
                .and_then(|d| d.get("k"))
                .is_some_and(|v| v.0 == b"v")
        })
        .await?;
        for (what, client) in [
            ("management", &pair.management),
            ("tenant1", &pair.tenants[0]),
        ] {
            let streamed = accounting::streamed_lists(client, "syncsecrets").await?;
            let lists = accounting::requests(client).await?;
            let lists = lists.get("syncsecrets LIST").copied().unwrap_or(0.0);
            println!("    {what}: {lists} paged lists of syncsecrets, {streamed} streamed");
            anyhow::ensure!(streamed == 0.0 && lists > 0.0, "{what}");
        }
        for c in pair.controllers() {
            let log = c.log_tail(400);
            let said = log.matches("does not stream lists").count();
            println!(
                "    {}: said {said} time(s) that it lists in pages",
                c.name()
            );
            anyhow::ensure!(said >= 1, "{} never said it lists in pages", c.name());
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n--- state at failure ---\n{}", pair.dump());
    }
}
