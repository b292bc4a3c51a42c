//! The generated CRD on a real API server: the KubeLB-shaped samples are
//! accepted as they are, and bad SyncSecrets are rejected at admission with a
//! message that says what is wrong, nothing stored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use syncsecret_api::SyncSecret;
use syncsecret_api::payload::Payload;
use syncsecret_e2e::ControlPlane;

const NS: &str = "default";

fn api(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<SyncSecret>(&()))
}

fn object(name: &str, body: Value) -> DynamicObject {
    let mut v = json!({
        "apiVersion": "kubelb.k8c.io/v1alpha1",
        "kind": "SyncSecret",
        "metadata": {"name": name},
    });
    if let (Some(o), Some(b)) = (v.as_object_mut(), body.as_object()) {
        o.extend(b.clone());
    }
    serde_json::from_value(v).unwrap()
}

/// The API server's rejection message, or a panic if it accepted the object.
fn rejection(result: Result<DynamicObject, kube::Error>, case: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{case}: {status:?}");
            status.message
        }
        Err(other) => panic!("{case}: unexpected error {other}"),
        Ok(_) => panic!("{case}: the API server accepted it"),
    }
}

#[tokio::test]
async fn samples_are_accepted_and_bad_syncsecrets_rejected_with_their_message() {
    let cp = ControlPlane::start(&["management"]).await.unwrap();
    let client = cp.management().client().await.unwrap();
    let api = api(&client);
    let typed: Api<SyncSecret> = Api::namespaced(client.clone(), NS);

    // Good: every KubeLB-shaped sample, stored as sent.
    let samples_dir = syncsecret_e2e::repo_root().join("config/samples");
    let mut accepted = 0;
    for entry in std::fs::read_dir(&samples_dir).unwrap() {
        let path = entry.unwrap().path();
        let sample: SyncSecret = syncsecret_e2e::kube_util::read_yaml(&path).unwrap();
        let name = sample.metadata.name.clone().unwrap();
        let mut to_send = sample.clone();
        to_send.metadata.namespace = Some(NS.into());
        typed
            .create(&PostParams::default(), &to_send)
            .await
            .unwrap_or_else(|e| panic!("{} rejected: {e}", path.display()));
        let stored = typed.get(&name).await.unwrap();
        assert_eq!(stored.type_, sample.type_, "{name}");
        assert_eq!(stored.data, sample.data, "{name}");
        assert_eq!(stored.string_data, sample.string_data, "{name}");
        assert_eq!(stored.immutable, sample.immutable, "{name}");
        assert_eq!(
            Payload::of_sync_secret(&stored),
            Payload::of_sync_secret(&sample)
        );
        accepted += 1;
    }
    assert!(accepted >= 4, "only {accepted} samples");

    // Binary values whose base64 has '+' and '/' pass every rule (the CEL
    // rules read self.data; see validation::BASE64_PATTERN).
    let binary = object(
        "binary-tls",
        json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "+/8=", "tls.key": "//79/A=="}}),
    );
    api.create(&PostParams::default(), &binary).await.unwrap();
    accepted += 1;

    let key_msg = "keys must be at most 253 characters of letters, digits, '-', '_' or '.'";
    let many: serde_json::Map<String, Value> = (0..4097)
        .map(|i| (format!("k{i}"), json!("dg==")))
        .collect();
    let bad_creates: Vec<(&str, Value, String)> = vec![
        (
            "space-in-key",
            json!({"data": {"bad key": "dg=="}}),
            format!("data {key_msg}"),
        ),
        (
            "slash-in-key",
            json!({"stringData": {"etc/passwd": "v"}}),
            format!("stringData {key_msg}"),
        ),
        (
            "dot-dot-key",
            json!({"data": {"..": "dg=="}}),
            format!("data {key_msg}"),
        ),
        (
            "dot-dot-prefix",
            json!({"stringData": {"..data": "v"}}),
            format!("stringData {key_msg}"),
        ),
        (
            "long-key",
            json!({"data": {"a".repeat(254): "dg=="}}),
            format!("data {key_msg}"),
        ),
        // A type is bounded (a core Secret's is not): a megabyte of it was
        // admitted, cached and logged on every retry.
        (
            "long-type",
            json!({"type": "t".repeat(254)}),
            "type: Too long: may not be more than 253".into(),
        ),
        (
            "huge-type",
            json!({"type": "t".repeat(1_000_000)}),
            "type: Too long: may not be more than 253".into(),
        ),
        (
            "odd-type",
            json!({"type": "Opaque\nforged: log line"}),
            "type in body should match".into(),
        ),
        (
            "tls-without-key",
            json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "pem"}}),
            "type kubernetes.io/tls needs the keys 'tls.crt' and 'tls.key'".into(),
        ),
        (
            "dockerconfigjson-without-key",
            json!({"type": "kubernetes.io/dockerconfigjson", "data": {"config": "e30="}}),
            "type kubernetes.io/dockerconfigjson needs the key '.dockerconfigjson'".into(),
        ),
        (
            "dockercfg-without-key",
            json!({"type": "kubernetes.io/dockercfg"}),
            "type kubernetes.io/dockercfg needs the key '.dockercfg'".into(),
        ),
        (
            "basic-auth-without-user-or-password",
            json!({"type": "kubernetes.io/basic-auth", "stringData": {"token": "x"}}),
            "type kubernetes.io/basic-auth needs the key 'username' or 'password'".into(),
        ),
        (
            "ssh-auth-without-key",
            json!({"type": "kubernetes.io/ssh-auth", "stringData": {"known_hosts": "x"}}),
            "type kubernetes.io/ssh-auth needs the key 'ssh-privatekey'".into(),
        ),
        (
            "not-base64",
            json!({"data": {"k": "not base64!"}}),
            "data.k in body should match".into(),
        ),
        (
            "unpadded-base64",
            json!({"data": {"k": "dg"}}),
            "data.k in body should match".into(),
        ),
        (
            // Leftover bits in the last character: Go's decoder reads "A",
            // a strict one refuses it (issue 18).
            "non-canonical-base64",
            json!({"data": {"k": "QR=="}}),
            "data values must be base64 exactly as an encoder writes it".into(),
        ),
        (
            "non-canonical-base64-one-pad",
            json!({"data": {"k": "QUJ="}}),
            "data values must be base64 exactly as an encoder writes it".into(),
        ),
        (
            "too-many-keys",
            json!({"data": many}),
            "must have at most 4096 items".into(),
        ),
    ];
    for (name, body, expected) in &bad_creates {
        let message = rejection(
            api.create(&PostParams::default(), &object(name, body.clone()))
                .await,
            name,
        );
        println!(
            "rejected {name}: {} ({} bytes)",
            message.chars().take(400).collect::<String>(),
            message.len()
        );
        assert!(
            message.contains(expected.as_str()),
            "{name}: expected «{expected}» in «{message}»"
        );
        assert!(
            api.get_opt(name).await.unwrap().is_none(),
            "{name} was stored"
        );
    }

    // Immutable: payload, type and immutable itself are frozen.
    let frozen = object(
        "frozen",
        json!({"type": "Opaque", "immutable": true, "data": {"k": "djE=", "bin": "+/8="}, "stringData": {"s": "v1"}}),
    );
    let stored = api.create(&PostParams::default(), &frozen).await.unwrap();
    let bad_updates: Vec<(&str, Value, &str)> = vec![
        (
            "change-data",
            json!({"data": {"k": "djI="}}),
            "data and stringData cannot change: the SyncSecret is immutable",
        ),
        (
            "add-string-data",
            json!({"stringData": {"s": "v1", "t": "new"}}),
            "data and stringData cannot change: the SyncSecret is immutable",
        ),
        (
            "drop-data",
            json!({"data": null}),
            "data and stringData cannot change: the SyncSecret is immutable",
        ),
        (
            "unset-immutable",
            json!({"immutable": false}),
            "immutable cannot be unset once it is true",
        ),
        (
            "change-type",
            json!({"type": "example.com/custom"}),
            "type cannot change: the SyncSecret is immutable",
        ),
    ];
    for (case, change, expected) in &bad_updates {
        let mut updated = stored.clone();
        if let (Some(o), Some(c)) = (updated.data.as_object_mut(), change.as_object()) {
            for (k, v) in c {
                if v.is_null() {
                    o.remove(k);
                } else {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        let message = rejection(
            api.replace("frozen", &PostParams::default(), &updated)
                .await,
            case,
        );
        println!("rejected update {case}: {message}");
        assert!(
            message.contains(expected),
            "{case}: expected «{expected}» in «{message}»"
        );
    }
    let after = typed.get("frozen").await.unwrap().data.unwrap();
    assert_eq!(after["k"].0, b"v1", "immutable content changed");
    assert_eq!(after["bin"].0, [0xfb, 0xff], "immutable content changed");

    // Metadata of an immutable one may still change; a mutable one may change.
    let mut relabelled = stored.clone();
    relabelled.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
    api.replace("frozen", &PostParams::default(), &relabelled)
        .await
        .unwrap();
    let mut opaque = typed.get("db-credentials").await.unwrap();
    opaque.string_data = Some([("password".to_owned(), "rotated".to_owned())].into());
    typed
        .replace("db-credentials", &PostParams::default(), &opaque)
        .await
        .unwrap();

    println!(
        "kube-apiserver {}: {} samples accepted, {} bad creates and {} bad updates rejected",
        cp.version(),
        accepted,
        bad_creates.len(),
        bad_updates.len()
    );
}
