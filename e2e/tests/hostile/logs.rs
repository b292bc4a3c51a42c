//! A tenant string of any length, in a failure retried for ever.

use crate::support::*;

/// The longest log line either controller may write while a tenant's
/// strings are quoted in it: a failure's whole report is cut to 2 KiB,
/// the rest of a line is names and fields.
const LONGEST_LINE: usize = 4096;

/// The evil tenant admin lets its own CRD take anything, and writes an
/// object whose data key is 100,000 characters long and whose value is not
/// a string: the ccm cannot read it, and says why in a status, an event
/// and a log line that quote the key cut to a fixed length with its size;
/// the failure is retried for ever, and logged in full once per start of
/// the controllers.
pub(crate) async fn tenant_strings_are_cut_and_a_retry_is_logged_once(
    pair: &mut Pair,
    values: &mut Values,
) -> anyhow::Result<()> {
    let evil = pair.tenants[EVIL].clone();
    install_crd_as(&evil, &crd_with_data(anything_data())).await?;
    schema_served(&evil, NS, json!({"data": {"k": 1}})).await?;
    let key = "k".repeat(100_000);
    let api = dynamic(&evil, NS);
    create(&api, "long-key", json!({"data": {key.clone(): 42}})).await?;
    let message = eventually("the long key reported", WAIT, || async {
        let (reason, message) = verdict(&api, "long-key").await?;
        (reason == "Undecodable")
            .then(|| message.clone())
            .ok_or(format!("{reason}: {message}"))
    })
    .await?;
    println!("    long-key: {message}");
    ensure!(
        message.len() <= syncsecret_api::quote::MESSAGE && !message.contains(&key[..1000]),
        "the status quotes {} bytes",
        message.len()
    );
    ensure!(message.contains("(100005 bytes)"), "{message}");
    // Retried with backoff (1, 2, 4, 8 s…, jittered): a few attempts.
    let errors =
        format!("kubelb_ccm_sync_secret_reconcile_total{{namespace=\"{NS}\",result=\"error\"}}");
    let before = pair.ccms[EVIL].metric_sum(&errors)?;
    tokio::time::sleep(Duration::from_secs(16)).await;
    let retries = pair.ccms[EVIL].metric_sum(&errors)? - before;
    ensure!(retries >= 3.0, "only {retries} retries in 16 s");
    let ccm = pair
        .log_files()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("syncsecret-ccm-evil."))
        })
        .map(|p| std::fs::read_to_string(&p).with_context(|| format!("{}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?
        .concat();
    let lines: Vec<&str> = ccm.lines().filter(|l| l.contains("long-key")).collect();
    // A start of the controllers (the ccm restarts them in-process when its
    // management kubeconfig is replaced) begins with nothing logged.
    let since = ccm.find("long-key").unwrap_or(0);
    let starts = 1 + ccm[since..].matches("controllers restarted").count();
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let full = lines
        .iter()
        .filter(|l| l.contains(" WARN ") && l.contains("Undecodable"))
        .count();
    println!(
        "    ccm log: {} lines name long-key, the longest {longest} bytes; the failure logged in full {full} time(s) in {retries} retries and more, over {starts} start(s) of the controllers",
        lines.len()
    );
    ensure!(longest <= LONGEST_LINE, "a log line of {longest} bytes");
    ensure!(!ccm.contains(&key[..1000]), "the key reached the log whole");
    ensure!(
        (1..=starts).contains(&full),
        "the failure was logged in full {full} times over {starts} start(s) of the controllers"
    );
    api.delete("long-key", &Default::default()).await?;
    good_tenant_converges(pair, "after-long-key", &values.fresh("good-logs")).await?;
    ready(&pair.manager)
}
