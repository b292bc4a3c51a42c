//! What Prometheus and Grafana get, written once: the alert rules and the
//! dashboards for both binaries. `make manifests` renders them into
//! `config/prometheus/`, `config/grafana/` and each chart (PrometheusRule
//! template, dashboard file); the e2e suite runs every expression against
//! a real Prometheus scraping the real binaries.

use serde_json::{Value, json};

/// Which controller a rule or panel is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// The tenant-side controller.
    Ccm,
    /// The management-side controller.
    Manager,
}

impl Binary {
    /// Both, ccm first.
    pub const ALL: [Binary; 2] = [Binary::Ccm, Binary::Manager];

    /// The metric name prefix (KubeLB's).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Ccm => "kubelb_ccm",
            Self::Manager => "kubelb_manager",
        }
    }

    /// The binary's and chart's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ccm => "syncsecret-ccm",
            Self::Manager => "syncsecret-manager",
        }
    }

    /// The value of the `controller` label on its alerts.
    fn short(self) -> &'static str {
        match self {
            Self::Ccm => "ccm",
            Self::Manager => "manager",
        }
    }

    /// What its phase gauge counts.
    fn objects(self) -> &'static str {
        match self {
            Self::Ccm => "tenant SyncSecrets",
            Self::Manager => "copies",
        }
    }
}

/// Where the runbooks live; each alert links to its section.
pub const RUNBOOKS: &str = "docs/runbooks.md";

/// One alerting rule.
#[derive(Clone, Debug)]
pub struct Alert {
    /// Alert name; also the runbook section's heading.
    pub name: &'static str,
    /// PromQL; a series in its result is a firing (or pending) alert.
    pub expr: String,
    /// How long the expression must hold.
    pub for_: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// One line, with Prometheus templating of the labels.
    pub summary: String,
}

impl Alert {
    /// The runbook link: the repository's runbook page, this alert's section.
    pub fn runbook_url(&self) -> String {
        format!(
            "{}/blob/main/{RUNBOOKS}#{}",
            env!("CARGO_PKG_REPOSITORY"),
            anchor(self.name)
        )
    }
}

/// The anchor GitHub gives a markdown heading: lower case, spaces as `-`,
/// other punctuation dropped.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The alerts about one binary.
pub fn alerts(b: Binary) -> Vec<Alert> {
    let p = b.prefix();
    let what = b.objects();
    let mut out = vec![
        Alert {
            name: "SyncSecretSyncFailing",
            expr: format!(r#"sum by (namespace) ({p}_sync_secrets{{phase="Failed"}}) > 0"#),
            for_: "15m",
            severity: "warning",
            summary: format!(
                "{{{{ $value }}}} {what} in namespace {{{{ $labels.namespace }}}} have been Failed for 15 minutes"
            ),
        },
        Alert {
            name: "SyncSecretReconcileErrors",
            expr: format!(
                r#"sum by (namespace) (rate({p}_sync_secret_reconcile_total{{result="error"}}[5m])) > 0"#
            ),
            for_: "15m",
            severity: "warning",
            summary: format!(
                "{} reconciles in namespace {{{{ $labels.namespace }}}} keep failing",
                b.name()
            ),
        },
        Alert {
            name: "SyncSecretControllerNotReady",
            expr: format!("{p}_ready == 0"),
            for_: "10m",
            severity: "warning",
            summary: format!(
                "{} replica {{{{ $labels.instance }}}} has not been ready for 10 minutes",
                b.name()
            ),
        },
        Alert {
            name: "SyncSecretManagementUnreachable",
            expr: format!("{p}_management_reachable == 0"),
            for_: "5m",
            severity: "critical",
            summary: format!(
                "{} replica {{{{ $labels.instance }}}} has not reached the management cluster for 5 minutes",
                b.name()
            ),
        },
        Alert {
            name: "SyncSecretNoLeader",
            expr: format!("max by (job) ({p}_leader) < 1 or absent({p}_leader)"),
            for_: "5m",
            severity: "critical",
            summary: format!(
                "no {} replica is leading: nothing is being synced",
                b.name()
            ),
        },
    ];
    if b == Binary::Manager {
        out.extend([
            Alert {
                name: "SyncSecretCertificateExpiring",
                expr: format!(r#"sum by (namespace) ({p}_certificates{{state="expiring"}}) > 0"#),
                for_: "15m",
                severity: "warning",
                summary: "{{ $value }} synced TLS certificates in namespace {{ $labels.namespace }} expire soon".to_owned(),
            },
            Alert {
                name: "SyncSecretCertificateExpired",
                expr: format!(r#"sum by (namespace) ({p}_certificates{{state="expired"}}) > 0"#),
                for_: "5m",
                severity: "critical",
                summary: "{{ $value }} synced TLS certificates in namespace {{ $labels.namespace }} have expired".to_owned(),
            },
            Alert {
                name: "SyncSecretShardWithoutLeader",
                expr: format!(
                    "(count by (job) (max by (job, shard) ({p}_shard_leader) == 1) or 0 * max by (job) ({p}_shards)) < max by (job) ({p}_shards)"
                ),
                for_: "5m",
                severity: "critical",
                summary: "{{ $value }} manager shards have a leader, fewer than there are: the tenant namespaces of the others are not served".to_owned(),
            },
            Alert {
                name: "SyncSecretWriteVerificationFailed",
                expr: format!(
                    "sum by (namespace) (increase({p}_write_verify_failures_total[15m])) > 0"
                ),
                for_: "0m",
                severity: "warning",
                summary: "Secrets in namespace {{ $labels.namespace }} were changed by admission on write".to_owned(),
            },
        ]);
    }
    out
}

/// The rule group of one binary, in Prometheus' rule file shape.
pub fn rule_group(b: Binary) -> Value {
    let rules: Vec<Value> = alerts(b)
        .into_iter()
        .map(|a| {
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": { "severity": a.severity, "controller": b.short() },
                "annotations": { "summary": a.summary, "runbook_url": a.runbook_url() },
            })
        })
        .collect();
    json!({ "name": b.name(), "rules": rules })
}

/// One dashboard panel: a title and its queries (expression, legend).
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title.
    pub title: String,
    /// Grafana unit.
    pub unit: &'static str,
    /// Queries: PromQL and legend format.
    pub queries: Vec<(String, &'static str)>,
}

fn panel(
    title: impl Into<String>,
    unit: &'static str,
    queries: &[(String, &'static str)],
) -> Panel {
    Panel {
        title: title.into(),
        unit,
        queries: queries.to_vec(),
    }
}

/// The dashboards' namespace variable, in the selector of every query over
/// a metric with a namespace label (Grafana puts `.*` for "All"; a query
/// run elsewhere replaces it with a regex itself).
pub const NS: &str = r#"namespace=~"$namespace""#;

/// The panels of one binary's dashboard.
pub fn panels(b: Binary) -> Vec<Panel> {
    let p = b.prefix();
    let reconciles = format!("{p}_sync_secret_reconcile_total");
    let duration = format!("{p}_sync_secret_reconcile_duration_seconds_bucket");
    let mut out = vec![
        panel(
            "Reconciles by namespace",
            "ops",
            &[(
                format!("sum by (namespace) (rate({reconciles}{{{NS}}}[5m]))"),
                "{{namespace}}",
            )],
        ),
        panel(
            "Reconcile errors by namespace",
            "ops",
            // Zero rather than "no data" where reconciles run without errors.
            &[(
                format!(
                    r#"sum by (namespace) (rate({reconciles}{{result="error",{NS}}}[5m])) or (sum by (namespace) (rate({reconciles}{{{NS}}}[5m])) * 0)"#
                ),
                "{{namespace}}",
            )],
        ),
        panel(
            "Reconcile duration",
            "s",
            &[
                (
                    format!("histogram_quantile(0.5, sum by (le) (rate({duration}{{{NS}}}[5m])))"),
                    "p50",
                ),
                (
                    format!("histogram_quantile(0.99, sum by (le) (rate({duration}{{{NS}}}[5m])))"),
                    "p99",
                ),
            ],
        ),
        panel(
            "Writes by resource and verb (zero at steady state)",
            "wps",
            &[(
                format!("sum by (resource, verb) (rate({p}_writes_total[5m]))"),
                "{{resource}} {{verb}}",
            )],
        ),
        panel(
            format!("{} by phase", capitalised(b.objects())),
            "short",
            &[(
                format!("sum by (phase) ({p}_sync_secrets{{{NS}}})"),
                "{{phase}}",
            )],
        ),
        panel(
            "Leader and readiness by replica",
            "short",
            &[
                (
                    format!("max by (instance) ({p}_leader)"),
                    "leader {{instance}}",
                ),
                (
                    format!("min by (instance) ({p}_ready)"),
                    "ready {{instance}}",
                ),
            ],
        ),
        panel(
            "Orphans swept (last hour)",
            "short",
            &[(
                format!("sum by (resource) (increase({p}_orphans_deleted_total[1h]))"),
                "{{resource}}",
            )],
        ),
        panel(
            "Management cluster reachable by replica",
            "short",
            &[(
                format!("min by (instance) ({p}_management_reachable)"),
                "{{instance}}",
            )],
        ),
    ];
    if b == Binary::Manager {
        out.extend([
            panel(
                "TLS certificates by state",
                "short",
                &[(
                    format!("sum by (state) ({p}_certificates{{{NS}}})"),
                    "{{state}}",
                )],
            ),
            panel(
                "Earliest certificate expiry by namespace",
                "d",
                &[(
                    format!(
                        "(min by (namespace) ({p}_certificate_earliest_expiry_timestamp_seconds{{{NS}}}) - time()) / 86400"
                    ),
                    "{{namespace}}",
                )],
            ),
            panel(
                "Write verification failures (last hour)",
                "short",
                &[(
                    format!(
                        "sum by (namespace) (increase({p}_write_verify_failures_total{{{NS}}}[1h]))"
                    ),
                    "{{namespace}}",
                )],
            ),
        ]);
    }
    out
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The Grafana dashboard of one binary (two panels a row, a data source
/// variable, no hard-coded data source).
pub fn dashboard(b: Binary) -> Value {
    let datasource = json!({ "type": "prometheus", "uid": "${datasource}" });
    let panels: Vec<Value> = panels(b)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let targets: Vec<Value> = p
                .queries
                .iter()
                .zip('A'..='Z')
                .map(|((expr, legend), ref_id)| {
                    json!({
                        "refId": ref_id.to_string(),
                        "datasource": datasource,
                        "expr": expr,
                        "legendFormat": legend,
                    })
                })
                .collect();
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": p.title,
                "datasource": datasource,
                "gridPos": { "h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8 },
                "fieldConfig": { "defaults": { "unit": p.unit }, "overrides": [] },
                "options": { "legend": { "displayMode": "list", "placement": "bottom" } },
                "targets": targets,
            })
        })
        .collect();
    json!({
        "uid": b.name(),
        "title": format!("syncsecret / {}", b.name().trim_start_matches("syncsecret-")),
        "tags": ["syncsecret", "kubelb"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "30s",
        "time": { "from": "now-1h", "to": "now" },
        "templating": { "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
            },
            {
                "name": "namespace",
                "label": "Namespace",
                "type": "query",
                "datasource": datasource,
                "query": { "query": format!("label_values({}_sync_secrets, namespace)", b.prefix()), "refId": "namespaces" },
                "refresh": 2,
                "multi": true,
                "includeAll": true,
                "allValue": ".*",
                "current": { "text": "All", "value": "$__all" },
            },
        ]},
        "panels": panels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_by_namespace_follows_the_namespace_variable() {
        for b in Binary::ALL {
            let d = dashboard(b);
            let vars: Vec<&str> = d["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v["name"].as_str())
                .collect();
            assert_eq!(vars, ["datasource", "namespace"]);
            for p in panels(b) {
                for (q, _) in &p.queries {
                    if q.contains("namespace") {
                        assert!(q.contains(NS), "{}: {q}", p.title);
                    }
                }
            }
        }
    }

    #[test]
    fn every_alert_has_a_runbook_section() {
        let runbooks = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/runbooks.md"
        ))
        .unwrap();
        let anchors: Vec<String> = runbooks
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(anchor)
            .collect();
        let page = format!("{}/blob/main/{RUNBOOKS}#", env!("CARGO_PKG_REPOSITORY"));
        assert!(page.starts_with("https://github.com/"), "{page}");
        for b in Binary::ALL {
            for a in alerts(b) {
                let url = a.runbook_url();
                let anchor = url
                    .strip_prefix(&page)
                    .unwrap_or_else(|| panic!("{url} is not on {page}"));
                assert!(
                    anchors.iter().any(|h| h == anchor),
                    "{url}: docs/runbooks.md has no heading with the anchor {anchor}"
                );
            }
        }
    }

    #[test]
    fn every_query_names_only_its_own_binarys_metrics() {
        for b in Binary::ALL {
            let other = Binary::ALL.into_iter().find(|o| *o != b).unwrap().prefix();
            let exprs = alerts(b).into_iter().map(|a| a.expr).chain(
                panels(b)
                    .into_iter()
                    .flat_map(|p| p.queries.into_iter().map(|q| q.0)),
            );
            for e in exprs {
                assert!(e.contains(b.prefix()), "{e}");
                assert!(!e.contains(&format!("{other}_")), "{e}");
            }
        }
    }

    #[test]
    fn panels_do_not_overlap() {
        let d = dashboard(Binary::Manager);
        let mut seen = std::collections::HashSet::new();
        for p in d["panels"].as_array().unwrap() {
            let pos = (&p["gridPos"]["x"], &p["gridPos"]["y"]);
            assert!(seen.insert(format!("{pos:?}")), "two panels at {pos:?}");
        }
    }
}
