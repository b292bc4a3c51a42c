//! `kubelb.k8c.io/v1alpha1` `SyncSecret`: the Rust form of KubeLB's type.
//!
//! The wire shape is KubeLB's exactly: the top-level fields of a core Secret
//! (`type`, `data`, `stringData`, `immutable`) beside `metadata` and `status`,
//! and no `spec`. kube's `CustomResource` derive insists on a spec, so the
//! resource traits are written by hand here.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::{ByteString, NamespaceResourceScope};
use schemars::JsonSchema;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use crate::contract::GROUP;

/// The API version, without the group.
pub const VERSION: &str = "v1alpha1";
/// The kind.
pub const KIND: &str = "SyncSecret";
/// The resource's plural name, as in the URL.
pub const PLURAL: &str = "syncsecrets";
/// `group/version`, as in `apiVersion`.
pub const API_VERSION: &str = "kubelb.k8c.io/v1alpha1";

/// A Secret that travels from a tenant cluster to the management cluster.
///
/// `Debug` prints key names only, never values: a SyncSecret in a log line
/// must not leak what it carries.
#[derive(Clone, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    rename = "SyncSecret",
    description = "SyncSecret is a wrapper over a Kubernetes Secret, synced from a tenant cluster to the management cluster.",
    extend("x-kubernetes-validations" = crate::validation::root_rules())
)]
pub struct SyncSecret {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,

    /// The Secret type (`Opaque` when empty), as a core Secret's: at most
    /// 253 characters, letters and digits with `-`, `_`, `.` or `/` between
    /// them.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validation::type_schema")]
    pub type_: Option<String>,

    /// Base64-encoded values by key, as `corev1.Secret.data`. Read as Go
    /// reads them: the API server stored what Go accepts.
    #[serde(
        default,
        deserialize_with = "crate::base64::map",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::validation::data_schema")]
    pub data: Option<BTreeMap<String, ByteString>>,

    /// Values in clear by key, merged over `data` (stringData wins), as
    /// `corev1.Secret.stringData`. Unlike a core Secret, a SyncSecret keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validation::string_data_schema")]
    pub string_data: Option<BTreeMap<String, String>>,

    /// When true, payload and type can no longer change, as for a core Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        description = "Immutable, if set to true, ensures that data stored in the SyncSecret cannot be updated (only object metadata can be modified)."
    )]
    pub immutable: Option<bool>,

    /// What the controllers last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SyncSecretStatus>,
}

/// The observed state of a SyncSecret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(description = "SyncSecretStatus defines the observed state of SyncSecret.")]
pub struct SyncSecretStatus {
    /// The most recent generation observed by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SyncSecretPhase>,

    /// Standard conditions; the controllers write type `Synced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}

/// The lifecycle phase of a SyncSecret, as KubeLB names them.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, JsonSchema)]
pub enum SyncSecretPhase {
    /// Not yet synced.
    Pending,
    /// The Secret in the management cluster holds this content.
    Synced,
    /// The last sync failed; the `Synced` condition says why.
    Failed,
    /// Being deleted; waiting for the copy or Secret to go.
    Terminating,
}

impl SyncSecretPhase {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Synced => "Synced",
            Self::Failed => "Failed",
            Self::Terminating => "Terminating",
        }
    }
}

impl fmt::Display for SyncSecretPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `apiVersion` and `kind` are written on every serialisation (as k8s-openapi
/// does for built-in types), so that a SyncSecret can be sent as it is.
impl Serialize for SyncSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = 3
            + usize::from(self.type_.is_some())
            + usize::from(self.data.is_some())
            + usize::from(self.string_data.is_some())
            + usize::from(self.immutable.is_some())
            + usize::from(self.status.is_some());
        let mut s = serializer.serialize_struct(KIND, fields)?;
        s.serialize_field("apiVersion", API_VERSION)?;
        s.serialize_field("kind", KIND)?;
        s.serialize_field("metadata", &self.metadata)?;
        if let Some(t) = &self.type_ {
            s.serialize_field("type", t)?;
        }
        if let Some(d) = &self.data {
            s.serialize_field("data", d)?;
        }
        if let Some(d) = &self.string_data {
            s.serialize_field("stringData", d)?;
        }
        if let Some(i) = &self.immutable {
            s.serialize_field("immutable", i)?;
        }
        if let Some(st) = &self.status {
            s.serialize_field("status", st)?;
        }
        s.end()
    }
}

/// Prints names, never values.
impl fmt::Debug for SyncSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(KIND)
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("uid", &self.metadata.uid)
            .field("type", &self.type_)
            .field(
                "data_keys",
                &self.data.as_ref().map(|d| d.keys().collect::<Vec<_>>()),
            )
            .field(
                "string_data_keys",
                &self
                    .string_data
                    .as_ref()
                    .map(|d| d.keys().collect::<Vec<_>>()),
            )
            .field("immutable", &self.immutable)
            .field("status", &self.status)
            .finish()
    }
}

impl kube_core::Resource for SyncSecret {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(API_VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl kube_core::object::HasStatus for SyncSecret {
    type Status = SyncSecretStatus;
    fn status(&self) -> Option<&SyncSecretStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<SyncSecretStatus> {
        &mut self.status
    }
}
