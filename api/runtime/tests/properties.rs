//! Property tests over the contract both controllers share: conversion
//! (tenant object → copy → Secret → the wire), effective data, equality and
//! redaction, on generated input: binary values, empty maps, maximum-length
//! keys, unicode stringData, keys only in stringData, payloads near 1 MiB.
//! Nothing may panic, and each property is what a user relies on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use syncsecret_api::SyncSecret;
use syncsecret_api::desired::{
    copy_needs_write, desired_copy, desired_copy_metadata, desired_secret, desired_secret_metadata,
    secret_needs_write,
};
use syncsecret_api::payload::{Payload, effective_data, secret_holds};
use syncsecret_api::policy::{MAX_SECRET_BYTES, Policy};
use syncsecret_runtime::cache::summary::{Summarize, Summary};

/// Secret keys as the API server accepts them, up to the 253-character limit.
/// Whether the ccm would write `live` (a stored copy) for `tenant`,
/// decided as it decides: from both as cached.
fn copy_wanted(live: &SyncSecret, tenant: &SyncSecret) -> bool {
    let cached: Summary<SyncSecret> = tenant.clone().summary();
    let meta = desired_copy_metadata(&cached, "tenant-shop", None).unwrap();
    copy_needs_write(
        &live.clone().summary(),
        &meta,
        &cached.payload,
        "syncsecret-ccm",
    )
}

/// Whether the manager would write `live` (a stored Secret) for `copy`,
/// from both as cached.
fn secret_wanted(live: &Secret, copy: &SyncSecret) -> bool {
    let cached: Summary<SyncSecret> = copy.clone().summary();
    let meta = desired_secret_metadata(&cached, &Policy::default()).unwrap();
    secret_needs_write(
        &live.clone().summary(),
        &meta,
        &cached.payload,
        "syncsecret-manager",
    )
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-._a-zA-Z0-9]{1,16}",
        "[a-z]{253}",
        Just("tls.crt".to_owned()),
        Just(".dockerconfigjson".to_owned()),
    ]
    .prop_filter("not . or ..", |k| k != "." && k != "..")
}

fn data() -> impl Strategy<Value = BTreeMap<String, ByteString>> {
    prop::collection::btree_map(
        key(),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(ByteString),
        0..6,
    )
}

fn string_data() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), "\\PC{0,24}", 0..4)
}

fn tenant_object() -> impl Strategy<Value = SyncSecret> {
    (
        prop::option::of(data()),
        prop::option::of(string_data()),
        prop::option::of(prop_oneof![
            Just("Opaque".to_owned()),
            Just(String::new()),
            Just("example.com/custom".to_owned())
        ]),
        prop::option::of(any::<bool>()),
        1i64..1000,
    )
        .prop_map(
            |(data, string_data, type_, immutable, generation)| SyncSecret {
                metadata: ObjectMeta {
                    name: Some("obj".into()),
                    namespace: Some("shop".into()),
                    uid: Some("6f1d2a3e-0000-4000-8000-000000000001".into()),
                    generation: Some(generation),
                    ..Default::default()
                },
                type_,
                data,
                string_data,
                immutable,
                status: None,
            },
        )
}

/// The copy as the API server would store it: a UID of its own.
fn stored(mut copy: SyncSecret) -> SyncSecret {
    copy.metadata.uid = Some("0a0b0c0d-0000-4000-8000-000000000002".into());
    copy
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// stringData wins over data for the same key; every key of either is
    /// present; stringData values are their UTF-8 bytes.
    #[test]
    fn effective_data_merges_as_the_api_server_does(d in data(), sd in string_data()) {
        let merged = effective_data(Some(&d), Some(&sd));
        for (k, v) in &sd {
            prop_assert_eq!(&merged[k].0, &v.as_bytes().to_vec());
        }
        for (k, v) in &d {
            if !sd.contains_key(k) {
                prop_assert_eq!(&merged[k], v);
            }
        }
        prop_assert_eq!(merged.len(), d.keys().chain(sd.keys()).collect::<std::collections::BTreeSet<_>>().len());
    }

    /// Tenant object → copy → Secret keeps exactly the content (type,
    /// effective data, immutable), whatever the split between data and
    /// stringData.
    #[test]
    fn the_secret_holds_what_the_tenant_sent(t in tenant_object()) {
        let copy = stored(desired_copy(&t, "tenant-shop", None).unwrap());
        prop_assert_eq!(Payload::of_sync_secret(&copy), Payload::of_sync_secret(&t));
        let secret = desired_secret(&copy, &Policy::default()).unwrap();
        prop_assert!(secret_holds(&t, &secret));
        prop_assert!(secret.string_data.is_none(), "the Secret carries merged data only");
    }

    /// What is desired, once stored, needs no write: a steady state costs
    /// nothing.
    #[test]
    fn desired_objects_need_no_second_write(t in tenant_object()) {
        let copy = stored(desired_copy(&t, "tenant-shop", None).unwrap());
        prop_assert!(!copy_wanted(&copy, &t));
        let secret = desired_secret(&copy, &Policy::default()).unwrap();
        prop_assert!(!secret_wanted(&secret, &copy));
    }

    /// Any change of content is a write, and its key is named.
    #[test]
    fn a_changed_value_is_a_write_and_named(t in tenant_object(), k in key(), v in prop::collection::vec(any::<u8>(), 1..32)) {
        let copy = stored(desired_copy(&t, "tenant-shop", None).unwrap());
        let mut changed = t.clone();
        let before = Payload::of_sync_secret(&t);
        // stringData wins on the wire, so change both halves consistently.
        changed.string_data.get_or_insert_with(BTreeMap::new).remove(&k);
        changed.data.get_or_insert_with(BTreeMap::new).insert(k.clone(), ByteString(v.clone()));
        let after = Payload::of_sync_secret(&changed);
        if before.data.get(&k).map(|b| &b.0) != Some(&v) {
            prop_assert!(copy_wanted(&copy, &changed));
            prop_assert!(before.digested().changed_keys(&after.digested()).contains(&k));
            prop_assert_ne!(before.digested(), after.digested());
        }
    }

    /// Equal content gives equal digests, and the digest does not depend on
    /// how the content was split between data and stringData.
    #[test]
    fn digest_follows_content(t in tenant_object()) {
        let p = Payload::of_sync_secret(&t);
        let mut all_data = t.clone();
        all_data.data = Some(p.data.clone());
        all_data.string_data = None;
        prop_assert_eq!(Payload::of_sync_secret(&all_data).digested(), p.digested());
        prop_assert!(p.digested().changed_keys(&Payload::of_sync_secret(&all_data).digested()).is_empty());
    }

    /// The wire form round-trips: what the API server sends back parses to
    /// the same content.
    #[test]
    fn the_wire_form_round_trips(t in tenant_object()) {
        let json = serde_json::to_string(&t).unwrap();
        let back: SyncSecret = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(Payload::of_sync_secret(&back), Payload::of_sync_secret(&t));
        let secret = desired_secret(&stored(desired_copy(&t, "tenant-shop", None).unwrap()), &Policy::default()).unwrap();
        let back: Secret = serde_json::from_str(&serde_json::to_string(&secret).unwrap()).unwrap();
        prop_assert!(secret_holds(&t, &back));
    }

    /// Debug output (what reaches a log) names keys, never values.
    #[test]
    fn debug_output_never_holds_a_value(t in tenant_object(), secret in "[a-z]{12}") {
        let mut t = t;
        t.string_data.get_or_insert_with(BTreeMap::new).insert("k".into(), format!("value-{secret}"));
        let copy = stored(desired_copy(&t, "tenant-shop", None).unwrap());
        let shown = format!("{t:?} {copy:?} {:?}", Payload::of_sync_secret(&t));
        prop_assert!(!shown.contains(&secret), "{}", shown);
    }
}

/// Payloads at and just over the API server's 1 MiB limit: the policy says
/// which, before any write, and nothing else is affected by the size.
#[test]
fn one_mebibyte_payloads_are_judged_before_any_write() {
    let policy = Policy::default();
    // Keys count too, as the API server counts them, and again with
    // their managedFields entry.
    let limit = MAX_SECRET_BYTES - 2 * "big".len() - syncsecret_api::policy::KEY_ENTRY_BYTES;
    for (bytes, fits) in [(limit, true), (limit + 1, false)] {
        let t = SyncSecret {
            metadata: ObjectMeta {
                name: Some("big".into()),
                namespace: Some("shop".into()),
                uid: Some("6f1d2a3e-0000-4000-8000-000000000003".into()),
                ..Default::default()
            },
            data: Some([("big".to_owned(), ByteString(vec![0xff; bytes]))].into()),
            ..Default::default()
        };
        let copy = stored(desired_copy(&t, "tenant-shop", None).unwrap());
        let payload = Payload::of_sync_secret(&copy);
        assert_eq!(
            policy
                .check(
                    &payload.type_,
                    payload.size(),
                    payload.key_bytes(),
                    payload.data.len()
                )
                .is_ok(),
            fits,
            "{bytes} bytes"
        );
        assert!(secret_holds(&t, &desired_secret(&copy, &policy).unwrap()));
    }
}

/// Empty maps and zero-length values are content like any other.
#[test]
fn empty_data_and_zero_length_values_sync() {
    for data in [
        None,
        Some(BTreeMap::new()),
        Some([("empty".to_owned(), ByteString(Vec::new()))].into()),
    ] {
        let t = SyncSecret {
            metadata: ObjectMeta {
                name: Some("odd".into()),
                namespace: Some("shop".into()),
                uid: Some("6f1d2a3e-0000-4000-8000-000000000004".into()),
                ..Default::default()
            },
            data: data.clone(),
            ..Default::default()
        };
        let copy = stored(desired_copy(&t, "tenant-shop", None).unwrap());
        let secret = desired_secret(&copy, &Policy::default()).unwrap();
        assert!(secret_holds(&t, &secret), "{data:?}");
        assert!(!secret_wanted(&secret, &copy));
    }
}
