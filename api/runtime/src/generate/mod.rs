//! Everything installed beside the binaries, generated from the Rust
//! sources so it cannot drift: the CRD and the admission policy (from
//! `syncsecret-api`), RBAC, the PrometheusRule and the dashboards, and the
//! chart templates that carry them. `make manifests` runs the
//! `syncsecret-manifests` binary; a test fails when the files differ.

pub mod manifests;
pub mod monitoring;
pub mod rbac;
