//! `cargo xtask bench`: round trips per verb at 50 ms latency, doctor at scale next to kubectl,
//! cold start, and sizes — measured against kube-sim on this machine, written to BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{realistic, workspace_root};

const LATENCY: Duration = Duration::from_millis(50);

struct Row {
    what: String,
    figure: String,
    how: String,
}

fn row(what: impl Into<String>, figure: impl Into<String>, how: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        figure: figure.into(),
        how: how.into(),
    }
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let root = workspace_root();
    // `--no-build`: measure the binaries already in target/release and target/release-o3.
    let no_build = args.iter().any(|a| a == "--no-build");
    let bin = if no_build {
        target_dir(&root).join("release")
    } else {
        build_release(&root)?
    };
    let kubectl = which("kubectl").ok_or("kubectl is not on PATH")?;
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        return Err(
            "GNU time (/usr/bin/time) is needed for peak memory; apt-get install time".into(),
        );
    }
    let conditions = machine_conditions();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let o3 = if no_build {
        target_dir(&root).join("release-o3")
    } else {
        build_o3(&root)?
    };
    for dir in [&bin, &o3] {
        if !dir.join("kubectl-meshvm-doctor").is_file() {
            return Err(format!(
                "{} has no kubectl-meshvm-doctor: run without --no-build",
                dir.display()
            ));
        }
    }
    // `--serve-synthetic N` (N DestinationRules, N/5 Services and PeerAuthentications) and
    // `--serve-realistic N` (the realistic cluster divided by N): serve the cluster until
    // killed, printing its kubeconfig — to profile doctor by hand.
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let served = if let Some(n) = value("--serve-synthetic") {
        let n_dr: usize = n
            .parse()
            .map_err(|_| format!("--serve-synthetic {n}: not a number of DestinationRules"))?;
        Some((
            scale_objects(n_dr, n_dr / 5),
            format!("{n_dr} DestinationRules"),
        ))
    } else if let Some(n) = value("--serve-realistic") {
        let divisor: usize = n
            .parse()
            .map_err(|_| format!("--serve-realistic {n}: not a divisor (1 for full size)"))?;
        Some((
            realistic::objects(&realistic::REALISTIC.divided(divisor)),
            "the realistic cluster".to_string(),
        ))
    } else {
        None
    };
    if let Some((objects, what)) = served {
        let server = start_sim(&runtime, &root.join("tests/scenarios/modern.yaml"))?;
        server
            .load(objects)
            .map_err(|e| format!("loading {what}: {e}"))?;
        println!("{}", server.kubeconfig_path().display());
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    // `--only-realistic`: the realistic rows alone, printed, BENCHMARKS.md left as it is (to
    // measure a change to doctor's reads without the synthetic runs).
    if args.iter().any(|a| a == "--only-realistic") {
        realistic(&runtime, &root, &bin, &o3, &kubectl, time, args, &mut rows)?;
        println!(
            "Machine and load: {conditions}; at the end: {}.\n",
            load_average()
        );
        for r in &rows {
            println!("| {} | {} | {} |", r.what, r.figure, r.how);
        }
        return Ok(());
    }
    round_trips(&runtime, &root, &bin, &mut rows)?;
    realistic(&runtime, &root, &bin, &o3, &kubectl, time, args, &mut rows)?;
    scale(&runtime, &root, &bin, &kubectl, time, quick, &mut rows)?;
    cold_start(&bin, &kubectl, &mut rows)?;
    sizes(&root, &bin, &mut rows);
    o3_size(&bin, &o3, &mut rows);

    let mut md = format!(
        "# Benchmarks\n\nMeasured by `cargo xtask bench` against kube-sim on this machine, with release binaries.\n\
         Reproduce: `cargo run --profile xtask-bench -p xtask -- bench` (`cargo xtask bench` runs kube-sim unoptimized; add `--quick` for a tenth of the realistic cluster and 1 000 synthetic objects only). \
         Every figure below is from one run of that command.\n\n\
         Machine and load: {conditions}; at the end: {}. kube-sim runs in the bench's own process (2 worker threads), \
         so the server, the client measured and anything else running on the machine share its cores: \
         absolute times are pessimistic and ratios between runs of the same moment are what to compare.\n\n\
         | what | figure | how measured |\n|---|---|---|\n",
        load_average()
    );
    for r in &rows {
        let _ = writeln!(md, "| {} | {} | {} |", r.what, r.figure, r.how);
    }
    std::fs::write(root.join("BENCHMARKS.md"), &md).map_err(|e| e.to_string())?;
    print!("{md}");
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn build_release(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-q", "-p", "kubectl-meshvm"])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build --release -p kubectl-meshvm failed".into());
    }
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release"))
}

fn start_sim(
    runtime: &tokio::runtime::Runtime,
    scenario: &Path,
) -> Result<kube_sim::Server, String> {
    let scenario = kube_sim::Scenario::from_files(&[scenario.to_path_buf()])
        .map_err(|e| format!("{}: {e}", scenario.display()))?;
    runtime
        .block_on(kube_sim::Server::try_start(
            scenario,
            kube_sim::ServerOptions::default(),
        ))
        .map_err(|e| format!("cannot start kube-sim: {e}"))
}

/// Run `bin args` against the sim; return (wall time, exit code, stderr).
fn timed(
    program: &Path,
    args: &[&str],
    kubeconfig: &Path,
) -> Result<(Duration, i32, String), String> {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    Ok((
        start.elapsed(),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn round_trips(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    bin: &Path,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    // Both legacy cells: 1.16 takes server-side apply and metadata lists; 1.14 serves neither,
    // which the verbs know from `/version` (read beside their first reads) and the `Accept`
    // of a metadata list (plain JSON as the second choice), so neither costs a round trip.
    for kube in ["1.16", "1.14"] {
        round_trips_at(runtime, root, bin, kube, rows)?;
    }
    Ok(())
}

fn round_trips_at(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    bin: &Path,
    kube: &str,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let scenario = kube_sim::Scenario::from_files(&[root.join("tests/scenarios/legacy-1.4.yaml")])
        .map_err(|e| format!("legacy-1.4.yaml: {e}"))?
        .with_kube_version(kube);
    let server = runtime
        .block_on(kube_sim::Server::try_start(
            scenario,
            kube_sim::ServerOptions::default(),
        ))
        .map_err(|e| format!("cannot start kube-sim: {e}"))?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    let out = tempfile_dir()?;
    let ca = root.join("tests/fixtures/istio-samples");
    let ca = ca.display().to_string();
    let bundle_dir = out.join("bundle").display().to_string();
    let prepare = ["--vm-namespace", "expandvm", "--ca-dir", &ca];
    // (verb, budget, args, exit codes that are a measurement)
    let steps: [(&str, u32, Vec<&str>, &[i32]); 4] = [
        ("prepare", 3, prepare.to_vec(), &[0]),
        (
            "bundle",
            3,
            vec![
                "--vm-namespace",
                "expandvm",
                "--inbound-ports",
                "80",
                "-d",
                &bundle_dir,
            ],
            &[0],
        ),
        (
            "register",
            3,
            vec!["expandvm", "203.0.113.10", "80", "-n", "expandvm"],
            &[0],
        ),
        // Before `doctor --fix` the runbook's Gotchas are findings: exit 1.
        ("doctor", 2, vec![], &[0, 1]),
    ];
    for (verb, budget, args, codes) in steps {
        if verb == "bundle" {
            // Not measured: the runbook restarts Citadel so it signs with cacerts (it loads its
            // CA only at start), and waits for it; bundle then finds the identity at once.
            let mut restart = prepare.to_vec();
            restart.extend(["--restart-control-plane", "--yes"]);
            let program = bin.join("kubectl-meshvm-prepare");
            let (_, code, stderr) = timed(&program, &restart, &kubeconfig)?;
            if code != 0 {
                return Err(format!(
                    "prepare --restart-control-plane exited {code}:\n{stderr}"
                ));
            }
        }
        server.set_latency(LATENCY);
        server.reset_requests();
        let program = bin.join(format!("kubectl-meshvm-{verb}"));
        let (wall, code, stderr) = timed(&program, &args, &kubeconfig)?;
        server.set_latency(std::time::Duration::ZERO);
        if !codes.contains(&code) {
            return Err(format!(
                "kubectl meshvm {verb} exited {code} (Kubernetes {kube}):\n{stderr}"
            ));
        }
        let log = server.requests();
        // Counted from the request log, not the clock: the longest chain of requests each sent
        // only after the previous one was answered (kube_sim::RequestLog::round_trips), so
        // process start, TLS and the machine's load do not count.
        let trips = log.round_trips();
        let api = kube_sim::RequestLog {
            records: log
                .records
                .iter()
                .filter(|r| !kube_sim::levers::is_discovery_path(&r.path))
                .cloned()
                .collect(),
        };
        let verdict = if trips <= budget as usize {
            "met"
        } else {
            "MISSED"
        };
        let counts: Vec<String> = log
            .counts()
            .iter()
            .map(|((verb, path), n)| format!("{verb} {path} ×{n}"))
            .collect();
        rows.push(row(
            format!(
                "round trips on the critical path: {verb} on Kubernetes {kube} (budget ≤ {budget})"
            ),
            format!(
                "{trips} ({} without discovery) → {verdict}; wall {:.0} ms at 50 ms per request; exit {code}; {} requests",
                api.round_trips(),
                wall.as_secs_f64() * 1000.0,
                log.api_calls()
            ),
            format!("the longest chain of requests in kube-sim's request log each sent after the previous one was answered (discovery included; met: ≤ budget), 50 ms injected per request; request log: {}", counts.join(", ")),
        ));
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf, String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meshvm-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Objects for the scale run: `n_dr` DestinationRules, `n` Services and PeerAuthentications,
/// spread over 50 namespaces.
fn scale_objects(n_dr: usize, n: usize) -> Vec<Value> {
    let namespaces = 50;
    let mut objs: Vec<Value> = (0..namespaces)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{i}"), "labels": {"istio-injection": "enabled"}}}))
        .collect();
    for i in 0..n {
        let ns = format!("ns-{}", i % namespaces);
        objs.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}"), "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": format!("svc-{i}")}}}));
        objs.push(json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": format!("pa-{i}"), "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": format!("svc-{i}")}}, "mtls": {"mode": "STRICT"}}}));
    }
    for i in 0..n_dr {
        let ns = format!("ns-{}", i % namespaces);
        objs.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": format!("dr-{i}"), "namespace": ns},
            "spec": {"host": format!("svc-{}.{ns}.svc.cluster.local", i % n.max(1)), "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}));
    }
    objs
}

/// Wall time, peak RSS (KiB) and exit code of one command, through GNU time.
fn measure(
    time: &Path,
    program: &Path,
    args: &[&str],
    kubeconfig: &Path,
) -> Result<(Duration, u64, i32), String> {
    let start = Instant::now();
    let out = Command::new(time)
        .arg("-f")
        .arg("%M")
        .arg(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib = stderr
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .ok_or_else(|| format!("no peak memory from GNU time: {stderr}"))?;
    Ok((wall, kib, out.status.code().unwrap_or(-1)))
}

fn scale(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    bin: &Path,
    kubectl: &Path,
    time: &Path,
    quick: bool,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    // (DestinationRules, Services and PeerAuthentications each, goal: doctor's time / kubectl's)
    let sizes: &[(usize, usize, f64)] = if quick {
        &[(1_000, 200, 1.0)]
    } else {
        &[
            (1_000, 200, 1.0),
            (10_000, 2_000, 1.0),
            (100_000, 20_000, 0.1),
        ]
    };
    let doctor = bin.join("kubectl-meshvm-doctor");
    let mut per_object = Vec::new();
    for &(n_dr, n, goal) in sizes {
        let server = start_sim(runtime, &root.join("tests/scenarios/modern.yaml"))?;
        server
            .load(scale_objects(n_dr, n))
            .map_err(|e| format!("loading {n_dr} DestinationRules: {e}"))?;
        let kubeconfig = server.kubeconfig_path().to_path_buf();
        let cache = tempfile_dir()?;
        let cache_arg = format!("--cache-dir={}", cache.display());
        // Warm both once: doctor in full; kubectl's discovery cache with a small list (a
        // second full kubectl run at 100 000 objects costs a minute and proves nothing more).
        let _ = timed(&doctor, &["-o", "json"], &kubeconfig)?;
        let _ = timed(kubectl, &["get", "namespaces", &cache_arg], &kubeconfig)?;
        let kubectl_args = [
            "get",
            "destinationrules,services,peerauthentications",
            "-A",
            "-o",
            "json",
            &cache_arg,
        ];
        server.reset_requests();
        let (ours, our_mem, code) = measure(time, &doctor, &["-o", "json"], &kubeconfig)?;
        if code != 0 && code != 1 {
            return Err(format!("doctor exited {code} over {n_dr} DestinationRules"));
        }
        let lists = server.requests().api_calls();
        let (theirs, their_mem, code) = measure(time, kubectl, &kubectl_args, &kubeconfig)?;
        if code != 0 {
            return Err(format!(
                "kubectl get exited {code} over {n_dr} DestinationRules"
            ));
        }
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        rows.push(row(
            format!("synthetic: doctor over {n_dr} DestinationRules, {n} Services, {n} PeerAuthentications"),
            format!(
                "{:.2} s vs kubectl {:.2} s = {ratio:.3}× (goal ≤ {goal}) → {}; peak {} MiB vs {} MiB = {:.2}× (goal ≤ 0.5) → {}; {lists} API requests",
                ours.as_secs_f64(),
                theirs.as_secs_f64(),
                verdict(ratio <= goal),
                our_mem / 1024,
                their_mem / 1024,
                our_mem as f64 / their_mem as f64,
                verdict(our_mem as f64 / their_mem as f64 <= 0.5),
            ),
            "same run, same sim: `kubectl-meshvm-doctor -o json` (opt-level z) vs `kubectl get destinationrules,services,peerauthentications -A -o json`; one run each, wall clock incl. process start, GNU time %M (max RSS); warm-up: one doctor run, one `kubectl get namespaces` (discovery cache)",
        ));
        per_object.push((n_dr + 2 * n, ours));
    }
    for pair in per_object.windows(2) {
        let [(small_n, small), (big_n, big)] = pair else {
            continue;
        };
        let time_factor = big.as_secs_f64() / small.as_secs_f64();
        let object_factor = *big_n as f64 / *small_n as f64;
        rows.push(row(
            format!("synthetic: doctor growth from {small_n} to {big_n} objects"),
            format!(
                "{time_factor:.1}× the time for {object_factor:.1}× the objects → {}",
                if time_factor <= object_factor * 1.25 {
                    "near-linear (met)"
                } else {
                    "super-linear (MISSED)"
                }
            ),
            "ratio of the two runs above; near-linear: time factor ≤ 1.25 × object factor (the small run carries process start and discovery, so a factor below the objects' is expected)",
        ));
    }
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cold_start(bin: &Path, kubectl: &Path, rows: &mut Vec<Row>) -> Result<(), String> {
    let runs = 30;
    let run = |program: &Path, args: &[&str]| -> Result<Duration, String> {
        let mut times = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let status = Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| e.to_string())?;
            times.push(start.elapsed());
            if !status.success() {
                return Err(format!("{} {args:?} failed", program.display()));
            }
        }
        Ok(median(times))
    };
    let ours = run(&bin.join("kubectl-meshvm-doctor"), &["--version"])?;
    let theirs = run(kubectl, &["version", "--client"])?;
    rows.push(row(
        "cold start: `kubectl-meshvm-doctor --version` vs `kubectl version --client`",
        format!(
            "{:.1} ms vs {:.1} ms = {:.3}× (goal ≤ 0.1)",
            ours.as_secs_f64() * 1000.0,
            theirs.as_secs_f64() * 1000.0,
            ours.as_secs_f64() / theirs.as_secs_f64()
        ),
        format!("median of {runs} runs each, same run"),
    ));
    Ok(())
}

fn sizes(root: &Path, bin: &Path, rows: &mut Vec<Row>) {
    for name in crate::dist::RELEASE_BINARIES {
        if let Ok(meta) = std::fs::metadata(bin.join(name)) {
            rows.push(row(
                format!("size: {name}"),
                format!("{:.2} MiB (goal ≤ 8 MiB)", meta.len() as f64 / 1_048_576.0),
                "release profile: opt-level z, fat LTO, strip, panic=abort",
            ));
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join("dist")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tar.gz")
                && let Ok(meta) = e.metadata()
            {
                rows.push(row(
                    format!("size: krew archive {name}"),
                    format!("{:.2} MiB", meta.len() as f64 / 1_048_576.0),
                    "`cargo xtask dist` (six binaries + LICENSE + README.md, gzip -9)",
                ));
            }
        }
    }
}

/// Cores, memory and load of the machine when the bench starts.
fn machine_conditions() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or_else(|| "? GiB".into(), |kib| format!("{} GiB", kib / 1_048_576));
    let sim = if cfg!(debug_assertions) {
        "kube-sim UNOPTIMIZED (dev profile; run `cargo run --profile xtask-bench -p xtask -- bench`)"
    } else {
        "kube-sim optimized (profile xtask-bench)"
    };
    format!(
        "{cores} cores, {mem} RAM, {sim}; load average (1 / 5 / 15 min) at the start: {}",
        load_average()
    )
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages (how busy the machine was besides the bench).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" / "),
    )
}

/// Builds doctor with the `release-o3` profile (the release profile at opt-level 3) and returns
/// the directory holding it.
fn build_o3(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--profile",
            "release-o3",
            "-q",
            "-p",
            "kubectl-meshvm",
            "--bin",
            "kubectl-meshvm-doctor",
        ])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build --profile release-o3 -p kubectl-meshvm failed".into());
    }
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release-o3"))
}

const MIB: f64 = 1_048_576.0;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// Downloads every collection at once, one `curl` each (unpaged, JSON, the sim's bearer token
/// read from a file so it is on no command line); returns the wall time from the first start
/// to the last exit and the body bytes per collection. `compressed`: `curl --compressed`, which
/// asks for gzip (`Accept-Encoding: deflate, gzip, br, zstd`) as kubectl's Go transport does;
/// what it received is then in the sim's request log (`wire_bytes`), not in these sizes.
fn raw_download(
    server: &kube_sim::Server,
    collections: &[String],
    header: &Path,
    compressed: bool,
) -> Result<(Duration, BTreeMap<String, u64>), String> {
    let start = Instant::now();
    let children = collections
        .iter()
        .map(|c| {
            Command::new("curl")
                .args([
                    "-sS",
                    "-k",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}",
                ])
                .args(compressed.then_some("--compressed"))
                .arg("-H")
                .arg(format!("@{}", header.display()))
                .args(["-H", "Accept: application/json"])
                .arg(format!("{}{c}", server.url()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run curl: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut bytes = BTreeMap::new();
    for (c, child) in collections.iter().zip(children) {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, size) = text.split_once(' ').unwrap_or(("", ""));
        if !out.status.success() || code != "200" {
            return Err(format!(
                "curl {c}: HTTP {code}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        bytes.insert(
            c.clone(),
            size.trim()
                .parse()
                .map_err(|_| format!("curl {c}: no size in {text:?}"))?,
        );
    }
    Ok((start.elapsed(), bytes))
}

/// The realistic cluster: doctor (opt-level z and 3) against the raw parallel download of the
/// lists it reads and against `kubectl get` of the same kinds; bytes read; peak memory.
#[allow(clippy::too_many_arguments)]
fn realistic(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    bin: &Path,
    o3: &Path,
    kubectl: &Path,
    time: &Path,
    args: &[String],
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    const RUNS: usize = 3;
    let quick = args.iter().any(|a| a == "--quick");
    // `--realistic-divisor N`: every count of the realistic cluster divided by N (--quick: 10).
    let divisor = args
        .windows(2)
        .find(|w| w[0] == "--realistic-divisor")
        .map(|w| w[1].parse::<usize>())
        .transpose()
        .map_err(|e| format!("--realistic-divisor: {e} (give a whole number ≥ 1)"))?
        .unwrap_or(if quick { 10 } else { 1 })
        .max(1);
    let shape = realistic::REALISTIC.divided(divisor);
    let server = start_sim(runtime, &root.join("tests/scenarios/modern.yaml"))?;
    server
        .load(realistic::objects(&shape))
        .map_err(|e| format!("loading the realistic cluster: {e}"))?;
    let kubeconfig = server.kubeconfig_path().to_path_buf();
    let doctor = bin.join("kubectl-meshvm-doctor");
    let doctor_o3 = o3.join("kubectl-meshvm-doctor");
    let args = ["-o", "json"];
    for program in [&doctor, &doctor_o3] {
        let (_, code, stderr) = timed(program, &args, &kubeconfig)?;
        if code != 0 && code != 1 {
            return Err(format!(
                "{} exited {code} on the realistic cluster:\n{stderr}",
                program.display()
            ));
        }
    }
    // `MESHVM_BENCH_PERF=FILE`: one more run of doctor under `perf record --call-graph=dwarf`, for
    // `perf report -i FILE` (not timed; the measured runs stay as they are).
    if let Some(out) = std::env::var_os("MESHVM_BENCH_PERF") {
        let status = Command::new("perf")
            .args(["record", "--call-graph=dwarf", "-o"])
            .arg(&out)
            .arg(&doctor)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run perf: {e}"))?;
        eprintln!(
            "perf record: {status}, profile in {}",
            Path::new(&out).display()
        );
    }
    // Alternate the two builds so that load on the machine hits both alike.
    let (mut z, mut z3) = (Vec::new(), Vec::new());
    let mut log = kube_sim::RequestLog::default();
    let mut code = 0;
    for _ in 0..RUNS {
        server.reset_requests();
        let m = measure(time, &doctor, &args, &kubeconfig)?;
        code = m.2;
        z.push(m);
        log = server.requests();
        z3.push(measure(time, &doctor_o3, &args, &kubeconfig)?);
    }
    let med = |v: &[(Duration, u64, i32)]| median(v.iter().map(|m| m.0).collect());
    let peak = |v: &[(Duration, u64, i32)]| v.iter().map(|m| m.1).max().unwrap_or(0) * 1024;
    let (z_time, z3_time) = (med(&z), med(&z3));
    let (z_peak, z3_peak) = (peak(&z), peak(&z3));

    // What doctor read, per cluster-wide collection: decoded (`bytes`) and as it came over the
    // wire (`wire_bytes`: gzipped where kube-sim, as kube-apiserver, compressed it).
    let mut read: BTreeMap<String, u64> = BTreeMap::new();
    let mut read_wire: BTreeMap<String, u64> = BTreeMap::new();
    let (mut discovery, mut discovery_wire) = (0, 0);
    for r in &log.records {
        let (bytes, wire) = (r.bytes.unwrap_or(0), r.wire_bytes.unwrap_or(0));
        if let Some(c) = realistic::collection(&r.path) {
            *read.entry(c.clone()).or_default() += bytes;
            *read_wire.entry(c).or_default() += wire;
        } else {
            discovery += bytes;
            discovery_wire += wire;
        }
    }
    // Doctor's wire bytes by verb: lists (gzipped when over 128 KiB) against single GETs
    // (each far under the threshold, so never gzipped), with their decoded sizes.
    let mut by_verb: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    for r in &log.records {
        let e = by_verb.entry(r.verb.as_str()).or_default();
        e.0 += 1;
        e.1 += r.wire_bytes.unwrap_or(0);
        e.2 += r.bytes.unwrap_or(0);
    }
    let by_verb: Vec<String> = by_verb
        .iter()
        .map(|(verb, (n, wire, bytes))| {
            format!("{n} {verb} {} ({} decoded)", mib(*wire), mib(*bytes))
        })
        .collect();
    let gzip_asked = log
        .records
        .iter()
        .filter(|r| r.accept_encoding.split(',').any(|t| t.trim() == "gzip"))
        .count();
    let collections: Vec<String> = read.keys().cloned().collect();

    // The raw parallel download of the same collections, in full.
    let dir = tempfile_dir()?;
    let header = dir.join("auth-header");
    std::fs::write(
        &header,
        format!("Authorization: Bearer {}\n", server.token()),
    )
    .map_err(|e| e.to_string())?;
    let _ = raw_download(&server, &collections, &header, false)?;
    let mut raw_times = Vec::new();
    let mut full = BTreeMap::new();
    for _ in 0..RUNS {
        let (t, b) = raw_download(&server, &collections, &header, false)?;
        raw_times.push(t);
        full = b;
    }
    // Once more as a client asking for gzip: what it received per collection, from the log.
    server.reset_requests();
    let _ = raw_download(&server, &collections, &header, true)?;
    let mut full_wire: BTreeMap<String, u64> = BTreeMap::new();
    for r in &server.requests().records {
        if let Some(c) = realistic::collection(&r.path) {
            *full_wire.entry(c).or_default() += r.wire_bytes.unwrap_or(0);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let raw_time = median(raw_times);

    // kubectl get of the same kinds.
    let cache = tempfile_dir()?;
    let cache_arg = format!("--cache-dir={}", cache.display());
    let kinds: Vec<String> = collections
        .iter()
        .map(|c| realistic::kubectl_resource(c))
        .collect();
    let kinds = kinds.join(",");
    let _ = timed(kubectl, &["get", "namespaces", &cache_arg], &kubeconfig)?;
    let (k_time, k_mem, k_code) = measure(
        time,
        kubectl,
        &["get", &kinds, "-A", "-o", "json", &cache_arg],
        &kubeconfig,
    )?;
    if k_code != 0 {
        return Err(format!("kubectl get {kinds} exited {k_code}"));
    }

    let what = if divisor == 1 {
        "realistic cluster".to_string()
    } else {
        format!("realistic cluster ÷ {divisor}")
    };
    let cluster = shape.describe();
    let ratio = z_time.as_secs_f64() / raw_time.as_secs_f64();
    rows.push(row(
        format!("{what}: doctor vs the raw parallel download of the {} lists it reads", collections.len()),
        format!(
            "{:.2} s vs {:.2} s = {ratio:.1}× (goal ≤ 1.5×, moonshot 1.2×) → {}; doctor exit {code}, {} API requests",
            z_time.as_secs_f64(),
            raw_time.as_secs_f64(),
            verdict(ratio <= 1.5),
            log.api_calls()
        ),
        format!(
            "kube-sim (modern scenario, Kubernetes 1.33) plus {cluster}; `kubectl-meshvm-doctor -o json` (release, opt-level z), median of {RUNS} runs incl. process start; raw: one `curl -k` per cluster-wide collection doctor touched ({}), all started at once, unpaged JSON, median of {RUNS} runs after one warm-up",
            collections.join(", ")
        ),
    ));
    rows.push(row(
        format!("{what}: doctor's peak memory"),
        format!(
            "{} (goal ≤ 64 MiB) → {}",
            mib(z_peak),
            verdict(z_peak as f64 <= 64.0 * MIB)
        ),
        format!("GNU time %M (max RSS), the highest of the {RUNS} runs above"),
    ));
    let total_full: u64 = full.values().sum();
    let total_full_wire: u64 = full_wire.values().sum();
    let total_read: u64 = read.values().sum::<u64>() + discovery;
    let total_read_wire: u64 = read_wire.values().sum::<u64>() + discovery_wire;
    let pct = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64 * 100.0
        }
    };
    let share = total_read as f64 / total_full as f64;
    let per_list: Vec<String> = full
        .iter()
        .map(|(c, b)| {
            format!(
                "{} {} of {}",
                realistic::kubectl_resource(c),
                mib(read.get(c).copied().unwrap_or(0)),
                mib(*b)
            )
        })
        .collect();
    let secrets_full = full.get("/api/v1/secrets").copied().unwrap_or(0);
    let secrets_read = read.get("/api/v1/secrets").copied().unwrap_or(0);
    rows.push(row(
        format!("{what}: bytes doctor read"),
        format!(
            "{} decoded ({} on the wire) of {} = {:.1}% of those lists (goal ≤ 10%) → {}; Secrets: {} of {} cluster-wide = {:.1}%",
            mib(total_read),
            mib(total_read_wire),
            mib(total_full),
            share * 100.0,
            verdict(share <= 0.10),
            mib(secrets_read),
            mib(secrets_full),
            pct(secrets_read, secrets_full)
        ),
        format!(
            "response bodies in kube-sim's request log over one doctor run, decoded (`bytes`; on the wire: `wire_bytes`), discovery included ({}), against the full lists uncompressed as the raw download fetched them (`curl` without `--compressed`); per collection (doctor decoded / full list): {}",
            mib(discovery),
            per_list.join(", ")
        ),
    ));
    let wire_share = pct(total_read_wire, total_full_wire);
    let per_list_wire: Vec<String> = full_wire
        .iter()
        .map(|(c, b)| {
            format!(
                "{} {} of {}",
                realistic::kubectl_resource(c),
                mib(read_wire.get(c).copied().unwrap_or(0)),
                mib(*b)
            )
        })
        .collect();
    rows.push(row(
        format!("{what}: bytes on the wire"),
        format!(
            "doctor {} = {wire_share:.1}% of the {} a gzip-asking client receives for those lists (goal ≤ 10%) → {}, {:.1}% of the {} uncompressed; doctor asked for gzip on {gzip_asked} of its {} requests",
            mib(total_read_wire),
            mib(total_full_wire),
            verdict(wire_share <= 10.0),
            pct(total_read_wire, total_full),
            mib(total_full),
            log.records.len()
        ),
        format!(
            "`wire_bytes` in kube-sim's request log (the body as sent: gzipped where the sim, as kube-apiserver ≥ 1.16, compresses a body over 128 KiB for a client whose Accept-Encoding names gzip) over the doctor run above, discovery included ({}); doctor's requests by verb, on the wire: {}; the lists' wire bytes from the log of one more raw download with `curl --compressed`; per collection (doctor / full list, on the wire): {}",
            mib(discovery_wire),
            by_verb.join(", "),
            per_list_wire.join(", ")
        ),
    ));
    rows.push(row(
        format!("{what}: `kubectl get` of the same kinds"),
        format!(
            "{:.2} s, peak {}; doctor takes {:.3}× its time and {:.2}× its memory",
            k_time.as_secs_f64(),
            mib(k_mem * 1024),
            z_time.as_secs_f64() / k_time.as_secs_f64(),
            z_peak as f64 / (k_mem * 1024) as f64
        ),
        format!("`kubectl get {kinds} -A -o json`, one run after a `kubectl get namespaces` warm-up of its discovery cache; GNU time %M"),
    ));
    let speed = z3_time.as_secs_f64() / z_time.as_secs_f64();
    rows.push(row(
        format!("{what}: doctor at opt-level 3 vs opt-level z"),
        format!(
            "{:.2} s vs {:.2} s = {speed:.2}× the time; peak {} vs {}",
            z3_time.as_secs_f64(),
            z_time.as_secs_f64(),
            mib(z3_peak),
            mib(z_peak)
        ),
        format!("profile `release-o3` (the release profile with opt-level 3) against `release`; runs alternated, median of {RUNS} each, same sim"),
    ));
    OPT_SPEED.with(|s| s.set(Some(speed)));
    Ok(())
}

thread_local! {
    /// opt-level 3's time over z's on the realistic cluster, for the size row's conclusion.
    static OPT_SPEED: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// Doctor's size at both opt-levels and which the release uses, with the reason in numbers.
fn o3_size(bin: &Path, o3: &Path, rows: &mut Vec<Row>) {
    let size =
        |dir: &Path| std::fs::metadata(dir.join("kubectl-meshvm-doctor")).map_or(0, |m| m.len());
    let (z, z3) = (size(bin), size(o3));
    let speed = OPT_SPEED.with(std::cell::Cell::get);
    let size_ratio = z3 as f64 / z as f64;
    let over = z3 as f64 > 8.0 * MIB;
    let conclusion = match speed {
        // opt-level 3 would be taken only if it saved at least a fifth of the time on the
        // realistic run and stayed within the 8 MiB size goal.
        Some(s) if s <= 0.8 && !over => format!(
            "opt-level 3 takes {s:.2}× z's time for {size_ratio:.2}× the size: switch the release to 3"
        ),
        Some(s) => format!(
            "the release uses opt-level z: 3 takes {s:.2}× z's time on the realistic cluster for {size_ratio:.2}× the size{}: the time it saves does not pay for the size (the goal is 8 MiB; krew downloads every binary)",
            if over { ", over the 8 MiB goal" } else { "" }
        ),
        None => "no realistic run to compare speed".into(),
    };
    rows.push(row(
        "size: kubectl-meshvm-doctor at opt-level 3 vs z",
        format!("{} vs {} (goal ≤ 8 MiB); {conclusion}", mib(z3), mib(z)),
        "`release-o3` and `release` profiles (both fat LTO, strip, panic=abort, one codegen unit)",
    ));
}
