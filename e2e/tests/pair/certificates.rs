//! TLS Secrets: their expiry in conditions and gauges.

use anyhow::{anyhow, ensure};
use syncsecret_api::SyncSecretPhase;
use syncsecret_api::contract::tenant_namespace;

use super::support::{certificate, create, data_of, delete_all, sync_secret, synced, tenant_shows};
use super::{Shared, TENANTS};

pub(super) async fn certificates_show_their_expiry_in_conditions_and_gauges(
    s: &Shared,
) -> anyhow::Result<()> {
    let cases = [
        ("valid", certificate(-1, 365), None),
        (
            "expiring",
            certificate(-10, 1),
            Some(("CertificateExpiring", "True")),
        ),
        (
            "expired",
            certificate(-10, -2),
            Some(("CertificateExpired", "True")),
        ),
        (
            "malformed",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
                .to_owned(),
            Some(("CertificateExpired", "Unknown")),
        ),
    ];
    for (name, pem, _) in &cases {
        let mut obj = sync_secret(name);
        obj.type_ = Some("kubernetes.io/tls".into());
        obj.string_data = Some(
            [
                ("tls.crt".to_owned(), pem.clone()),
                ("tls.key".to_owned(), s.value("key")),
            ]
            .into(),
        );
        create(s, 1, "certs", obj).await?;
    }
    for (name, pem, expected) in &cases {
        // Synced whatever the certificate says: it is the tenant's data.
        let (copy, secret) = synced(s, 1, "certs", name, |_| true).await?;
        ensure!(
            data_of(&secret)["tls.crt"] == pem.as_bytes(),
            "{name}: content changed"
        );
        let conditions = copy.status.and_then(|st| st.conditions).unwrap_or_default();
        let cert: Vec<_> = conditions
            .iter()
            .filter(|c| c.type_.starts_with("Certificate"))
            .collect();
        match expected {
            None => ensure!(cert.is_empty(), "{name}: unexpected {cert:?}"),
            Some((type_, status)) => {
                let c = cert
                    .iter()
                    .find(|c| c.type_ == *type_)
                    .ok_or_else(|| anyhow!("{name}: no {type_} in {conditions:?}"))?;
                ensure!(c.status == *status, "{name}: {c:?}");
                println!(
                    "    {name}: {} {} {}: {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
        }
        // And the tenant sees it too.
        let home = tenant_shows(s, 1, "certs", name, SyncSecretPhase::Synced).await?;
        if let Some((type_, _)) = expected {
            let types: Vec<_> = home
                .status
                .and_then(|st| st.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.type_)
                .collect();
            ensure!(
                types.iter().any(|t| t == type_),
                "{name}: tenant lacks {type_}: {types:?}"
            );
        }
    }
    let metrics = s.pair.lock().await.manager.metrics()?;
    let ns = tenant_namespace(TENANTS[1]);
    for state in ["valid", "expiring", "expired"] {
        let line = format!("kubelb_manager_certificates{{namespace=\"{ns}\",state=\"{state}\"}} 1");
        ensure!(metrics.contains(&line), "missing {line}");
    }
    ensure!(
        metrics.contains(&format!(
            "kubelb_manager_certificate_earliest_expiry_timestamp_seconds{{namespace=\"{ns}\"}}"
        )),
        "no earliest-expiry gauge"
    );
    // An expiring certificate turns expired with time alone (a status
    // write another test would see): they go.
    let names: Vec<&str> = cases.iter().map(|(name, _, _)| *name).collect();
    delete_all(s, 1, "certs", &names).await
}
