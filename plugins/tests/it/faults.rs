//! Fault injection: every verb binary against kube-sim with 5% of requests failing (500, 429 with
//! Retry-After, connection reset), 50 seeds each. A run either completes with the fault-free
//! result, or exits 1 with a plan table that tells the truth about what was and was not written;
//! a re-run without faults then converges to the fault-free result.

use crate::common::sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_sim::{Fault, FaultKind, Scenario, Server};
use serde_json::Value;
use sim::{ApiKind, Run, Said};

/// How hard the sim fails requests, and for how many seeds.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Seeds per verb (split evenly over the verb's scenarios).
    seeds: usize,
    /// Share of requests that fail.
    rate: f64,
    /// Whether 429s with Retry-After are among the faults.
    throttle: bool,
}

/// The figure: 5% of requests fail (500, 429 + Retry-After, reset), 50 seeds.
const FIVE_PERCENT: Load = Load {
    seeds: 50,
    rate: 0.05,
    throttle: true,
};
/// Half the requests fail (500 or reset; no Retry-After sleeps, to stay fast): enough that
/// retries run out and the exit-1 path is taken with a random mix of earlier writes.
const HEAVY: Load = Load {
    seeds: 30,
    rate: 0.5,
    throttle: false,
};
/// Seeds run at once: one sim and one verb process each; most of the time is spent in
/// Retry-After sleeps, so this is well above the 2 cores.
const WORKERS: usize = 10;

/// One way to run a verb: the cluster, the arguments, the kinds it writes.
#[derive(Clone)]
struct Case {
    name: &'static str,
    scenario: fn() -> Scenario,
    args: Vec<String>,
    kinds: &'static [ApiKind],
}

/// What one seed did, for the figures printed at the end.
#[derive(Debug, Clone)]
struct Outcome {
    seed: usize,
    case: &'static str,
    code: i32,
    /// Exit 1 after some writes: the plan table was printed.
    with_table: bool,
    injected: usize,
    requests: usize,
    took: Duration,
}

fn report(verb: &str, load: Load, outcomes: &[Outcome], wall: Duration) {
    let completed = outcomes.iter().filter(|o| o.code == 0).count();
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.code != 0)
        .map(|o| format!("seed {} ({}, {} faults)", o.seed, o.case, o.injected))
        .collect();
    let tables = outcomes.iter().filter(|o| o.with_table).count();
    let injected: usize = outcomes.iter().map(|o| o.injected).sum();
    let requests: usize = outcomes.iter().map(|o| o.requests).sum();
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "faults/{verb} at {:.0}%: {} seeds, {completed} completed, {} exited 1 ({tables} after writes, with the plan table) {failed:?}; {injected} of {requests} requests faulted; slowest run {slowest:.2?}; wall {wall:.2?}",
        load.rate * 100.0,
        outcomes.len(),
        failed.len()
    );
}

const WORKLOAD_GROUP: ApiKind =
    sim::kind("networking.istio.io/v1", "WorkloadGroup", "workloadgroups");
const WORKLOAD_ENTRY: ApiKind =
    sim::kind("networking.istio.io/v1", "WorkloadEntry", "workloadentries");
const DESTINATION_RULE_V1A3: ApiKind = sim::kind(
    "networking.istio.io/v1alpha3",
    "DestinationRule",
    "destinationrules",
);

fn prepare_cases() -> Vec<Case> {
    let ca = sim::samples().display().to_string();
    vec![
        Case {
            name: "legacy",
            scenario: sim::legacy,
            args: sim::args(&["--vm-namespace", "expandvm", "--ca-dir", &ca]),
            kinds: &[sim::NAMESPACE, sim::SERVICE_ACCOUNT, sim::SECRET],
        },
        Case {
            name: "modern",
            scenario: sim::modern,
            args: sim::args(&[
                "--vm-namespace",
                "vm",
                "-s",
                "vm-sa",
                "--ca-dir",
                &ca,
                "--workload-group",
                "vm",
                "--labels",
                "app=vm",
                "--ports",
                "http=8080",
                "--network",
                "vm-net",
            ]),
            kinds: &[
                sim::NAMESPACE,
                sim::SERVICE_ACCOUNT,
                sim::SECRET,
                WORKLOAD_GROUP,
            ],
        },
    ]
}

fn register_cases() -> Vec<Case> {
    vec![
        Case {
            name: "legacy",
            scenario: sim::legacy_with_vm,
            args: sim::args(&[
                "expandvm",
                "203.0.113.7",
                "80",
                "grpc:9090",
                "-n",
                "expandvm",
                "-s",
                "expandvm",
                "-l",
                "app=expandvm",
            ]),
            kinds: &[sim::SERVICE, sim::ENDPOINTS],
        },
        Case {
            name: "modern",
            scenario: sim::modern_with_vm,
            args: sim::args(&[
                "--workload-entry",
                "vm-1",
                "--address",
                "10.0.0.5",
                "-n",
                "vm",
                "--workload-group",
                "vm",
                "--service",
                "vm",
            ]),
            kinds: &[sim::SERVICE, WORKLOAD_ENTRY],
        },
    ]
}

/// The fault-free result of each case, each on a fresh sim: (before, after).
type Reference = (BTreeMap<String, Value>, BTreeMap<String, Value>);

async fn reference(bin: &'static str, case: &Case) -> Reference {
    let server = Server::start((case.scenario)()).await;
    let before = sim::stored(&server, case.kinds).await;
    let run = sim::run(bin, &server, &case.args).await;
    assert_eq!(run.code, 0, "{} fault-free: {}", case.name, run.show());
    let after = sim::stored(&server, case.kinds).await;
    assert_ne!(
        before, after,
        "{}: the fault-free run wrote nothing",
        case.name
    );
    (before, after)
}

/// Judge what a run that may have failed left behind, against its own plan table.
fn judge(
    case: &Case,
    run: &Run,
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
    reference: &BTreeMap<String, Value>,
    context: &str,
) {
    let show = || format!("{context} ({}):\n{}", case.name, run.show());
    match run.code {
        0 => {
            let rows =
                sim::plan_rows(&run.stdout).unwrap_or_else(|| panic!("no plan table: {}", show()));
            for row in &rows {
                assert!(
                    matches!(
                        sim::said(&row.action),
                        Some(Said::Written | Said::Untouched)
                    ),
                    "a completed run shows {:?} for {}: {}",
                    row.action,
                    row.key(),
                    show()
                );
            }
            assert!(
                after == reference,
                "completed, but not with the fault-free result: {}\n{}",
                sim::diff(after, reference),
                show()
            );
        }
        1 => {
            assert!(
                run.stderr.contains("error: "),
                "exit 1 without an error line: {}",
                show()
            );
            let Some(rows) = sim::plan_rows(&run.stdout) else {
                // Stopped before it had a plan: then nothing may have been written.
                assert!(
                    after == before,
                    "exit 1 without a plan table, yet the cluster changed: {}\n{}",
                    sim::diff(before, after),
                    show()
                );
                return;
            };
            for row in &rows {
                let key = row.key();
                let now = after.get(&key);
                match sim::said(&row.action) {
                    Some(Said::Written) => assert!(
                        now.is_some() && now == reference.get(&key),
                        "{key} reads {:?} but is {now:?}: {}",
                        row.action,
                        show()
                    ),
                    Some(Said::Untouched) => assert!(
                        now == before.get(&key),
                        "{key} reads {:?} but changed: {now:?}: {}",
                        row.action,
                        show()
                    ),
                    Some(Said::Unknown) => assert!(
                        now == before.get(&key) || now == reference.get(&key),
                        "{key} reads {:?} but is neither as before nor as wanted: {now:?}: {}",
                        row.action,
                        show()
                    ),
                    None => panic!("{key}: unexpected ACTION {:?}: {}", row.action, show()),
                }
            }
            // What the table does not name is as before, or as the fault-free run left it
            // (what the sim's controllers make with a namespace: `default`, Citadel's secrets).
            let named: Vec<String> = rows.iter().map(sim::Row::key).collect();
            for key in before.keys().chain(after.keys()) {
                let now = after.get(key);
                if !named.contains(key) {
                    assert!(
                        now == before.get(key) || now == reference.get(key),
                        "{key} changed but is not in the table: {now:?}: {}",
                        show()
                    );
                }
            }
        }
        _ => panic!("exit code is neither 0 nor 1: {}", show()),
    }
}

/// A verb whose output is a plan table, under a fault load: each seed judged, then re-run.
async fn plan_verb_under_faults(
    verb: &'static str,
    bin: &'static str,
    cases: Vec<Case>,
    load: Load,
) {
    let started = Instant::now();
    let mut refs = Vec::new();
    for case in &cases {
        refs.push(reference(bin, case).await);
    }
    let cases = std::sync::Arc::new(cases);
    let refs = std::sync::Arc::new(refs);
    let outcomes = sim::pool(load.seeds, WORKERS, move |seed| {
        let cases = cases.clone();
        let refs = refs.clone();
        async move {
            let which = seed % cases.len();
            let case = &cases[which];
            let (ref_before, reference) = &refs[which];
            let server = Server::start((case.scenario)()).await;
            let before = sim::stored(&server, case.kinds).await;
            assert!(
                &before == ref_before,
                "the scenario loads differently: {}",
                sim::diff(&before, ref_before)
            );
            server.reset_requests();
            sim::inject_faults(&server, seed as u64, load.rate, load.throttle);
            let t = Instant::now();
            let run = sim::run(bin, &server, &case.args).await;
            let took = t.elapsed();
            let requests = server.requests().total();
            let injected = sim::injected(&server);
            server.clear_faults();
            let after = sim::stored(&server, case.kinds).await;
            judge(
                case,
                &run,
                &before,
                &after,
                reference,
                &format!("{verb} seed {seed}"),
            );

            let again = sim::run(bin, &server, &case.args).await;
            assert_eq!(again.code, 0, "{verb} seed {seed} re-run: {}", again.show());
            let converged = sim::stored(&server, case.kinds).await;
            assert!(
                &converged == reference,
                "{verb} seed {seed}: the re-run did not converge: {}",
                sim::diff(&converged, reference)
            );
            Outcome {
                seed,
                case: case.name,
                code: run.code,
                with_table: run.code == 1 && sim::plan_rows(&run.stdout).is_some(),
                injected,
                requests,
                took,
            }
        }
    })
    .await;
    let total: usize = outcomes.iter().map(|o| o.injected).sum();
    assert!(
        total > 0,
        "{verb}: no fault was injected in {} seeds",
        load.seeds
    );
    report(verb, load, &outcomes, started.elapsed());
}

/// Every write the fault-free run sends, made to fail for good (500 on every retry): the run
/// exits 1 with a table that tells the truth, and a re-run converges.
async fn plan_verb_with_a_failing_write(verb: &'static str, bin: &'static str, cases: Vec<Case>) {
    let started = Instant::now();
    let mut jobs = Vec::new();
    for case in cases {
        let server = Server::start((case.scenario)()).await;
        let before = sim::stored(&server, case.kinds).await;
        server.reset_requests();
        let run = sim::run(bin, &server, &case.args).await;
        assert_eq!(run.code, 0, "{} fault-free: {}", case.name, run.show());
        let reference = sim::stored(&server, case.kinds).await;
        let mut writes: Vec<(String, String)> = Vec::new();
        for r in server.requests().records {
            let w = (r.verb.clone(), r.path.clone());
            if !matches!(r.method.as_str(), "GET" | "HEAD") && !writes.contains(&w) {
                writes.push(w);
            }
        }
        assert!(!writes.is_empty(), "{}: no write to fail", case.name);
        for w in writes {
            jobs.push((case.clone(), before.clone(), reference.clone(), w));
        }
    }
    let count = jobs.len();
    let jobs = std::sync::Arc::new(jobs);
    let codes = sim::pool(count, WORKERS, move |i| {
        let jobs = jobs.clone();
        async move {
            let (case, before, reference, (kverb, path)) = &jobs[i];
            let server = Server::start((case.scenario)()).await;
            server.add_fault(Fault::on(FaultKind::InternalError, kverb, path));
            let run = sim::run(bin, &server, &case.args).await;
            server.clear_faults();
            let after = sim::stored(&server, case.kinds).await;
            let context = format!("{verb}: {kverb} {path} always fails");
            assert_eq!(run.code, 1, "{context}: {}", run.show());
            judge(case, &run, before, &after, reference, &context);
            let again = sim::run(bin, &server, &case.args).await;
            assert_eq!(again.code, 0, "{context}, re-run: {}", again.show());
            let converged = sim::stored(&server, case.kinds).await;
            assert!(
                &converged == reference,
                "{context}: the re-run did not converge: {}",
                sim::diff(&converged, reference)
            );
            run.code
        }
    })
    .await;
    eprintln!(
        "faults/{verb}: {} failing writes, each exited 1 with a truthful table and converged; wall {:.2?}",
        codes.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_under_five_percent_faults() {
    plan_verb_under_faults("prepare", sim::PREPARE, prepare_cases(), FIVE_PERCENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_under_heavy_faults() {
    plan_verb_under_faults("prepare", sim::PREPARE, prepare_cases(), HEAVY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_with_each_write_failing() {
    plan_verb_with_a_failing_write("prepare", sim::PREPARE, prepare_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_under_five_percent_faults() {
    plan_verb_under_faults("register", sim::REGISTER, register_cases(), FIVE_PERCENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_under_heavy_faults() {
    plan_verb_under_faults("register", sim::REGISTER, register_cases(), HEAVY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_each_write_failing() {
    plan_verb_with_a_failing_write("register", sim::REGISTER, register_cases()).await;
}

/// A bundle's files by name (the directory is flat).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// An archive's entries by name.
/// The archive's files by name inside its one top folder (which every entry must be under).
fn archive_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = BTreeMap::new();
    let mut tops = std::collections::BTreeSet::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let (top, rest) = name
            .split_once('/')
            .unwrap_or_else(|| panic!("{name} is not under a folder"));
        tops.insert(top.to_owned());
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.insert(rest.to_owned(), data);
    }
    assert_eq!(tops.len(), 1, "one top folder: {tops:?}");
    out
}

/// The files with the bootstrap token (fresh on every run) and its checksum line taken out.
fn without_token(mut files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files.remove("istio-token");
    if let Some(sums) = files.get_mut("SHA256SUMS") {
        let text = String::from_utf8_lossy(sums).into_owned();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.ends_with("  istio-token"))
            .collect();
        *sums = kept.join("\n").into_bytes();
    }
    files
}

/// Names in `dir` (to find leftovers such as staging directories).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn bundle_cases() -> Vec<Case> {
    vec![
        Case {
            name: "legacy",
            scenario: sim::legacy_with_vm,
            args: sim::args(&["--vm-namespace", "expandvm", "--inbound-ports", "80"]),
            kinds: &[],
        },
        Case {
            name: "modern",
            scenario: sim::modern_with_vm,
            args: sim::args(&[
                "--vm-namespace",
                "vm",
                "--workload-group",
                "vm",
                "--internal-ip",
                "10.0.0.5",
            ]),
            kinds: &[],
        },
    ]
}

fn bundle_args(case: &Case, dir: &Path, archive: &Path) -> Vec<String> {
    let mut a = case.args.clone();
    a.extend([
        "-d".to_owned(),
        dir.display().to_string(),
        "--archive".to_owned(),
        archive.display().to_string(),
    ]);
    a
}

/// bundle under 5% faults: the directory and archive are complete or absent, nothing else is
/// left beside them, and a fault-free re-run writes the same bytes (but the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_under_five_percent_faults() {
    bundle_under(FIVE_PERCENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_under_heavy_faults() {
    bundle_under(HEAVY).await;
}

async fn bundle_under(load: Load) {
    let started = Instant::now();
    let cases = bundle_cases();
    // The file names of a fault-free bundle, per case.
    let mut names = Vec::new();
    for case in &cases {
        let server = Server::start((case.scenario)()).await;
        let tmp = tempfile::tempdir().unwrap();
        let (dir, archive) = (tmp.path().join("vm"), tmp.path().join("vm.tar.gz"));
        let run = sim::run(sim::BUNDLE, &server, &bundle_args(case, &dir, &archive)).await;
        assert_eq!(run.code, 0, "{} fault-free: {}", case.name, run.show());
        let listed: Vec<String> = files(&dir).into_keys().collect();
        assert_eq!(
            listed,
            archive_files(&archive).into_keys().collect::<Vec<_>>(),
            "{}: the archive holds the directory's files",
            case.name
        );
        names.push(listed);
    }
    let cases = std::sync::Arc::new(cases);
    let names = std::sync::Arc::new(names);
    let outcomes = sim::pool(load.seeds, WORKERS, move |seed| {
        let cases = cases.clone();
        let names = names.clone();
        async move {
            let which = seed % cases.len();
            let case = &cases[which];
            let server = Server::start((case.scenario)()).await;
            let tmp = tempfile::tempdir().unwrap();
            let out: PathBuf = tmp.path().join("out");
            std::fs::create_dir(&out).unwrap();
            let (dir, archive) = (out.join("vm"), out.join("vm.tar.gz"));
            server.reset_requests();
            sim::inject_faults(&server, seed as u64, load.rate, load.throttle);
            let t = Instant::now();
            let run = sim::run(sim::BUNDLE, &server, &bundle_args(case, &dir, &archive)).await;
            let took = t.elapsed();
            let requests = server.requests().total();
            let injected = sim::injected(&server);
            server.clear_faults();
            let show = || format!("bundle seed {seed} ({}): {}", case.name, run.show());
            let first = match run.code {
                0 => {
                    assert_eq!(entries(&out), ["vm", "vm.tar.gz"], "{}", show());
                    let got = files(&dir);
                    assert_eq!(
                        got.keys().cloned().collect::<Vec<_>>(),
                        names[which],
                        "{}",
                        show()
                    );
                    assert_eq!(archive_files(&archive), got, "{}", show());
                    Some(got)
                }
                1 => {
                    assert!(run.stderr.contains("error: "), "{}", show());
                    assert!(
                        entries(&out).is_empty(),
                        "a failed bundle left {:?}: {}",
                        entries(&out),
                        show()
                    );
                    None
                }
                _ => panic!("exit code is neither 0 nor 1: {}", show()),
            };
            // Again without faults, into a fresh place.
            let (dir2, archive2) = (tmp.path().join("vm2"), tmp.path().join("vm2.tar.gz"));
            let again = sim::run(sim::BUNDLE, &server, &bundle_args(case, &dir2, &archive2)).await;
            assert_eq!(again.code, 0, "bundle seed {seed} re-run: {}", again.show());
            let second = files(&dir2);
            assert_eq!(
                second.keys().cloned().collect::<Vec<_>>(),
                names[which],
                "bundle seed {seed} re-run"
            );
            if let Some(first) = first {
                assert!(
                    without_token(first) == without_token(second.clone()),
                    "bundle seed {seed}: the re-run wrote different bytes"
                );
                assert!(
                    without_token(archive_files(&archive))
                        == without_token(archive_files(&archive2)),
                    "bundle seed {seed}: the re-run's archive differs"
                );
            }
            Outcome {
                seed,
                case: case.name,
                code: run.code,
                with_table: run.code == 1 && sim::plan_rows(&run.stdout).is_some(),
                injected,
                requests,
                took,
            }
        }
    })
    .await;
    let total: usize = outcomes.iter().map(|o| o.injected).sum();
    assert!(
        total > 0,
        "bundle: no fault was injected in {} seeds",
        load.seeds
    );
    report("bundle", load, &outcomes, started.elapsed());
}

/// Each read bundle sends, made to fail for good: exit 1, no directory, no archive, no leftovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_with_each_request_failing() {
    let started = Instant::now();
    let mut jobs = Vec::new();
    for case in bundle_cases() {
        let server = Server::start((case.scenario)()).await;
        let tmp = tempfile::tempdir().unwrap();
        server.reset_requests();
        let run = sim::run(
            sim::BUNDLE,
            &server,
            &bundle_args(&case, &tmp.path().join("vm"), &tmp.path().join("vm.tar.gz")),
        )
        .await;
        assert_eq!(run.code, 0, "{} fault-free: {}", case.name, run.show());
        let mut requests: Vec<(String, String)> = Vec::new();
        for r in server.requests().records {
            let w = (r.verb.clone(), r.path.clone());
            if !kube_sim::levers::is_discovery_path(&r.path) && !requests.contains(&w) {
                requests.push(w);
            }
        }
        for w in requests {
            jobs.push((case.clone(), w));
        }
    }
    let count = jobs.len();
    let jobs = std::sync::Arc::new(jobs);
    sim::pool(count, WORKERS, move |i| {
        let jobs = jobs.clone();
        async move {
            let (case, (kverb, path)) = &jobs[i];
            let server = Server::start((case.scenario)()).await;
            server.add_fault(Fault::on(FaultKind::ConnectionReset, kverb, path));
            let tmp = tempfile::tempdir().unwrap();
            let args = bundle_args(case, &tmp.path().join("vm"), &tmp.path().join("vm.tar.gz"));
            let run = sim::run(sim::BUNDLE, &server, &args).await;
            let context = format!("bundle ({}): {kverb} {path} always reset", case.name);
            assert_eq!(run.code, 1, "{context}: {}", run.show());
            assert!(run.stderr.contains("error: "), "{context}: {}", run.show());
            assert!(
                entries(tmp.path()).is_empty(),
                "{context}: left {:?}",
                entries(tmp.path())
            );
        }
    })
    .await;
    eprintln!(
        "faults/bundle: {count} failing requests, each exited 1 with nothing written; wall {:.2?}",
        started.elapsed()
    );
}

/// The rules `--fix` says it created: the rows of its plan table (on stderr) marked "created".
fn applied(stderr: &str) -> Vec<String> {
    sim::plan_rows(stderr)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.kind == "DestinationRule" && r.action == "created")
        .map(|r| format!("DestinationRule {}/{}", r.namespace, r.name))
        .collect()
}

fn doctor_cases() -> Vec<Case> {
    vec![
        Case {
            name: "legacy --fix",
            scenario: sim::legacy_with_vm,
            args: sim::args(&["--fix", "--yes", "-o", "json"]),
            kinds: &[DESTINATION_RULE_V1A3],
        },
        Case {
            name: "modern",
            scenario: sim::modern_with_vm,
            args: sim::args(&["-o", "json"]),
            kinds: &[],
        },
    ]
}

/// doctor under 5% faults: the report is the fault-free one (same exit code, same bytes), or
/// exit 1 with an error and no report; `--fix` names each rule it applied, and only those
/// are stored; a fault-free re-run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_under_five_percent_faults() {
    doctor_under(FIVE_PERCENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_under_heavy_faults() {
    doctor_under(HEAVY).await;
}

async fn doctor_under(load: Load) {
    let started = Instant::now();
    let cases = doctor_cases();
    let mut refs = Vec::new();
    for case in &cases {
        let server = Server::start((case.scenario)()).await;
        let before = sim::stored(&server, case.kinds).await;
        let run = sim::run(sim::DOCTOR, &server, &case.args).await;
        assert!(
            matches!(run.code, 0 | 1) && !run.stderr.contains("error: "),
            "{} fault-free: {}",
            case.name,
            run.show()
        );
        let after = sim::stored(&server, case.kinds).await;
        refs.push((before, after, run));
    }
    let cases = std::sync::Arc::new(cases);
    let refs = std::sync::Arc::new(refs);
    let outcomes = sim::pool(load.seeds, WORKERS, move |seed| {
        let cases = cases.clone();
        let refs = refs.clone();
        async move {
            let which = seed % cases.len();
            let case = &cases[which];
            let (ref_before, reference, ref_run) = &refs[which];
            let server = Server::start((case.scenario)()).await;
            server.reset_requests();
            sim::inject_faults(&server, seed as u64, load.rate, load.throttle);
            let t = Instant::now();
            let run = sim::run(sim::DOCTOR, &server, &case.args).await;
            let took = t.elapsed();
            let requests = server.requests().total();
            let injected = sim::injected(&server);
            server.clear_faults();
            let after = sim::stored(&server, case.kinds).await;
            let show = || format!("doctor seed {seed} ({}): {}", case.name, run.show());
            let errored = run.stderr.contains("error: ");
            if errored {
                assert_eq!(run.code, 1, "{}", show());
                assert!(run.stdout.is_empty(), "a half report: {}", show());
            } else {
                assert_eq!(run.code, ref_run.code, "{}", show());
                assert_eq!(
                    without_kubeconfig(&run.stdout),
                    without_kubeconfig(&ref_run.stdout),
                    "not the fault-free report: {}",
                    show()
                );
            }
            // --fix: exactly the rules it says it applied are new.
            let said = applied(&run.stderr);
            for (key, now) in &after {
                if said.contains(key) {
                    assert_eq!(Some(now), reference.get(key), "{key}: {}", show());
                } else if ref_before.get(key) != Some(now) {
                    let failing = run.stderr.lines().any(|l| {
                        l.starts_with("error: ")
                            && l.contains(key.trim_start_matches("DestinationRule "))
                    });
                    assert!(
                        failing,
                        "{key} stored but not reported as applied: {}",
                        show()
                    );
                }
            }
            for key in &said {
                assert!(
                    after.contains_key(key),
                    "{key} reported applied but absent: {}",
                    show()
                );
            }
            if !errored {
                assert!(
                    &after == reference,
                    "{}: {}",
                    sim::diff(&after, reference),
                    show()
                );
            }
            let again = sim::run(sim::DOCTOR, &server, &case.args).await;
            assert!(
                again.code == ref_run.code
                    && without_kubeconfig(&again.stdout) == without_kubeconfig(&ref_run.stdout),
                "doctor seed {seed} re-run differs from the fault-free run: {}",
                again.show()
            );
            let converged = sim::stored(&server, case.kinds).await;
            assert!(
                &converged == reference,
                "doctor seed {seed}: {}",
                sim::diff(&converged, reference)
            );
            Outcome {
                seed,
                case: case.name,
                code: i32::from(errored),
                with_table: false,
                injected,
                requests,
                took,
            }
        }
    })
    .await;
    let total: usize = outcomes.iter().map(|o| o.injected).sum();
    assert!(
        total > 0,
        "doctor: no fault was injected in {} seeds",
        load.seeds
    );
    report("doctor", load, &outcomes, started.elapsed());
}

/// `doctor --fix` with each DestinationRule write failing for good (the runbook's rules): exit 1,
/// the rules before it reported applied and stored, the rest absent; a re-run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fix_with_each_write_failing() {
    let case = doctor_cases().remove(0);
    // Kubernetes 1.16, where each rule is one create, so the n-th write is the n-th rule. (On 1.14 a refused apply and a read precede each create: the write executor's own
    // tests judge that path, and the matrix runs --fix there.)
    let scenario = || (case.scenario)().with_kube_version("1.16");
    let server = Server::start(scenario()).await;
    let before = sim::stored(&server, case.kinds).await;
    server.reset_requests();
    let run = sim::run(sim::DOCTOR, &server, &case.args).await;
    assert!(!run.stderr.contains("error: "), "{}", run.show());
    let reference = sim::stored(&server, case.kinds).await;
    let writes: Vec<(String, String)> = server
        .requests()
        .records
        .iter()
        .filter(|r| !matches!(r.method.as_str(), "GET" | "HEAD"))
        .map(|r| (r.verb.clone(), r.path.clone()))
        .collect();
    assert!(!writes.is_empty(), "--fix wrote nothing: {}", run.show());
    for (i, (kverb, path)) in writes.iter().enumerate() {
        // --fix creates each rule (POST to the collection): a fault on that path hits the first
        // create, so only the first write of each (verb, path) can be made to fail alone.
        if writes[..i].contains(&(kverb.clone(), path.clone())) {
            continue;
        }
        let server = Server::start(scenario()).await;
        server.add_fault(Fault::on(FaultKind::InternalError, kverb, path));
        let run = sim::run(sim::DOCTOR, &server, &case.args).await;
        server.clear_faults();
        let context = format!("doctor --fix: {kverb} {path} always fails");
        assert_eq!(run.code, 1, "{context}: {}", run.show());
        assert!(run.stderr.contains("error: "), "{context}: {}", run.show());
        let after = sim::stored(&server, case.kinds).await;
        let said = applied(&run.stderr);
        assert_eq!(said.len(), i, "{context}: {}", run.show());
        // The table names the rule that failed and every rule not attempted after it.
        let rows = sim::plan_rows(&run.stderr).unwrap_or_default();
        let count = |action: &str| rows.iter().filter(|r| r.action == action).count();
        assert_eq!(count("failed to create"), 1, "{context}: {}", run.show());
        assert_eq!(
            count("not created"),
            writes.len() - i - 1,
            "{context}: {}",
            run.show()
        );
        for (key, now) in &after {
            if said.contains(key) {
                assert_eq!(Some(now), reference.get(key), "{context}: {key}");
            } else {
                assert_eq!(
                    before.get(key),
                    Some(now),
                    "{context}: {key} stored, not reported"
                );
            }
        }
        let again = sim::run(sim::DOCTOR, &server, &case.args).await;
        assert!(
            !again.stderr.contains("error: "),
            "{context}, re-run: {}",
            again.show()
        );
        let converged = sim::stored(&server, case.kinds).await;
        assert!(
            converged == reference,
            "{context}: {}",
            sim::diff(&converged, &reference)
        );
    }
    eprintln!(
        "faults/doctor --fix: 3 failing writes, each exited 1 naming what it applied, and converged"
    );
}

/// Each read doctor sends, failing for good: exit 1 with an error naming it, and no report
/// (a report from half the cluster would pass checks it could not run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_each_read_failing() {
    let started = Instant::now();
    let case = doctor_cases().remove(1);
    let server = Server::start((case.scenario)()).await;
    server.reset_requests();
    let run = sim::run(sim::DOCTOR, &server, &case.args).await;
    assert!(!run.stderr.contains("error: "), "{}", run.show());
    let mut reads: Vec<(String, String)> = Vec::new();
    for r in server.requests().records {
        let w = (r.verb.clone(), r.path.clone());
        if !kube_sim::levers::is_discovery_path(&r.path) && !reads.contains(&w) {
            reads.push(w);
        }
    }
    let count = reads.len();
    let reads = std::sync::Arc::new(reads);
    let case = std::sync::Arc::new(case);
    let outcomes = sim::pool(count, WORKERS, move |i| {
        let reads = reads.clone();
        let case = case.clone();
        async move {
            let (kverb, path) = &reads[i];
            let server = Server::start((case.scenario)()).await;
            server.add_fault(Fault::on(FaultKind::ConnectionReset, kverb, path));
            let run = sim::run(sim::DOCTOR, &server, &case.args).await;
            let context = format!("doctor: {kverb} {path} always reset");
            assert_eq!(run.code, 1, "{context}: {}", run.show());
            assert!(run.stderr.contains("error: "), "{context}: {}", run.show());
            assert!(
                run.stdout.is_empty(),
                "{context}: a half report: {}",
                run.show()
            );
        }
    })
    .await;
    eprintln!(
        "faults/doctor: {} failing reads, each exited 1 with an error and no report; wall {:.2?}",
        outcomes.len(),
        started.elapsed()
    );
}

/// A 429 asks the client to wait: every verb, throttled once on its first API request with
/// `Retry-After: 1`, waits at least that long, then completes; unthrottled it is much faster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_honours_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b").display().to_string();
    let case = |name, scenario, args| Case {
        name,
        scenario,
        args,
        kinds: &[],
    };
    let cases = [
        (
            sim::PREPARE,
            case("prepare", sim::legacy, prepare_cases().remove(0).args),
        ),
        (
            sim::REGISTER,
            case(
                "register",
                sim::legacy_with_vm,
                register_cases().remove(0).args,
            ),
        ),
        (
            sim::BUNDLE,
            case(
                "bundle",
                sim::legacy_with_vm,
                sim::args(&[
                    "--vm-namespace",
                    "expandvm",
                    "--inbound-ports",
                    "80",
                    "-d",
                    &dir,
                    "--force",
                ]),
            ),
        ),
        (
            sim::DOCTOR,
            case("doctor", sim::legacy_with_vm, sim::args(&["-o", "json"])),
        ),
    ];
    for (
        bin,
        Case {
            name: verb,
            scenario,
            args,
            ..
        },
    ) in cases
    {
        let server = Server::start(scenario()).await;
        let t = Instant::now();
        let plain = sim::run(bin, &server, &args).await;
        let unthrottled = t.elapsed();
        assert!(
            matches!(plain.code, 0 | 1) && !plain.stderr.contains("error: "),
            "{verb}: {}",
            plain.show()
        );
        let server = Server::start(scenario()).await;
        server.reset_requests();
        server.add_fault(
            Fault::on(
                FaultKind::TooManyRequests {
                    retry_after_seconds: sim::RETRY_AFTER_SECONDS,
                },
                "GET",
                "/api",
            )
            .times(1),
        );
        let t = Instant::now();
        let run = sim::run(bin, &server, &args).await;
        let throttled = t.elapsed();
        assert_eq!(
            run.code,
            plain.code,
            "{verb} throttled once: {}",
            run.show()
        );
        assert_eq!(sim::injected(&server), 1, "{verb}: one 429 was sent");
        assert!(
            throttled >= Duration::from_secs(u64::from(sim::RETRY_AFTER_SECONDS)),
            "{verb}: retried after {throttled:?}, before the Retry-After second"
        );
        eprintln!(
            "faults/{verb}: Retry-After honoured ({unthrottled:.2?} unthrottled, {throttled:.2?} with one 429)"
        );
    }
}

/// `text` with the path after each `--kubeconfig` (each run's own sim, carried into doctor's
/// hinted commands) replaced by `[path]`, so reports of two sims compare.
fn without_kubeconfig(text: &str) -> String {
    let mut out = String::new();
    let mut parts = text.split("--kubeconfig ");
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str("--kubeconfig [path]");
        let end = part
            .find(|c: char| c.is_whitespace() || c == '`' || c == '"')
            .unwrap_or(part.len());
        out.push_str(&part[end..]);
    }
    out
}
