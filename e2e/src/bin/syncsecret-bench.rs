//! `make bench`: runs the benchmark (see `syncsecret_e2e::bench`) for each
//! combination of `--objects` and `--tenants`, each on a fresh control
//! plane, writes one JSON file per run under `--out`, and appends a table
//! of the results, with machine, versions, commit and date, to
//! `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use syncsecret_e2e::bench::{self, Config};
use syncsecret_e2e::pair::Launch;
use syncsecret_e2e::repo_root;

#[derive(Parser, Debug)]
#[command(about = "Benchmark the controller pair on the real control plane")]
struct Flags {
    /// Object counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    objects: Vec<usize>,
    /// Tenant counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    tenants: Vec<usize>,
    /// Creates and deletes in flight at once (the loader's and the floor's).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Paced single updates for the latency percentiles.
    #[arg(long, default_value_t = 300)]
    updates: usize,
    /// Milliseconds between two of them.
    #[arg(long, default_value_t = 50)]
    pace_ms: u64,
    /// The manager under test, as a shell command with placeholders
    /// {kubeconfig} {namespace} {metrics_addr} {probe_addr}. Default: ours.
    #[arg(long, env = "BENCH_MANAGER_CMD")]
    manager_cmd: Option<String>,
    /// The ccm under test, with placeholders {tenant} {kubeconfig}
    /// {kubelb_kubeconfig} {metrics_addr} {probe_addr}. Default: ours.
    #[arg(long, env = "BENCH_CCM_CMD")]
    ccm_cmd: Option<String>,
    /// Extra flags for our manager (e.g. --max-concurrent-reconciles=32).
    #[arg(long = "manager-arg", allow_hyphen_values = true)]
    manager_args: Vec<String>,
    /// Extra flags for our ccm.
    #[arg(long = "ccm-arg", allow_hyphen_values = true)]
    ccm_args: Vec<String>,
    /// Where the JSON results go.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Do not append to docs/benchmarks.md.
    #[arg(long)]
    no_table: bool,
    /// Skip both floors (quicker runs while working on the controllers;
    /// the table shows `-` for them).
    #[arg(long)]
    no_floors: bool,
    /// Also take CPU profiles of the management and first tenant
    /// kube-apiserver during each converge phase, into this directory
    /// (`go tool pprof -top FILE`). They cost CPU of their own: such a run
    /// is for finding where the time goes; give it `--no-table`.
    #[arg(long)]
    profile_dir: Option<PathBuf>,
    /// How long into each phase a profile starts.
    #[arg(long, default_value_t = 10)]
    profile_after_s: u64,
    /// How long each profile lasts.
    #[arg(long, default_value_t = 30)]
    profile_s: u64,
    /// Instead of the benchmark: measure what each kind of request the
    /// contract makes costs the API server (this many of each, on a
    /// cluster with none of our controllers), and append that table.
    #[arg(long)]
    request_costs: Option<usize>,
    /// Bytes of labels and annotations each copy carries, as the tenant
    /// copy policy counts them (its cap is 16384); the tenant objects are
    /// padded with one annotation to reach it. 0: none.
    #[arg(long, default_value_t = 0)]
    metadata_bytes: usize,
    /// Instead of the benchmark: this many tenant namespaces on one
    /// management cluster, each writing `--objects-per-tenant` copies with
    /// its own identity, once for each of `--shards`; appends that table.
    #[arg(long)]
    many_tenants: Option<usize>,
    /// Copies per tenant with `--many-tenants`.
    #[arg(long, default_value_t = 10)]
    objects_per_tenant: usize,
    /// Manager shard counts with `--many-tenants`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    shards: Vec<u32>,
    /// Instead of the benchmark: the worst case a tenant can make within
    /// the chart's limits: its whole quota at every per-copy bound beside
    /// `--objects` (the last: 10,000 by default) ordinary copies of
    /// `--tenants` (the last: 4) other tenants; the restarted manager's memory, the management
    /// etcd's size, and another tenant's latency while it writes as fast
    /// as it can. Appends that table.
    #[arg(long)]
    worst_case: bool,
    /// The per-copy data bound (`tenantLimits.dataBytes`) with
    /// `--worst-case` (the chart's default, or one a platform raised).
    #[arg(long, default_value_t = syncsecret_api::bounds::DATA_BYTES.default as usize)]
    data_bytes: usize,
    /// More `--set` values of the manager chart with `--worst-case` (e.g.
    /// `flowControl.enabled=false`, to run as a commit before it).
    #[arg(long = "chart-set")]
    chart_sets: Vec<String>,
    /// Extra flags of the API servers with `--worst-case` (e.g.
    /// `--feature-gates=WatchList=false`, to measure paged lists).
    #[arg(long = "apiserver-arg", allow_hyphen_values = true)]
    apiserver_args: Vec<String>,
    /// How long the hostile tenant writes with `--worst-case`.
    #[arg(long, default_value_t = 60)]
    storm_s: u64,
    /// A label for this run in the table (e.g. "ours, defaults").
    #[arg(long, default_value = "syncsecret, default flags")]
    label: String,
}

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": mem_kib as f64 / 1024.0 / 1024.0,
        "cpu": cpu,
    })
}

fn versions() -> Value {
    let env = std::fs::read_to_string(repo_root().join("hack/versions.env")).unwrap_or_default();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned()
    };
    json!({ "kubernetes": get("K8S_VERSION"), "etcd": get("ETCD_VERSION"), "rustc": command("rustc", &["--version"]) })
}

fn row(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.0}"));
    let s = |v: &Value| {
        v.as_f64()
            .map_or("-".to_owned(), |x| format!("{:.2}", x / 1000.0))
    };
    let ratio_to = |floor: &Value| match (r["create"]["converged_ms"].as_f64(), floor.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    };
    let ratio = ratio_to(&r["floor"]["create_ms"]);
    let contract_ratio = ratio_to(&r["contract_floor"]["create_ms"]);
    let restarted = r["cost_after_restart"].as_array();
    let costs: Vec<String> = r["cost"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let after = restarted
                .and_then(|a| a.get(i))
                .and_then(|a| a["peak_rss_mib"].as_f64())
                .map(|m| format!(" (restarted: {m:.0} MiB)"))
                .unwrap_or_default();
            format!(
                "{} {:.0} MiB / {:.1} s{after}",
                c["process"].as_str().unwrap_or_default(),
                c["peak_rss_mib"].as_f64().unwrap_or(0.0),
                c["cpu_seconds"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let listed = |key: &str, writes_only: bool| -> String {
        r[key]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !writes_only || !is_read(k))
            .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let writes = |phase: &str| {
        r["writes_per_object"][phase]
            .as_f64()
            .map_or("-".to_owned(), |w| format!("{w:.2}"))
    };
    let quiet: f64 = r["after_restart"]["api_writes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_f64())
        .fold(0.0, |a, b| a + b);
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} | {} | {} / {} | {} | {} |\n",
        r["objects"],
        r["tenants"],
        s(&r["create"]["converged_ms"]),
        s(&r["floor"]["create_ms"]),
        ratio,
        s(&r["contract_floor"]["create_ms"]),
        contract_ratio,
        s(&r["delete"]["converged_ms"]),
        s(&r["floor"]["delete_ms"]),
        s(&r["contract_floor"]["delete_ms"]),
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p90"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["latency_ms"]["max"]),
        quiet,
        costs.join("<br>"),
        writes("create"),
        writes("delete"),
        listed("requests_per_object", false),
        listed("delete_requests_per_object", true),
    )
}

/// Whether a request key (`cluster resource VERB`) is a read.
fn is_read(key: &str) -> bool {
    [" GET", " LIST", " WATCH"].iter().any(|v| key.ends_with(v))
}

/// The rows of the CPU table of one result: ours, the floor and the
/// contract floor, each with where its CPU went while converging, and the
/// paced updates of the latency phase (is the system idle?).
fn cpu_rows(r: &Value) -> String {
    let phases = [
        ("ours", &r["create"]["cpu_s"]),
        ("floor", &r["floor"]["cpu_s"]),
        ("contract floor", &r["contract_floor"]["cpu_s"]),
        ("ours: paced updates", &r["latency_ms"]["cpu_s"]),
    ];
    let mut rows = String::new();
    for (phase, cpu) in phases {
        if !cpu.is_object() {
            continue;
        }
        let get = |k: &str| cpu[k].as_f64().unwrap_or(0.0);
        let server = get("etcd") + get("kube-apiserver");
        let per_write = if get("writes") > 0.0 {
            format!("{:.2}", server * 1000.0 / get("writes"))
        } else {
            "-".to_owned()
        };
        rows.push_str(&format!(
            "| {} | {} | {phase} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {per_write} |\n",
            r["objects"],
            r["tenants"],
            get("wall"),
            get("writes"),
            get("etcd"),
            get("kube-apiserver"),
            get("kube-controller-manager"),
            get("controllers"),
            get("loader"),
            get("idle"),
        ));
    }
    rows
}

/// The rows of the latency table of one result: one per stage, with the
/// reconcile time of the controller that does the hop.
fn stage_rows(r: &Value) -> String {
    let stages = &r["latency_ms"]["stages"];
    let reconciles = &r["latency_ms"]["reconciles"];
    let updates = r["latency_ms"]["updates"].as_f64().unwrap_or(0.0);
    // The hop's controllers' work per update: the manager's, or every
    // ccm's together.
    let reconcile = |ccm: bool| -> String {
        let (ms, n) = reconciles
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| name.contains("ccm") == ccm)
            .filter_map(|(_, v)| Some((v["ms"].as_f64()?, v["reconciles"].as_f64()?)))
            .fold((0.0, 0.0), |(a, b), (ms, n)| (a + ms, b + n));
        if n == 0.0 || updates == 0.0 {
            return "-".to_owned();
        }
        format!("{:.1} ({:.1})", ms / updates, n / updates)
    };
    let mut rows = String::new();
    for (key, label, hop) in [
        // The stages in order; the PATCH is inside the first one.
        ("tenant_watch", "tenant object seen", None),
        (
            "tenant_write",
            "(within it: the tenant PATCH answered)",
            None,
        ),
        ("hop1_ccm", "hop 1: copy seen", Some(true)),
        ("hop2_manager", "hop 2: Secret seen", Some(false)),
    ] {
        let s = &stages[key];
        if !s.is_object() {
            continue;
        }
        let f = |k: &str| s[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.1}"));
        rows.push_str(&format!(
            "| {} | {} | {label} | {} | {} | {} | {} | {} | {} |\n",
            r["objects"],
            r["tenants"],
            f("p50"),
            f("p90"),
            f("p99"),
            f("max"),
            f("mean_in_slowest_1pct"),
            hop.map_or("-".to_owned(), reconcile),
        ));
    }
    // The whole update again, without the updates that met a garbage
    // collection of etcd or an API server.
    let outside = &r["latency_ms"]["gc"]["outside"];
    if outside.is_object() {
        let f = |k: &str| {
            outside[k]
                .as_f64()
                .map_or("-".to_owned(), |x| format!("{x:.1}"))
        };
        rows.push_str(&format!(
            "| {} | {} | whole update, when no etcd or API server collected garbage ({} of {updates}) | {} | {} | {} | {} | - | - |\n",
            r["objects"],
            r["tenants"],
            outside["updates"],
            f("p50"),
            f("p90"),
            f("p99"),
            f("max"),
        ));
    }
    rows
}

/// `--request-costs`: one JSON file, and a table appended to
/// docs/benchmarks.md (unless `--no-table`).
async fn request_costs(flags: &Flags, header: &Value, n: usize) -> ExitCode {
    eprintln!("bench: API server CPU per request, {n} of each kind ...");
    let result = match bench::request_costs(n, flags.concurrency).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut doc = header.clone();
    doc["result"] = result.clone();
    if let Some(d) = doc.as_object_mut() {
        d.remove("label");
    }
    let date = header["date"].as_str().unwrap_or_default();
    let file = flags
        .out
        .join(format!("{}-request-costs.json", date.replace(':', "")));
    if let Err(code) = write_result(&file, &doc) {
        return code;
    }
    if flags.no_table {
        return ExitCode::SUCCESS;
    }
    let mut rows = String::new();
    for k in result["kinds"].as_array().into_iter().flatten() {
        let cpu = &k["cpu_ms_per_request"];
        let (api, etcd) = (
            cpu["kube-apiserver"].as_f64().unwrap_or(0.0),
            cpu["etcd"].as_f64().unwrap_or(0.0),
        );
        rows.push_str(&format!(
            "| {} | {api:.2} | {etcd:.2} | {:.2} |\n",
            k["kind"].as_str().unwrap_or_default(),
            api + etcd
        ));
    }
    let table = format!(
        "\n### {date}: API server CPU per request (commit {commit})\n\n\
         {machine}. \
         {n} requests of each kind, {conc} at a time, on a management cluster with none of our controllers; \
         CPU milliseconds per request from /proc, less what the two spend idle in the same time. Written by `syncsecret-bench --request-costs {n}`.\n\n\
         | request (1 KiB of data) | kube-apiserver ms | etcd ms | together ms |\n\
         |---|---|---|---|\n{rows}",
        commit = header["commit"].as_str().unwrap_or_default(),
        machine = machine_line(header),
        conc = flags.concurrency,
    );
    match append_to_benchmarks(&table) {
        Ok(()) => ExitCode::SUCCESS,
        Err(()) => ExitCode::FAILURE,
    }
}

/// `--many-tenants`: one run per shard count, a JSON file each, and a
/// table appended to docs/benchmarks.md (unless `--no-table`).
async fn many_tenants(flags: &Flags, header: &Value, tenants: usize) -> ExitCode {
    let date = header["date"].as_str().unwrap_or_default().to_owned();
    let mut rows = String::new();
    let mut failed = false;
    for &shards in &flags.shards {
        let cfg = bench::TenantsConfig {
            tenants,
            objects_per_tenant: flags.objects_per_tenant,
            shards,
            concurrency: flags.concurrency,
            timeout: Duration::from_secs(1200),
        };
        eprintln!(
            "bench: {tenants} tenants x {} copies, {shards} shard(s) ...",
            flags.objects_per_tenant
        );
        let r = match bench::run_tenants(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {tenants} tenants, {shards} shard(s): {e}");
                failed = true;
                continue;
            }
        };
        let mut doc = header.clone();
        doc["result"] = r.clone();
        let file = flags.out.join(format!(
            "{}-tenants{tenants}x{}-shards{shards}.json",
            date.replace(':', ""),
            flags.objects_per_tenant
        ));
        if let Err(code) = write_result(&file, &doc) {
            return code;
        }
        let secs = |v: &Value| {
            v.as_f64()
                .map_or("-".to_owned(), |x| format!("{:.1}", x / 1000.0))
        };
        let cpu = &r["create"]["cpu_s"];
        let get = |k: &str| cpu[k].as_f64().unwrap_or(0.0);
        let shards_cost: Vec<String> = r["cost"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{:.0} MiB / {:.1} s",
                    c["peak_rss_mib"].as_f64().unwrap_or(0.0),
                    c["cpu_seconds"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        let writes = |key: &str| -> String {
            r[key]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !is_read(k))
                .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        rows.push_str(&format!(
            "| {tenants} | {} | {shards} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {} | {} |\n",
            r["objects"],
            r["setup_s"].as_f64().unwrap_or(0.0),
            secs(&r["create"]["converged_ms"]),
            secs(&r["delete"]["converged_ms"]),
            shards_cost.join("<br>"),
            get("etcd") + get("kube-apiserver"),
            get("controllers"),
            writes("requests_per_object"),
            writes("delete_requests_per_object"),
        ));
    }
    if !flags.no_table && !rows.is_empty() {
        let table = format!(
            "\n### {date}: {tenants} tenants on one management cluster (commit {commit})\n\n\
             {machine}. Each tenant namespace has the manager chart's tenant access and its own \
             identity; the loader writes each tenant's copies as its ccm would (its field manager, \
             through that identity), {conc} at a time; no tenant cluster runs. Written by \
             `syncsecret-bench --many-tenants {tenants} --objects-per-tenant {per}`.\n\n\
             | tenants | copies | shards | setup s | converge s | delete s | peak RSS / CPU per shard | etcd + API server CPU s, converging | managers' CPU s, converging | management writes per copy, create | management writes per copy, delete |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n{rows}",
            commit = header["commit"].as_str().unwrap_or_default(),
            machine = machine_line(header),
            conc = flags.concurrency,
            per = flags.objects_per_tenant,
        );
        if append_to_benchmarks(&table).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `--worst-case`: one run, its JSON file, and a row appended to
/// docs/benchmarks.md (unless `--no-table`).
async fn worst_case(flags: &Flags, header: &Value) -> ExitCode {
    let date = header["date"].as_str().unwrap_or_default().to_owned();
    let cfg = bench::WorstConfig {
        ordinary_objects: flags.objects.last().copied().unwrap_or(10_000),
        ordinary_tenants: flags.tenants.last().copied().unwrap_or(4),
        data_bytes: flags.data_bytes,
        storm: Duration::from_secs(flags.storm_s),
        probes: flags.updates.min(100),
        pace: Duration::from_millis(flags.pace_ms.max(100)),
        concurrency: flags.concurrency,
        manager_cmd: flags.manager_cmd.clone(),
        chart_sets: flags.chart_sets.clone(),
        manager_args: flags.manager_args.clone(),
        // One run per process: leaked once, for the control plane's options.
        apiserver_args: Box::leak(
            flags
                .apiserver_args
                .iter()
                .map(|a| &*Box::leak(a.clone().into_boxed_str()))
                .collect::<Vec<&'static str>>()
                .into_boxed_slice(),
        ),
        timeout: Duration::from_secs(1200),
    };
    eprintln!(
        "bench: worst case: a tenant's quota at {} bytes of data per copy, {} ordinary copies over {} tenants ...",
        cfg.data_bytes, cfg.ordinary_objects, cfg.ordinary_tenants
    );
    let r = match bench::run_worst(&cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: worst case: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut doc = header.clone();
    doc["result"] = r.clone();
    let file = flags.out.join(format!(
        "{}-worst-{}x{}-data{}.json",
        date.replace(':', ""),
        cfg.ordinary_objects,
        cfg.ordinary_tenants,
        cfg.data_bytes
    ));
    if let Err(code) = write_result(&file, &doc) {
        return code;
    }
    if flags.no_table {
        return ExitCode::SUCCESS;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let row = format!(
        "| {label} | {commit} | {copies} × {data} | {ord} | {etcd_o:.0} → {etcd_h:.0} ({hostile:.1} + {secrets:.1}) | {ready:.1} | {rss:.0} | {lease} | {quiet:.0} / {storm:.0} ({max:.0}) | {writes} | {growth:.0} |\n",
        label = header["label"].as_str().unwrap_or_default(),
        commit = header["commit"].as_str().unwrap_or_default(),
        copies = r["hostile_copies"],
        data = r["data_bytes"],
        ord = r["ordinary_objects"],
        etcd_o = f(&r["etcd_mib"]["with_ordinary"]),
        etcd_h = f(&r["etcd_mib"]["with_hostile"]),
        hostile = f(&r["hostile_json_mib"]["copies"]),
        secrets = f(&r["hostile_json_mib"]["secrets"]),
        ready = f(&r["restart"]["ready_s"]),
        rss = f(&r["restart"]["peak_rss_mib"]).max(f(&r["storm"]["peak_rss_mib"])),
        lease = r["storm"]["lease_changes_after_restart"],
        quiet = f(&r["probe_quiet"]["p99_ms"]),
        storm = f(&r["probe_storm"]["p99_ms"]),
        max = f(&r["probe_storm"]["max_ms"]),
        writes = r["storm"]["hostile_writes"],
        growth = f(&r["etcd_mib"]["storm_growth"]),
    );
    let table = format!(
        "\n### {date}: the worst case within the limits (`--worst-case`)\n\n\
         {machine}. One hostile tenant fills its quota with copies at every per-copy bound, beside \
         ordinary copies of other tenants; the manager is restarted over all of it; another tenant's \
         copy is updated up to {probes} times, {pace} ms apart, quiet and then while the hostile tenant \
         rewrites its copies for {storm} s ({conc} writes in flight; no update begun after the storm, once five are done).\n\n\
         | manager | commit | hostile copies × data bytes | ordinary copies | management etcd MiB, ordinary → with the hostile tenant (its copies + Secrets as JSON, MiB) | restart: ready s | manager peak RSS MiB | Lease changes after the restart | another tenant's p99 ms, quiet / storm (max) | hostile writes in the storm | etcd growth in the storm, MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{row}",
        machine = machine_line(header),
        probes = cfg.probes,
        pace = cfg.pace.as_millis(),
        storm = flags.storm_s,
        conc = flags.concurrency,
    );
    if append_to_benchmarks(&table).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Writes one run's JSON to `file` (its directory made if need be) and
/// prints it.
fn write_result(file: &std::path::Path, doc: &Value) -> Result<(), ExitCode> {
    let text = serde_json::to_string_pretty(doc).unwrap_or_default();
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(file, &text)) {
        eprintln!("error: cannot write {}: {e}", file.display());
        return Err(ExitCode::FAILURE);
    }
    eprintln!("bench: wrote {}", file.display());
    println!("{text}");
    Ok(())
}

/// "Machine: ... Kubernetes ..., etcd ..." of a run's header.
fn machine_line(header: &Value) -> String {
    let (m, v) = (&header["machine"], &header["versions"]);
    format!(
        "Machine: {} cores, {:.1} GiB, {}. Kubernetes {}, etcd {}",
        m["cores"],
        m["memory_gib"].as_f64().unwrap_or(0.0),
        m["cpu"].as_str().unwrap_or_default(),
        v["kubernetes"].as_str().unwrap_or_default(),
        v["etcd"].as_str().unwrap_or_default(),
    )
}

/// Appends `table` to docs/benchmarks.md; says what it did either way.
fn append_to_benchmarks(table: &str) -> Result<(), ()> {
    let path = repo_root().join("docs/benchmarks.md");
    let mut doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    doc.push_str(table);
    if let Err(e) = std::fs::write(&path, doc) {
        eprintln!("error: cannot write {}: {e}", path.display());
        return Err(());
    }
    eprintln!("bench: appended the table to {}", path.display());
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let launch = Launch {
        manager: flags.manager_cmd.clone(),
        ccm: flags.ccm_cmd.clone(),
        manager_args: flags.manager_args.clone(),
        ccm_args: flags.ccm_args.clone(),
        tenant_copies: None,
        ..Launch::default()
    };
    let date = command("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    let commit = command("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !command("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let header = json!({
        "date": date,
        "commit": format!("{commit}{}", if dirty { "+dirty" } else { "" }),
        "machine": machine(),
        "versions": versions(),
        "label": flags.label,
    });
    if let Some(n) = flags.request_costs {
        return request_costs(&flags, &header, n).await;
    }
    if let Some(n) = flags.many_tenants {
        return many_tenants(&flags, &header, n).await;
    }
    if flags.worst_case {
        return worst_case(&flags, &header).await;
    }
    let mut rows = String::new();
    let mut cpu_table_rows = String::new();
    let mut latency_rows = String::new();
    let mut failed = false;
    for &objects in &flags.objects {
        for &tenants in &flags.tenants {
            let cfg = Config {
                objects,
                tenants,
                concurrency: flags.concurrency,
                updates: flags.updates,
                pace: Duration::from_millis(flags.pace_ms),
                floor: !flags.no_floors,
                launch: launch.clone(),
                timeout: Duration::from_secs(600),
                metadata_bytes: flags.metadata_bytes,
                leak_scan: false,
                profile: flags
                    .profile_dir
                    .clone()
                    .map(|dir| bench::ProfileApiServers {
                        dir,
                        after: Duration::from_secs(flags.profile_after_s),
                        seconds: flags.profile_s,
                    }),
            };
            eprintln!("bench: {objects} objects over {tenants} tenant(s) ...");
            match bench::run(&cfg).await {
                Ok(result) => {
                    let mut doc = header.clone();
                    doc["result"] = result.clone();
                    let file = flags.out.join(format!(
                        "{}-{objects}x{tenants}.json",
                        date.replace(':', "")
                    ));
                    if let Err(code) = write_result(&file, &doc) {
                        return code;
                    }
                    rows.push_str(&row(&result));
                    cpu_table_rows.push_str(&cpu_rows(&result));
                    latency_rows.push_str(&stage_rows(&result));
                }
                Err(e) => {
                    eprintln!("error: {objects} objects over {tenants} tenant(s): {e}");
                    failed = true;
                }
            }
        }
    }
    if !flags.no_table && !rows.is_empty() {
        let table = format!(
            "\n### {date}: {label} (commit {commit})\n\n\
             {machine}, {rustc}. \
             Loader concurrency {conc}; {updates} paced updates every {pace} ms. Written by `make bench`.\n\n\
             | objects | tenants | converge s | floor s | ratio | contract floor s | ratio | delete s | floor delete s | contract floor delete s | latency p50 / p90 / p99 / max ms | writes after restart | peak RSS / CPU | our writes per object, create / delete | API requests per object, create | API writes per object, delete |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n{rows}{cpu_table}{latency_table}",
            latency_table = if latency_rows.is_empty() {
                String::new()
            } else {
                format!(
                    "\nWhere a paced update's milliseconds went. Each stage ends when the run's own watch sees the new \
                     content, so the stages add up to the latency (three watches: one may deliver after the next, and a \
                     stage come out below zero): the tenant object seen (the \
                     tenant write and its watch delivery; the PATCH's answer comes within it), the copy seen (hop 1: \
                     the ccm's watch delivery, queue, GET and copy apply, and the management watch delivery), the \
                     Secret seen (hop 2: the same for the manager). Percentiles are of each stage alone; *mean in \
                     slowest 1%* is each stage's mean over the slowest 1% of updates; *reconcile* is the time the \
                     hop's controllers spent reconciling per update, all their reconciles of the phase counted (the \
                     ccm's status mirroring and requeues too), with reconciles per update. The last row of each run \
                     leaves out the updates during which etcd or an API server ran a garbage collection (Go's \
                     `gctrace`; the JSON results name the collections each slowest update met):\n\n\
                     | objects | tenants | stage | p50 ms | p90 ms | p99 ms | max ms | mean in slowest 1% | reconcile ms per update (reconciles) |\n\
                     |---|---|---|---|---|---|---|---|---|\n{latency_rows}"
                )
            },
            cpu_table = if cpu_table_rows.is_empty() {
                String::new()
            } else {
                format!(
                    "\nWhere the CPU went (CPU seconds from /proc): while converging, from the first create \
                     until every write of the phase is done (ours: 2 s after the last Secret arrived, for the statuses); \
                     and during the paced updates. *idle* is what the machine's cores left unused; \
                     the last column is etcd's and the API servers' CPU (all of it: reads, watches and lists too) \
                     divided by the write requests of the phase (every API server's `apiserver_request_total`):\n\n\
                     | objects | tenants | phase | wall s | writes | etcd | API servers | kube-controller-manager | controllers | loader | idle | etcd + API servers ÷ writes, ms |\n\
                     |---|---|---|---|---|---|---|---|---|---|---|---|\n{cpu_table_rows}"
                )
            },
            label = header["label"].as_str().unwrap_or_default(),
            commit = header["commit"].as_str().unwrap_or_default(),
            machine = machine_line(&header),
            rustc = header["versions"]["rustc"].as_str().unwrap_or_default(),
            conc = flags.concurrency,
            updates = flags.updates,
            pace = flags.pace_ms,
        );
        if append_to_benchmarks(&table).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
