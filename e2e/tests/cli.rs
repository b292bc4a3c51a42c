//! The binaries refuse bad flags and unusable kubeconfigs with one clear
//! line and a non-zero exit, before touching any cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step fails the test"
)]

use std::process::{Command, Output};

use syncsecret_e2e::pair::controller_binaries;

fn run(bin: &str, args: &[&str]) -> Output {
    let dir = controller_binaries().unwrap();
    Command::new(dir.join(bin))
        .args(args)
        // Flags can come from the environment; keep the test's own out.
        .env_remove("KUBECONFIG")
        .env_remove("SYNCSECRET_CLUSTER_NAME")
        .env_remove("SYNCSECRET_KUBELB_KUBECONFIG")
        .output()
        .unwrap()
}

/// Exit code, and stderr which must be exactly one line.
fn one_line(out: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    (out.status.code().unwrap_or(-1), lines[0].to_owned())
}

#[test]
fn missing_required_flags_name_them() {
    let (code, line) = one_line(&run("syncsecret-ccm", &[]));
    assert_eq!(code, 2);
    assert!(
        line.contains("--cluster-name") && line.contains("--kubelb-kubeconfig"),
        "{line}"
    );
}

#[test]
fn unreadable_kubeconfig_names_the_file() {
    let (code, line) = one_line(&run(
        "syncsecret-ccm",
        &[
            "--cluster-name=a",
            "--kubelb-kubeconfig=/nonexistent/kubelb.yaml",
        ],
    ));
    assert_ne!(code, 0);
    assert!(
        line.starts_with("error:") && line.contains("/nonexistent/kubelb.yaml"),
        "{line}"
    );
    let (code, line) = one_line(&run(
        "syncsecret-manager",
        &["--kubeconfig=/nonexistent/mgmt.yaml"],
    ));
    assert_ne!(code, 0);
    assert!(line.contains("/nonexistent/mgmt.yaml"), "{line}");
}

#[test]
fn bad_values_are_refused() {
    let (code, line) = one_line(&run("syncsecret-manager", &["--metrics-addr=somewhere"]));
    assert_ne!(code, 0);
    assert!(
        line.contains("--metrics-addr") && line.contains("somewhere"),
        "{line}"
    );
    let (code, line) = one_line(&run(
        "syncsecret-manager",
        &["--enable-leader-election=maybe"],
    ));
    assert_eq!(code, 2);
    assert!(line.contains("maybe"), "{line}");
    let (code, line) = one_line(&run("syncsecret-manager", &["--log-format=xml"]));
    assert_eq!(code, 2);
    assert!(line.contains("xml"), "{line}");
    // Shorter than the 5 s every new object waits for its verdict first.
    let (code, line) = one_line(&run(
        "syncsecret-ccm",
        &[
            "--cluster-name=a",
            "--kubelb-kubeconfig=/nonexistent",
            "--pending-timeout-seconds=4",
        ],
    ));
    assert_eq!(code, 2);
    assert!(
        line.contains("--pending-timeout-seconds") && line.contains("'4'"),
        "{line}"
    );
}

#[test]
fn help_lists_kubelb_flag_names() {
    let out = run("syncsecret-ccm", &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--cluster-name",
        "--kubelb-kubeconfig",
        "--kubeconfig",
        "--metrics-addr",
        "--health-probe-bind-address",
        "--enable-leader-election",
        "--leader-election-namespace",
        "--enable-secret-synchronizer",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn shards_the_manager_cannot_run_are_refused() {
    for (args, says) in [
        (&["--shards=0"][..], "--shards: must be at least 1"),
        (
            &["--shard=2", "--shards=2"][..],
            "--shard: 2 is not below --shards (2)",
        ),
        (
            &["--shards=2", "--enable-leader-election=false"][..],
            "--shards: above 1 needs leader election",
        ),
    ] {
        let (code, line) = one_line(&run("syncsecret-manager", args));
        assert_ne!(code, 0, "{args:?}");
        assert!(
            line.starts_with("error:") && line.contains(says),
            "{args:?}: {line}"
        );
    }
}
