//! The SyncSecret API (`kubelb.k8c.io/v1alpha1`) and the contract that the
//! tenant-side ccm and the management-side manager share: names, labels,
//! finalizer, field managers, naming rules, effective payload and equality.
//!
//! This crate has no server, no runtime and no command-line parsing, so that
//! anyone who only wants the types can depend on it.

pub mod admission;
pub mod certificate;
pub mod contract;
pub mod crd;
pub mod decode;
pub mod desired;
pub mod manifests;
pub mod monitoring;
pub mod payload;
pub mod policy;
pub mod rbac;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod status;
pub mod summary;
pub mod sweep;
pub mod v1alpha1;
pub mod validation;

pub use v1alpha1::{SyncSecret, SyncSecretPhase, SyncSecretStatus};
