//! The round-trip budgets of the verbs (prepare ≤ 3, bundle ≤ 3, register ≤ 3, doctor ≤ 2 on a
//! cluster whose lists fit one 500-object page each), counted from
//! kube-sim's request log as `cargo xtask bench` counts them: the longest chain of requests each
//! sent only after the previous one was answered ([`kube_sim::RequestLog::round_trips`]),
//! discovery included. Never from wall time: the latency lever only makes requests a verb sends
//! together overlap in the log, however loaded the machine is.
//!
//! The flows are the bench's: on the legacy scenario (Istio 1.4) at Kubernetes 1.16 (server-side
//! apply, metadata lists) and 1.14 (neither: 415 and 406), `prepare` (a first run, which creates),
//! `prepare --restart-control-plane` (not counted), `bundle`, `register`; and the modern scenario
//! (Kubernetes 1.33) with a WorkloadGroup and a WorkloadEntry; then `doctor` over what they made.
//! Every verb also runs a second time (nothing left to create) within the same budget, and
//! nothing is fetched twice in one run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;
use kube_sim::{RequestLog, Scenario, Server};
use meshvm::args::{BundleArgs, DoctorArgs, PrepareArgs, RegisterArgs};

/// Per request: long enough that requests a verb sends together overlap on a loaded machine
/// (each may need its own TLS handshake), short enough for a quick test.
const LATENCY: Duration = Duration::from_millis(400);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chain behind [`RequestLog::round_trips`], one line per request in arrival order: its
/// depth (round trip), arrival and answer in ms from the first request, verb, path, query,
/// status and (for lists) the media type asked for.
pub(crate) fn chain(log: &RequestLog) -> String {
    let mut order: Vec<_> = log.records.iter().collect();
    order.sort_by_key(|r| r.arrived);
    let Some(start) = order.first().map(|r| r.arrived) else {
        return "(no requests)".into();
    };
    let mut depth: Vec<usize> = Vec::with_capacity(order.len());
    let mut text = String::new();
    for (i, r) in order.iter().enumerate() {
        let d = 1
            + (0..i)
                .filter(|&j| order[j].answered <= r.arrived)
                .map(|j| depth[j])
                .max()
                .unwrap_or(0);
        depth.push(d);
        let ms = |t: std::time::Instant| t.duration_since(start).as_millis();
        let accept = if r.verb == "list" && !r.accept.is_empty() {
            format!("  [{}]", r.accept)
        } else {
            String::new()
        };
        let query = if r.query.is_empty() {
            String::new()
        } else {
            format!("?{}", r.query)
        };
        let _ = writeln!(
            text,
            "  trip {d}: {:>5}..{:>5} ms  {} {}{query} → {}{accept}",
            ms(r.arrived),
            ms(r.answered),
            r.verb,
            r.path,
            r.status,
        );
    }
    text
}

/// Reads (get, list) sent more than once with the same path and query.
fn fetched_twice(log: &RequestLog) -> Vec<String> {
    let mut seen: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for r in &log.records {
        if matches!(r.verb.as_str(), "get" | "list") {
            *seen
                .entry((r.verb.clone(), r.path.clone(), r.query.clone()))
                .or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((verb, path, query), n)| format!("{verb} {path}?{query} ×{n}"))
        .collect()
}

/// One verb's run, in process, against `server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Prepare,
    Bundle,
    Register,
    Doctor,
}

impl Verb {
    /// The budgets of the issue: prepare, bundle and register each ≤ 3 round trips, doctor ≤ 2
    /// (discovery beside the core lists, then the Istio lists and the reads by name).
    fn budget(self) -> usize {
        match self {
            Verb::Doctor => 2,
            _ => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verb::Prepare => "prepare",
            Verb::Bundle => "bundle",
            Verb::Register => "register",
            Verb::Doctor => "doctor",
        }
    }
}

async fn run(server: &Server, verb: Verb, args: &[&str]) -> (Result<(), String>, String) {
    let mut argv = vec![
        format!("kubectl-meshvm-{}", verb.name()),
        "--kubeconfig".to_owned(),
        server.kubeconfig_path().display().to_string(),
    ];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = match verb {
        Verb::Prepare => {
            let opts =
                meshvm::prepare::Options::resolve(PrepareArgs::try_parse_from(argv).unwrap())
                    .unwrap();
            Box::pin(meshvm::prepare::run(&opts, &mut out, &mut err))
                .await
                .map(drop)
                .map_err(|e| meshvm::errors::error_chain(&e))
        }
        Verb::Bundle => {
            let opts = meshvm::bundle::Options::resolve(BundleArgs::try_parse_from(argv).unwrap())
                .unwrap();
            Box::pin(meshvm::bundle::run(&opts, &mut out, &mut err))
                .await
                .map(drop)
                .map_err(|e| meshvm::errors::error_chain(&e))
        }
        Verb::Register => Box::pin(meshvm::register::run(
            RegisterArgs::try_parse_from(argv).unwrap(),
            &mut out,
            &mut err,
        ))
        .await
        .map(drop)
        .map_err(|e| meshvm::errors::error_chain(&e)),
        Verb::Doctor => {
            let opts =
                meshvm::doctor::DoctorOptions::resolve(DoctorArgs::try_parse_from(argv).unwrap())
                    .unwrap();
            Box::pin(meshvm::doctor::run(&opts, &mut out, &mut err, false))
                .await
                .map(drop)
                .map_err(|e| meshvm::errors::error_chain(&e))
        }
    };
    (
        result,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ),
    )
}

/// Run `verb` with the latency lever on and return its request log (the run must succeed).
async fn measured(server: &Server, verb: Verb, args: &[&str], what: &str) -> RequestLog {
    server.set_latency(LATENCY);
    server.reset_requests();
    let (result, output) = run(server, verb, args).await;
    server.set_latency(Duration::ZERO);
    let log = server.requests();
    assert!(
        result.is_ok(),
        "{what}: {} failed: {result:?}\n{output}\n{}",
        verb.name(),
        chain(&log)
    );
    eprintln!(
        "{what}: {} in {} round trips ({} requests)\n{}",
        verb.name(),
        log.round_trips(),
        log.total(),
        chain(&log)
    );
    log
}

/// Within budget, and no read sent twice; what is not is added to `failures` (so one test run
/// shows every verb's chain).
fn judge(failures: &mut Vec<String>, log: &RequestLog, verb: Verb, what: &str) {
    if log.round_trips() > verb.budget() {
        failures.push(format!(
            "{what}: {} took {} round trips on the critical path (budget {}):\n{}",
            verb.name(),
            log.round_trips(),
            verb.budget(),
            chain(log)
        ));
    }
    let twice = fetched_twice(log);
    if !twice.is_empty() {
        failures.push(format!(
            "{what}: {} read the same thing twice: {twice:?}\n{}",
            verb.name(),
            chain(log)
        ));
    }
}

fn all_met(failures: &[String]) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn legacy(kube: &str) -> Server {
    let scenario = Scenario::from_files(&[repo().join("tests/scenarios/legacy-1.4.yaml")])
        .expect("scenario loads")
        .with_kube_version(kube);
    Server::start(scenario).await
}

/// The bench's legacy flow on Kubernetes `kube`: every verb within budget, first run and re-run.
async fn legacy_flow(kube: &str) {
    let server = legacy(kube).await;
    let what = format!("legacy, Kubernetes {kube}");
    let ca = repo().join("tests/fixtures/istio-samples");
    let ca = ca.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let dir = dir.to_str().unwrap();
    let prepare = ["--vm-namespace", "expandvm", "--ca-dir", ca];
    let bundle = [
        "--vm-namespace",
        "expandvm",
        "--inbound-ports",
        "80",
        "-d",
        dir,
    ];
    let register = ["expandvm", "203.0.113.10", "80", "-n", "expandvm"];

    let mut failures = Vec::new();
    assert!(server.object("v1", "Namespace", "", "expandvm").is_none());
    let log = measured(&server, Verb::Prepare, &prepare, &what).await;
    judge(
        &mut failures,
        &log,
        Verb::Prepare,
        &format!("{what}, first run"),
    );
    assert!(
        server
            .object("v1", "ServiceAccount", "expandvm", "expandvm")
            .is_some(),
        "the first run creates the VM namespace and its ServiceAccount"
    );
    let log = measured(&server, Verb::Prepare, &prepare, &what).await;
    judge(
        &mut failures,
        &log,
        Verb::Prepare,
        &format!("{what}, re-run"),
    );

    // Not measured (as in the bench): Citadel loads cacerts only at start.
    let mut restart = prepare.to_vec();
    restart.extend(["--restart-control-plane", "--yes"]);
    let (result, output) = run(&server, Verb::Prepare, &restart).await;
    assert!(result.is_ok(), "{result:?}\n{output}");

    let log = measured(&server, Verb::Bundle, &bundle, &what).await;
    judge(&mut failures, &log, Verb::Bundle, &what);
    let log = measured(&server, Verb::Bundle, &bundle, &what).await;
    judge(
        &mut failures,
        &log,
        Verb::Bundle,
        &format!("{what}, re-run"),
    );

    let log = measured(&server, Verb::Register, &register, &what).await;
    judge(
        &mut failures,
        &log,
        Verb::Register,
        &format!("{what}, first run"),
    );
    assert!(
        server
            .object("v1", "Endpoints", "expandvm", "expandvm")
            .is_some(),
        "the first run creates the Service and its Endpoints"
    );
    let log = measured(&server, Verb::Register, &register, &what).await;
    judge(
        &mut failures,
        &log,
        Verb::Register,
        &format!("{what}, re-run"),
    );
    let log = measured(&server, Verb::Doctor, &["-o", "json"], &what).await;
    judge(&mut failures, &log, Verb::Doctor, &what);
    all_met(&failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_on_kubernetes_1_16_within_budget() {
    legacy_flow("1.16").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_on_kubernetes_1_14_within_budget() {
    legacy_flow("1.14").await;
}

/// The modern scenario (istiod, Kubernetes 1.33): a WorkloadGroup, its bundle, a WorkloadEntry.
#[tokio::test(flavor = "multi_thread")]
async fn modern_on_kubernetes_1_33_within_budget() {
    let server =
        Server::start(Scenario::from_files(&[repo().join("tests/scenarios/modern.yaml")]).unwrap())
            .await;
    let what = "modern, Kubernetes 1.33";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    let dir = dir.to_str().unwrap();
    let prepare = ["-n", "vm", "--workload-group", "vm", "--labels", "app=vm"];
    let bundle = [
        "-n",
        "vm",
        "--workload-group",
        "vm",
        "--internal-ip",
        "10.0.0.5",
        "-d",
        dir,
    ];
    let register = [
        "-n",
        "vm",
        "--workload-entry",
        "vm-1",
        "--address",
        "10.0.0.5",
        "--workload-group",
        "vm",
    ];
    let mut failures = Vec::new();
    for run in ["first run", "re-run"] {
        let what = format!("{what}, {run}");
        let log = measured(&server, Verb::Prepare, &prepare, &what).await;
        judge(&mut failures, &log, Verb::Prepare, &what);
    }
    for run in ["first run", "re-run"] {
        let what = format!("{what}, {run}");
        let log = measured(&server, Verb::Bundle, &bundle, &what).await;
        judge(&mut failures, &log, Verb::Bundle, &what);
    }
    for run in ["first run", "re-run"] {
        let what = format!("{what}, {run}");
        let log = measured(&server, Verb::Register, &register, &what).await;
        judge(&mut failures, &log, Verb::Register, &what);
    }
    let log = measured(&server, Verb::Doctor, &["-o", "json"], what).await;
    judge(&mut failures, &log, Verb::Doctor, what);
    all_met(&failures);
}
