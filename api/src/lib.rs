//! The SyncSecret API (`kubelb.k8c.io/v1alpha1`) and the contract that the
//! tenant-side ccm and the management-side manager share: names, labels,
//! finalizer, field managers, naming rules, effective payload and equality,
//! and the pure decisions both make from them (desired state, status,
//! policy, sweeps).
//!
//! No I/O, no async runtime, no features: anyone who only wants the types
//! depends on this alone. The plumbing is `syncsecret-runtime`.

pub mod admission;
pub mod base64;
pub mod bounds;
pub mod contract;
pub mod crd;
pub mod desired;
pub mod flow_control;
pub mod labelled;
pub mod payload;
pub mod policy;
pub mod quote;
pub mod shard;
pub mod status;
pub mod sweep;
pub mod v1alpha1;
pub mod validation;

pub use v1alpha1::{SyncSecret, SyncSecretPhase, SyncSecretStatus};
