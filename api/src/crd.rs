//! The CustomResourceDefinition of SyncSecret, generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::SchemaSettings;
use serde_json::json;

use crate::contract::GROUP;
use crate::v1alpha1::{KIND, PLURAL, SyncSecret, VERSION};

/// The Rust types do not make a valid CRD schema (a bug in this crate).
#[derive(Debug, thiserror::Error)]
#[error("the SyncSecret types do not make a valid CRD schema: {0}")]
pub struct SchemaError(#[from] serde_json::Error);

/// The OpenAPI v3 schema of SyncSecret, structural as the API server wants it
/// (the same schemars settings as kube's `CustomResource` derive).
pub fn schema() -> Result<JSONSchemaProps, SchemaError> {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube_core::schema::StructuralSchemaRewriter)
        .with_transform(kube_core::schema::OptionalEnum)
        .into_generator();
    let mut value = serde_json::to_value(generator.into_root_schema_for::<SyncSecret>())?;
    if let Some(root) = value.as_object_mut() {
        // The root of a CRD schema has no title; apiVersion and kind are
        // written by the hand-made Serialize, so schemars does not see them;
        // the API server validates metadata itself and forbids a CRD to say
        // more than "object" about it (no description, no default).
        root.remove("title");
        if let Some(props) = root.get_mut("properties").and_then(|p| p.as_object_mut()) {
            props.insert("metadata".into(), json!({"type": "object"}));
            props.insert(
                "apiVersion".into(),
                json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
            );
            props.insert(
                "kind".into(),
                json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
            );
        }
    }
    Ok(serde_json::from_value(value)?)
}

/// The whole CRD: namespaced, status subresource, printer columns Type,
/// Phase, Age as KubeLB's, plus the `Synced` condition's Message.
pub fn crd() -> Result<CustomResourceDefinition, SchemaError> {
    let column = |name: &str, type_: &str, path: &str| CustomResourceColumnDefinition {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        ..Default::default()
    };
    Ok(CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{PLURAL}.{GROUP}")),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: KIND.into(),
                list_kind: Some(format!("{KIND}List")),
                plural: PLURAL.into(),
                singular: Some(KIND.to_lowercase()),
                ..Default::default()
            },
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema()?),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    ..Default::default()
                }),
                additional_printer_columns: Some(vec![
                    column("Type", "string", ".type"),
                    column("Phase", "string", ".status.phase"),
                    column("Age", "date", ".metadata.creationTimestamp"),
                    column(
                        "Message",
                        "string",
                        ".status.conditions[?(@.type==\"Synced\")].message",
                    ),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    })
}
