//! Admission-time validation of SyncSecrets: schema pieces and CEL rules that
//! the generated CRD carries, so that the API server rejects bad input with a
//! message a user understands before any controller sees it.
//!
//! The rules mirror what the API server enforces for a core Secret
//! (`ValidateSecret`, `ValidateSecretUpdate` in k8s.io/kubernetes
//! pkg/apis/core/validation): key syntax, the keys each well-known type
//! needs, and immutability. What CEL cannot check within its cost budget is
//! reported by the controllers instead (see docs/failure-modes.md).

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::bounds::{ENTRIES, KEY_LENGTH, TYPE_LENGTH, TYPE_PATTERN};

/// A rule of `x-kubernetes-validations`. A rule that reads `oldSelf` is a
/// transition rule: the API server checks it on updates only.
fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// A rule on the whole object whose failure the API server reports against
/// `field_path` (instead of `<nil>`).
fn rule_at(field_path: &str, rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message, "fieldPath": field_path })
}

/// CEL that is true when `key` is in `data` or `stringData`.
fn has_key(key: &str) -> String {
    format!(
        "((has(self.data) && '{key}' in self.data) || (has(self.stringData) && '{key}' in self.stringData))"
    )
}

/// CEL: the object has this type.
fn is_type(t: &str) -> String {
    format!("(has(self.type) && self.type == '{t}')")
}

/// The rule that each key of a map is a valid Secret key.
fn key_rule(field: &str) -> Value {
    let max = KEY_LENGTH.default;
    rule(
        &format!(
            "self.all(k, size(k) <= {max} && k.matches('^[-._a-zA-Z0-9]+$') && k != '.' && k != '..' && !k.startsWith('..'))"
        ),
        &format!(
            "{field} keys must be at most {max} characters of letters, digits, '-', '_' or '.', and must not be '.' or '..' or start with '..' (e.g. 'tls.crt', 'API_KEY', 'db-password')"
        ),
    )
}

/// Rules on the whole object: keys each well-known Secret type needs, and
/// immutability once `immutable` is true.
pub fn root_rules() -> Value {
    let immutable_before = "(has(oldSelf.immutable) && oldSelf.immutable)";
    Value::Array(vec![
        rule_at(
            ".type",
            &format!(
                "!{} || ({} && {})",
                is_type("kubernetes.io/tls"),
                has_key("tls.crt"),
                has_key("tls.key")
            ),
            "type kubernetes.io/tls needs the keys 'tls.crt' and 'tls.key' (in data or stringData)",
        ),
        rule_at(
            ".type",
            &format!(
                "!{} || {}",
                is_type("kubernetes.io/dockerconfigjson"),
                has_key(".dockerconfigjson")
            ),
            "type kubernetes.io/dockerconfigjson needs the key '.dockerconfigjson' (in data or stringData)",
        ),
        rule_at(
            ".type",
            &format!(
                "!{} || {}",
                is_type("kubernetes.io/dockercfg"),
                has_key(".dockercfg")
            ),
            "type kubernetes.io/dockercfg needs the key '.dockercfg' (in data or stringData)",
        ),
        rule_at(
            ".type",
            &format!(
                "!{} || {} || {}",
                is_type("kubernetes.io/basic-auth"),
                has_key("username"),
                has_key("password")
            ),
            "type kubernetes.io/basic-auth needs the key 'username' or 'password' (in data or stringData)",
        ),
        rule_at(
            ".type",
            &format!(
                "!{} || {}",
                is_type("kubernetes.io/ssh-auth"),
                has_key("ssh-privatekey")
            ),
            "type kubernetes.io/ssh-auth needs the key 'ssh-privatekey' (in data or stringData)",
        ),
        rule_at(
            ".immutable",
            &format!("!{immutable_before} || (has(self.immutable) && self.immutable)"),
            "immutable cannot be unset once it is true; delete and recreate the SyncSecret instead",
        ),
        rule_at(
            ".data",
            &format!(
                "!{immutable_before} || (has(self.data) == has(oldSelf.data) && (!has(self.data) || self.data == oldSelf.data) && has(self.stringData) == has(oldSelf.stringData) && (!has(self.stringData) || self.stringData == oldSelf.stringData))"
            ),
            "data and stringData cannot change: the SyncSecret is immutable; delete and recreate it instead",
        ),
        rule_at(
            ".type",
            &format!(
                "!{immutable_before} || (has(self.type) == has(oldSelf.type) && (!has(self.type) || self.type == oldSelf.type))"
            ),
            "type cannot change: the SyncSecret is immutable; delete and recreate it instead",
        ),
    ])
}

/// Standard base64 with padding, as a core Secret's `data` values.
///
/// Not `format: byte`: kube-apiserver v1.37 converts `format: byte` values
/// for CEL with URL-safe base64 (go-openapi strfmt), so any rule that reads
/// `self.data` fails with "illegal base64 data" on a standard-base64 value
/// containing `+` or `/` (most binary data, most certificates). A pattern
/// checks the same alphabet without that conversion.
pub const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// CEL on one `data` value: base64 as an encoder writes it. The pattern
/// lets through a last character before the padding with leftover bits
/// set (`QR==`), which Go's decoder (the API server's) accepts and strict
/// decoders refuse: one value, two meanings. Only the value's last three
/// characters are read, with `charAt`, which CEL prices at a constant:
/// `endsWith`, `substring` and `matches` are priced by the value's
/// largest possible size and exceed the CRD's budget.
pub fn canonical_base64_rule() -> Value {
    let quoted = |chars: &str| {
        chars
            .chars()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rule(
        &format!(
            "size(self) < 4 || self.charAt(size(self) - 1) != '=' || (self.charAt(size(self) - 2) == '=' ? self.charAt(size(self) - 3) in [{}] : self.charAt(size(self) - 2) in [{}])",
            quoted("AQgw"),
            quoted("AEIMQUYcgkosw048")
        ),
        "data values must be base64 exactly as an encoder writes it: the character before the padding '=' has bits set past the end of the data, which decoders read differently; encode the value again (e.g. base64 -w0)",
    )
}

/// `type`: a bounded name (a core Secret's is not checked at all, and a
/// megabyte of it was admitted, cached and logged). Described by the
/// field's doc comment.
pub fn type_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": TYPE_LENGTH.default,
        "pattern": TYPE_PATTERN,
    })
}

/// `data`: base64 values, valid keys.
pub fn data_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string.",
        "type": "object",
        "maxProperties": ENTRIES.default,
        "additionalProperties": {
            "type": "string",
            "pattern": BASE64_PATTERN,
            "x-kubernetes-validations": [canonical_base64_rule()],
        },
        "x-kubernetes-validations": [key_rule("data")],
    })
}

/// `stringData`: values in clear, valid keys.
pub fn string_data_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "stringData allows specifying non-binary secret data in string form. It is merged over data on sync, stringData winning on a shared key.",
        "type": "object",
        "maxProperties": ENTRIES.default,
        "additionalProperties": { "type": "string" },
        "x-kubernetes-validations": [key_rule("stringData")],
    })
}
