//! The alert rules pass `promtool check rules` and the unit tests in
//! `e2e/tests/prometheus/alerts_test.yaml` (each alert fires on the data it
//! is about and stays quiet on healthy data); the chart's PrometheusRule
//! carries the same rules as `config/prometheus/alerts.yaml`. That every
//! expression returns series on a real Prometheus scraping the real
//! binaries is in `pair.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::process::Command;

use syncsecret_e2e::{asset, repo_root};
use syncsecret_runtime::generate::manifests::ALERTS_PATH;
use syncsecret_runtime::generate::monitoring::{Binary, alerts};

fn promtool(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(asset("PROMTOOL").unwrap())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let root = repo_root();
    let checked = promtool(&["check", "rules", ALERTS_PATH], &root);
    let count: usize = Binary::ALL.into_iter().map(|b| alerts(b).len()).sum();
    assert!(
        checked.contains(&format!("{count} rules found")),
        "{checked}"
    );
    let tests = root.join("e2e/tests/prometheus");
    let tested = promtool(&["test", "rules", "alerts_test.yaml"], &tests);
    println!("{checked}{tested}");
    // Every alert has a unit test.
    let unit_tests = std::fs::read_to_string(tests.join("alerts_test.yaml")).unwrap();
    for b in Binary::ALL {
        for a in alerts(b) {
            assert!(
                unit_tests.contains(&format!("alertname: {}\n", a.name)),
                "no unit test for {}",
                a.name
            );
        }
    }
}

#[test]
fn the_dashboards_are_grafana_json_with_queries() {
    for b in Binary::ALL {
        let file = repo_root()
            .join("charts")
            .join(b.name())
            .join("dashboards")
            .join(format!("{}.json", b.name()));
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(d["uid"], b.name());
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 7, "{}", file.display());
        for p in panels {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{}: {}", file.display(), p["title"]);
            for t in targets {
                assert!(
                    t["expr"].as_str().unwrap().contains(b.prefix()),
                    "{}",
                    t["expr"]
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}");
            }
        }
    }
}
