//! The harness itself: real garbage collection on the management cluster,
//! several clusters at once, nothing left behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Resource, ResourceExt};
use syncsecret_api::SyncSecret;
use syncsecret_e2e::ControlPlane;
use syncsecret_e2e::kube_util::eventually;

async fn fresh_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// A Secret owned by a SyncSecret (the manager's design) disappears when its
/// owner is deleted: the garbage collector of kube-controller-manager runs.
#[tokio::test]
async fn deleting_an_owner_cascades_to_its_dependent() {
    let cp = ControlPlane::start(&["management"]).await.unwrap();
    let client = cp.management().client().await.unwrap();
    let ns = "gc-cascade";
    fresh_namespace(&client, ns).await;

    let owners: Api<SyncSecret> = Api::namespaced(client.clone(), ns);
    let owner = owners
        .create(
            &PostParams::default(),
            &SyncSecret {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                string_data: Some([("k".to_owned(), "v".to_owned())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let dependent = Secret {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: SyncSecret::api_version(&()).into(),
                kind: SyncSecret::kind(&()).into(),
                name: owner.name_any(),
                uid: owner.uid().unwrap(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();

    owners
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let gone = eventually(
        "dependent Secret collected",
        Duration::from_secs(60),
        || async {
            match secrets
                .get_opt("dependent")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(_) => Err("dependent still exists".to_owned()),
            }
        },
    )
    .await;
    assert!(gone.is_ok(), "{gone:?}");
    assert!(owners.get_opt("owner").await.unwrap().is_none());
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Processes whose command line mentions `dir` (catches any grandchild that
/// left its process group).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = entry.path().join("cmdline");
        if let Ok(bytes) = std::fs::read(&cmdline) {
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if text.contains(&needle) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Three clusters start (the time is printed), and a test that panics while
/// they run leaves no process and no directory behind.
#[test]
fn no_process_or_directory_survives_a_panicking_test() {
    let seen: std::sync::Mutex<Option<(Vec<u32>, PathBuf)>> = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let cp = ControlPlane::start(&["management", "tenant1", "tenant2"])
                .await
                .unwrap();
            // etcd, three API servers, one kube-controller-manager.
            assert_eq!(cp.pids().len(), 5);
            for pid in cp.pids() {
                assert!(running(pid), "process {pid} should be running");
            }
            for c in cp.clusters() {
                let v = c.client().await.unwrap().apiserver_version().await.unwrap();
                assert_eq!(v.git_version, cp.version());
            }
            *seen.lock().unwrap() = Some((cp.pids(), cp.dir().unwrap().to_owned()));
            panic!("the test fails while the control plane runs");
        })
    }));
    assert!(outcome.is_err(), "the closure was meant to panic");
    let (pids, dir) = seen
        .lock()
        .unwrap()
        .take()
        .expect("the control plane started");
    for pid in &pids {
        assert!(!running(*pid), "process {pid} survived the harness");
    }
    assert!(!dir.exists(), "{} survived the harness", dir.display());
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
}
