//! A real Prometheus (Debian's package, installed by `hack/tools.sh`)
//! scraping the controller processes every second, with the generated alert
//! rules loaded, and a small client for its query API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::control_plane::free_port;
use crate::process::Process;
use crate::{HarnessError, asset, repo_root};

/// One scrape target: its job, its `/metrics` port, extra labels.
#[derive(Clone, Debug)]
pub struct Target {
    /// The `job` label.
    pub job: String,
    /// Port of `/metrics` on 127.0.0.1.
    pub port: u16,
}

/// A running Prometheus.
pub struct Prometheus {
    process: Process,
    port: u16,
    targets_file: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir` (config, data, log there) with the rule
    /// file `config/prometheus/alerts.yaml`, scraping the targets written by
    /// [`Self::set_targets`] every second.
    pub fn start(dir: &Path) -> Result<Self, HarnessError> {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).map_err(|e| HarnessError::io(&dir, e))?;
        let targets_file = dir.join("targets.json");
        write(&targets_file, "[]")?;
        let rules = repo_root().join(syncsecret_runtime::generate::manifests::ALERTS_PATH);
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: syncsecret\n    file_sd_configs:\n      - files: [{targets}]\n        refresh_interval: 1s\n",
            rules = rules.display(),
            targets = targets_file.display()
        );
        Self::spawn(&dir, &config, targets_file)
    }

    /// Starts Prometheus in `dir` with `config` as its whole configuration
    /// (prometheus-operator's, say); [`Self::set_targets`] then writes a
    /// file nothing reads.
    pub fn start_with_config(dir: &Path, config: &str) -> Result<Self, HarnessError> {
        std::fs::create_dir_all(dir).map_err(|e| HarnessError::io(dir, e))?;
        Self::spawn(dir, config, dir.join("unused-targets.json"))
    }

    fn spawn(dir: &Path, config: &str, targets_file: PathBuf) -> Result<Self, HarnessError> {
        let bin = asset("PROMETHEUS")?;
        let config_file = dir.join("prometheus.yml");
        write(&config_file, config)?;
        let port = free_port()?;
        let args = vec![
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ];
        let process = Process::spawn("prometheus", &bin, &args, &dir.join("prometheus.log"))?;
        Ok(Self {
            process,
            port,
            targets_file,
        })
    }

    /// Replaces the scrape targets (file-based discovery: picked up within
    /// a second, no restart).
    pub fn set_targets(&self, targets: &[Target]) -> Result<(), HarnessError> {
        let groups: Vec<Value> = targets
            .iter()
            .map(|t| json!({ "targets": [format!("127.0.0.1:{}", t.port)], "labels": { "job": t.job } }))
            .collect();
        write(&self.targets_file, Value::Array(groups).to_string())
    }

    /// Runs an instant query; the result vector, or the error Prometheus
    /// gave (a bad expression is an error, not an empty result).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, HarnessError> {
        let body = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| HarnessError::Usage(format!("prometheus answered {body:?}: {e}")))?;
        if v["status"] != "success" {
            return Err(HarnessError::Usage(format!(
                "prometheus refused {expr:?}: {} {}",
                v["errorType"], v["error"]
            )));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts Prometheus is evaluating as pending or firing.
    pub fn alerts(&self) -> Result<Vec<Value>, HarnessError> {
        let body = self.get("/api/v1/alerts")?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| HarnessError::Usage(format!("prometheus answered {body:?}: {e}")))?;
        Ok(v["data"]["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// Scrape health of every target: (`job`, instance, up).
    pub fn targets(&self) -> Result<Vec<(String, String, bool)>, HarnessError> {
        let body = self.get("/api/v1/targets")?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| HarnessError::Usage(format!("prometheus answered {body:?}: {e}")))?;
        Ok(v["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                    t["labels"]["instance"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    t["health"] == "up",
                )
            })
            .collect())
    }

    /// The end of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    fn get(&self, path: &str) -> Result<String, HarnessError> {
        let fail = |e: std::io::Error| HarnessError::Usage(format!("prometheus {path}: {e}"));
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(fail)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(fail)?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(fail)?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).map_err(fail)?;
        Ok(buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default())
    }
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<(), HarnessError> {
    // Write then rename, so that file discovery never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| HarnessError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| HarnessError::io(path, e))
}
