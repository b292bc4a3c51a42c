//! The committed YAML under `config/` is exactly what the Rust types
//! generate. Fix a failure with `make manifests` and commit the result.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::path::PathBuf;

#[test]
fn committed_manifests_match_the_types() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (path, want) in syncsecret_runtime::generate::manifests::generated(&root).unwrap() {
        let have = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
        assert!(
            have == want,
            "{} differs from what the types generate: run `make manifests` and commit it",
            path.display()
        );
    }
}
