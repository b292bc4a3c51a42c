//! What the management cluster accepts from a tenant. The manager never
//! trusts a copy: a Secret of some types, or some labels and annotations,
//! would make management-cluster controllers act for the tenant (a
//! `kubernetes.io/service-account-token` Secret makes it mint a token for one
//! of its own service accounts). Pure: decided without a client.

use std::collections::BTreeMap;

use crate::bounds::TYPE_LENGTH;
use crate::contract::LAST_APPLIED_ANNOTATION;

/// The API server's limit on a Secret's data (keys and values).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// What each key adds to a Secret's managedFields besides its name
/// (`"f:":{},`).
pub const KEY_ENTRY_BYTES: usize = 8;

/// What a Secret stores of data of `size` bytes (keys and values) in
/// `keys` keys of `key_bytes`: its managedFields name every key again.
pub fn secret_data_bytes(size: usize, key_bytes: usize, keys: usize) -> usize {
    size + key_bytes + KEY_ENTRY_BYTES * keys
}

/// Metadata keys that are never copied onto a Secret, whatever the flags
/// say: service-account binding and kubectl's payload-in-clear annotation.
pub const ALWAYS_DROPPED: [&str; 2] = ["kubernetes.io/service-account.*", LAST_APPLIED_ANNOTATION];

/// Why a copy is refused. `reason` is bounded (status reason, event reason);
/// `message` says why and what to do, naming no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `TypeDenied`, `TooLarge` or `OverBudget`.
    pub reason: &'static str,
    /// For the user.
    pub message: String,
}

/// The Secret types the management cluster takes by default: those that
/// carry credentials for workloads and that no management-cluster
/// controller acts on (a `helm.sh/release.v1` Secret is a Helm release
/// record; a `kubernetes.io/service-account-token` one gets a token minted).
pub const SAFE_TYPES: [&str; 6] = [
    "Opaque",
    "kubernetes.io/tls",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
];

/// Label and annotation keys in our own domain: set by the controllers
/// (the origin labels), never passed through from a tenant.
pub const OWN_DOMAIN: &str = "kubelb.k8c.io/";

/// The manager's policy, from its flags.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Only these types are synced (unless `copy_everything`).
    pub allowed_types: Vec<String>,
    /// These types are never synced.
    pub denied_types: Vec<String>,
    /// Label and annotation keys a tenant may put on its Secrets; an entry
    /// ending in `*` is a prefix. Empty: none (unless `copy_everything`).
    pub allowed_metadata: Vec<String>,
    /// Label and annotation keys never copied onto Secrets, whatever else
    /// allows them; an entry ending in `*` is a prefix.
    pub dropped_metadata: Vec<String>,
    /// KubeLB's behaviour: every type but the denied ones, every label and
    /// annotation but the dropped ones.
    pub copy_everything: bool,
    /// Most Secrets per tenant namespace (`None`: no limit).
    pub max_secrets_per_tenant: Option<usize>,
    /// Most data bytes per tenant namespace (`None`: no limit).
    pub max_bytes_per_tenant: Option<usize>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_types: SAFE_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            denied_types: vec!["kubernetes.io/service-account-token".to_owned()],
            allowed_metadata: Vec::new(),
            dropped_metadata: Vec::new(),
            copy_everything: false,
            max_secrets_per_tenant: None,
            max_bytes_per_tenant: None,
        }
    }
}

fn matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == pattern,
    }
}

impl Policy {
    /// Whether a tenant's label or annotation key may be copied onto a
    /// Secret: never one [`ALWAYS_DROPPED`] or dropped by the flags, never
    /// one of our own domain ([`OWN_DOMAIN`]: the manager sets those);
    /// otherwise only one the allow-list names (or any, with
    /// `copy_everything`).
    pub fn keeps_key(&self, key: &str) -> bool {
        let dropped = ALWAYS_DROPPED
            .iter()
            .copied()
            .chain(self.dropped_metadata.iter().map(String::as_str))
            .any(|p| matches(p, key));
        if dropped || key.starts_with(OWN_DOMAIN) {
            return false;
        }
        self.copy_everything || self.allowed_metadata.iter().any(|p| matches(p, key))
    }

    /// `map` without the keys the policy drops.
    pub fn filter(&self, map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        map.iter()
            .filter(|(k, _)| self.keeps_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What a cache of copies keeps of their labels and annotations: what
    /// the policy copies onto Secrets, and our own domain's keys (the
    /// origin labels the manager copies itself).
    pub fn caches_key(&self, key: &str) -> bool {
        key.starts_with(OWN_DOMAIN) || self.keeps_key(key)
    }

    /// Type and size checks of one payload: its type, its size
    /// ([`Payload::size`](crate::payload::Payload::size)) and the bytes of
    /// its keys alone.
    ///
    /// A type over [`TYPE_LENGTH`] is refused before it is quoted anywhere
    /// (a management cluster on KubeLB's CRD does not bound it). Keys count
    /// twice, and eight bytes more each: the Secret's managedFields name
    /// every key again (`"f:<key>":{}`), and 4,096 keys of 253 characters
    /// with empty values made a Secret the API server could not store.
    pub fn check(
        &self,
        type_: &str,
        size: usize,
        key_bytes: usize,
        keys: usize,
    ) -> Result<(), Refusal> {
        let length = type_.chars().count();
        let t = crate::quote::quoted(type_, crate::quote::SHORT);
        if u64::try_from(length).unwrap_or(u64::MAX) > TYPE_LENGTH.default {
            return Err(Refusal {
                reason: "TypeDenied",
                message: TYPE_LENGTH.refusal(length),
            });
        }
        if self.denied_types.iter().any(|d| d == type_) {
            let why = if type_ == "kubernetes.io/service-account-token" {
                " (in the management cluster it would make the token controller mint a token for a service account there)"
            } else {
                ""
            };
            return Err(Refusal {
                reason: "TypeDenied",
                message: format!(
                    "type {t} is not synced to the management cluster{why}; the manager's --denied-secret-types lists it"
                ),
            });
        }
        if !self.copy_everything && !self.allowed_types.iter().any(|a| a == type_) {
            return Err(Refusal {
                reason: "TypeDenied",
                message: format!(
                    "type {t} is not among the types the management cluster takes (the manager's --allowed-secret-types: {})",
                    self.allowed_types.join(", ")
                ),
            });
        }
        let stored = secret_data_bytes(size, key_bytes, keys);
        if stored > MAX_SECRET_BYTES {
            return Err(Refusal {
                reason: "TooLarge",
                message: format!(
                    "the Secret would hold {size} bytes of data in {keys} keys ({stored} with its keys counted again, as the Secret's managedFields name each), more than the API server's limit of {MAX_SECRET_BYTES}; split it"
                ),
            });
        }
        Ok(())
    }

    /// Whether a tenant namespace that holds `count` Secrets of `bytes` may
    /// take a Secret of `size` bytes that replaces one of `replacing` bytes
    /// (`None` for a new Secret).
    pub fn check_budget(
        &self,
        count: usize,
        bytes: usize,
        size: usize,
        replacing: Option<usize>,
    ) -> Result<(), Refusal> {
        if let Some(max) = self.max_secrets_per_tenant
            && replacing.is_none()
            && count + 1 > max
        {
            return Err(Refusal {
                reason: "OverBudget",
                message: format!(
                    "the tenant already has {count} Secrets, its budget (--max-secrets-per-tenant) is {max}"
                ),
            });
        }
        if let Some(max) = self.max_bytes_per_tenant {
            let after = bytes - replacing.unwrap_or(0).min(bytes) + size;
            if after > max {
                return Err(Refusal {
                    reason: "OverBudget",
                    message: format!(
                        "the tenant's Secrets would hold {after} bytes, its budget (--max-bytes-per-tenant) is {max}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether any budget is set (counting costs a list).
    pub fn has_budget(&self) -> bool {
        self.max_secrets_per_tenant.is_some() || self.max_bytes_per_tenant.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;

    fn payload(type_: &str, bytes: usize) -> Payload {
        Payload {
            type_: type_.to_owned(),
            data: [("k".to_owned(), k8s_openapi::ByteString(vec![b'x'; bytes]))].into(),
            immutable: false,
        }
    }

    fn check(p: &Policy, type_: &str, bytes: usize) -> Result<(), Refusal> {
        let payload = payload(type_, bytes);
        p.check(
            &payload.type_,
            payload.size(),
            payload.key_bytes(),
            payload.data.len(),
        )
    }

    #[test]
    fn service_account_tokens_are_refused_by_default_and_say_why() {
        let p = Policy::default();
        let r = check(&p, "kubernetes.io/service-account-token", 1).unwrap_err();
        assert_eq!(r.reason, "TypeDenied");
        assert!(r.message.contains("mint a token"), "{}", r.message);
        assert!(check(&p, "Opaque", 1).is_ok());
    }

    #[test]
    fn an_allow_list_admits_only_its_types() {
        let p = Policy {
            allowed_types: vec!["kubernetes.io/tls".into()],
            ..Policy::default()
        };
        assert!(check(&p, "kubernetes.io/tls", 1).is_ok());
        assert_eq!(check(&p, "Opaque", 1).unwrap_err().reason, "TypeDenied");
    }

    #[test]
    fn only_safe_types_by_default_and_every_type_but_denied_ones_when_copying_everything() {
        let p = Policy::default();
        for t in SAFE_TYPES {
            assert!(check(&p, t, 1).is_ok(), "{t}");
        }
        let r = check(&p, "helm.sh/release.v1", 1).unwrap_err();
        assert_eq!(r.reason, "TypeDenied");
        assert!(
            r.message.contains("--allowed-secret-types"),
            "{}",
            r.message
        );
        let kubelb = Policy {
            copy_everything: true,
            ..Policy::default()
        };
        assert!(check(&kubelb, "helm.sh/release.v1", 1).is_ok());
        let token = "kubernetes.io/service-account-token";
        assert_eq!(check(&kubelb, token, 1).unwrap_err().reason, "TypeDenied");
    }

    #[test]
    fn tenant_metadata_passes_only_by_the_allow_list_and_never_in_our_domain() {
        let p = Policy {
            allowed_metadata: vec!["app".into(), "example.com/*".into()],
            ..Policy::default()
        };
        assert!(p.keeps_key("app") && p.keeps_key("example.com/team"));
        assert!(!p.keeps_key("owner") && !p.keeps_key("helm.sh/chart"));
        assert!(!p.keeps_key("kubelb.k8c.io/origin-name"));
        assert!(p.caches_key("kubelb.k8c.io/origin-name") && p.caches_key("app"));
        assert!(!p.caches_key("owner"));
        assert!(!Policy::default().keeps_key("app"), "nothing by default");
        let kubelb = Policy {
            copy_everything: true,
            ..Policy::default()
        };
        assert!(kubelb.keeps_key("owner") && !kubelb.keeps_key("kubelb.k8c.io/x"));
        assert!(!kubelb.keeps_key(LAST_APPLIED_ANNOTATION));
    }

    #[test]
    fn oversize_is_refused_before_any_write() {
        let p = Policy::default();
        // One byte of key, counted twice, its entry, and the value.
        let most = MAX_SECRET_BYTES - 2 - KEY_ENTRY_BYTES;
        assert!(check(&p, "Opaque", most).is_ok());
        let r = check(&p, "Opaque", most + 1).unwrap_err();
        assert_eq!(r.reason, "TooLarge");
    }

    #[test]
    fn many_long_keys_with_empty_values_are_too_large() {
        // What the API server could not store: 4,096 keys of 253
        // characters, empty values (1,036,288 bytes of keys).
        let p = Policy::default();
        let r = p.check("Opaque", 4096 * 253, 4096 * 253, 4096).unwrap_err();
        assert_eq!(r.reason, "TooLarge");
        assert!(r.message.contains("4096 keys"), "{}", r.message);
    }

    #[test]
    fn a_long_type_is_refused_by_its_length_without_quoting_it() {
        let p = Policy {
            copy_everything: true,
            ..Policy::default()
        };
        let long = "t".repeat(254);
        let r = check(&p, &long, 1).unwrap_err();
        assert_eq!(r.reason, "TypeDenied");
        assert!(!r.message.contains(&long[..100]), "{}", r.message);
        assert!(
            r.message.contains("254 characters of type"),
            "{}",
            r.message
        );
        assert!(check(&p, &"t".repeat(253), 1).is_ok());
    }

    #[test]
    fn sensitive_metadata_is_dropped() {
        let p = Policy {
            dropped_metadata: vec!["example.com/internal-*".into(), "exact".into()],
            copy_everything: true,
            ..Policy::default()
        };
        assert!(!p.keeps_key("kubernetes.io/service-account.name"));
        assert!(!p.keeps_key("kubernetes.io/service-account.uid"));
        assert!(!p.keeps_key(LAST_APPLIED_ANNOTATION));
        assert!(!p.keeps_key("example.com/internal-team"));
        assert!(!p.keeps_key("exact"));
        assert!(p.keeps_key("exact-not"));
        assert!(p.keeps_key("app"));
    }

    #[test]
    fn budgets_refuse_the_next_new_object_only() {
        let p = Policy {
            max_secrets_per_tenant: Some(2),
            max_bytes_per_tenant: Some(100),
            ..Policy::default()
        };
        assert!(p.check_budget(1, 10, 10, None).is_ok());
        assert_eq!(
            p.check_budget(2, 10, 10, None).unwrap_err().reason,
            "OverBudget"
        );
        // Updating one of the two is fine while bytes allow.
        assert!(p.check_budget(2, 90, 20, Some(15)).is_ok());
        assert_eq!(
            p.check_budget(2, 90, 30, Some(15)).unwrap_err().reason,
            "OverBudget"
        );
        assert!(!Policy::default().has_budget());
    }
}
