//! `kubectl meshvm doctor`'s inputs and output, through the real binary: `-f -` from a pipe,
//! `-f DIR` holding non-manifest YAML, file:line in every format, `--bundle` alone, and a wrong
//! `--istio-namespace`.

use std::io::Write as _;
use std::process::{Command, Stdio};

use kube_sim::Server;
use serde_json::Value;

use crate::common::sim::{self, DOCTOR, Run};

/// Run doctor without a cluster, `stdin` piped in.
fn doctor(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(DOCTOR)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl-meshvm-doctor");
    // A run that does not read stdin (no `-f -`) may exit before taking it all: that pipe
    // closing is no failure of the test; what the run printed is judged.
    match child.stdin.take().unwrap().write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    Run::from(&child.wait_with_output().unwrap())
}

fn scenario_path() -> std::path::PathBuf {
    sim::repo().join("tests/scenarios/legacy-1.4.yaml")
}

/// `(check, object, source)` of every finding of a JSON report.
fn located(report: &Value) -> Vec<(String, String, Value)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_owned(),
                f["object"].as_str().unwrap().to_owned(),
                f.get("source").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// `-f -` reads the manifests from standard input, named `STDIN` (kubectl's name) at the same
/// lines as the file they came from.
#[test]
fn stdin_is_read_like_the_file_it_came_from() {
    let path = scenario_path();
    let text = std::fs::read(&path).unwrap();
    let piped = doctor(&["-f", "-", "-o", "json"], &text);
    assert_eq!(piped.code, 1, "findings, not an error: {}", piped.show());
    let from_file = doctor(&["-f", path.to_str().unwrap(), "-o", "json"], b"");
    assert_eq!(from_file.code, 1, "{}", from_file.show());
    let piped: Value = serde_json::from_str(&piped.stdout).unwrap();
    let from_file: Value = serde_json::from_str(&from_file.stdout).unwrap();
    let (a, b) = (located(&piped), located(&from_file));
    assert_eq!(a.len(), b.len());
    let mut sourced = 0;
    for ((check, object, source), (_, _, file_source)) in a.iter().zip(&b) {
        if source.is_null() {
            assert!(file_source.is_null(), "{check} {object}");
            continue;
        }
        sourced += 1;
        assert_eq!(source["file"], "STDIN", "{check} {object}");
        assert_eq!(source["line"], file_source["line"], "{check} {object}");
        assert_eq!(
            file_source["file"],
            path.to_str().unwrap(),
            "{check} {object}"
        );
    }
    assert!(sourced >= 3, "{a:#?}");
    // The table shows the same place beside the object.
    let table = doctor(&["-f", "-"], &text);
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(header.contains(" SOURCE "), "{}", table.show());
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("Service istio-system/istio-citadel") && l.contains(" STDIN:")),
        "{}",
        table.show()
    );
    // Standard input is read once.
    let twice = doctor(&["-f", "-", "-f", "-"], &text);
    assert_eq!(twice.code, 2, "{}", twice.show());
    assert!(
        twice.stderr.contains("-f - can be given once"),
        "{}",
        twice.show()
    );
}

/// A GitOps folder with a Helm values file, a kustomization and CI configs: each such document
/// is skipped with one note (stderr and the report), the manifests are judged, and a manifest
/// with apiVersion and kind that is not a valid object still fails the run.
#[test]
fn a_folder_with_non_manifest_yaml_skips_it_with_one_note_each() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(scenario_path(), d.join("mesh.yaml")).unwrap();
    std::fs::write(
        d.join("values.yaml"),
        "replicaCount: 2\nimage:\n  tag: 1.4.2\n",
    )
    .unwrap();
    std::fs::write(
        d.join("kustomization.yaml"),
        "resources:\n- mesh.yaml\nnamespace: istio-system\n",
    )
    .unwrap();
    std::fs::write(
        d.join(".gitlab-ci.yml"),
        "stages: [lint]\nlint:\n  script: [kubectl meshvm doctor -f .]\n",
    )
    .unwrap();
    let run = doctor(&["-f", d.to_str().unwrap(), "-o", "json"], b"");
    assert_eq!(run.code, 1, "the mesh's findings: {}", run.show());
    let report: Value = serde_json::from_str(&run.stdout).expect("a report");
    let notes: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("note: "))
        .collect();
    assert_eq!(notes.len(), 3, "{}", run.show());
    for (note, file) in notes
        .iter()
        .zip([".gitlab-ci.yml", "kustomization.yaml", "values.yaml"])
    {
        assert!(
            note.starts_with(&format!(
                "note: {}:1: document 1 skipped: no apiVersion and no kind",
                d.join(file).display()
            )),
            "{note}"
        );
    }
    let json_notes = report["notes"].as_array().unwrap();
    assert_eq!(json_notes.len(), 3);
    assert_eq!(
        json_notes[2]["source"]["file"],
        d.join("values.yaml").to_str().unwrap()
    );
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "mtls.default-dr" && f["severity"] == "fail"),
        "the manifests were judged"
    );
    // A manifest with apiVersion and kind but no name: a clear error, no report.
    std::fs::write(
        d.join("rule.yaml"),
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  namespace: bookinfo\nspec: {host: reviews}\n",
    )
    .unwrap();
    let run = doctor(&["-f", d.to_str().unwrap()], b"");
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(run.stdout.is_empty(), "{}", run.show());
    assert!(
        run.stderr.contains(&format!(
            "error: {}: document 1 (line 1) is not a Kubernetes object: DestinationRule has no metadata.name",
            d.join("rule.yaml").display()
        )),
        "{}",
        run.show()
    );
}

/// kubectl's `-f DIR` reads only the directory; `-R` reads below it. Without `-R`, doctor says
/// what it left out.
#[test]
fn subdirectories_are_read_with_r_as_kubectl_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("istio")).unwrap();
    std::fs::copy(scenario_path(), d.join("istio/mesh.yaml")).unwrap();
    let run = doctor(&["-f", d.to_str().unwrap()], b"");
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(run.stdout.is_empty(), "{}", run.show());
    assert!(
        run.stderr
            .contains("no .yaml, .yml or .json files found (only in 1 subdirectories")
            && run.stderr.contains(&format!(
                "hint: read its subdirectories too: `kubectl meshvm doctor -f {} -R`",
                d.display()
            )),
        "{}",
        run.show()
    );
    let run = doctor(&["-f", d.to_str().unwrap(), "-R", "-o", "json"], b"");
    assert_eq!(run.code, 1, "{}", run.show());
    let report: Value = serde_json::from_str(&run.stdout).expect("a report");
    assert_eq!(report["era"], "legacy");
}

/// A YAML syntax error names the file and line in its message and its snippet.
#[test]
fn a_yaml_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "apiVersion: v1\nkind: Service\nmetadata: [\n").unwrap();
    let run = doctor(&["-f", path.to_str().unwrap()], b"");
    assert_eq!(run.code, 1);
    let file = path.display().to_string();
    assert!(
        run.stderr
            .starts_with(&format!("error: {file}:3: not valid YAML: "))
            && run.stderr.contains(&format!(" --> {file}:3:11"))
            && !run.stderr.contains("<input>"),
        "{}",
        run.show()
    );
    let run = doctor(&["-f", "-"], b"kind: [\n");
    assert!(run.stderr.contains(" --> STDIN:"), "{}", run.show());
}

/// `--bundle` alone: only the bundle checks (and the bundle's credential expiry), and no word
/// about a mesh it did not read.
#[test]
fn bundle_alone_prints_only_the_bundle_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), "k").unwrap();
    let run = doctor(&["--bundle", dir.path().to_str().unwrap()], b"");
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(!rows.is_empty(), "{}", run.show());
    assert!(
        rows.iter()
            .all(|r| r.starts_with("bundle.") || r.starts_with("vm.credential-expiry")),
        "{}",
        run.show()
    );
    assert!(
        !run.stdout.contains("auto mTLS")
            && !run.stdout.contains("Pilot")
            && !run.stdout.contains("NAMESPACE"),
        "{}",
        run.show()
    );
    assert!(
        run.stdout
            .contains("bundle checks only (no cluster or manifests given) · era legacy"),
        "{}",
        run.show()
    );
}

/// `--istio-namespace` naming a namespace without a control plane: exit 1 and the namespace
/// that has one; the hint, run as printed, gives the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_istio_namespace_exits_1_naming_the_right_one() {
    let server = Server::start(sim::legacy()).await;
    let run = sim::run(DOCTOR, &server, &sim::args(&["--istio-namespace", "istio"])).await;
    assert_eq!(run.code, 1, "{}", run.show());
    assert!(run.stdout.is_empty(), "no report: {}", run.show());
    assert!(
        run.stderr
            .starts_with("error: no Istio control plane in namespace istio (context "),
        "{}",
        run.show()
    );
    let hint = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("hint: found one in istio-system: pass "))
        .unwrap_or_else(|| panic!("{}", run.show()));
    let flag: Vec<&str> = hint.split(" (").next().unwrap().split(' ').collect();
    assert_eq!(flag, ["--istio-namespace", "istio-system"]);
    let mut args = sim::args(&flag);
    args.extend(sim::args(&["-o", "json"]));
    let fixed = sim::run(DOCTOR, &server, &args).await;
    let report: Value =
        serde_json::from_str(&fixed.stdout).unwrap_or_else(|_| panic!("{}", fixed.show()));
    assert_eq!(report["era"], "legacy");
    // With -f there is no cluster to look in: no error.
    let path = scenario_path();
    let files = doctor(
        &[
            "-f",
            path.to_str().unwrap(),
            "--istio-namespace",
            "istio",
            "-o",
            "json",
        ],
        b"",
    );
    assert!(
        serde_json::from_str::<Value>(&files.stdout).is_ok(),
        "{}",
        files.show()
    );
    assert!(
        files
            .stderr
            .contains("note: the manifests hold an Istio control plane in namespace istio-system, not in --istio-namespace istio"),
        "{}",
        files.show()
    );
}
