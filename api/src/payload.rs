//! What a SyncSecret carries, and when two carry the same.
//!
//! The API server turns a core Secret's `stringData` into `data` on write
//! (stringData winning on a shared key) and never returns `stringData`. A
//! SyncSecret is a custom resource, so its `stringData` is stored as sent. To
//! compare a SyncSecret with a Secret, or two SyncSecrets that spell the same
//! content differently, both sides are reduced to their *effective* payload.
//! KubeLB compares `stringData` with a Secret that never has any and so
//! rewrites such Secrets on every reconcile; comparing effective payloads is
//! what makes a steady state cost zero writes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::v1alpha1::SyncSecret;

/// The type an empty `type` means, as for a core Secret.
pub const DEFAULT_TYPE: &str = "Opaque";

/// The content of a Secret as the API server stores it: type, merged data,
/// immutability.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    /// The Secret type, `Opaque` when unset or empty.
    pub type_: String,
    /// `stringData` merged over `data`.
    pub data: BTreeMap<String, ByteString>,
    /// `immutable`, false when unset.
    pub immutable: bool,
}

impl std::fmt::Debug for Payload {
    /// Key names only: a payload's values never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("type", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("immutable", &self.immutable)
            .finish()
    }
}

/// `stringData` merged over `data`, exactly as the API server does for a core
/// Secret: every `data` entry, then every `stringData` entry as UTF-8 bytes,
/// replacing a `data` entry of the same key.
pub fn effective_data(
    data: Option<&BTreeMap<String, ByteString>>,
    string_data: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, ByteString> {
    let mut merged = data.cloned().unwrap_or_default();
    for (k, v) in string_data.into_iter().flatten() {
        merged.insert(k.clone(), ByteString(v.as_bytes().to_vec()));
    }
    merged
}

fn normalized_type(type_: Option<&str>) -> String {
    match type_ {
        None | Some("") => DEFAULT_TYPE.to_owned(),
        Some(t) => t.to_owned(),
    }
}

impl Payload {
    /// The effective payload of a SyncSecret.
    pub fn of_sync_secret(ss: &SyncSecret) -> Self {
        Self {
            type_: normalized_type(ss.type_.as_deref()),
            data: effective_data(ss.data.as_ref(), ss.string_data.as_ref()),
            immutable: ss.immutable.unwrap_or(false),
        }
    }

    /// The effective payload of a core Secret (one read from the API server
    /// has no `stringData`; one built locally may).
    pub fn of_secret(secret: &Secret) -> Self {
        Self {
            type_: normalized_type(secret.type_.as_deref()),
            data: effective_data(secret.data.as_ref(), secret.string_data.as_ref()),
            immutable: secret.immutable.unwrap_or(false),
        }
    }

    /// Total size of keys and values in bytes, as the API server counts it
    /// against its 1 MiB Secret limit.
    pub fn size(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.0.len()).sum()
    }

    /// Bytes of the keys alone.
    pub fn key_bytes(&self) -> usize {
        self.data.keys().map(String::len).sum()
    }
}

/// A payload reduced to what equality needs: type, immutability, size and
/// one SHA-256 per value. Two payloads are equal exactly when their digests
/// are (SHA-256 collisions aside).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PayloadDigest {
    /// The Secret type, `Opaque` when unset or empty.
    pub type_: String,
    /// `immutable`, false when unset.
    pub immutable: bool,
    /// Per key of the effective data, in key order: the SHA-256 of its value.
    pub values: Vec<(String, [u8; 32])>,
    /// Total size of keys and values in bytes ([`Payload::size`]).
    pub size: usize,
}

impl std::fmt::Debug for PayloadDigest {
    /// Key names only: a digest of a short value is as good as the value
    /// to anyone who can guess it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadDigest")
            .field("type", &self.type_)
            .field(
                "keys",
                &self.values.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("immutable", &self.immutable)
            .finish()
    }
}

impl Payload {
    /// The digest of this payload.
    pub fn digested(&self) -> PayloadDigest {
        use sha2::{Digest, Sha256};
        PayloadDigest {
            type_: self.type_.clone(),
            immutable: self.immutable,
            values: self
                .data
                .iter()
                .map(|(k, v)| (k.clone(), Sha256::digest(&v.0).into()))
                .collect(),
            size: self.size(),
        }
    }
}

impl PayloadDigest {
    /// Bytes of the keys alone ([`Payload::key_bytes`]).
    pub fn key_bytes(&self) -> usize {
        self.values.iter().map(|(k, _)| k.len()).sum()
    }

    fn value(&self, key: &str) -> Option<&[u8; 32]> {
        self.values
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.values[i].1)
    }

    /// The keys whose presence or value differs between two payloads (names
    /// only, never values), sorted.
    pub fn changed_keys(&self, other: &PayloadDigest) -> Vec<String> {
        let mut keys: Vec<String> = self
            .values
            .iter()
            .chain(&other.values)
            .map(|(k, _)| k)
            .filter(|k| self.value(k) != other.value(k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// What a write from `live` (`None`: nothing there) to `self` changes,
    /// by name only: `(new)`, `type`, `immutable`, the data keys.
    pub fn changes_from(&self, live: Option<&PayloadDigest>) -> Vec<String> {
        let Some(live) = live else {
            return vec!["(new)".to_owned()];
        };
        let mut out = Vec::new();
        if live.type_ != self.type_ {
            out.push("type".to_owned());
        }
        if live.immutable != self.immutable {
            out.push("immutable".to_owned());
        }
        out.extend(live.changed_keys(self));
        out
    }
}

/// Two SyncSecrets carry the same content (type, effective data, immutable),
/// however each splits it between `data` and `stringData`.
pub fn same_payload(a: &SyncSecret, b: &SyncSecret) -> bool {
    Payload::of_sync_secret(a) == Payload::of_sync_secret(b)
}

/// A Secret holds exactly what a SyncSecret carries.
pub fn secret_holds(ss: &SyncSecret, secret: &Secret) -> bool {
    Payload::of_sync_secret(ss) == Payload::of_secret(secret)
}

/// Every entry of `want` is in `live` (a lookup by key) with the same
/// value. Extra entries in `live` (labels or annotations that someone else
/// added) do not count as a difference: server-side apply leaves them alone.
pub fn contains_all<'a>(
    live: impl Fn(&str) -> Option<&'a str>,
    want: &BTreeMap<String, String>,
) -> bool {
    want.iter().all(|(k, v)| live(k) == Some(v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> ByteString {
        ByteString(s.as_bytes().to_vec())
    }

    fn map<V>(entries: &[(&str, V)]) -> BTreeMap<String, V>
    where
        V: Clone,
    {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn string_data_wins_over_data_and_keys_are_unioned() {
        let data = map(&[("a", bytes("from-data")), ("b", bytes("only-data"))]);
        let string_data = map(&[
            ("a", "from-stringData".to_owned()),
            ("c", "only-sd".to_owned()),
        ]);
        let merged = effective_data(Some(&data), Some(&string_data));
        assert_eq!(
            merged,
            map(&[
                ("a", bytes("from-stringData")),
                ("b", bytes("only-data")),
                ("c", bytes("only-sd")),
            ])
        );
    }

    #[test]
    fn empty_inputs_give_empty_data() {
        assert!(effective_data(None, None).is_empty());
        let sd = map(&[("k", String::new())]);
        assert_eq!(
            effective_data(None, Some(&sd)),
            map(&[("k", ByteString(vec![]))])
        );
    }

    #[test]
    fn binary_data_is_kept_byte_for_byte() {
        let raw = ByteString(vec![0, 159, 146, 150, 255]);
        let data = map(&[("bin", raw.clone())]);
        assert_eq!(effective_data(Some(&data), None)["bin"], raw);
    }

    #[test]
    fn same_payload_ignores_how_it_is_spelled() {
        let a = SyncSecret {
            string_data: Some(map(&[("user", "admin".to_owned())])),
            ..Default::default()
        };
        let b = SyncSecret {
            type_: Some("Opaque".into()),
            data: Some(map(&[("user", bytes("admin"))])),
            immutable: Some(false),
            ..Default::default()
        };
        assert!(same_payload(&a, &b));
        let c = SyncSecret {
            data: Some(map(&[("user", bytes("root"))])),
            ..Default::default()
        };
        assert!(!same_payload(&a, &c));
        let d = SyncSecret {
            type_: Some("kubernetes.io/basic-auth".into()),
            ..b.clone()
        };
        assert!(!same_payload(&b, &d));
        let e = SyncSecret {
            immutable: Some(true),
            ..b.clone()
        };
        assert!(!same_payload(&b, &e));
    }

    #[test]
    fn secret_without_string_data_matches_sync_secret_with_it() {
        // What the API server returns for a Secret written with stringData.
        let secret = Secret {
            type_: Some("Opaque".into()),
            data: Some(map(&[
                ("password", bytes("s3cr3t")),
                ("user", bytes("old")),
            ])),
            ..Default::default()
        };
        let ss = SyncSecret {
            data: Some(map(&[("user", bytes("old"))])),
            string_data: Some(map(&[("password", "s3cr3t".to_owned())])),
            ..Default::default()
        };
        assert!(secret_holds(&ss, &secret));

        let changed = SyncSecret {
            string_data: Some(map(&[("password", "rotated".to_owned())])),
            ..ss.clone()
        };
        assert!(!secret_holds(&changed, &secret));

        let immutable = Secret {
            immutable: Some(true),
            ..secret.clone()
        };
        assert!(!secret_holds(&ss, &immutable));

        let extra_key = Secret {
            data: Some(map(&[
                ("password", bytes("s3cr3t")),
                ("user", bytes("old")),
                ("extra", bytes("x")),
            ])),
            ..secret
        };
        assert!(!secret_holds(&ss, &extra_key));
    }

    #[test]
    fn contains_all_allows_foreign_entries_but_not_missing_or_changed_ones() {
        let want = map(&[("a", "1".to_owned())]);
        let lookup = |m: &'static [(&'static str, &'static str)]| {
            move |k: &str| m.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
        };
        assert!(contains_all(lookup(&[("a", "1"), ("z", "9")]), &want));
        assert!(!contains_all(lookup(&[("a", "2")]), &want));
        assert!(!contains_all(lookup(&[]), &want));
        assert!(contains_all(lookup(&[]), &BTreeMap::new()));
    }

    #[test]
    fn digest_tells_content_apart() {
        let a = Payload {
            type_: "Opaque".into(),
            data: map(&[("a", bytes("1")), ("b", bytes("2"))]),
            immutable: false,
        };
        assert_eq!(a.digested(), a.clone().digested());
        let mut b = a.clone();
        b.data.insert("injected".into(), bytes("x"));
        b.data.insert("a".into(), bytes("changed"));
        assert_ne!(a.digested(), b.digested());
        // Keys and values are digested apart: ("ab","c") is not ("a","bc").
        let x = Payload {
            data: map(&[("ab", bytes("c"))]),
            ..a.clone()
        };
        let y = Payload {
            data: map(&[("a", bytes("bc"))]),
            ..a.clone()
        };
        assert_ne!(x.digested(), y.digested());
        let t = Payload {
            type_: "kubernetes.io/tls".into(),
            ..a.clone()
        };
        assert_ne!(a.digested(), t.digested());
    }

    fn payload_of(entries: &[(&str, &str)]) -> Payload {
        Payload {
            type_: "Opaque".into(),
            data: entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
            immutable: false,
        }
    }

    #[test]
    fn digests_are_equal_exactly_when_payloads_are() {
        let a = payload_of(&[("a", "1"), ("b", "2")]);
        assert_eq!(a.digested(), a.clone().digested());
        for other in [
            payload_of(&[("a", "1"), ("b", "3")]),
            payload_of(&[("a", "1")]),
            payload_of(&[("a", "1"), ("b", "2"), ("c", "")]),
            Payload {
                immutable: true,
                ..a.clone()
            },
            Payload {
                type_: "kubernetes.io/tls".into(),
                ..a.clone()
            },
        ] {
            assert_ne!(a.digested(), other.digested());
        }
        assert_eq!(a.digested().size, a.size());
    }

    #[test]
    fn changes_are_named_by_key() {
        let before = payload_of(&[("a", "1"), ("b", "2"), ("gone", "x")]);
        let after = payload_of(&[("a", "1"), ("b", "3"), ("new", "y")]);
        assert_eq!(
            after.digested().changes_from(Some(&before.digested())),
            ["b", "gone", "new"]
        );
        assert_eq!(after.digested().changes_from(None), ["(new)"]);
        let typed = Payload {
            type_: "kubernetes.io/tls".into(),
            immutable: true,
            ..before.clone()
        };
        assert_eq!(
            typed.digested().changes_from(Some(&before.digested())),
            ["type", "immutable"]
        );
    }

    #[test]
    fn debug_never_prints_values() {
        let p = Payload::of_sync_secret(&SyncSecret {
            string_data: Some(map(&[("token", "hunter2-value".to_owned())])),
            ..Default::default()
        });
        let printed = format!("{p:?}");
        assert!(printed.contains("token"));
        assert!(!printed.contains("hunter2-value"));
    }
}
