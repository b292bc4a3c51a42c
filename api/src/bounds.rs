//! Every dimension of a SyncSecret that a tenant controls, and its bound.
//!
//! One table, [`BOUNDS`], is what every enforcement and every description
//! is made from: the CRD's schema and rules (`validation`), the management
//! cluster's admission policy and quota on copies (`admission`), the
//! manager chart's `tenantLimits` values and their schema, the manager's
//! own checks (`policy`) and the table in docs/security.md (all rendered by
//! `make manifests`). The API server enforces each before anything is
//! stored; a refusal names the bound and the size it met, never the value.
//!
//! Bounds of the CRD hold in both clusters and are fixed (a CEL rule needs
//! them to be priced). Bounds of the policy hold for what tenants' own
//! identities write into the management cluster, and a platform sets them
//! (the chart's `tenantLimits`); their defaults keep a tenant's footprint
//! in the management cluster's etcd to what docs/security.md states.

/// What enforces a bound, before anything is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcer {
    /// The CRD's schema, in both clusters: fixed.
    Crd,
    /// The ValidatingAdmissionPolicy on copies that tenants' identities
    /// write in the management cluster.
    Policy,
    /// The ResourceQuota of each tenant namespace.
    Quota,
    /// The manager itself: it waits, refusing nothing.
    Manager,
}

impl Enforcer {
    /// How the docs name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Crd => "CRD schema (both clusters)",
            Self::Policy => "admission policy on copies",
            Self::Quota => "ResourceQuota per tenant namespace",
            Self::Manager => "the manager, which waits (nothing is refused)",
        }
    }
}

/// One bounded dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Its key under the manager chart's `tenantLimits` when a platform
    /// sets it; a fixed bound's name in the docs otherwise.
    pub key: &'static str,
    /// What is counted, in the words of refusals and docs.
    pub what: &'static str,
    /// The bound by default (the only value of a fixed one).
    pub default: u64,
    /// The most it may be set to (the schema's maximum), where something
    /// beyond us sets one: the API server's own limits, or the CRD's.
    pub ceiling: Option<u64>,
    /// Whether a platform sets it (a `tenantLimits` value).
    pub settable: bool,
    /// What enforces it.
    pub enforcer: Enforcer,
    /// The e2e test that runs an attack at this bound.
    pub test: &'static str,
}

/// The longest `type`: a qualified name's length, as for label keys and
/// every Secret type Kubernetes defines.
pub const TYPE_LENGTH: Bound = Bound {
    key: "typeLength",
    what: "characters of type",
    default: 253,
    ceiling: None,
    settable: false,
    enforcer: Enforcer::Crd,
    test: "e2e/tests/crd_admission.rs (long-type, huge-type, odd-type)",
};

/// The characters of `type`: letters and digits, with `-`, `_`, `.` and
/// `/` between them (`Opaque`, `kubernetes.io/tls`, `helm.sh/release.v1`).
pub const TYPE_PATTERN: &str = "^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$";

/// The longest data key, as for a core Secret (`validation.IsConfigMapKey`).
pub const KEY_LENGTH: Bound = Bound {
    key: "keyLength",
    what: "characters of a data key",
    default: 253,
    ceiling: None,
    settable: false,
    enforcer: Enforcer::Crd,
    test: "e2e/tests/crd_admission.rs (long-key)",
};

/// The most entries in `data` and in `stringData` of any SyncSecret: what
/// lets CEL price its per-key rules. The policy's [`DATA_KEYS`] is lower.
pub const ENTRIES: Bound = Bound {
    key: "entries",
    what: "entries of data or stringData",
    default: 4096,
    ceiling: None,
    settable: false,
    enforcer: Enforcer::Crd,
    test: "e2e/tests/crd_admission.rs (too-many-keys)",
};

/// The most copies a tenant namespace holds.
pub const COPIES: Bound = Bound {
    key: "copies",
    what: "copies per tenant namespace",
    default: 100,
    ceiling: None,
    settable: true,
    enforcer: Enforcer::Quota,
    test: "e2e/tests/hostile/copies.rs (a flood over the quota)",
};

/// What an entry of `data`, `labels` or `annotations` is counted beyond
/// its key and value: its key again (managedFields name it, on the copy
/// and on the Secret) and 16 for its JSON there and in the object. So a
/// copy's bytes as counted are about what etcd stores of it, whether in
/// a few long values or in many short keys.
pub const ENTRY_BYTES: u64 = 16;

/// The most bytes of `data` per copy: base64 values, keys twice and
/// [`ENTRY_BYTES`] a key.
pub const DATA_BYTES: Bound = Bound {
    key: "dataBytes",
    what: "bytes of data per copy (base64 values, keys twice, 16 a key)",
    default: 16_384,
    // The base64 of the 1 MiB a Secret holds.
    ceiling: Some(1_398_104),
    settable: true,
    enforcer: Enforcer::Policy,
    test: "e2e/tests/hostile/data.rs",
};

/// The most keys of `data` per copy.
pub const DATA_KEYS: Bound = Bound {
    key: "dataKeys",
    what: "data keys per copy",
    default: 64,
    ceiling: Some(ENTRIES.default),
    settable: true,
    enforcer: Enforcer::Policy,
    test: "e2e/tests/hostile/data.rs",
};

/// The most bytes of labels and annotations per copy (UTF-8 bytes, not
/// characters): values, keys twice and [`ENTRY_BYTES`] an entry.
pub const METADATA_BYTES: Bound = Bound {
    key: "metadataBytes",
    what: "bytes of labels and annotations per copy (values, keys twice, 16 an entry)",
    default: 4_096,
    // The API server's own limit on annotations.
    ceiling: Some(262_144),
    settable: true,
    enforcer: Enforcer::Policy,
    test: "e2e/tests/hostile/copies.rs (oversized metadata)",
};

/// The most finalizers per copy: the manager's one
/// ([`FINALIZER`](crate::contract::FINALIZER)), once. The API server keeps
/// duplicates, and each cost the manager memory and a write.
pub const FINALIZERS: Bound = Bound {
    key: "finalizers",
    what: "finalizers per copy",
    default: 1,
    ceiling: None,
    settable: false,
    enforcer: Enforcer::Policy,
    test: "e2e/tests/hostile/finalizers.rs",
};

/// The most fields at one depth of a copy's managedFields (all its entries
/// together), and no field deeper than the four levels our copies have
/// (`f:status` › `f:conditions` › a condition › its field). The API
/// server keeps the managedFields a client sends, and no CEL function
/// measures them in bytes: this bound keeps them cheap to measure for
/// [`MANAGED_FIELDS_BYTES`], within the API server's cost limit.
pub const MANAGED_FIELDS_WIDTH: Bound = Bound {
    key: "managedFieldsWidth",
    what: "fields at one depth of managedFields per copy",
    default: 8_192,
    ceiling: None,
    settable: false,
    enforcer: Enforcer::Policy,
    test: "e2e/tests/hostile/managed_fields.rs",
};

/// The most managedFields entries per copy. The API server caps the
/// entries of updates at ten, not those of applies; each entry costs its
/// manager's name, its API version and its time.
pub const MANAGED_FIELDS_ENTRIES: Bound = Bound {
    key: "managedFieldsEntries",
    what: "managedFields entries per copy",
    default: 16,
    ceiling: None,
    settable: false,
    enforcer: Enforcer::Policy,
    test: "e2e/tests/hostile/managed_fields.rs",
};

/// What an entry of managedFields is counted besides its fields: its
/// manager (at most 128), API version, time, operation and JSON.
pub const MANAGED_FIELDS_ENTRY_BYTES: u64 = 320;

/// The most bytes of a copy's managedFields beyond the names of its own
/// data keys, labels and annotations. An entry counts
/// [`MANAGED_FIELDS_ENTRY_BYTES`], a field its name as JSON stores it
/// (six times over where JSON escapes it) and 6; a field the copy has is
/// allowed once (its name, `f:` and 6), so that what a ccm and the manager
/// write always fits: their entries, the status and the finalizer the
/// manager owns take about 1.5 KiB. Without it a tenant could store
/// 1.5 MiB of made-up fields on every copy, which etcd keeps and the
/// manager reads.
pub const MANAGED_FIELDS_BYTES: Bound = Bound {
    key: "managedFieldsBytes",
    what: "bytes of managedFields per copy beyond the names of its own data keys, labels and annotations",
    default: 3_072,
    ceiling: None,
    settable: false,
    enforcer: Enforcer::Policy,
    test: "e2e/tests/hostile/managed_fields.rs",
};

/// What the manager writes for one tenant (Secrets, its copies' status and
/// finalizers, events), in bytes per minute on average: a tenant that
/// rewrites its copies as fast as it can gets them synced at this rate,
/// so that the revisions our writes leave in etcd between two compactions,
/// and our work for it, are bounded whatever it does.
pub const WRITE_BYTES_PER_MINUTE: Bound = Bound {
    key: "writeBytesPerMinute",
    what: "bytes written into a tenant namespace per minute, on average (by the manager for the tenant, and by the tenant over its copies)",
    default: 65_536,
    ceiling: None,
    settable: true,
    enforcer: Enforcer::Manager,
    test: "e2e/tests/hostile/storm.rs",
};

/// What the manager writes for one tenant at once before it paces it by
/// [`WRITE_BYTES_PER_MINUTE`], per copy of the tenant's quota: a first
/// sync of a copy at every bound as a ccm writes it (with our finalizer)
/// by default, its Secret and its status, each charged what it stores and
/// 1 KiB, so that a tenant may have its whole quota synced at once,
/// whatever the quota. What a tenant at every bound writes beyond that
/// (a copy without our finalizer, a rewrite) is paced.
pub const WRITE_BURST_BYTES: Bound = Bound {
    key: "writeBurstBytesPerCopy",
    what: "bytes written into a tenant namespace at once before its writes are paced and refused, per copy of its quota",
    default: 45_056,
    ceiling: None,
    settable: true,
    enforcer: Enforcer::Manager,
    test: "e2e/tests/hostile/storm.rs",
};

/// Every bound, in the order the docs list them.
pub const BOUNDS: [Bound; 13] = [
    COPIES,
    DATA_BYTES,
    DATA_KEYS,
    METADATA_BYTES,
    FINALIZERS,
    MANAGED_FIELDS_ENTRIES,
    MANAGED_FIELDS_WIDTH,
    MANAGED_FIELDS_BYTES,
    WRITE_BYTES_PER_MINUTE,
    WRITE_BURST_BYTES,
    TYPE_LENGTH,
    KEY_LENGTH,
    ENTRIES,
];

impl Bound {
    /// What a refusal says of a size over this bound: the size met, the
    /// bound, and where it is set; never the value.
    pub fn refusal(&self, met: impl std::fmt::Display) -> String {
        self.refusal_with(&met.to_string(), &self.default.to_string())
    }

    /// [`Bound::refusal`] with the limit as it is set (a number, or the
    /// Helm expression that renders one). Free of `'`, so that it can sit
    /// in a CEL string literal.
    pub fn refusal_with(&self, met: &str, limit: &str) -> String {
        let set_where = if self.settable {
            format!(" (tenantLimits.{} of the manager chart)", self.key)
        } else {
            String::new()
        };
        format!("{met} {}, over the limit of {limit}{set_where}", self.what)
    }

    /// A CEL `messageExpression` for the size `expr` over the limit `limit`.
    pub fn cel_refusal(&self, expr: &str, limit: &str) -> String {
        format!("string({expr}) + '{}'", self.refusal_with("", limit))
    }
}

/// The markdown table of docs/security.md: one row per bound.
pub fn docs_table() -> String {
    let mut out = String::from(
        "| bound | default | set by | enforced by | proved at its limit by |\n|---|---|---|---|---|\n",
    );
    for b in BOUNDS {
        let set_by = if b.settable {
            let most = b
                .ceiling
                .map(|c| format!(", at most {}", thousands(c)))
                .unwrap_or_default();
            format!("`tenantLimits.{}`{most}", b.key)
        } else {
            "fixed".to_owned()
        };
        out.push_str(&format!(
            "| {} | {} | {set_by} | {} | `{}` |\n",
            b.what,
            thousands(b.default),
            b.enforcer.describe(),
            b.test
        ));
    }
    out
}

/// `16384` as `16,384`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_bound_the_size_and_where_it_is_set() {
        let r = DATA_KEYS.refusal(65);
        assert_eq!(
            r,
            "65 data keys per copy, over the limit of 64 (tenantLimits.dataKeys of the manager chart)"
        );
        assert_eq!(
            TYPE_LENGTH.refusal(300),
            "300 characters of type, over the limit of 253"
        );
        // One CEL string literal: no quote inside it.
        for b in BOUNDS {
            assert_eq!(
                b.cel_refusal("x", "5").matches('\'').count(),
                2,
                "{}",
                b.key
            );
        }
    }

    #[test]
    fn settable_bounds_have_defaults_under_their_ceilings_and_keys_are_unique() {
        for b in BOUNDS {
            if let Some(c) = b.ceiling {
                assert!(b.default <= c, "{}", b.key);
            }
            assert_eq!(BOUNDS.iter().filter(|o| o.key == b.key).count(), 1);
        }
        assert_eq!(thousands(1_398_104), "1,398,104");
        assert_eq!(thousands(64), "64");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn the_docs_table_has_a_row_per_bound() {
        let t = docs_table();
        assert_eq!(t.lines().count(), BOUNDS.len() + 2);
        assert!(t.contains("| data keys per copy | 64 | `tenantLimits.dataKeys`, at most 4,096 |"));
    }
}
