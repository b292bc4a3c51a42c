//! Values at rest and in the audit log.

use crate::support::*;

/// What etcd holds for the management cluster, read directly: no value of
/// the run in clear or in base64 anywhere, the copy and the Secret stored
/// encrypted. The tenant cluster, which encrypts nothing, is the control:
/// there the same read finds the value. The audit log records Secrets and
/// copies at Metadata level, without a value.
pub(crate) async fn stored_encrypted_and_audited_without_values(
    pair: &Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let value = values.fresh("good-at-rest");
    good_tenant_converges(pair, "at-rest", &value).await?;
    let (copy, secret) = pair.synced(GOOD, NS, "at-rest", |_| true).await?;
    let tenant_ns = tenant_namespace(&pair.tenant_names[GOOD]);
    let needles = needles(&values.0);
    let holds_value = |stored: &[u8]| {
        needles
            .iter()
            .any(|n| stored.windows(n.len()).any(|w| w == n.as_bytes()))
    };

    let stored = pair.plane.etcd_values("/management/")?;
    let in_clear: Vec<&str> = stored
        .iter()
        .filter(|(_, v)| holds_value(v))
        .map(|(k, _)| k.as_str())
        .collect();
    ensure!(
        in_clear.is_empty(),
        "etcd holds a value in clear under {} keys, among them {:?}",
        in_clear.len(),
        &in_clear[..in_clear.len().min(5)]
    );
    let encrypted = |key: String| -> anyhow::Result<()> {
        let (_, v) = stored
            .iter()
            .find(|(k, _)| *k == key)
            .with_context(|| format!("etcd has no {key}"))?;
        ensure!(
            v.starts_with(b"k8s:enc:secretbox:v1:key1:"),
            "{key} is not stored encrypted: it starts with {:?}",
            String::from_utf8_lossy(&v[..v.len().min(24)])
        );
        Ok(())
    };
    encrypted(format!(
        "/management/kubelb.k8c.io/syncsecrets/{tenant_ns}/{}",
        copy.name_any()
    ))?;
    encrypted(format!(
        "/management/secrets/{tenant_ns}/{}",
        secret.name_any()
    ))?;
    let tenant_key = format!(
        "/{}/kubelb.k8c.io/syncsecrets/{NS}/at-rest",
        pair.tenant_names[GOOD]
    );
    let control = pair.plane.etcd_values(&tenant_key)?;
    ensure!(
        control.iter().any(|(_, v)| holds_value(v)),
        "the control failed: the tenant cluster's unencrypted {tenant_key} does not show the value"
    );
    println!(
        "    etcd: {} management keys, none holds a value; the copy and the Secret are encrypted; the tenant cluster's object shows its value",
        stored.len()
    );

    let audit_log = pair
        .plane
        .audit_log()
        .context("the management cluster keeps no audit log")?;
    let audit = std::fs::read_to_string(audit_log)
        .with_context(|| format!("reading {}", audit_log.display()))?;
    let mut audited = std::collections::BTreeMap::<String, usize>::new();
    for line in audit.lines() {
        let event: Value = serde_json::from_str(line).context("an audit line that is not JSON")?;
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default();
        ensure!(
            event["level"] == "Metadata",
            "an audit event at level {} for {resource}",
            event["level"]
        );
        ensure!(
            event.get("requestObject").is_none() && event.get("responseObject").is_none(),
            "an audit event for {resource} carries a body"
        );
        *audited.entry(resource.to_owned()).or_default() += 1;
    }
    for resource in ["secrets", "syncsecrets"] {
        ensure!(
            audited.get(resource).copied().unwrap_or(0) > 0,
            "no audit event for {resource}: {audited:?}"
        );
    }
    ensure!(
        !holds_value(audit.as_bytes()),
        "the audit log holds a value"
    );
    println!("    audit log at Metadata level, no value: {audited:?}");
    Ok(())
}
