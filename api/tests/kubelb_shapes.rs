//! KubeLB-shaped SyncSecrets (the samples under `config/samples/`) survive a
//! trip through the Rust types unchanged, field for field.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::path::PathBuf;

use syncsecret_api::SyncSecret;
use syncsecret_api::payload::Payload;

fn samples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn samples_round_trip_unchanged() {
    let all = samples();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "opaque.yaml",
        "tls.yaml",
        "dockerconfigjson.yaml",
        "immutable.yaml",
    ] {
        assert!(
            names.contains(&wanted),
            "config/samples/{wanted} is missing"
        );
    }
    for (name, text) in all {
        let original: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let typed: SyncSecret = serde_yaml_ng::from_str(&text).unwrap();
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            back, original,
            "{name} changed on the way through the types"
        );
    }
}

#[test]
fn opaque_sample_decodes_base64_and_merges_string_data() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples/opaque.yaml"),
    )
    .unwrap();
    let ss: SyncSecret = serde_yaml_ng::from_str(&text).unwrap();
    let p = Payload::of_sync_secret(&ss);
    assert_eq!(p.type_, "Opaque");
    assert_eq!(p.data["username"].0, b"shop-app");
    assert_eq!(p.data["password"].0, b"not-a-real-password");
}

#[test]
fn status_round_trips_with_kubelb_phases_and_conditions() {
    let text = r#"
apiVersion: kubelb.k8c.io/v1alpha1
kind: SyncSecret
metadata: {name: x, namespace: tenant-a, uid: 9f0c2f43-1d7b-4c0e-a3c5-8e9b2f6a1d70}
type: kubernetes.io/basic-auth
stringData: {username: u}
status:
  observedGeneration: 3
  phase: Synced
  conditions:
  - type: Synced
    status: "True"
    reason: SecretSynced
    message: Secret tenant-a/9f0c2f43 holds generation 3
    lastTransitionTime: "2026-11-23T08:00:00Z"
    observedGeneration: 3
"#;
    let original: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
    let typed: SyncSecret = serde_yaml_ng::from_str(text).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), original);
    assert_eq!(
        typed.status.unwrap().phase,
        Some(syncsecret_api::SyncSecretPhase::Synced)
    );
}

#[test]
fn debug_output_never_contains_values() {
    let (_, text) = samples()
        .into_iter()
        .find(|(n, _)| n == "opaque.yaml")
        .unwrap();
    let ss: SyncSecret = serde_yaml_ng::from_str(&text).unwrap();
    let printed = format!("{ss:?}");
    assert!(
        printed.contains("password"),
        "key names are shown: {printed}"
    );
    assert!(!printed.contains("not-a-real-password"), "{printed}");
    assert!(!printed.contains("c2hvcC1hcHA"), "{printed}");
    assert!(!printed.contains("shop-app"), "{printed}");
}
